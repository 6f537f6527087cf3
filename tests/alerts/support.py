"""Test helpers for the alert pipeline: a recorder of the engine's own ``Chat`` port (unit tests
only; the end-to-end tests use the sandbox Mattermost), payload builders and a hand-driven clock."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.models import Finding, Report, Severity, Status
from bot.registry import SOP, K8sName, Registry, SOPParams, sop

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)  # a Wednesday


@dataclass
class Ref:
    id: str


@dataclass
class Message:
    id: str
    channel_id: str
    text: str
    root_id: str | None
    props: dict[str, Any] | None
    edits: list[str] = field(default_factory=list)
    urgent: bool = False


class RecordingChat:
    """Implements ``bot.ports.Chat`` (post, edit) plus channel_id, keeping every message."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self.fail_posts = 0

    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None, urgent: bool = False) -> Ref:
        if self.fail_posts:
            self.fail_posts -= 1
            raise ConnectionError("chat down")
        pid = f"p{next(self._ids)}"
        self.messages[pid] = Message(pid, channel_id, message, root_id, props, urgent=urgent)
        return Ref(pid)

    async def find_post(self, channel_id: str, key: str, *, since_ms: int,
                        root_id: str | None = None) -> Ref | None:
        for m in self.messages.values():
            if m.channel_id == channel_id and (m.props or {}).get("sopbot_key") == key \
                    and (root_id is None or m.root_id == root_id):
                return Ref(m.id)
        return None

    async def edit(self, post_id: str, message: str) -> None:
        m = self.messages[post_id]
        m.edits.append(m.text)
        m.text = message

    async def channel_id(self, name: str) -> str:
        return f"ch-{name}"

    @property
    def roots(self) -> list[Message]:
        return [m for m in self.messages.values() if m.root_id is None]

    def replies(self, root_id: str) -> list[Message]:
        return [m for m in self.messages.values() if m.root_id == root_id]


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def alert(name: str, status: str = "firing", fp: str | None = None, starts: datetime = T0,
          **labels: str) -> dict[str, Any]:
    labels = {"alertname": name, **labels}
    return {
        "status": status, "labels": labels,
        "annotations": {"summary": f"{name} on {labels.get('node') or labels.get('pod') or 'cluster'}"},
        "startsAt": starts.isoformat(),
        "endsAt": (starts + timedelta(minutes=5)).isoformat() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": fp or format(abs(hash(tuple(sorted(labels.items())))), "016x")[:16],
    }


def payload(group: str, alerts: list[dict[str, Any]], status: str | None = None,
            **group_labels: str) -> dict[str, Any]:
    if status is None:
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4", "groupKey": f'{{}}:{{group="{group}"}}', "truncatedAlerts": 0,
        "status": status, "receiver": "sopbot", "groupLabels": group_labels or {"group": group},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.example:9093",
        "alerts": alerts,
    }


class NodeParams(SOPParams):
    node: K8sName | None = None


class DiskParams(SOPParams):
    node: K8sName


@dataclass
class FakeHandlers:
    """A registry with two SOPs whose findings the test controls (a real registry, fake world)."""

    registry: Registry = field(default_factory=Registry)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    def __post_init__(self) -> None:
        @sop("node-status", title="Node status", section="2.2", severity=Severity.P2,
             alerts=("NodeNotReady",), registry=self.registry)
        async def node_status(ctx: Any, params: NodeParams) -> list[Finding]:
            return self._findings("node-status", params)

        @sop("node-disk", title="Node disk", section="2.2", severity=Severity.P3,
             alerts=("NodeDiskPressure", "NodeDiskCritical"), registry=self.registry)
        async def node_disk(ctx: Any, params: DiskParams) -> list[Finding]:
            return self._findings("node-disk", params)

    def _findings(self, sop_id: str, params: SOPParams) -> list[Finding]:
        self.runs.append((sop_id, params.model_dump(exclude_none=True)))
        return self.findings.get(sop_id, [Finding(status=Status.crit, target="worker-1",
                                                  summary="disk 91% full")])

    async def run(self, s: SOP, params: SOPParams) -> Report:
        from bot.engine import run_sop
        from bot.context import HandlerContext
        if self.gate is not None:
            await self.gate.wait()
        return await run_sop(s, HandlerContext(), params)
