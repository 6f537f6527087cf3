"""The store failing under the bot: an existing database on a read-only filesystem stops
``sopbot run`` with one line (not a traceback and a process that never exits), and a store that
cannot commit (a full disk) makes /readyz not ready while webhooks are answered 503."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from bot.runtime import Runtime
from bot.store import Store
from sandbox.runner import Sandbox
from tests.alerts.support import alert, payload


@pytest.fixture
async def sandbox(tmp_path: Path):
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        yield sb


async def test_an_existing_database_on_a_read_only_filesystem_exits_with_one_line(sandbox, tmp_path):
    data = tmp_path / "data"
    store = await Store.open(data / "bot.db")  # the database exists, from an earlier run
    await store.execute("CREATE TABLE earlier (x)")
    await store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPBOT_")}
    env["SOPBOT_STORE__PATH"] = str(data / "bot.db")
    # A private mount namespace (util-linux unshare, as an unprivileged user namespace) where
    # the data directory is a read-only bind mount: a real EROFS, nothing changed on the host.
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
    proc = await asyncio.create_subprocess_exec(
        shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount",
        "sh", "-c", script, "sh", str(data),
        sys.executable, "-m", "bot.cli", "run", "--config", str(sandbox.workdir / "sopbot.yaml"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("sopbot run did not exit on a read-only database")
    text = err.decode()
    assert proc.returncode == 74, text
    assert "Traceback" not in text and out == b""
    problem = [line for line in text.splitlines() if "bot.db" in line]
    assert len(problem) == 1, text
    assert problem[0].startswith(f"sopbot: cannot open the database {data / 'bot.db'} (store.path): ")
    assert "read-only" in problem[0]
    assert text.rstrip().splitlines()[-1] == problem[0]  # the last word, after the log lines


async def test_a_store_that_cannot_commit_makes_readyz_not_ready_and_webhooks_503(sandbox):
    bot = Runtime(sandbox.settings())
    await bot.start()
    try:
        assert bot.store is not None
        bot.store.failure_window_s = 1.0
        headers = {"Authorization": f"Bearer {sandbox.alertmanager_token}"}
        body = payload("disk", [alert("NodeDiskPressure", node="rke2-general-1", fp="d1",
                                      description="x" * 20_000)])
        async with httpx.AsyncClient(base_url=sandbox.bot_url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            # The disk is full: SQLite may not grow the database, nor the inbox file, by a page.
            # (A per-connection setting, of its main file: the inbox file's connection is the
            # store's urgent writer.)
            pages = (await bot.store.fetchone("PRAGMA page_count"))[0]
            await (await bot.store.db.execute(f"PRAGMA max_page_count={pages}")).fetchall()
            inbox_pages = await bot.store.run_urgent(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
            await bot.store.run_urgent(lambda db: db.execute(f"PRAGMA max_page_count={inbox_pages}").fetchall())
            resp = await http.post("/alertmanager", json=body, headers=headers)
            assert resp.status_code == 503  # Alertmanager retries it
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "not ready"
            assert ready.json()["reason"] == "the store cannot commit: database or disk is full"
            assert (await http.get("/healthz")).status_code == 200  # alive: not a restart
            # Space again: ready once the failure is older than the window, webhooks accepted.
            await (await bot.store.db.execute(f"PRAGMA max_page_count={pages + 100_000}")).fetchall()
            await bot.store.run_urgent(
                lambda db: db.execute(f"PRAGMA max_page_count={inbox_pages + 100_000}").fetchall())
            await asyncio.sleep(1.1)
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.post("/alertmanager", json=body, headers=headers)).status_code == 200
    finally:
        await bot.stop()
