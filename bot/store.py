"""Durable state in SQLite (aiosqlite). Each feature owns its tables and declares them with
``Store.migrate``; SQL stays plain so a PostgreSQL backend can implement the same methods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite


class Store:
    def __init__(self, db: aiosqlite.Connection):
        self.db = db
        # One writer at a time: a transaction spans several awaits.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> "Store":
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a webhook acknowledged with 2xx must survive a crash (nothing lost).
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)")
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
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            else:
                await self.db.execute("COMMIT")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write in its own transaction; returns lastrowid."""
        async with self.transaction() as db:
            cur = await db.execute(sql, params)
            return cur.lastrowid or 0

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        return await (await self.db.execute(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return list(await (await self.db.execute(sql, params)).fetchall())
