"""The reply cap for SOP diagnoses (unit level, hand-driven clock): the first diagnoses are
posted, the rest are held back and named in the root, and run once the window has passed."""

from __future__ import annotations

import pytest

from bot.alerts.models import WebhookPayload
from bot.alerts.repo import GroupRepo
from bot.alerts.router import Router
from bot.alerts.threads import ThreadManager
from bot.store import Store
from tests.alerts.support import Clock, FakeHandlers, RecordingChat, alert, payload

pytestmark = pytest.mark.asyncio


async def test_diagnoses_over_the_cap_are_held_back_named_in_the_root_and_run_after_the_window():
    store = await Store.open(":memory:")
    try:
        repo = GroupRepo(store)
        await repo.migrate()
        chat, clock, handlers = RecordingChat(), Clock(), FakeHandlers()
        tm = ThreadManager(repo=repo, chat=chat, router=Router(handlers.registry, [], channel="c"),
                           run=handlers.run, channel_id=chat.channel_id, clock=clock,
                           replies_per_group=2, reply_window_s=600)
        body = WebhookPayload.model_validate(payload("disks", [
            alert("NodeDiskPressure", node=f"w-{i}", fp=f"d{i}") for i in range(3)]))
        await tm.process(body, 1)
        root = chat.roots[0]
        assert len(chat.replies(root.id)) == 2
        assert len(handlers.runs) == 2  # the held one did not run: its reply could not be posted
        assert "**1 diagnoses held back** by the reply cap" in root.text
        assert "`node-disk node=w-2`" in root.text
        clock.advance(300)
        await tm.process(body, 2)  # still within the window
        assert len(chat.replies(root.id)) == 2
        clock.advance(301)
        await tm.process(body, 3)
        replies = chat.replies(root.id)
        assert len(replies) == 3 and "w-2" in replies[-1].text
        assert "held back" not in root.text  # the root no longer names it
    finally:
        await store.close()
