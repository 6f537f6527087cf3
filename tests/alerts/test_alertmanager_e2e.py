"""End to end with a real Alertmanager and the sandbox Mattermost: alerts pushed to
Alertmanager's /api/v2/alerts reach the running bot as webhooks and become threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.clients.alertmanager import SilenceMatcher
from bot.runtime import Runtime
from sandbox.runner import Sandbox
from tests.alerts.real_alertmanager import RealAlertmanager


async def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` (sync or async) until truthy; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class World:
    def __init__(self, sb: Sandbox, am: RealAlertmanager, tmp: Path):
        self.sb, self.am, self.tmp = sb, am, tmp
        self.bot: Runtime | None = None

    def settings(self, **alertmanager: Any):
        return self.sb.settings(alertmanager={"webhook_token": self.sb.alertmanager_token,
                                              "url": self.am.url, "reconcile_interval_s": 3600,
                                              **alertmanager})

    async def start_bot(self) -> Runtime:
        self.bot = Runtime(self.settings())
        await self.bot.start()
        return self.bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await self.bot.stop()
            self.bot = None

    def roots(self) -> list:
        bot_id = self.sb.mattermost.user("sop-bot").id
        return [p for p in self.sb.mattermost.posts_in("sop-alerts") if p.user_id == bot_id and not p.root_id]

    def replies(self, root_id: str) -> list:
        return [p for p in self.sb.mattermost.thread(root_id) if p.id != root_id]

    async def accepted(self) -> int:
        assert self.bot is not None and self.bot.alerts is not None
        return await self.bot.alerts.inbox.count("done")


@pytest.fixture
async def world(tmp_path: Path):
    async with Sandbox(scenarios=["vault-sealed"], workdir=tmp_path / "sandbox") as sb:
        am = RealAlertmanager(tmp_path / "am", f"{sb.bot_url}/alertmanager", sb.alertmanager_token)
        async with am:
            w = World(sb, am, tmp_path)
            try:
                yield w
            finally:
                await w.stop_bot()


async def test_one_thread_per_group_diagnosed_once_then_resolved_and_reopened(world: World):
    await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    assert "FIRING" in root.message and "`VaultSealed`" in root.message
    assert "**P1** (Critical, respond within 15 minutes)" in root.message
    assert f"{world.am.url}/#/silences/new?filter=" in root.message
    [diagnosis] = await wait_until("the diagnosis reply", lambda: world.replies(root.id))
    assert "`vault-status`" in diagnosis.message and "sealed" in diagnosis.message

    # Alertmanager repeats the notification (repeat_interval 5s): nothing new in chat.
    seen = await world.accepted()
    await wait_until("a repeat notification", lambda: _more(world, seen))
    assert len(world.roots()) == 1
    assert [p.id for p in world.replies(root.id)] == [diagnosis.id]

    await world.am.fire("VaultSealed", resolved=True, group="vault", namespace="vault")
    await wait_until("the root edited to RESOLVED",
                     lambda: "RESOLVED" in world.sb.mattermost.posts[root.id].message)
    replies = await wait_until("the resolution reply",
                               lambda: [p for p in world.replies(root.id) if "**Resolved**" in p.message])
    assert len(replies) == 1

    # Firing again within the reopen window: the same thread, reopened.
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    await wait_until("the thread reopened",
                     lambda: "FIRING" in world.sb.mattermost.posts[root.id].message)
    await wait_until("the firing-again reply",
                     lambda: [p for p in world.replies(root.id) if "Firing again" in p.message])
    assert len(world.roots()) == 1


async def _more(world: World, seen: int) -> bool:
    return await world.accepted() > seen


async def test_separate_groups_get_separate_threads(world: World):
    await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    await world.am.fire("NodeDiskPressure", group="nodes", node="rke2-general-1")
    roots = await wait_until("two threads", lambda: len(world.roots()) == 2 and world.roots())
    assert {("VaultSealed" in r.message) for r in roots} == {True, False}


async def test_a_bot_restart_between_firing_and_resolving_keeps_the_thread(world: World):
    await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    await wait_until("the diagnosis reply", lambda: world.replies(root.id))
    await world.stop_bot()

    # Resolved while the bot is down: Alertmanager keeps retrying until the bot is back.
    await world.am.fire("VaultSealed", resolved=True, group="vault", namespace="vault")
    await world.start_bot()
    await wait_until("the resolution reply",
                     lambda: [p for p in world.replies(root.id) if "**Resolved**" in p.message])
    assert "RESOLVED" in world.sb.mattermost.posts[root.id].message
    assert len(world.roots()) == 1
    assert len([p for p in world.replies(root.id) if "**Resolved**" in p.message]) == 1


async def test_a_silenced_alert_s_thread_is_closed_by_reconciliation(world: World):
    bot = await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    now = datetime.now(timezone.utc)
    await world.am.client.create_silence(
        [SilenceMatcher(name="alertname", value="VaultSealed")], now, now + timedelta(hours=1),
        created_by="alice", comment="maintenance")
    assert bot.alerts is not None and bot.alerts.reconciler is not None
    reconciler = bot.alerts.reconciler
    await wait_until("reconciliation closing the thread", reconciler.run_once)
    assert "CLOSED" in world.sb.mattermost.posts[root.id].message
    closed = [p for p in world.replies(root.id) if "**Closed**" in p.message]
    assert len(closed) == 1 and "silenced or expired" in closed[0].message
    assert await reconciler.run_once() == 0  # closed once


async def test_an_eyes_reaction_by_a_channel_member_acks_the_thread(world: World):
    bot = await world.start_bot()
    assert bot.events is not None
    await wait_until("the websocket", lambda: bot.events.connected)
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    world.sb.mattermost.react("alice", root.id, "eyes")
    await wait_until("the root showing the ack",
                     lambda: "acked by @alice" in world.sb.mattermost.posts[root.id].message)


async def test_webhooks_without_the_credentials_are_refused(world: World, tmp_path: Path):
    await world.start_bot()
    # A second, misconfigured Alertmanager: no http_config credentials.
    bare = RealAlertmanager(tmp_path / "am-bare", f"{world.sb.bot_url}/alertmanager", None)
    async with bare:
        await bare.fire("VaultSealed", group="vault", namespace="vault")
        await wait_until("Alertmanager reporting the 401",
                         lambda: "401" in bare.logs() and "Notify" in bare.logs(), timeout_s=30)
    assert world.roots() == []
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{world.sb.bot_url}/alertmanager", json={"version": "4"})
    assert resp.status_code == 401


async def test_an_ha_pair_of_alertmanagers_gives_one_thread_and_one_diagnosis(world: World, tmp_path: Path):
    await world.start_bot()
    # The HA peer: same config, no gossip between them, so both notify (as during a partition).
    peer = RealAlertmanager(tmp_path / "am-peer", f"{world.sb.bot_url}/alertmanager",
                            world.sb.alertmanager_token)
    async with peer:
        seen = await world.accepted()
        now = datetime.now(timezone.utc)
        await world.am.fire("VaultSealed", now=now, group="vault", namespace="vault")
        await peer.fire("VaultSealed", now=now, group="vault", namespace="vault")
        await wait_until("both peers' notifications", lambda: _more(world, seen + 1))
        [root] = await wait_until("the alert thread", lambda: world.roots())
        await wait_until("the diagnosis reply", lambda: world.replies(root.id))
        assert len(world.roots()) == 1
        assert len(world.replies(root.id)) == 1
        # Each peer sends its own externalURL; the root does not flip between them.
        assert world.sb.mattermost.posts[root.id].edit_at == 0


async def test_reconciliation_changes_nothing_while_alertmanager_is_unreachable(world: World):
    from bot.alerts.reconcile import Reconciler
    from bot.clients.alertmanager import AlertmanagerClient
    from tests.alerts.real_alertmanager import free_port

    bot = await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    assert bot.alerts is not None
    gone = AlertmanagerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        down = Reconciler(repo=bot.alerts.repo, threads=bot.alerts.threads, chat=bot.chat, client=gone)
        assert await down.run_once() == 0
    finally:
        await gone.close()
    assert "FIRING" in world.sb.mattermost.posts[root.id].message
    assert await bot.alerts.reconciler.run_once() == 0  # the real one: still active, still open
    assert "FIRING" in world.sb.mattermost.posts[root.id].message
