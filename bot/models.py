"""What a handler produces: findings, gathered into a report. No chat knowledge here."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, Field


class Status(str, Enum):
    """Outcome of one check. Order matters: the report takes the worst."""

    ok = "ok"
    unknown = "unknown"
    warn = "warn"
    crit = "crit"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def worst(cls, statuses: "list[Status]") -> "Status":
        return max(statuses, key=lambda s: s.rank, default=cls.ok)


_RANK = {Status.ok: 0, Status.unknown: 1, Status.warn: 2, Status.crit: 3}


class Severity(str, Enum):
    """Runbook severity levels (the runbook's header defines them)."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def label(self) -> str:
        return {"P1": "Critical", "P2": "Major", "P3": "Minor", "P4": "Low"}[self.value]

    @property
    def response_time(self) -> str:
        return {
            "P1": "15 minutes",
            "P2": "1 hour",
            "P3": "4 hours",
            "P4": "next business day",
        }[self.value]


class SuggestedAction(BaseModel):
    """A remediation a handler suggests for a finding (an action name of ``/sop fix`` and its
    params). The approvals feature turns it into a proposal; handlers never see chat."""

    action: str
    params: dict[str, str] = Field(default_factory=dict)


class Finding(BaseModel):
    """One observation: a status, a one-line summary, optional details."""

    status: Status
    summary: str
    details: str = ""
    # The thing the finding is about, e.g. "vault-0" or "node/worker-3".
    target: str = ""
    # What the runbook says to do next when this finding is not ok, e.g. "5.2 step 3: unseal".
    next_step: str = ""
    # Remediations to propose (approved by reaction before anything changes).
    actions: list[SuggestedAction] = Field(default_factory=list)


class Report(BaseModel):
    """A handler run: what was checked and what was found."""

    sop_id: str
    title: str
    section: str
    severity: Severity
    findings: list[Finding] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    duration_s: float = 0.0
    params: dict[str, str] = Field(default_factory=dict)

    @property
    def status(self) -> Status:
        return Status.worst([f.status for f in self.findings])

    @property
    def next_steps(self) -> list[str]:
        """Distinct next steps of the non-ok findings, worst first."""
        seen: dict[str, None] = {}
        for f in sorted(self.findings, key=lambda f: -f.status.rank):
            if f.status is not Status.ok and f.next_step:
                seen.setdefault(f.next_step)
        return list(seen)
