"""Events of an object or a namespace in a time window: the runbook's ``kubectl describe`` step.

``involvedObject.*`` field selectors narrow the list on the server; the answer is newest first
and deduplicated by reason (the newest of each reason kept, counts summed), so a handler quotes
the distinct things that happened, not a page of repeats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from bot.clients.kube import KubeClient


class Event(BaseModel):
    reason: str
    message: str
    type: str = "Normal"  # Normal | Warning
    count: int = 1
    last_seen: datetime | None = None
    component: str = ""
    object: str = ""  # kind/name of the involved object
    # Write order (resourceVersion) breaks ties between events stamped in the same second.
    sequence: int = 0

    @property
    def warning(self) -> bool:
        return self.type == "Warning"


def _time(stamp: Any) -> datetime | None:
    if not stamp or not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _parse(item: dict[str, Any]) -> Event:
    # events.k8s.io writes eventTime/series; core v1 lastTimestamp/count: read both.
    series = item.get("series") or {}
    seen = (_time(series.get("lastObservedTime")) or _time(item.get("lastTimestamp"))
            or _time(item.get("eventTime")) or _time(item.get("firstTimestamp"))
            or _time((item.get("metadata") or {}).get("creationTimestamp")))
    obj = item.get("involvedObject") or {}
    source = item.get("source") or {}
    return Event(reason=str(item.get("reason") or ""), message=str(item.get("message") or "").strip(),
                 type=str(item.get("type") or "Normal"),
                 count=int(series.get("count") or item.get("count") or 1), last_seen=seen,
                 component=str(source.get("component") or item.get("reportingComponent") or ""),
                 object=f"{obj.get('kind', '')}/{obj.get('name', '')}".strip("/"),
                 sequence=_int((item.get("metadata") or {}).get("resourceVersion")))


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def selector(kind: str | None = None, name: str | None = None, namespace: str | None = None,
             uid: str | None = None) -> str | None:
    parts = [f"involvedObject.{k}={v}" for k, v in (("kind", kind), ("name", name),
                                                     ("namespace", namespace), ("uid", uid)) if v]
    return ",".join(parts) or None


def newest_by_reason(events: list[Event], window: timedelta | None = None,
                     now: datetime | None = None) -> list[Event]:
    """Newest first, one per (reason, object), counts summed, older than ``window`` dropped."""
    now = now or datetime.now(timezone.utc)
    if window is not None:
        events = [e for e in events if e.last_seen is None or e.last_seen >= now - window]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    events = sorted(events, key=lambda e: (e.last_seen or oldest, e.sequence), reverse=True)
    kept: dict[tuple[str, str], Event] = {}
    for e in events:
        key = (e.reason, e.object)
        if key in kept:
            kept[key] = kept[key].model_copy(update={"count": kept[key].count + e.count})
        else:
            kept[key] = e
    return list(kept.values())


async def events(kube: "KubeClient", namespace: str | None = None, *, kind: str | None = None,
                 name: str | None = None, uid: str | None = None, window: timedelta | None = timedelta(hours=1),
                 warnings_only: bool = False, limit: int = 500) -> list[Event]:
    """The events of one object (``kind``/``name`` in ``namespace``) or of a whole namespace
    (cluster-wide when ``namespace`` is None), newest first, one per reason."""
    field = selector(kind, name, namespace if kind or name else None, uid)
    if warnings_only:
        field = ",".join(p for p in (field, "type=Warning") if p)
    items = await kube.list("v1", "events", namespace, field_selector=field, limit=limit)
    return newest_by_reason([_parse(i) for i in items], window)
