"""End to end against the sandbox Mattermost on 127.0.0.1: the real driver, httpx and aiohttp's
websocket client. Rate-limit time is a fake clock shared by the server and the write queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.chat import (
    EventSupervisor,
    MattermostChat,
    PostedEvent,
    ReactionEvent,
    WriteQueue,
)
from bot.chat.long_messages import MAX_POST_RUNES
from bot.config import MattermostConfig
from sandbox.mattermost import MattermostState, RateLimit
from sandbox.mattermost.integrations import issue_trigger
from sandbox.mattermost.testing import FakeClock, Served, serve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mm(clock: FakeClock) -> AsyncIterator[Served]:
    state = MattermostState(clock=clock)
    async with serve(state) as served:
        yield served
    await state.close()


@pytest.fixture
async def chat(mm: Served, clock: FakeClock) -> AsyncIterator[MattermostChat]:
    async def sleep(seconds: float) -> None:  # waiting = the shared clock moving on
        clock.advance(seconds)
        await asyncio.sleep(0)

    queue = WriteQueue(10, clock=clock, sleep=sleep)
    config = MattermostConfig(url=mm.url, token=mm.state.tokens["sop-bot"], team="platform")
    c = MattermostChat(config, queue=queue)
    await c.start()
    yield c
    await c.close()


async def test_post_reply_edit_react_and_read_back(mm: Served, chat: MattermostChat) -> None:
    state = mm.state
    alerts = await chat.channel_id("sop-alerts")
    assert alerts == state.channel("sop-alerts").id
    assert chat.bot_user_id == state.user("sop-bot").id

    root = await chat.post(alerts, "Vault is sealed", props={"sop": "5.1"})
    reply = await chat.post(alerts, "details follow", root_id=root.id)
    assert reply.root_id == root.id and reply.thread_id == root.id
    await chat.edit(root.id, "Vault is sealed (investigating)")
    await chat.react(root.id, "eyes")

    assert [p.message for p in state.thread(root.id)] == ["Vault is sealed (investigating)",
                                                          "details follow"]
    assert state.posts[root.id].user_id == chat.bot_user_id
    assert state.posts[root.id].props["sop"] == "5.1"
    assert [(r.emoji_name, r.user_id) for r in state.reactions_on(root.id)] == [("eyes", chat.bot_user_id)]

    state.react("alice", root.id, "white_check_mark")
    seen = {(r.emoji_name, await chat.username(r.user_id)) for r in await chat.reactions(root.id)}
    assert seen == {("eyes", "sop-bot"), ("white_check_mark", "alice")}
    assert [p.id for p in await chat.thread(root.id)] == [root.id, reply.id]


async def test_20000_rune_message_is_a_summary_with_the_full_text_attached(
        mm: Served, chat: MattermostChat) -> None:
    alerts = await chat.channel_id("sop-alerts")
    root = await chat.post(alerts, "report follows")
    message = "".join(f"line {i:04d} ✓ {'ü' * 80}\n" for i in range(240))[:20000]
    assert len(message) == 20000

    ref = await chat.post(alerts, message, root_id=root.id)
    post = mm.state.posts[ref.id]
    assert post.root_id == root.id
    assert len(post.message) <= MAX_POST_RUNES and "full report attached" in post.message
    assert message.startswith(post.message.split("\n\n_…")[0] + "\n")
    [file_id] = post.file_ids
    info, data = mm.state.files[file_id]
    assert data.decode() == message and info.channel_id == alerts


async def test_30_posts_under_a_server_rate_limit_all_arrive_in_order(
        mm: Served, chat: MattermostChat) -> None:
    alerts = await chat.channel_id("sop-alerts")
    mm.state.rate_limit = RateLimit(per_sec=5, burst=5)

    await asyncio.gather(*(chat.post(alerts, f"msg {i:02d}") for i in range(30)))

    assert [p.message for p in mm.state.posts_in("sop-alerts")] == [f"msg {i:02d}" for i in range(30)]
    assert chat.queue.rate_limited > 0 and chat.queue.rate_limited_wait_s > 0
    # The server's own record: within any window, no more than burst + rate × window accepted.
    times = mm.state.post_times("sop-bot")
    assert len(times) == 30
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 5 + 5 * (times[j] - times[i]) + 1e-6


async def test_server_errors_are_retried_and_the_post_lands_once(
        mm: Served, chat: MattermostChat) -> None:
    alerts = await chat.channel_id("sop-alerts")
    mm.state.fail_next(2, status=503, path_prefix="/api/v4/posts")
    ref = await chat.post(alerts, "after a hiccup")
    assert [p.id for p in mm.state.posts_in("sop-alerts")] == [ref.id]
    assert chat.queue.retries == 2


async def test_find_post_finds_the_bots_own_post_by_its_key(mm: Served, chat: MattermostChat) -> None:
    from sandbox.mattermost.models import CreatePostBody

    alerts = await chat.channel_id("sop-alerts")
    root = await chat.post(alerts, "Vault is sealed", props={"sopbot_key": "alert-root:1"})
    reply = await chat.post(alerts, "diagnosis", root_id=root.id, props={"sopbot_key": "alert-diag:1"})
    # Someone else's post with the same key is not the bot's post.
    mm.state.create_post(mm.state.user("alice").id, CreatePostBody(
        channel_id=alerts, message="copied", props={"sopbot_key": "alert-root:2"}))
    since = mm.state.posts[root.id].create_at

    found = await chat.find_post(alerts, "alert-root:1", since_ms=since)
    assert found is not None and found.id == root.id
    found = await chat.find_post(alerts, "alert-diag:1", since_ms=since, root_id=root.id)
    assert found is not None and found.id == reply.id
    assert await chat.find_post(alerts, "alert-root:2", since_ms=since) is None
    assert await chat.find_post(alerts, "alert-root:1", since_ms=mm.state.posts[reply.id].create_at + 1) is None


async def test_bad_request_is_surfaced(mm: Served, chat: MattermostChat) -> None:
    from bot.chat import ChatError

    with pytest.raises(ChatError) as err:
        await chat.post("nosuchchannel000000000000", "hello")
    assert err.value.status in (400, 403, 404)
    assert mm.state.posts_in("sop-alerts") == []


async def test_dialog_opens_for_the_user_who_triggered_it(mm: Served, chat: MattermostChat) -> None:
    state = mm.state
    alerts = await chat.channel_id("sop-alerts")
    trigger = issue_trigger(state, state.user("alice").id, alerts, state.team.id)
    dialog = {"callback_id": "approve", "title": "Approve restart", "elements": [],
              "submit_label": "Approve"}
    await chat.open_dialog(trigger, "http://127.0.0.1:9/dialog", dialog)
    [opened] = state.dialogs_for("alice")
    assert opened.dialog["title"] == "Approve restart"


async def test_websocket_events_own_ones_ignored_and_reconnect(mm: Served, chat: MattermostChat) -> None:
    state = mm.state
    reactions: asyncio.Queue[ReactionEvent] = asyncio.Queue()
    posts: asyncio.Queue[PostedEvent] = asyncio.Queue()
    resynced = asyncio.Event()

    async def on_reaction(e: ReactionEvent) -> None:
        await reactions.put(e)

    async def on_posted(e: PostedEvent) -> None:
        await posts.put(e)

    async def on_reconnect() -> None:
        resynced.set()

    sup = EventSupervisor.for_chat(chat, on_reaction=on_reaction, on_posted=on_posted,
                                   on_reconnect=on_reconnect, backoff_base_s=0.01)
    runner = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.wait_connected(), 5)
        alerts = await chat.channel_id("sop-alerts")
        root = await chat.post(alerts, "approve the restart?")  # the bot's own post: ignored
        await chat.react(root.id, "eyes")                         # the bot's own reaction: ignored
        state.react("alice", root.id, "white_check_mark")
        state.post_as("alice", "sop-alerts", "on it", root_id=root.id)

        got = await asyncio.wait_for(reactions.get(), 5)
        assert got == ReactionEvent(user_id=state.user("alice").id, username="alice",
                                    post_id=root.id, emoji_name="white_check_mark", added=True)
        posted = await asyncio.wait_for(posts.get(), 5)
        assert posted.post.message == "on it" and posted.post.root_id == root.id
        assert posted.username == "alice" and posted.channel_name == "sop-alerts"
        assert reactions.empty() and posts.empty()  # the bot's own came first and were dropped

        await state.disconnect_websockets()
        await asyncio.wait_for(resynced.wait(), 5)
        assert sup.reconnects == 1
        await asyncio.wait_for(sup.wait_connected(), 5)
        state.unreact("alice", root.id, "white_check_mark")
        gone = await asyncio.wait_for(reactions.get(), 5)
        assert gone.added is False and gone.emoji_name == "white_check_mark"
    finally:
        await sup.stop()
        await asyncio.wait_for(runner, 5)


async def test_websocket_with_a_bad_token_keeps_retrying_without_leaking_it(
        mm: Served, chat: MattermostChat, caplog: pytest.LogCaptureFixture) -> None:
    sup = EventSupervisor(chat.websocket_url, "wrong-token-value", chat.bot_user_id,
                          backoff_base_s=0.001, backoff_max_s=0.002)
    runner = asyncio.create_task(sup.run())
    while sup.drops < 3:
        await asyncio.sleep(0.01)
    await sup.stop()
    await asyncio.wait_for(runner, 5)
    assert not sup.connected and sup.reconnects == 0
    assert "wrong-token-value" not in caplog.text
