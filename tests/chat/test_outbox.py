"""The durable outbox with a scripted chat: an answer lost after the server created the post
does not post it twice, a restart delivers what was committed in order per thread, and a
channel that refuses the bot ends the thread at once with the reason."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.backoff import Backoff
from bot.chat.errors import ChatError
from bot.chat.outbox import DurableChat, Outbox

pytestmark = pytest.mark.asyncio
FAST = Backoff(base_s=0.01, max_s=0.02, horizon_s=3600)


@dataclass
class Ref:
    id: str


@dataclass
class Sent:
    id: str
    channel_id: str
    message: str
    root_id: str | None
    props: dict[str, Any]
    edits: list[str] = field(default_factory=list)


class ScriptedChat:
    """Records posts like a server; ``lose_answers`` posts are created but answered 500 (the
    answer was lost); ``down`` refuses everything with 500; ``refuse`` channels answer 403."""

    def __init__(self) -> None:
        self.posts: list[Sent] = []
        self.lose_answers = 0
        self.down = False
        self.refuse: set[str] = set()
        self._ids = itertools.count(1)

    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None, urgent: bool = False) -> Ref:
        if self.down:
            raise ChatError("create post", "server error", 500)
        if channel_id in self.refuse:
            raise ChatError("create post", "You do not have the appropriate permissions.", 403)
        sent = Sent(f"p{next(self._ids)}", channel_id, message, root_id, dict(props or {}))
        self.posts.append(sent)
        if self.lose_answers:
            self.lose_answers -= 1
            raise ChatError("create post", "server error; gave up after 2 attempts", 502)
        return Ref(sent.id)

    async def edit(self, post_id: str, message: str) -> None:
        if self.down:
            raise ChatError("edit post", "server error", 500)
        [p] = [p for p in self.posts if p.id == post_id]
        p.edits.append(message)

    async def find_post(self, channel_id: str, key: str, *, since_ms: int,
                        root_id: str | None = None) -> Ref | None:
        if self.down:
            raise ChatError("read thread", "server error", 500)
        for p in self.posts:
            if p.channel_id == channel_id and p.props.get("sopbot_key") == key:
                return Ref(p.id)
        return None


@pytest.fixture
async def store(open_store):
    """On each backend: SQLite, then a real PostgreSQL server."""
    s = await open_store()
    yield s
    await s.close()


async def test_a_post_whose_answer_was_lost_is_found_not_posted_again(store):
    chat = ScriptedChat()
    chat.lose_answers = 1
    outbox = Outbox(store, chat, backoff=FAST)
    await outbox.start()
    try:
        ref = await asyncio.wait_for(DurableChat(chat, outbox).post("ch", "hello"), 5)
    finally:
        await outbox.stop()
    assert [p.message for p in chat.posts] == ["hello"]
    assert ref.id == chat.posts[0].id


async def test_work_committed_before_a_restart_is_delivered_after_it_in_thread_order(store):
    chat = ScriptedChat()
    chat.down = True
    outbox = Outbox(store, chat, backoff=FAST)
    await outbox.start()
    root = await outbox.post("ch", "root")
    await outbox.post("ch", "report", root_key=root)
    await outbox.edit(root, "root: OK")
    other = await outbox.post("ch", "other root")
    await asyncio.sleep(0.1)  # several failed rounds
    await outbox.stop(timeout_s=0)
    assert chat.posts == []

    chat.down = False  # Mattermost back; the bot starts again
    outbox = Outbox(store, chat, backoff=FAST)
    await outbox.start()
    try:
        assert await asyncio.wait_for(outbox.wait(other), 5)
        await asyncio.wait_for(_until(lambda: outbox.pending_count(), 0), 5)
    finally:
        await outbox.stop()
    by_text = {p.message: p for p in chat.posts}
    assert [p.message for p in chat.posts] == ["root", "report", "other root"]
    assert by_text["report"].root_id == by_text["root"].id
    assert by_text["root"].edits == ["root: OK"]


async def test_a_channel_that_refuses_the_bot_fails_the_thread_with_the_reason(store):
    chat = ScriptedChat()
    chat.refuse.add("private")
    outbox = Outbox(store, chat, backoff=FAST)
    await outbox.start()
    try:
        root = await outbox.post("private", "root")
        reply = await outbox.post("private", "reply", root_key=root)
        for key in (root, reply):
            with pytest.raises(ChatError, match="permissions"):
                await asyncio.wait_for(outbox.wait(key), 5)
        assert await outbox.pending_count() == 0
    finally:
        await outbox.stop()
    assert chat.posts == []


async def test_work_older_than_the_horizon_is_given_up(store):
    chat = ScriptedChat()
    chat.down = True
    now = [1000.0]
    outbox = Outbox(store, chat, backoff=Backoff(base_s=0.01, max_s=0.01, horizon_s=60),
                    clock=lambda: now[0])
    await outbox.start()
    try:
        key = await outbox.post("ch", "late")
        await asyncio.sleep(0.05)
        assert await outbox.pending_count() == 1  # retried, not given up, within the horizon
        now[0] += 61
        with pytest.raises(ChatError, match="horizon"):
            await asyncio.wait_for(outbox.wait(key), 5)
    finally:
        await outbox.stop(timeout_s=0)


async def _until(probe: Any, value: Any) -> None:
    while await probe() != value:
        await asyncio.sleep(0.01)


async def test_settled_entries_are_pruned_after_a_week_pending_ones_never(store):
    chat = ScriptedChat()
    now = [10_000_000.0]
    outbox = Outbox(store, chat, backoff=FAST, clock=lambda: now[0])
    await outbox.start()
    try:
        sent = await outbox.post("ch", "sent")
        await asyncio.wait_for(outbox.wait(sent), 5)
        chat.down = True
        await outbox.post("ch", "waiting")
        now[0] += 8 * 86400
        assert await outbox.prune() == 1
        assert await outbox.pending_count() == 1
    finally:
        await outbox.stop(timeout_s=0)
