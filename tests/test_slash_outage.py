"""Slash commands acknowledged while Mattermost cannot take posts (through the sandbox
Mattermost's fault injection) still get their threads, in order and once each, after it recovers;
a channel the bot cannot post in is named in the answer instead of a promised thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.chat import MattermostChat
from bot.chat.queue import WriteQueue
from bot.runtime import Runtime
from sandbox.runner import Sandbox
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio
OUTAGE = 10**9  # faults injected: "until cleared"




async def start_bot(sb: Sandbox, **sections: Any) -> Runtime:
    """``sections``: other settings sections (a shared store, another port for a replica)."""
    mm = dict(sb.bot_config()["mattermost"], retry_base_s=0.05, retry_max_s=0.2, websocket=False)
    settings = sb.settings(mattermost=mm, **sections)
    # Each failed attempt is brief (2 tries); what carries the work across the outage is the outbox.
    chat = MattermostChat(settings.mattermost,
                          queue=WriteQueue(backoff_base_s=0.01, backoff_max_s=0.02, max_attempts=2))
    runtime = Runtime(settings, chat=chat)
    await runtime.start()
    return runtime


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Runtime]]:
    async with Sandbox(scenarios=["vault-partially-sealed"], workdir=tmp_path / "sandbox") as sb:
        runtime = await start_bot(sb)
        try:
            yield sb, runtime
        finally:
            await runtime.stop()


async def run_as(sb: Sandbox, username: str, command: str) -> str:
    async with httpx.AsyncClient(base_url=sb.mattermost_url, timeout=30) as http:
        resp = await http.post("/api/v4/commands/execute", json={"channel_id": sb.channel_id, "command": command},
                               headers={"Authorization": f"Bearer {sb.mattermost.tokens[username]}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["text"]


def roots(sb: Sandbox) -> list:
    bot_id = sb.mattermost.user("sop-bot").id
    return [p for p in sb.mattermost.posts_in(sb.channel_id) if p.user_id == bot_id and not p.root_id]


def failed_requests(sb: Sandbox) -> int:
    return sum(OUTAGE - f.remaining for f in sb.mattermost.faults)


async def test_commands_acknowledged_during_an_outage_get_their_threads_after_it(world):
    sb, rt = world
    sb.mattermost.fail_next(OUTAGE, status=500, path_prefix="/api/v4/posts")  # posting is down
    commands = ["/sop vault-status", "/sop vault-status replica=vault-0"]
    for command in commands:
        assert "findings will appear in a thread" in await run_as(sb, "alice", command)
    # Well past what a chat write used to be retried (5 tries, ~5 s), the work is still waiting.
    await wait_until("posts retried past the old budget", lambda: failed_requests(sb) > 3 * 5)
    async with httpx.AsyncClient(base_url=rt.url) as http:
        ready = (await http.get("/readyz")).json()
        metrics = (await http.get("/metrics")).text
    assert ready["status"] == "ready" and ready["backlog"]["chat_posts"] >= len(commands), ready
    [line] = [m for m in metrics.splitlines() if m.startswith("sopbot_backlog_chat_posts ")]
    assert float(line.split()[1]) >= len(commands), line
    assert roots(sb) == []
    sb.mattermost.faults.clear()  # Mattermost is back

    await wait_until("both threads reported", lambda: len(roots(sb)) == len(commands) and all(
        "CRIT" in r.message or "OK" in r.message for r in roots(sb)))
    await rt.bot.drain()
    threads = {r.message.split(" — ")[0]: sb.mattermost.thread(r.id) for r in roots(sb)}
    assert len(roots(sb)) == len(commands)  # one root each, none posted twice
    for command in commands:
        [thread] = [t for head, t in threads.items() if f"`{command}`" in head]
        assert thread[0].edit_at > 0  # the root was edited with the outcome, after it existed
        assert thread[1].message.startswith("####"), thread[1].message  # the report, in the thread
        assert sum(p.message.startswith("####") for p in thread) == 1
    async with httpx.AsyncClient(base_url=rt.url) as http:
        assert (await http.get("/readyz")).json()["backlog"]["chat_posts"] == 0


async def test_a_channel_the_bot_is_not_in_is_named_instead_of_promising_a_thread(world):
    sb, rt = world
    bot_id = sb.mattermost.user("sop-bot").id
    sb.mattermost.members.discard((sb.channel_id, bot_id))
    text = await run_as(sb, "alice", "/sop vault-status")
    assert "not a member of this channel" in text and "thread" not in text, text
    assert "/invite @sop-bot" in text
    await rt.bot.drain()
    assert roots(sb) == []


async def test_health_and_fix_in_a_channel_the_bot_is_not_in_say_why(world):
    sb, rt = world
    sb.mattermost.members.discard((sb.channel_id, sb.mattermost.user("sop-bot").id))
    for command in ("/sop health", "/sop fix"):
        text = await run_as(sb, "alice", command)
        assert "not a member of this channel" in text and "will appear" not in text, (command, text)
    await rt.bot.drain()
    assert roots(sb) == []


async def test_a_thread_committed_during_an_outage_is_delivered_by_the_next_start(tmp_path: Path):
    async with Sandbox(scenarios=["vault-partially-sealed"], workdir=tmp_path / "sandbox") as sb:
        rt = await start_bot(sb)
        try:
            sb.mattermost.fail_next(OUTAGE, status=500, path_prefix="/api/v4/posts")
            assert "findings will appear in a thread" in await run_as(sb, "alice", "/sop vault-status")
            # The SOP ran without waiting for Mattermost: root, report and the root's edit are committed.
            await wait_until("the whole thread committed", lambda: _pending(rt, 3))
        finally:
            await rt.stop()  # e.g. a rollout during the outage
        sb.mattermost.faults.clear()
        rt = await start_bot(sb)
        try:
            await wait_until("the thread", lambda: len(roots(sb)) == 1 and "CRIT" in roots(sb)[0].message)
            [root] = roots(sb)
            thread = sb.mattermost.thread(root.id)
            assert [p.message.startswith("####") for p in thread] == [False, True], [p.message for p in thread]
            assert "@alice ran `/sop vault-status`" in root.message
        finally:
            await rt.stop()


async def _pending(rt: Runtime, n: int) -> bool:
    assert rt.outbox is not None
    return await rt.outbox.pending_count() == n
