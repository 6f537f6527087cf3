"""The durable inbox: every accepted webhook body is committed (synchronous=FULL) before the
2xx goes back, and marked done only after it was processed. A bot killed in between finds the
entry pending at its next start and processes it then.

The table lives in the store's inbox file (``Store.migrate(urgent=True)``): every write to it
goes through ``Store.execute_urgent``, so a webhook's commit never waits for a processing
transaction, and the ``done`` marks share the webhooks' commits. Reads go through the main
connection, which attaches that file read-only."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bot.backoff import Backoff
from bot.claims import renewing
from bot.store import Store

log = logging.getLogger(__name__)

MIGRATION = ("alerts-inbox-1", [
    """CREATE TABLE alert_inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at REAL NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX alert_inbox_pending ON alert_inbox(state, id)",
])


@dataclass(frozen=True)
class Entry:
    id: int
    received_at: float
    body: str
    attempts: int


class Inbox:
    def __init__(self, store: Store, *, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.backoff = backoff or Backoff()
        self.clock = clock

    async def migrate(self) -> None:
        await self.store.migrate(*MIGRATION, urgent=True)
        if self.store.writer is not None:
            await self._move_from_main()

    async def _move_from_main(self) -> None:
        """An upgrade from the one-file layout: the entries (pending ones above all) move to
        the inbox file with their ids, so new ids continue above them (groups remember the
        last entry applied, and an older id would be taken for a stale notification)."""
        old = await self.store.fetchone(
            "SELECT 1 FROM main.sqlite_master WHERE type='table' AND name='alert_inbox'")
        if old is None:
            return
        rows = [tuple(r) for r in await self.store.fetchall(
            "SELECT id, received_at, body, state, attempts, error FROM main.alert_inbox ORDER BY id")]
        await self.store.run_urgent(lambda db: db.executemany(
            "INSERT OR IGNORE INTO alert_inbox(id, received_at, body, state, attempts, error) "
            "VALUES (?, ?, ?, ?, ?, ?)", rows))
        await self.store.execute("DROP TABLE main.alert_inbox")  # after the copy is durable

    async def add(self, body: str) -> int:
        """Commit one webhook body; the caller answers 2xx only after this returns."""
        return await self.store.execute_urgent(  # the answer waits on this commit only
            "INSERT INTO alert_inbox(received_at, body) VALUES (?, ?)", (time.time(), body))

    async def pending(self, after_id: int = 0, limit: int = 500) -> list[Entry]:
        rows = await self.store.fetchall(
            "SELECT id, received_at, body, attempts FROM alert_inbox "
            "WHERE state='pending' AND id>? ORDER BY id LIMIT ?", (after_id, limit))
        return [Entry(r["id"], r["received_at"], r["body"], r["attempts"]) for r in rows]

    async def done(self, entry_id: int) -> None:
        # Nobody is answered on it: it rides with the next webhook's commit (Store.execute_soon).
        await self.store.execute_soon("UPDATE alert_inbox SET state='done', body='' WHERE id=?", (entry_id,))

    async def failed_attempt(self, entry_id: int, error: str) -> float | None:
        """Count a failed processing attempt: seconds until the next one, or None when the
        entry is given up on (older than the retry horizon; a 2xx was a promise, so never
        after a fixed number of tries)."""
        rows = await self.store.fetch_urgent(
            "UPDATE alert_inbox SET attempts=attempts+1, error=? WHERE id=? RETURNING attempts, received_at",
            (error[:500], entry_id))
        if not rows:
            return None
        attempts, received_at = rows[0]
        if self.backoff.expired(received_at, self.clock()):
            await self.store.execute_urgent("UPDATE alert_inbox SET state='failed' WHERE id=?", (entry_id,))
            return None
        return self.backoff.delay(attempts)

    async def give_up(self, entry_id: int, error: str) -> None:
        await self.store.execute_urgent("UPDATE alert_inbox SET state='failed', error=? WHERE id=?",
                                        (error[:500], entry_id))

    async def prune(self, older_than_s: float = 7 * 86400) -> int:
        """Forget processed entries after a while (their bodies are already dropped)."""
        deleted = await self.store.fetch_urgent(
            "DELETE FROM alert_inbox WHERE state='done' AND received_at < ? RETURNING id",
            (time.time() - older_than_s,))
        return len(deleted)

    async def oldest_pending(self) -> float | None:
        """When the oldest unprocessed notification was accepted (the backlog's age)."""
        row = await self.store.fetchone(
            "SELECT MIN(received_at) AS t FROM alert_inbox WHERE state='pending'")
        return row["t"] if row is not None and row["t"] is not None else None

    async def count(self, state: str = "pending") -> int:
        row = await self.store.fetchone("SELECT COUNT(*) AS n FROM alert_inbox WHERE state=?", (state,))
        return int(row["n"]) if row else 0

    async def is_pending(self, entry_id: int) -> bool:
        """Still to apply: not done or given up (by another replica, meanwhile)."""
        row = await self.store.fetchone("SELECT state FROM alert_inbox WHERE id=?", (entry_id,))
        return row is not None and row["state"] == "pending"


CLAIMS_MIGRATION = ("alerts-group-claims-1", [
    """CREATE TABLE alert_group_claims (
        group_key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until REAL NOT NULL
    )""",
])


@dataclass
class _Held:
    taken: asyncio.Future[bool]  # the store's answer to this replica's take
    count: int = 1  # this replica's blocks inside
    left: asyncio.Event = field(default_factory=asyncio.Event)  # set when count falls to 0

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.left.set()


class GroupClaims:
    """Which replica applies a group's notifications, until when. With several replicas on one
    PostgreSQL store every replica sees every pending entry (an HA pair notifies both, the
    Service balances retries): the claim makes one of them apply a group's entries, in order,
    and a replica that died holding it gives way once the claim lapses (``lease_s``)."""

    def __init__(self, store: Store, owner: str, *, lease_s: float = 20.0,
                 clock: Callable[[], float] | None = None):
        """``clock``: for tests; by default the store's (``Store.now``: the database server's)."""
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        self._held: dict[str, _Held] = {}  # the groups this replica holds (or is taking)

    async def migrate(self) -> None:
        await self.store.migrate(*CLAIMS_MIGRATION)

    async def take(self, group_key: str) -> bool:
        """Compare-and-set: a free group, a lapsed claim, or one this owner holds (a renewal)."""
        now = self.clock() if self.clock is not None else await self.store.now()
        async with self.store.transaction() as db:
            cur = await db.execute("INSERT OR IGNORE INTO alert_group_claims(group_key, owner, until) "
                                   "VALUES (?, ?, ?)", (group_key, self.owner, now + self.lease_s))
            if cur.rowcount == 1:
                return True
            cur = await db.execute("UPDATE alert_group_claims SET owner=?, until=? "
                                   "WHERE group_key=? AND (owner=? OR until<?)",
                                   (self.owner, now + self.lease_s, group_key, self.owner, now))
            return cur.rowcount == 1

    async def release(self, group_key: str) -> None:
        await self.store.execute("DELETE FROM alert_group_claims WHERE group_key=? AND owner=?",
                                 (group_key, self.owner))

    @asynccontextmanager
    async def holding(self, group_key: str) -> AsyncIterator[bool]:
        """Claimed for the block (False: another replica applies the group now), renewed while
        it runs (a diagnosis can outlast the lease), released at its end; a crash lets it lapse.
        Re-entrant within this replica: the worker applying a notification and the reconcile or
        escalation loop touching the same group share the claim, released by the last to leave."""
        held = self._held.get(group_key)
        if held is not None:  # this replica holds it, or is taking it right now
            if not await asyncio.shield(held.taken):
                yield False
                return
            held.count += 1
            try:
                yield True
            finally:
                held.leave()
            return
        held = self._held[group_key] = _Held(asyncio.get_running_loop().create_future())
        try:
            ok = await self.take(group_key)
        except BaseException:
            del self._held[group_key]
            held.taken.set_result(False)
            raise
        held.taken.set_result(ok)
        if not ok:
            del self._held[group_key]
            yield False
            return

        task = renewing(lambda: self.take(group_key), self.lease_s, f"alert group {group_key}")
        try:
            yield True
        finally:
            held.leave()
            await held.left.wait()  # others of this replica still inside keep it until they leave
            del self._held[group_key]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            try:
                await self.release(group_key)
            except Exception as exc:  # it lapses instead
                log.warning("releasing the claim on alert group %s failed: %s", group_key, exc)
