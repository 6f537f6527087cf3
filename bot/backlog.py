"""Accepted work not yet delivered to Mattermost: alert notifications in the inbox and posts in
the outbox. Shown by /readyz and exported as metrics, so an outage's backlog is visible."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class _Pending(Protocol):
    async def oldest_pending(self) -> float | None: ...


class Backlog:
    def __init__(self, *, inbox: Any = None, outbox: Any = None, clock: Callable[[], float] = time.time):
        self.inbox = inbox
        self.outbox = outbox
        self.clock = clock
        # The last snapshot: metrics are collected synchronously, so they read this.
        self.last: dict[str, Any] = {"alert_notifications": 0, "chat_posts": 0, "oldest_s": 0.0}

    async def snapshot(self) -> dict[str, Any]:
        alerts = await self.inbox.count("pending") if self.inbox is not None else 0
        posts = await self.outbox.pending_count() if self.outbox is not None else 0
        oldest = [t for t in [await _oldest(self.inbox), await _oldest(self.outbox)] if t is not None]
        age = round(max(self.clock() - min(oldest), 0.0), 1) if oldest else 0.0
        self.last = {"alert_notifications": alerts, "chat_posts": posts, "oldest_s": age}
        return self.last


async def _oldest(source: _Pending | None) -> float | None:
    return await source.oldest_pending() if source is not None else None
