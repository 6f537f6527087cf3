"""Two replicas on one PostgreSQL store share one outbox: what either promised during a Mattermost
outage is delivered once, by one replica at a time, in order per thread, after the outage; and
when the replica delivering it dies, the other delivers the rest."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime
from sandbox.runner import Sandbox
from tests.test_slash_outage import OUTAGE, run_as, start_bot
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio
# Distinct commands (the same one twice at once is coalesced onto one run), five (a user's
# burst of commands that fan out).
COMMANDS = ["/sop vault-status", "/sop vault-status replica=vault-0", "/sop vault-status replica=vault-1",
            "/sop cert-health", "/sop node-health"]


async def start_replica(sb: Sandbox, store: dict[str, Any], port: int | None = None) -> Runtime:
    server = dict(sb.bot_config()["server"], **({"port": port} if port is not None else {}))
    return await start_bot(sb, store=store, server=server)


@pytest.fixture
async def world(tmp_path: Path, postgres_server) -> AsyncIterator[tuple[Sandbox, dict[str, Any]]]:
    from tests.postgres import new_database

    url = await new_database(postgres_server)
    async with Sandbox(scenarios=["vault-partially-sealed"], workdir=tmp_path / "sandbox") as sb:
        yield sb, {"url": url, "sslmode": "disable"}


def bot_posts(sb: Sandbox) -> list[Any]:
    bot_id = sb.mattermost.user("sop-bot").id
    return [p for p in sb.mattermost.posts.values() if p.user_id == bot_id]


def duplicates(sb: Sandbox) -> dict[str, int]:
    keys = Counter((p.props or {}).get("sopbot_key") for p in bot_posts(sb))
    return {k: n for k, n in keys.items() if k and n > 1}


def roots(sb: Sandbox) -> list[Any]:
    return [p for p in bot_posts(sb) if not p.root_id and p.channel_id == sb.channel_id]


def reported(sb: Sandbox) -> list[Any]:
    """Command threads whose report arrived (the SOP's findings, a reply in the thread)."""
    return [r for r in roots(sb) if len(sb.mattermost.thread(r.id)) > 1]


async def test_two_replicas_deliver_an_outage_backlog_once_in_order(world):
    sb, store = world
    a = await start_replica(sb, store)  # takes the slash commands (the sandbox's bot port)
    b = await start_replica(sb, store, port=0)
    try:
        sb.mattermost.fail_next(OUTAGE, status=500, path_prefix="/api/v4/posts")
        command_url = sb.mattermost.sop_command.url
        for i, command in enumerate(COMMANDS):  # the Service balances the commands over both
            sb.mattermost.sop_command.url = command_url if i % 2 == 0 else f"{b.url}/mattermost/command"
            assert "findings will appear in a thread" in await run_as(sb, "alice", command)
        sb.mattermost.sop_command.url = command_url
        await wait_until("the backlog in the shared outbox",
                         lambda: _at_least(a, len(COMMANDS)), timeout_s=30)
        sb.mattermost.faults.clear()
        await wait_until("every thread reported", lambda: len(reported(sb)) == len(COMMANDS), timeout_s=60)
        await wait_until("the outbox drained", lambda: _drained(a), timeout_s=30)
        assert duplicates(sb) == {}
        for root in reported(sb):  # in order: the root first, its replies after it
            thread = sb.mattermost.thread(root.id)
            assert thread[0].id == root.id
            assert [p.create_at for p in thread] == sorted(p.create_at for p in thread)
    finally:
        await b.stop()
        await a.stop()


async def test_the_survivor_delivers_what_a_dead_replica_was_delivering(world):
    sb, store = world
    a = await start_replica(sb, store)
    b = await start_replica(sb, store, port=0)
    try:
        sb.mattermost.fail_next(OUTAGE, status=500, path_prefix="/api/v4/posts")
        for command in COMMANDS:
            assert "findings will appear in a thread" in await run_as(sb, "alice", command)
        await wait_until("the backlog in the shared outbox",
                         lambda: _at_least(a, len(COMMANDS)), timeout_s=30)
        # The replica that took the commands dies without a word: its SOP runs, waiting for
        # their threads, die with it; the threads it promised are in the shared outbox.
        await _crash(a)
        sb.mattermost.faults.clear()
        await wait_until("every thread posted by the survivor", lambda: len(roots(sb)) == len(COMMANDS),
                         timeout_s=90)
        await wait_until("the outbox drained", lambda: _drained(b), timeout_s=30)
        assert duplicates(sb) == {}
    finally:
        await b.stop()


async def _pending(rt: Runtime) -> int:
    assert rt.outbox is not None
    return await rt.outbox.pending_count()


async def _at_least(rt: Runtime, n: int) -> bool:
    return await _pending(rt) >= n


async def _drained(rt: Runtime) -> bool:
    return await _pending(rt) == 0


async def _crash(rt: Runtime) -> None:
    """As kill -9 would leave it for the others: nothing released, nothing delivered on the way out."""
    assert rt.outbox is not None and rt.bot is not None
    for task in list(rt.bot._tasks):
        task.cancel()
    if rt.outbox._task is not None:
        rt.outbox._task.cancel()
    rt.outbox._held_since = None  # its claim stays in the store until its lease lapses
    rt.outbox.stopping()
    await rt.stop()
