"""Alertmanager API v2 client (``/api/v2/alerts``, ``/api/v2/silences``, ``/api/v2/status``).
Errors become ``SourceError`` like every other client; models cover the fields we read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.clients.errors import SourceError


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AlertStatusV2(_Wire):
    state: str  # active | suppressed | unprocessed
    silencedBy: list[str] = Field(default_factory=list)
    inhibitedBy: list[str] = Field(default_factory=list)


class GettableAlert(_Wire):
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime
    updatedAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str
    status: AlertStatusV2


class SilenceMatcher(_Wire):
    name: str
    value: str
    isRegex: bool = False
    isEqual: bool = True


class AlertmanagerClient:
    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SourceError("alertmanager", f"{method} {path}: {exc.__class__.__name__}") from None
        if resp.status_code >= 400:
            raise SourceError("alertmanager", f"{method} {path}: HTTP {resp.status_code}",
                              resp.status_code)
        return resp.json() if resp.content else None

    async def alerts(self, *, active: bool = True, silenced: bool = True, inhibited: bool = True,
                     unprocessed: bool = True, filters: list[str] | None = None) -> list[GettableAlert]:
        params: list[tuple[str, str]] = [("active", str(active).lower()),
                                         ("silenced", str(silenced).lower()),
                                         ("inhibited", str(inhibited).lower()),
                                         ("unprocessed", str(unprocessed).lower())]
        params += [("filter", f) for f in filters or []]
        data = await self._call("GET", "/api/v2/alerts", params=params)
        try:
            return [GettableAlert.model_validate(a) for a in data or []]
        except ValidationError as exc:
            raise SourceError("alertmanager", f"unexpected /api/v2/alerts answer: {exc.errors()[0]['loc']}") from None

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Push alerts as Prometheus does (tests, benchmarks)."""
        await self._call("POST", "/api/v2/alerts", json=alerts)

    async def create_silence(self, matchers: list[SilenceMatcher], starts_at: datetime,
                             ends_at: datetime, created_by: str, comment: str) -> str:
        body = {"matchers": [m.model_dump() for m in matchers], "startsAt": starts_at.isoformat(),
                "endsAt": ends_at.isoformat(), "createdBy": created_by, "comment": comment}
        data = await self._call("POST", "/api/v2/silences", json=body)
        return str(data["silenceID"])

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/api/v2/status") or {})
