"""Prometheus HTTP API client (``/api/v1/query``): instant queries as labelled samples.
Errors become ``SourceError`` like every other client: the API's own error text for a bad query,
"unreachable" / "timed out" / "HTTP nnn" otherwise."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from bot.clients.errors import SourceError

SOURCE = "prometheus"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QueryData(_Wire):
    resultType: Literal["vector", "scalar", "matrix", "string"]
    result: Any


class QueryResponse(_Wire):
    """The API envelope: ``data`` on success, ``errorType``/``error`` on failure."""

    status: Literal["success", "error"]
    data: QueryData | None = None
    errorType: str = ""
    error: str = ""
    warnings: list[str] = Field(default_factory=list)


class VectorItem(_Wire):
    metric: dict[str, str] = Field(default_factory=dict)
    value: tuple[float, str]


class Sample(BaseModel):
    """One element of an instant vector (a scalar is one sample without labels)."""

    labels: dict[str, str] = Field(default_factory=dict)
    value: float
    timestamp: float = 0.0

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (for label matchers from config)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusClient:
    def __init__(self, url: str, *, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # The URL as it may appear in findings: without user:password.
        self.display_url = str(URL(self.url).with_user(None))
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:  # created in the running loop, on first use
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def query(self, promql: str) -> list[Sample]:
        """An instant query now; a vector is its samples, a scalar one unlabelled sample."""
        # The server-side timeout stops the evaluation too when we give up.
        params = {"query": promql, "timeout": f"{self.timeout_s:g}s"}
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session().post(f"{self.url}/api/v1/query", data=params) as resp:
                    status = resp.status
                    body = await resp.read()
        except TimeoutError:
            raise SourceError(SOURCE, f"{self.display_url} timed out after {self.timeout_s:g}s") from None
        except aiohttp.ClientConnectionError as exc:
            raise SourceError(SOURCE, f"{self.display_url} unreachable ({exc.__class__.__name__})") from None
        except aiohttp.ClientError as exc:
            raise SourceError(SOURCE, f"{self.display_url}: {exc.__class__.__name__}") from None
        try:
            answer = QueryResponse.model_validate_json(body)
        except ValidationError:
            # Not the API's JSON: a proxy's error page, a wrong URL...
            raise SourceError(SOURCE, f"{self.display_url} answered HTTP {status} without a "
                                      "Prometheus API response", status) from None
        if answer.status == "error":
            raise SourceError(SOURCE, f"query failed ({answer.errorType}): {answer.error}", status)
        if status >= 400 or answer.data is None:
            raise SourceError(SOURCE, f"{self.display_url} answered HTTP {status}", status)
        return _samples(answer.data)


def _samples(data: QueryData) -> list[Sample]:
    try:
        if data.resultType == "vector":
            items = [VectorItem.model_validate(i) for i in data.result or []]
            return [Sample(labels=i.metric, value=float(i.value[1]), timestamp=i.value[0]) for i in items]
        if data.resultType == "scalar":
            ts, value = data.result
            return [Sample(value=float(value), timestamp=float(ts))]
    except (ValidationError, ValueError, TypeError):
        raise SourceError(SOURCE, f"unexpected {data.resultType} result in the query answer") from None
    raise SourceError(SOURCE, f"query returned a {data.resultType}; an instant vector or scalar was expected")
