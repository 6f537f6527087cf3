"""Graceful shutdown: ``sopbot run`` as its own process gets SIGTERM while SOPs it acknowledged
are still running; it stops accepting, finishes them (threads complete in Mattermost) and exits 0.

The sandbox runs in this process, so the test never blocks the event loop: it waits on the bot
with asyncio's subprocess API and the bot logs to a file (a full pipe would block the bot)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.vault import app as vault_app
from tests.approvals.conftest import wait_for

COMMANDS = 3


@pytest.fixture
def vault_gate(monkeypatch):
    """Holds every ``sys/seal-status`` answer until the test opens the gate: vault-status runs
    stay in flight for as long as the test needs, without timing assumptions."""
    gate = asyncio.Event()
    held: list[int] = []
    original = vault_app._UNAUTH_SYS["sys/seal-status"]

    async def slow_seal_status(request, cluster, index, method):
        held.append(index)
        await gate.wait()
        return await original(request, cluster, index, method)

    monkeypatch.setitem(vault_app._UNAUTH_SYS, "sys/seal-status", slow_seal_status)
    return gate, held


async def start_bot(sandbox, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPBOT_")}
    env["SOPBOT_VAULT__TIMEOUT_S"] = "60"  # the gate, not the client timeout, decides when Vault answers
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--config", str(sandbox.workdir / "sopbot.yaml"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("w"),
        env=env)

    async def ready() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"sopbot run exited with {proc.returncode}:\n{log.read_text()}")
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{sandbox.bot_url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=30, what="sopbot run to listen")
    return proc


def bot_roots(sandbox) -> list:
    bot_id = sandbox.mattermost.user("sop-bot").id
    return [p for p in sandbox.mattermost.posts_in(sandbox.channel_id) if p.user_id == bot_id and not p.root_id]


async def test_sigterm_finishes_acknowledged_sops_then_exits_0(sandbox, vault_gate, tmp_path):
    gate, held = vault_gate
    log = tmp_path / "bot.log"
    proc = await start_bot(sandbox, log)
    try:
        # One replica each: the same command with the same arguments would join the first run.
        for i in range(COMMANDS):
            reply = await sandbox.mattermost.run_command("alice", "sop-alerts", f"/sop vault-status replica=vault-{i}")
            assert "Running `vault-status`" in reply["text"]
        # Every run is inside its handler, waiting for Vault, when the signal comes.
        await wait_for(lambda: len(held) >= COMMANDS, what="the SOPs to reach Vault")
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: "stopping" in log.read_text(), what="the bot to start stopping")

        # It no longer accepts requests, while the acknowledged work is still running.
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=2) as http:
                await http.get(f"{sandbox.bot_url}/healthz")
        assert proc.returncode is None

        gate.set()
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0, log.read_text()
    finally:
        gate.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    roots = bot_roots(sandbox)
    assert len(roots) == COMMANDS
    for root in roots:
        assert "**OK**" in root.message, root.message  # edited with the outcome
        thread = sandbox.mattermost.thread(root.id)
        assert len(thread) == 2 and thread[1].message.startswith("####")
        assert thread[1].message.count("| :white_check_mark: | vault-") == 1  # real answers
    assert "Traceback" not in log.read_text()
