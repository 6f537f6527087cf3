"""Helpers to run the sandbox Mattermost on a free loopback port and point the real driver at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from mattermostautodriver import AsyncTypedDriver

from sandbox.mattermost.server import make_app
from sandbox.mattermost.state import MattermostState


@dataclass
class Served:
    state: MattermostState
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def driver_options(self, username: str, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "url": self.host,
            "port": self.port,
            "scheme": "http",
            "token": self.state.act_as(username),
            "max_retries": 0,
        }
        opts.update(extra)
        return opts

    def driver(self, username: str, **extra: Any) -> AsyncTypedDriver:
        """An unmodified AsyncTypedDriver holding `username`'s token (call `await d.login()`)."""
        return AsyncTypedDriver(self.driver_options(username, **extra))


@asynccontextmanager
async def serve(state: MattermostState, host: str = "127.0.0.1") -> AsyncIterator[Served]:
    """Serve `make_app(state)` on host:0 and set `state.site_url` to the bound address."""
    runner = web.AppRunner(make_app(state))
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.site_url = f"http://{host}:{port}"
    try:
        yield Served(state, host, port)
    finally:
        await runner.cleanup()


@dataclass
class FakeClock:
    """A clock tests advance by hand (trigger and response_url expiry, rate-limit refill)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
