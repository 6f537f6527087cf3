"""A group's notifications are applied in the order received, across retries: a resolution that
arrives while the group's firing notification waits for a retry is applied after it, not dropped
as "a resolution for an unknown group" (Alertmanager never sends it again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.backoff import Backoff
from bot.store import Store
from tests.alerts.support import FakeHandlers, RecordingChat, alert, payload
from tests.alerts.test_receiver import BEARER, client_for, make_service

pytestmark = pytest.mark.asyncio


async def test_a_resolution_waits_for_the_group_s_firing_entry_and_is_applied_after_it(tmp_path: Path):
    store = await Store.open(tmp_path / "bot.db")
    chat = RecordingChat()
    service = make_service(store, chat, FakeHandlers())
    service.inbox.backoff = Backoff(base_s=0.05, max_s=0.05)
    await service.start(loops=False)
    client = await client_for(service)
    try:
        chat.fail_posts = 2  # the root post fails twice: the firing entry waits for its retry
        fired = alert("NodeDiskPressure", node="worker-1", fp="a1")
        assert (await client.post("/alertmanager", json=payload("disk", [fired]), headers=BEARER)).status == 200
        resolved = dict(fired, status="resolved", endsAt="2026-11-25T10:05:00Z")
        assert (await client.post("/alertmanager", json=payload("disk", [resolved]), headers=BEARER)).status == 200
        await service.idle()
        [root] = chat.roots
        assert "RESOLVED" in root.text and "FIRING" not in root.text, root.text
        assert any("**Resolved**" in m.text for m in chat.replies(root.id))
        assert await service.inbox.count("done") == 2
    finally:
        await client.close()
        await service.stop()
        await store.close()
