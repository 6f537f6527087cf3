"""Commands that hit the platform's APIs, through the sandbox Mattermost and the bot's real
endpoint: identical concurrent runs are coalesced onto one, and per-user and global rate limits
refuse the rest with when to retry (ephemeral, nothing posted)."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.runtime import Runtime
from tests.test_slash_e2e import bot_posts, run_as

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def limited_bot(sandbox):
    slash = {"tokens": [sandbox.mattermost.slash_token],
             "rate_limit": {"per_user_burst": 2, "per_user_refill_s": 600, "global_burst": 3,
                            "global_refill_s": 600}}
    runtime = Runtime(sandbox.settings(slash=slash))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_per_user_and_global_limits_refuse_with_when_to_retry(sandbox, limited_bot):
    # Distinct arguments each time, so none joins another's run.
    texts = [(await run_as(sandbox, "alice", f"/sop vault-status {a}")).json()["text"]
             for a in ["", "replica=vault-0", "replica=vault-1"]]
    assert all("Running `vault-status`" in t for t in texts[:2])
    assert "you started 2 runs in a short time" in texts[2]
    assert re.search(r"Try again in \d+ s \(after \d\d:\d\d:\d\d UTC\)", texts[2]), texts[2]
    assert sandbox.mattermost.ephemerals_for("alice")[-1].message == texts[2]  # only alice sees it
    # bob has his own bucket, but everyone together may start only 3.
    bob = [(await run_as(sandbox, "bob", f"/sop vault-status replica=vault-{i}")).json()["text"]
           for i in (1, 2)]
    assert "Running `vault-status`" in bob[0]
    assert "the bot is running many commands for everyone right now" in bob[1]
    assert "Try again in" in bob[1]
    # Commands that need no cluster access are never limited.
    assert "SOPs (`/sop help <ID>`" in (await run_as(sandbox, "alice", "/sop list")).json()["text"]
    await limited_bot.bot.drain()
    assert len([p for p in bot_posts(sandbox) if not p.root_id]) == 3  # refused ones posted nothing


async def test_identical_concurrent_runs_share_one_thread_and_everyone_is_told_where(sandbox, bot, monkeypatch):
    import bot.service as service

    gate = asyncio.Event()
    real = service.run_sop

    async def held(*args, **kwargs):  # the first run stays inside its SOP until all have asked
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(service, "run_sop", held)
    users = ["alice", "bob"] * 5
    replies = await asyncio.gather(*(run_as(sandbox, u, "/sop vault-status") for u in users))
    texts = [r.json()["text"] for r in replies]
    assert sum("Running `vault-status`" in t for t in texts) == 1
    joined = [t for t in texts if "already running" in t]
    assert len(joined) == 9
    # Once the first request's thread exists, a joiner gets its link (bounded wait for the post).
    for _ in range(100):
        late = (await run_as(sandbox, "bob", "/sop vault-status")).json()["text"]
        if "/pl/" in late:
            break
        await asyncio.sleep(0.1)
    roots = [p for p in bot_posts(sandbox) if not p.root_id]
    assert len(roots) == 1
    assert f"/pl/{roots[0].id}" in late, late
    # Different arguments are a different run.
    other = (await run_as(sandbox, "bob", "/sop vault-status replica=vault-0")).json()["text"]
    assert "Running `vault-status`" in other
    gate.set()
    await bot.bot.drain()
    roots = [p for p in bot_posts(sandbox) if not p.root_id]
    assert len(roots) == 2
    first = next(r for r in roots if "replica=" not in r.message)
    thread = sandbox.mattermost.thread(first.id)
    assert thread[1].message.startswith("####")  # one report
    starter = "alice" if "@alice ran" in first.message else "bob"
    mention = [p.message for p in thread if "you asked for `/sop vault-status`" in p.message]
    assert len(mention) == 1
    assert f"@{'bob' if starter == 'alice' else 'alice'}" in mention[0]
    # Afterwards the same command starts a new run again.
    again = (await run_as(sandbox, "alice", "/sop vault-status")).json()["text"]
    assert "Running `vault-status`" in again
    await bot.bot.drain()
