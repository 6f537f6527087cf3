"""Shared fixtures: the sandbox platform and a bot running against it, both in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sandbox.runner import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator["Sandbox"]:
    """A healthy platform; tests break it with ``await sandbox.apply("vault-sealed")``."""
    from sandbox.runner import Sandbox

    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        yield sb


@pytest.fixture
async def bot(sandbox):
    """The bot (``bot.runtime.Runtime``) running against ``sandbox`` with its generated config."""
    from bot.runtime import Runtime

    runtime = Runtime(sandbox.settings())
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (tests/postgres.py), started at the first test that needs it."""
    from tests.postgres import server

    with server() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path):
    """Opens the test's store, on each backend in turn; again for a reopen (same file or database)."""
    from bot.store import Store

    if request.param == "sqlite":
        async def opener():
            return await Store.open(tmp_path / "bot.db")
        return opener
    from bot.store_pg import PgStore
    from tests.postgres import new_database

    url = await new_database(request.getfixturevalue("postgres_server"))

    async def opener_pg():
        return await PgStore.open(url, sslmode="disable")
    return opener_pg
