"""Durable state in SQLite (aiosqlite). Each feature owns its tables and declares them with
``Store.migrate``; SQL stays plain so a PostgreSQL backend can implement the same methods."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
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


class Store:
    # Not ready for this long after a commit failed for want of storage: with a full disk, a
    # tiny probe write can still succeed while every webhook's insert fails.
    failure_window_s = 30.0

    def __init__(self, db: aiosqlite.Connection):
        self.db = db
        # One writer at a time: a transaction spans several awaits.
        self._lock = asyncio.Lock()
        self._failure: tuple[float, str] | None = None  # (monotonic time, reason) of the last one

    @classmethod
    async def open(cls, path: Path | str) -> "Store":
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_cannot_open(path, exc)) from None
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: a webhook acknowledged with 2xx must survive a crash (nothing lost).
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)")
            await db.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at REAL)")
        except sqlite3.Error as exc:
            await db.close()  # its thread would keep the process alive after the error
            raise StoreError(_cannot_open(path, exc)) from None
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

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
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                await self.db.execute("COMMIT")
            except BaseException as exc:
                self._note(exc)
                if self.db.in_transaction:  # a failed COMMIT may have rolled back already
                    await self.db.execute("ROLLBACK")
                raise

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

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        return await (await self.db.execute(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return list(await (await self.db.execute(sql, params)).fetchall())


def _cannot_open(path: Path | str, exc: BaseException) -> str:
    where = Path(path).parent
    hint = ("; its directory is not writable (read-only filesystem?): SQLite writes the database "
            "and its -wal/-shm files there" if where.exists() and not os.access(where, os.W_OK) else "")
    return f"cannot open the database {path} (store.path): {exc}{hint}"
