"""Claims: which replica works on a piece of work, until when. With several replicas on one
store (PostgreSQL), the one whose compare-and-set succeeded works on it and the others leave it
alone until its lease lapses (its owner died without releasing it). The owner is a replica's
identity: its pod name (``HOSTNAME``), pid and a random suffix, unique per process start."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

from bot.store import Store

log = logging.getLogger(__name__)


def replica_identity() -> str:
    """This process's claim owner: readable in the store (the pod), unique per start."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def renewing(take: Callable[[], Awaitable[bool]], lease_s: float, what: str) -> asyncio.Task[None]:
    """A task renewing a held claim every third of its lease, until cancelled (the holder's
    block ends). A failed renewal is logged and the work goes on: the claim may lapse."""
    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                if not await take():
                    log.error("claim on %s lost to another replica while working on it", what)
            except Exception as exc:  # the store down
                log.warning("renewing the claim on %s failed: %s", what, exc)

    return asyncio.create_task(renew(), name=f"claim:{what[:40]}")


CLAIMS_MIGRATION = ("approvals-claims-1", [
    # Named for its first users (a proposal's execution, a procedure run's steps); the chat
    # outbox's delivery is claimed here too (kind 'chat-outbox').
    """CREATE TABLE approval_claims (
        kind TEXT NOT NULL, id INTEGER NOT NULL, owner TEXT NOT NULL, until TEXT NOT NULL,
        PRIMARY KEY (kind, id))""",
])


class Claims:
    """Compare-and-set ownership of a piece of work, with a lease: ``claim`` succeeds for a
    free item, one whose claim lapsed, or one this owner holds (a renewal)."""

    def __init__(self, store: Store, owner: str, lease_s: float = 60.0):
        self.store = store
        self.owner = owner
        self.lease_s = lease_s

    async def migrate(self) -> None:
        await self.store.migrate(*CLAIMS_MIGRATION)

    async def claim(self, kind: str, item: int, now: datetime) -> bool:
        until = (now + timedelta(seconds=self.lease_s)).astimezone(timezone.utc).isoformat()
        stamp = now.astimezone(timezone.utc).isoformat()
        async with self.store.transaction() as db:
            cur = await db.execute("INSERT OR IGNORE INTO approval_claims (kind, id, owner, until) VALUES (?,?,?,?)",
                                   (kind, item, self.owner, until))
            if cur.rowcount == 1:
                return True
            cur = await db.execute(
                "UPDATE approval_claims SET owner=?, until=? WHERE kind=? AND id=? AND (owner=? OR until<?)",
                (self.owner, until, kind, item, self.owner, stamp))
            return cur.rowcount == 1

    @asynccontextmanager
    async def holding(self, kind: str, item: int, clock: Callable[[], datetime]) -> AsyncIterator[bool]:
        """Claim for the block (False: someone else works on it), renewed while it runs,
        released at its end; a crash leaves the claim to lapse."""
        if not await self.claim(kind, item, clock()):
            yield False
            return

        task = renewing(lambda: self.claim(kind, item, clock()), self.lease_s, f"{kind} {item}")
        try:
            yield True
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.release(kind, item)

    async def release(self, kind: str, item: int) -> None:
        await self.store.execute("DELETE FROM approval_claims WHERE kind=? AND id=? AND owner=?",
                                 (kind, item, self.owner))

    async def live(self, kind: str, item: int, now: datetime) -> bool:
        """Someone (this owner included) holds a claim that has not lapsed."""
        row = await self.store.fetchone("SELECT until FROM approval_claims WHERE kind=? AND id=?", (kind, item))
        return row is not None and row["until"] >= now.astimezone(timezone.utc).isoformat()

    async def held_elsewhere(self, kind: str, item: int, now: datetime) -> bool:
        """Another live owner holds it (its claim has not lapsed)."""
        row = await self.store.fetchone("SELECT owner, until FROM approval_claims WHERE kind=? AND id=?",
                                        (kind, item))
        return (row is not None and row["owner"] != self.owner
                and row["until"] >= now.astimezone(timezone.utc).isoformat())
