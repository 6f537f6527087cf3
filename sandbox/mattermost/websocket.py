"""`/api/v4/websocket`: authentication (header/cookie at upgrade, or the authentication_challenge
action), the `hello` event, event delivery from the hub, and the ping action."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from sandbox.mattermost.hub import SERVER_VERSION, Connection
from sandbox.mattermost.state import MattermostState


def _response(seq: Any, status: str = "OK", data: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> str:
    msg: dict[str, Any] = {"status": status, "seq_reply": seq}
    if data is not None:
        msg["data"] = data
    if error is not None:
        msg["error"] = error
    return json.dumps(msg)


async def _writer(conn: Connection) -> None:
    while True:
        msg = await conn.queue.get()
        if conn.ws.closed:
            return
        try:
            await conn.ws.send_str(msg)
        except (ConnectionError, RuntimeError):
            return


def make_handler(
    state: MattermostState, token_of: Callable[[web.Request], str]
) -> Callable[[web.Request], Awaitable[web.WebSocketResponse]]:
    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        state.hub.sockets.add(ws)
        conn: Connection | None = None
        writer: asyncio.Task[None] | None = None

        def start(user_id: str, first: str | None) -> Connection:
            nonlocal writer
            c = Connection(user_id=user_id, ws=ws)
            if first is not None:
                c.queue.put_nowait(first)  # the OK reply goes out before hello
            state.hub.register(c)
            writer = asyncio.create_task(_writer(c))
            return c

        user = state.user_for_token(token_of(request))
        if user is not None:
            conn = start(user.id, None)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                    seq, action, data = req.get("seq"), req.get("action"), req.get("data") or {}
                except (ValueError, AttributeError):
                    continue
                if action == "authentication_challenge":
                    if conn is not None:
                        continue  # already authenticated: the real server ignores it
                    challenger = state.user_for_token(str(data.get("token", "")))
                    if challenger is None:
                        await ws.close()  # the real server drops the connection on a bad token
                        break
                    conn = start(challenger.id, _response(seq))
                elif conn is None:
                    err = {
                        "id": "api.web_socket_router.not_authenticated.app_error",
                        "message": "No websocket authentication detected. Please log in and try again.",
                        "status_code": 401,
                    }
                    await ws.send_str(_response(seq, "FAIL", error=err))
                elif action == "ping":
                    pong = {"text": "pong", "version": SERVER_VERSION, "server_time": int(time.time() * 1000), "node_id": ""}
                    conn.queue.put_nowait(_response(seq, data=pong))
                else:  # user_typing, get_statuses, ...: acknowledged, nothing to do in the sandbox
                    conn.queue.put_nowait(_response(seq))
        finally:
            state.hub.sockets.discard(ws)
            if conn is not None:
                state.hub.unregister(conn)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        return ws

    return websocket
