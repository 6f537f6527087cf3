"""The Alertmanager webhook payload (version 4) and the state we keep per alert group."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from bot.models import Severity

# Alertmanager sends the zero time for "no end yet".
ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


class AlertStatus(str, Enum):
    firing = "firing"
    resolved = "resolved"


class _Wire(BaseModel):
    # Unknown keys are tolerated: newer Alertmanagers may add fields.
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookAlert(_Wire):
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime = ZERO_TIME
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


class WebhookPayload(_Wire):
    """What Alertmanager POSTs to a webhook receiver (``version`` "4")."""

    version: str
    groupKey: str = Field(min_length=1, max_length=4096)
    truncatedAlerts: int = Field(0, ge=0)
    status: AlertStatus
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[WebhookAlert]


class AlertState(BaseModel):
    """One alert of a group as last seen (by fingerprint)."""

    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""
    # Closed by reconciliation: Alertmanager no longer shows it as active (silenced/expired).
    gone: bool = False

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def firing(self) -> bool:
        return self.status is AlertStatus.firing and not self.gone


class GroupState(str, Enum):
    open = "open"
    resolved = "resolved"  # Alertmanager said so
    closed = "closed"      # reconciliation: nothing of it is active any more


class AlertGroup(BaseModel):
    """One alert group's thread and what we know about it (a row of ``alert_groups``)."""

    id: int = 0
    group_key: str
    channel_id: str
    root_id: str | None = None
    # Set when the group was folded into a storm thread instead of getting its own root.
    storm_id: int | None = None
    state: GroupState = GroupState.open
    severity: Severity = Severity.P3
    opened_at: datetime
    resolved_at: datetime | None = None
    acked_by: str | None = None
    acked_at: datetime | None = None
    escalated_at: datetime | None = None
    previous_id: int | None = None  # the thread this one follows (fired again after the window)
    previous_link: str | None = None  # permalink of that thread's root
    external_url: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    truncated: int = 0
    alerts: dict[str, AlertState] = Field(default_factory=dict)
    root_message: str = ""
    mentions: list[str] = Field(default_factory=list)

    @property
    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts.values() if a.firing]
