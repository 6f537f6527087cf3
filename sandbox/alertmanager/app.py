"""Alertmanager's HTTP API v2, the part a bot and a person use: ``GET/POST /api/v2/alerts``,
``GET/POST /api/v2/silences``, ``GET/DELETE /api/v2/silence/{id}``, ``GET /api/v2/status``
(https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml). Alerts come from the
platform's state (``rules.firing``) plus any pushed with POST, as Prometheus pushes them."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from sandbox.alertmanager.rules import Firing, firing
from sandbox.platform import Platform

RESOLVE_TIMEOUT = timedelta(minutes=5)  # Alertmanager's default resolve_timeout
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')


def _stamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("not a date-time")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


@dataclass
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: dict[str, str]) -> bool:
        got = labels.get(self.name, "")
        hit = re.fullmatch(self.value, got) is not None if self.is_regex else got == self.value
        return hit == self.is_equal

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}


def parse_filter(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if m is None:
        raise ValueError(f"bad matcher format: {text}")
    name, op, quoted, bare = m.groups()
    value = bytes(quoted, "utf-8").decode("unicode_escape") if quoted is not None else bare
    return Matcher(name, value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    updated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def state(self, now: datetime) -> str:
        return "pending" if now < self.starts_at else "active" if now < self.ends_at else "expired"

    def wire(self, now: datetime) -> dict[str, Any]:
        return {"id": self.id, "status": {"state": self.state(now)}, "updatedAt": _stamp(self.updated_at),
                "matchers": [m.wire() for m in self.matchers], "startsAt": _stamp(self.starts_at),
                "endsAt": _stamp(self.ends_at), "createdBy": self.created_by, "comment": self.comment}


class AlertmanagerState:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.silences: dict[str, Silence] = {}
        self.started: dict[str, datetime] = {}  # fingerprint → startsAt, stable while it fires
        self.pushed: dict[str, tuple[Firing, datetime, datetime]] = {}  # fingerprint → alert, starts, ends

    def alerts(self, now: datetime) -> list[dict[str, Any]]:
        current: dict[str, tuple[Firing, datetime, datetime]] = {}
        for alert in firing(self.platform, now):
            fp = fingerprint(alert.labels)
            current[fp] = (alert, self.started.setdefault(fp, now), now + RESOLVE_TIMEOUT)
        for fp in [fp for fp in self.started if fp not in current]:
            del self.started[fp]  # resolved: a new episode gets a new startsAt
        for fp, (alert, starts, ends) in list(self.pushed.items()):
            if ends <= now:
                del self.pushed[fp]
            else:
                current.setdefault(fp, (alert, starts, ends))
        out = []
        for fp, (alert, starts, ends) in current.items():
            silenced_by = [s.id for s in self.silences.values()
                           if s.state(now) == "active" and all(m.matches(alert.labels) for m in s.matchers)]
            out.append({"labels": alert.labels, "annotations": alert.annotations,
                        "startsAt": _stamp(starts), "endsAt": _stamp(ends), "updatedAt": _stamp(now),
                        "generatorURL": "", "fingerprint": fp, "receivers": [{"name": "sop-bot"}],
                        "status": {"state": "suppressed" if silenced_by else "active",
                                   "silencedBy": silenced_by, "inhibitedBy": []}})
        return sorted(out, key=lambda a: (a["labels"].get("alertname", ""), a["fingerprint"]))


def _bool(request: web.Request, name: str) -> bool:
    return request.query.get(name, "true").lower() != "false"


def _bad(message: str) -> web.Response:
    return web.json_response(message, status=400)  # Alertmanager answers a JSON string


def make_app(state: AlertmanagerState) -> web.Application:
    app = web.Application()
    now = lambda: datetime.now(timezone.utc)  # noqa: E731

    async def get_alerts(request: web.Request) -> web.Response:
        try:
            matchers = [parse_filter(f) for f in request.query.getall("filter", [])]
        except ValueError as exc:
            return _bad(str(exc))
        want_active, want_silenced = _bool(request, "active"), _bool(request, "silenced")
        alerts = [a for a in state.alerts(now()) if all(m.matches(a["labels"]) for m in matchers)
                  and (want_silenced if a["status"]["silencedBy"] else want_active)]
        return web.json_response(alerts)

    async def post_alerts(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            t = now()
            for item in body:
                labels = {str(k): str(v) for k, v in item["labels"].items()}
                starts = _parse_time(item["startsAt"]) if item.get("startsAt") else t
                ends = _parse_time(item["endsAt"]) if item.get("endsAt") else t + RESOLVE_TIMEOUT
                state.pushed[fingerprint(labels)] = (Firing(labels, dict(item.get("annotations") or {})),
                                                     starts, ends)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _bad(f"invalid alerts: {exc}")
        return web.Response(status=200)

    async def get_silences(request: web.Request) -> web.Response:
        t = now()
        return web.json_response([s.wire(t) for s in state.silences.values()])

    async def post_silence(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            matchers = [Matcher(str(m["name"]), str(m["value"]), bool(m.get("isRegex", False)),
                                bool(m.get("isEqual", True))) for m in body["matchers"]]
            starts, ends = _parse_time(body["startsAt"]), _parse_time(body["endsAt"])
            created_by, comment = str(body["createdBy"]), str(body["comment"])
        except (ValueError, KeyError, TypeError) as exc:
            return _bad(f"invalid silence: {exc}")
        if not matchers:
            return _bad("silence invalid: at least one matcher required")
        if ends <= starts:
            return _bad("silence invalid: end time must not be before start time")
        sid = str(body.get("id") or uuid.uuid4())
        state.silences[sid] = Silence(sid, matchers, starts, ends, created_by, comment)
        return web.json_response({"silenceID": sid})

    async def get_silence(request: web.Request) -> web.Response:
        silence = state.silences.get(request.match_info["id"])
        if silence is None:
            return web.Response(status=404)
        return web.json_response(silence.wire(now()))

    async def delete_silence(request: web.Request) -> web.Response:
        silence = state.silences.get(request.match_info["id"])
        if silence is None:
            return web.Response(status=404)
        t = now()
        silence.ends_at = min(silence.ends_at, t)  # expired, as Alertmanager does, not forgotten
        silence.updated_at = t
        return web.Response(status=200)

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"cluster": {"status": "disabled", "peers": []},
                                  "versionInfo": {"version": "0.27.0-sandbox"},
                                  "config": {"original": ""}, "uptime": _stamp(now())})

    app.router.add_get("/api/v2/alerts", get_alerts)
    app.router.add_post("/api/v2/alerts", post_alerts)
    app.router.add_get("/api/v2/silences", get_silences)
    app.router.add_post("/api/v2/silences", post_silence)
    app.router.add_get("/api/v2/silence/{id}", get_silence)
    app.router.add_delete("/api/v2/silence/{id}", delete_silence)
    app.router.add_get("/api/v2/status", status)
    return app
