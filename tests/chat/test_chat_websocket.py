"""The websocket supervisor's reconnect policy against a scripted loopback websocket server:
exponential backoff with jitter that resets after a good connection, and a peer that stops
answering pings being noticed through the heartbeat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web

from bot.chat import EventSupervisor


@dataclass
class Script:
    """One mode per connection, in order: refuse (close at the challenge), drop (accept, then
    close), silent (accept, then never pong), stay (accept and keep the line open)."""

    modes: list[str]
    default: str = "refuse"
    tokens: list[str] = field(default_factory=list)

    def next(self) -> str:
        return self.modes.pop(0) if self.modes else self.default


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script([])

    async def handler(request: web.Request) -> web.WebSocketResponse:
        mode = script.next()
        ws = web.WebSocketResponse(autoping=mode != "silent")
        await ws.prepare(request)
        challenge = json.loads((await ws.receive()).data)
        script.tokens.append(challenge["data"]["token"])
        if mode == "refuse":
            await ws.close()
            return ws
        await ws.send_str(json.dumps({"status": "OK", "seq_reply": challenge["seq"]}))
        await ws.send_str(json.dumps({"event": "hello", "data": {}, "seq": 0}))
        if mode == "drop":
            await ws.close()
            return ws
        async for msg in ws:  # "silent" sees the pings here and ignores them
            if msg.type == WSMsgType.CLOSE:
                break
        return ws

    app = web.Application()
    app.router.add_get("/api/v4/websocket", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield script, f"ws://127.0.0.1:{port}/api/v4/websocket"
    await runner.cleanup()


async def test_backoff_doubles_with_jitter_and_resets_after_a_good_connection(
        server: tuple[Script, str]) -> None:
    script, url = server
    script.modes = ["refuse", "refuse", "refuse", "drop", "refuse", "refuse"]
    delays: list[float] = []
    sup: EventSupervisor

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 6:
            await sup.stop()

    sup = EventSupervisor(url, "tok", "bot", backoff_base_s=0.5, backoff_max_s=1.5,
                          rng=lambda: 0.5, sleep=sleep)
    await asyncio.wait_for(sup.run(), 5)
    # 0.75 × min(cap, base × 2ⁿ); n back to 0 after the connection that worked
    assert delays == [0.375, 0.75, 1.125, 0.375, 0.75, 1.125]
    assert sup.drops == 6 and script.tokens == ["tok"] * 6


async def test_a_peer_that_stops_answering_pings_is_replaced(server: tuple[Script, str]) -> None:
    script, url = server
    script.modes = ["silent"]
    script.default = "stay"
    resynced = asyncio.Event()

    async def on_reconnect() -> None:
        resynced.set()

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    sup = EventSupervisor(url, "tok", "bot", heartbeat_s=0.05, on_reconnect=on_reconnect,
                          sleep=no_wait)
    runner = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(resynced.wait(), 5)
        assert sup.reconnects == 1 and len(script.tokens) == 2
    finally:
        await sup.stop()
        await asyncio.wait_for(runner, 5)
