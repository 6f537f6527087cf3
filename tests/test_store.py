"""The store on each backend (``open_store``: SQLite, then a real PostgreSQL server)."""

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
