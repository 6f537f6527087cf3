"""``/sop health`` sent many times at once: one run, one report, everyone told where it is."""

from __future__ import annotations

import asyncio

import pytest

import bot.health as health
from tests.health.test_health_e2e import bot_roots, health_bot, run_as  # noqa: F401 (fixture)

pytestmark = pytest.mark.asyncio


async def test_thirty_concurrent_health_commands_make_one_run_and_one_report(sandbox, health_bot, monkeypatch):
    gate = asyncio.Event()
    runs: list[str] = []
    real = health.run_health

    async def counted(name, *args, **kwargs):  # the run waits until every request has arrived
        runs.append(name)
        await gate.wait()
        return await real(name, *args, **kwargs)

    monkeypatch.setattr(health, "run_health", counted)
    users = ["alice", "bob"] * 15
    replies = await asyncio.gather(*(run_as(sandbox, u, "/sop health") for u in users))
    texts = [r.json()["text"] for r in replies]
    assert sum("Running the `daily` health check" in t for t in texts) == 1
    assert sum("`/sop health daily` with the same arguments is already running" in t for t in texts) == 29
    gate.set()
    await health_bot.bot.drain()
    assert runs == ["daily"]
    roots = bot_roots(sandbox, sandbox.channel_id)
    assert len(roots) == 1
    thread = sandbox.mattermost.thread(roots[0].id)
    told = [p.message for p in thread if "you asked for `/sop health daily` while it ran" in p.message]
    assert len(told) == 1 and ("@alice" in told[0] or "@bob" in told[0])
