"""Durable state in SQLite (aiosqlite). Each feature owns its tables and declares them with
``Store.migrate``; SQL stays plain so a PostgreSQL backend can implement the same methods."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

# Primary result codes that mean "this store cannot commit" (not a bug in one statement):
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_STORAGE_FAILURES = {8, 10, 11, 13, 14, 26}


class StoreError(Exception):
    """The store cannot be opened; the message is one line for the operator."""


class WriteLock:
    """One writer at a time, and a writer someone is waiting on (``urgent``: a webhook's 2xx)
    goes ahead of the queued background transactions instead of behind all of them."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool = False) -> None:
        if not self._held:
            self._held = True
            return
        fut = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed the lock as it was cancelled
                self.release()
            elif fut in queue:
                queue.remove(fut)
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock passes on, still held
                    return
        self._held = False


class Store:
    # Not ready for this long after a commit failed for want of storage: with a full disk, a
    # tiny probe write can still succeed while every webhook's insert fails.
    failure_window_s = 30.0

    def __init__(self, db: aiosqlite.Connection, writer: aiosqlite.Connection | None = None):
        self.db = db
        # Urgent writes have a connection (and so a thread) of their own: they never queue
        # behind the reads the background work sends to ``db``. The lock keeps them from
        # contending with ``db``'s writes inside SQLite (whose busy wait sleeps in steps of ms).
        self.writer = writer or db
        # One writer at a time: a transaction spans several awaits.
        self._lock = WriteLock()
        self._urgent: list[tuple[str, Sequence[Any], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failure: tuple[float, str] | None = None  # (monotonic time, reason) of the last one

    @classmethod
    async def open(cls, path: Path | str) -> "Store":
        memory = str(path) == ":memory:"
        opened: list[aiosqlite.Connection] = []
        try:
            if not memory:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            for _ in range(1 if memory else 2):  # ":memory:" twice would be two databases
                db = await aiosqlite.connect(str(path), isolation_level=None)
                opened.append(db)
                db.row_factory = aiosqlite.Row
                await db.execute("PRAGMA journal_mode=WAL")
                # FULL: a webhook acknowledged with 2xx must survive a crash (nothing lost).
                await db.execute("PRAGMA synchronous=FULL")
                await db.execute("PRAGMA busy_timeout=5000")
            db = opened[0]
            await db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)")
            await db.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at REAL)")
        except (OSError, sqlite3.Error) as exc:
            for db in opened:  # their threads would keep the process alive after the error
                await db.close()
            raise StoreError(_cannot_open(path, exc)) from None
        return cls(opened[0], opened[-1])

    @property
    def connections(self) -> tuple[aiosqlite.Connection, ...]:
        return (self.db,) if self.writer is self.db else (self.db, self.writer)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        for db in self.connections:
            await db.close()

    async def migrate(self, name: str, statements: Iterable[str]) -> None:
        """Run a feature's DDL once, by name."""
        async with self.transaction():
            row = await (await self.db.execute("SELECT 1 FROM migrations WHERE name=?", (name,))).fetchone()
            if row is None:
                for sql in statements:
                    await self.db.execute(sql)
                await self.db.execute("INSERT INTO migrations(name) VALUES (?)", (name,))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._lock.acquire()
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                await self.db.execute("COMMIT")
            except BaseException as exc:
                self._note(exc)
                if self.db.in_transaction:  # a failed COMMIT may have rolled back already
                    await self.db.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()

    def _note(self, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.Error) and (exc.sqlite_errorcode or 0) & 0xFF in _STORAGE_FAILURES:
            self._failure = (time.monotonic(), f"the store cannot commit: {exc}")

    async def problem(self) -> str | None:
        """None when the store can commit (for /readyz), else why not: a storage failure of the
        last ``failure_window_s``, or a probe write failing now."""
        if self._failure and time.monotonic() - self._failure[0] < self.failure_window_s:
            return self._failure[1]
        try:
            async with self.transaction() as db:
                await db.execute("INSERT OR REPLACE INTO store_probe(id, at) VALUES (1, ?)", (time.time(),))
        except sqlite3.Error as exc:
            return f"the store cannot commit: {exc}"
        return None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write in its own transaction; returns lastrowid."""
        async with self.transaction() as db:
            cur = await db.execute(sql, params)
            return cur.lastrowid or 0

    async def execute_urgent(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write someone is waiting on (a webhook's 2xx), durable when this returns; returns
        lastrowid. It goes ahead of queued transactions, on ``writer``, and the urgent writes
        that arrive meanwhile share its commit (one fsync): the wait is about one commit, not
        one per write queued before it. A failing statement fails its whole batch."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._urgent.append((sql, params, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_urgent(), name="store-urgent")
        return await fut

    async def _flush_urgent(self) -> None:
        db = self.writer
        while self._urgent:
            await self._lock.acquire(urgent=True)
            batch, self._urgent = self._urgent, []
            try:
                await db.execute("BEGIN IMMEDIATE")
                rowids = [(await db.execute(sql, params)).lastrowid or 0 for sql, params, _ in batch]
                await db.execute("COMMIT")
            except Exception as exc:
                self._note(exc)
                try:
                    if db.in_transaction:
                        await db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._lock.release()
            for (*_, fut), rowid in zip(batch, rowids):
                if not fut.done():
                    fut.set_result(rowid)

    # Cursors closed at once: an open statement pins its connection to an old snapshot, and
    # that connection's next BEGIN IMMEDIATE, after the other one committed, would be "locked".
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())


def _cannot_open(path: Path | str, exc: BaseException) -> str:
    where = Path(path).parent
    hint = ("; its directory is not writable (read-only filesystem?): SQLite writes the database "
            "and its -wal/-shm files there" if where.exists() and not os.access(where, os.W_OK) else "")
    return f"cannot open the database {path} (store.path): {exc}{hint}"
