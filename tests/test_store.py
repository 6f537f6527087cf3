"""The store on each backend (``open_store``: SQLite, then a real PostgreSQL server)."""

import asyncio

import pytest


async def test_migrations_run_once_and_data_survives_reopen(open_store):
    store = await open_store()
    ddl = ["CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"]
    await store.migrate("t-1", ddl)
    await store.migrate("t-1", ddl)  # a second run would fail on CREATE TABLE
    await store.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
    await store.close()
    store = await open_store()
    row = await store.fetchone("SELECT v FROM t WHERE k=?", ("a",))
    assert row["v"] == "1"
    await store.close()


async def test_a_failed_transaction_leaves_nothing(open_store):
    store = await open_store()
    await store.migrate("t-1", ["CREATE TABLE t (k TEXT PRIMARY KEY)"])
    with pytest.raises(RuntimeError):
        async with store.transaction() as db:
            await db.execute("INSERT INTO t VALUES ('x')")
            raise RuntimeError("crash between two writes")
    assert await store.fetchall("SELECT * FROM t") == []
    await store.close()


async def test_a_transaction_cancelled_while_committing_ends_cancelled(open_store):
    """A stopping bot cancels its loops wherever they are. Cancelled during COMMIT, the
    transaction must end in the cancellation, not in an error from the rollback that
    follows: a loop that retries on errors would then swallow its own stop and hang."""
    store = await open_store()
    await store.migrate("t-1", ["CREATE TABLE t (k TEXT PRIMARY KEY)"])

    async def write() -> None:
        async with store.transaction() as db:
            await db.execute("INSERT INTO t VALUES ('x')")
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # delivered at the next await: the COMMIT's

    for _ in range(5):
        await store.execute("DELETE FROM t")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(write())
    await store.execute("INSERT INTO t VALUES ('y')")  # the store is usable afterwards
    assert [r["k"] for r in await store.fetchall("SELECT k FROM t WHERE k='y'")] == ["y"]
    await store.close()
