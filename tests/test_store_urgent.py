"""The webhook's commit (Inbox.add, Store.execute_urgent) waits on its own commit only: not
for a background transaction in progress nor those queued behind it (the inbox has a file of
its own), nor behind a slow read the background work sent to the store, and concurrent ones
share commits. A database of the one-file layout moves its inbox over, ids continuing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bot.alerts.inbox import Inbox
from bot.store import Store
from tests.postgres import urgent_ddl

SLOW_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
             "SELECT count(*) FROM c")


async def test_a_webhook_commit_does_not_wait_for_background_transactions(open_store):
    store = await open_store()
    inbox = Inbox(store)
    await inbox.migrate()
    await store.execute("CREATE TABLE work (n INTEGER)")
    done: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def holding() -> None:  # a background transaction in progress
        async with store.transaction() as db:
            held.set()
            await release.wait()
            await db.execute("INSERT INTO work VALUES (0)")
        done.append("held")

    async def background(n: int) -> None:
        await store.execute("INSERT INTO work VALUES (?)", (n,))
        done.append(f"bg{n}")

    async def webhook() -> None:
        await inbox.add('{"version": "4"}')
        done.append("webhook")

    first = asyncio.create_task(holding())
    await held.wait()
    queued = [asyncio.create_task(background(n)) for n in range(1, 21)]
    await asyncio.sleep(0.05)  # all 20 are waiting for the store
    await asyncio.wait_for(webhook(), timeout=5)  # committed while the transaction is held
    assert done == ["webhook"]
    release.set()
    await asyncio.gather(first, *queued)
    assert done[:2] == ["webhook", "held"]
    assert [e.id for e in await inbox.pending()] == [1]
    assert (await store.fetchone("SELECT COUNT(*) AS n FROM work"))["n"] == 21
    await store.close()


async def test_a_webhook_commit_does_not_wait_for_a_slow_background_read(open_store):
    store = await open_store()
    inbox = Inbox(store)
    await inbox.migrate()
    order: list[str] = []

    async def read() -> None:
        await store.fetchone(SLOW_READ)
        order.append("read")

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.05)  # the read is running in the store's thread
    entry_ids = await asyncio.gather(*(inbox.add(f'{{"n": {i}}}') for i in range(30)))
    order.append("webhooks")
    await reading
    assert order == ["webhooks", "read"]
    assert sorted(entry_ids) == list(range(1, 31)) and len(set(entry_ids)) == 30
    assert [e.body for e in await inbox.pending()] == [f'{{"n": {i}}}' for i in range(30)]
    await store.close()


async def test_a_failing_urgent_write_fails_its_callers_and_the_store_goes_on(open_store):
    store = await open_store()
    inbox = Inbox(store)
    await inbox.migrate()
    await urgent_ddl(store, "DROP TABLE alert_inbox")
    results = await asyncio.gather(inbox.add("{}"), inbox.add("{}"), return_exceptions=True)
    assert all(isinstance(r, Exception) and ("no such table" in str(r) or "does not exist" in str(r))
               for r in results), results
    await urgent_ddl(store, "CREATE TABLE alert_inbox (id INTEGER PRIMARY KEY, received_at REAL, body TEXT, "
                           "state TEXT DEFAULT 'pending', attempts INTEGER DEFAULT 0, error TEXT DEFAULT '')")
    assert await inbox.add("{}") == 1
    await store.close()


async def test_an_inbox_of_the_one_file_layout_moves_to_its_file_ids_continuing(tmp_path: Path):
    path = tmp_path / "bot.db"
    old = sqlite3.connect(path)  # an earlier version: the inbox in the main database
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY)")
    old.execute("INSERT INTO migrations VALUES ('alerts-inbox-1')")
    old.execute("CREATE TABLE alert_inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, "
                "body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', "
                "attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '')")
    old.executemany("INSERT INTO alert_inbox(id, received_at, body, state) VALUES (?, 1.0, ?, ?)",
                    [(1, "", "done"), (2, '{"n": 2}', "pending"), (7, "", "done")])
    old.commit()
    old.close()
    store = await Store.open(path)
    inbox = Inbox(store)
    await inbox.migrate()
    assert [(e.id, e.body) for e in await inbox.pending()] == [(2, '{"n": 2}')]
    assert await inbox.add("{}") == 8  # above every id the groups may remember
    await store.close()
    with sqlite3.connect(path) as main:
        assert main.execute("SELECT name FROM sqlite_master WHERE name='alert_inbox'").fetchall() == []
    store = await Store.open(path)  # and the next start finds it where it left it
    inbox = Inbox(store)
    await inbox.migrate()
    assert [e.id for e in await inbox.pending()] == [2, 8]
    await store.close()


async def test_a_done_mark_shares_the_next_webhook_commit(tmp_path: Path):
    store = await Store.open(tmp_path / "bot.db")
    inbox = Inbox(store)
    await inbox.migrate()
    ids = [await inbox.add(f'{{"n": {i}}}') for i in range(5)]
    assert store.writer is not None
    store.writer.lazy_delay_s = 30.0  # a mark waits for a webhook (a test of sharing, not of time)
    commits: list[str] = []
    store.writer.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    for entry_id in ids:
        marking = asyncio.create_task(inbox.done(entry_id))
        await asyncio.sleep(0.02)
        assert not marking.done()  # not committed on its own
        await inbox.add("{}")
        await asyncio.wait_for(marking, timeout=5)  # committed with the webhook
    assert len(commits) == 5  # one per webhook, none for the marks
    assert await inbox.count("done") == 5
    await store.close()
