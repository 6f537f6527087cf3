"""A Mattermost outage longer than any fixed retry budget, through the sandbox Mattermost's fault
injection: every notification answered 2xx still gets its thread once Mattermost is back, and a
group's notifications are applied in the order received (a resolution is never lost). With the
store on SQLite, and on a real PostgreSQL server (store.url)."""

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
from tests.alerts.support import alert, payload

pytestmark = pytest.mark.asyncio
OLD_MAX_ATTEMPTS = 5  # what the inbox allowed before: an outage outlasting it dropped alerts




@pytest.fixture(params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Runtime]]:
    store: dict[str, Any] = {}
    if request.param == "postgresql":
        from tests.postgres import new_database
        store = {"store": {"url": await new_database(request.getfixturevalue("postgres_server")),
                           "sslmode": "disable"}}
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        mm = dict(sb.bot_config()["mattermost"], retry_base_s=0.05, retry_max_s=0.2, websocket=False)
        settings = sb.settings(mattermost=mm, alertmanager={"webhook_token": sb.alertmanager_token}, **store)
        # Short chat-queue retries keep each failed attempt brief; the durable retries are the test.
        chat = MattermostChat(settings.mattermost,
                              queue=WriteQueue(backoff_base_s=0.01, backoff_max_s=0.02, max_attempts=2))
        runtime = Runtime(settings, chat=chat)
        await runtime.start()
        try:
            yield sb, runtime
        finally:
            await runtime.stop()


async def send(sb: Sandbox, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(f"{sb.bot_url}/alertmanager", json=body,
                               headers={"Authorization": f"Bearer {sb.alertmanager_token}"})
    assert resp.status_code == 200, resp.text


def roots(sb: Sandbox) -> list:
    bot_id = sb.mattermost.user("sop-bot").id
    return [p for p in sb.mattermost.posts_in("sop-alerts") if p.user_id == bot_id and not p.root_id]


async def min_attempts(rt: Runtime, agg: str = "MIN") -> int:
    assert rt.store is not None
    row = await rt.store.fetchone(f"SELECT {agg}(attempts) AS n, COUNT(*) AS c FROM alert_inbox "
                                  "WHERE state='pending'")
    return int(row["n"] or 0) if row and row["c"] else 0


async def test_groups_accepted_during_a_long_outage_each_get_one_root_after_recovery(world):
    sb, rt = world
    sb.mattermost.fail_next(10**9, status=500)  # down until the faults are cleared
    groups = [f"outage-{i}" for i in range(6)]
    for g in groups:
        await send(sb, payload(g, [alert("NoSuchAlertForOutage", node=f"n-{g}")]))
    # Every entry has failed more often than the old budget allowed, and is still pending.
    await wait_until("every entry retried past the old budget",
                     lambda: _past_budget(rt, len(groups)))
    assert await rt.alerts.inbox.count("failed") == 0
    assert roots(sb) == []
    sb.mattermost.faults.clear()  # Mattermost is back

    await wait_until("a root per group", lambda: len(roots(sb)) >= len(groups))
    await rt.alerts.idle()
    titles = [r.message for r in roots(sb)]
    assert len(titles) == len(groups), titles
    for g in groups:
        assert sum(f"n-{g}" in t for t in titles) == 1, (g, titles)
    assert await rt.alerts.inbox.count("failed") == 0
    assert await rt.alerts.inbox.count("pending") == 0


async def _past_budget(rt: Runtime, n: int, agg: str = "MIN") -> bool:
    assert rt.alerts is not None
    if await rt.alerts.inbox.count("failed"):
        pytest.fail("an accepted notification was given up during the outage")
    return await rt.alerts.inbox.count("pending") == n and await min_attempts(rt, agg) > OLD_MAX_ATTEMPTS


async def test_a_group_that_fired_and_resolved_during_an_outage_ends_resolved(world):
    sb, rt = world
    sb.mattermost.fail_next(10**9, status=500)
    fired = alert("NoSuchAlertForOutage", node="n-flap", fp="f1a9f1a9f1a9f1a9")
    await send(sb, payload("flap", [fired]))
    await wait_until("the firing entry failed once", lambda: min_attempts(rt))
    resolved = dict(fired, status="resolved", endsAt="2026-11-25T10:05:00Z")
    await send(sb, payload("flap", [resolved]))
    # The firing entry keeps failing; the resolution waits behind it, so it is never "unknown".
    await wait_until("the firing entry retried past the old budget", lambda: _past_budget(rt, 2, "MAX"))
    sb.mattermost.faults.clear()

    await wait_until("the group's root", lambda: roots(sb))
    await rt.alerts.idle()
    [root] = roots(sb)
    assert "RESOLVED" in root.message and "FIRING" not in root.message, root.message
    replies = [p.message for p in sb.mattermost.thread(root.id) if p.id != root.id]
    assert any("**Resolved**" in m for m in replies), replies
