"""A proposal and its state machine.

    proposed ──✅ quorum──▶ approved ──re-check ok──▶ running ──▶ succeeded | failed
       │  └──❌──▶ rejected        └──target changed──▶ stale
       └──deadline──▶ expired      approved/running at a restart ──▶ interrupted (never re-run)

Every transition is a compare-and-set in the store (``ProposalRepo.transition``), so duplicate
events, concurrent approvals and restarts cannot run an action twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from bot.approvals.actions import Outcome, Plan, Risk


class State(str, Enum):
    proposed = "proposed"
    approved = "approved"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    expired = "expired"
    stale = "stale"
    interrupted = "interrupted"
    withdrawn = "withdrawn"  # its alert resolved before anyone approved it

    @property
    def final(self) -> bool:
        return self not in (State.proposed, State.approved, State.running)


# The only moves the store accepts.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.proposed: frozenset({State.approved, State.rejected, State.expired, State.withdrawn}),
    State.approved: frozenset({State.running, State.stale, State.interrupted}),
    State.running: frozenset({State.succeeded, State.failed, State.interrupted}),
}


def allowed(old: State, new: State) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


class IllegalTransition(ValueError):
    pass


class Rule(BaseModel):
    """Who may approve one proposal, snapshotted when it is made."""

    usernames: list[str] = Field(default_factory=list)
    described: str = ""  # "@alice, group sre (@bob, @carol)"
    quorum: int = 1
    four_eyes: bool = False

    def may_approve(self, username: str) -> bool:
        return username in self.usernames


class Proposal(BaseModel):
    id: int
    action: str
    params: dict[str, Any]
    risk: Risk
    requester: str
    source: str  # "command" or "sop:<id>"
    channel_id: str
    root_id: str
    post_id: str | None
    state: State
    rule: Rule
    plan: Plan
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    finished_at: datetime | None = None
    approvers: list[str] = Field(default_factory=list)
    rejected_by: str | None = None
    outcome: Outcome | None = None
    awaiting_secret: bool = False

    @property
    def label(self) -> str:
        return f"#{self.id} {self.action}"
