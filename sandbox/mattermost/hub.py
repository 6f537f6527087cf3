"""WebSocket event fan-out: one queue per authenticated connection, events in the real envelope
with a per-connection `seq` (0 is always `hello`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.mattermost.ids import new_id

SERVER_VERSION = "9.11.0.9.11.0.sandbox.sandbox.false"


@dataclass
class Connection:
    user_id: str
    ws: web.WebSocketResponse
    connection_id: str = field(default_factory=new_id)
    seq: int = 0
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def enqueue_event(self, event: str, data: dict[str, Any], broadcast: dict[str, Any]) -> None:
        msg = {"event": event, "data": data, "broadcast": broadcast, "seq": self.seq}
        self.seq += 1
        self.queue.put_nowait(json.dumps(msg))


def broadcast(user_id: str = "", channel_id: str = "", team_id: str = "") -> dict[str, Any]:
    return {"omit_users": None, "user_id": user_id, "channel_id": channel_id, "team_id": team_id}


@dataclass
class Hub:
    connections: list[Connection] = field(default_factory=list)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)  # incl. unauthenticated

    def register(self, conn: Connection) -> None:
        self.connections.append(conn)
        conn.enqueue_event(
            "hello",
            {"server_version": SERVER_VERSION, "connection_id": conn.connection_id},
            broadcast(user_id=conn.user_id),
        )

    def unregister(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)

    def publish(self, event: str, data: dict[str, Any], bc: dict[str, Any], recipients: Iterable[str]) -> None:
        wanted = set(recipients)
        for conn in list(self.connections):
            if conn.user_id in wanted:
                conn.enqueue_event(event, data, bc)

    def connected_users(self) -> list[str]:
        return [c.user_id for c in self.connections]

    async def close_all(self) -> None:
        """Server-side close of every socket (what clients see when Mattermost restarts)."""
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server going away")
        self.connections.clear()
