"""End to end with a real Alertmanager and the sandbox Mattermost: alerts pushed to
Alertmanager's /api/v2/alerts reach the running bot as webhooks and become threads."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.clients.alertmanager import SilenceMatcher
from bot.runtime import Runtime
from sandbox.runner import Sandbox
from tests.waiting import wait_until
from tests.alerts.real_alertmanager import RealAlertmanager




class World:
    def __init__(self, sb: Sandbox, am: RealAlertmanager, tmp: Path):
        self.sb, self.am, self.tmp = sb, am, tmp
        self.bot: Runtime | None = None

    def settings(self, **alertmanager: Any):
        return self.sb.settings(alertmanager={"webhook_token": self.sb.alertmanager_token,
                                              "url": self.am.url, "reconcile_interval_s": 3600,
                                              **alertmanager})

    async def start_bot(self, **alertmanager: Any) -> Runtime:
        self.bot = Runtime(self.settings(**alertmanager))
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

    def diagnoses(self, root_id: str) -> list:
        return [p for p in self.replies(root_id)
                if "`vault-status`" in p.message and "**Proposal #" not in p.message]

    def proposals(self, root_id: str) -> list:
        return [p for p in self.replies(root_id) if "**Proposal #" in p.message]

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
    [diagnosis] = await wait_until("the diagnosis reply", lambda: world.diagnoses(root.id))
    assert "sealed" in diagnosis.message
    # The diagnosis's suggested action becomes a proposal in the thread, as for /sop vault-status.
    [proposal] = await wait_until("the unseal proposal", lambda: world.proposals(root.id))
    assert "`vault-unseal" in proposal.message and "react :white_check_mark:" in proposal.message
    assert [p.id for p in world.replies(root.id)] == [diagnosis.id, proposal.id]

    # Alertmanager repeats the notification (repeat_interval 5s): nothing new in chat.
    seen = await world.accepted()
    await wait_until("a repeat notification", lambda: _more(world, seen))
    assert len(world.roots()) == 1
    assert [p.id for p in world.replies(root.id)] == [diagnosis.id, proposal.id]

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
        await wait_until("the diagnosis reply", lambda: world.diagnoses(root.id))
        await wait_until("the unseal proposal", lambda: world.proposals(root.id))
        assert len(world.roots()) == 1
        assert len(world.diagnoses(root.id)) == 1 and len(world.proposals(root.id)) == 1
        assert len(world.replies(root.id)) == 2
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


@pytest.mark.parametrize("step", ["alert-root:", "alert-diag:"])
async def test_a_crash_between_posting_and_saving_posts_nothing_twice(world: World, step: str):
    bot = await world.start_bot()
    assert bot.alerts is not None
    repo = bot.alerts.repo
    saved = repo.posted
    failed: list[str] = []

    async def fail_once(key: str, post_id: str) -> None:
        if key.startswith(step) and not failed:
            failed.append(key)
            raise sqlite3.OperationalError("disk I/O error")  # posted, but its id is not saved
        await saved(key, post_id)

    repo.posted = fail_once  # type: ignore[method-assign]
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    await wait_until("the store write after the post failing", lambda: failed)
    await world.stop_bot()  # dies with the notification unfinished: it stays in the inbox

    await world.start_bot()  # replays it; Alertmanager keeps repeating it too
    [root] = await wait_until("the alert thread", lambda: world.roots())
    [diagnosis] = await wait_until("the diagnosis reply", lambda: world.diagnoses(root.id))
    [proposal] = await wait_until("the unseal proposal", lambda: world.proposals(root.id))
    seen = await world.accepted()
    await wait_until("a repeat notification after the replay", lambda: _more(world, seen))
    assert len(world.roots()) == 1
    assert [p.id for p in world.replies(root.id)] == [diagnosis.id, proposal.id]
    assert root.props["sopbot_key"].startswith("alert-root:")
    assert diagnosis.props["sopbot_key"].startswith("alert-diag:")


async def test_a_replica_without_the_lease_neither_escalates_nor_closes(world: World):
    from bot.clients.kube import KubeClient
    from bot.health import lease_namespace
    from bot.schedule import LeaseElector

    health = world.settings().health
    kube = await KubeClient.connect(world.sb.kubeconfig)
    # The other replica: holds the Lease first and keeps renewing it.
    rival = LeaseElector(kube, lease_namespace(health), health.lease_name, "sopbot-replica-b",
                         duration_s=health.lease_duration_s)
    assert await rival.step()

    async def keep_leading() -> None:
        while True:
            await asyncio.sleep(1)
            await rival.step()

    renewing = asyncio.create_task(keep_leading())
    try:
        bot = await world.start_bot(reconcile_interval_s=0.2,
                                    escalation={"response_s": {"P1": 1}, "check_interval_s": 0.2})
        assert bot.alerts is not None and bot.leadership is not None
        await world.am.fire("VaultSealed", group="vault", namespace="vault")  # P1: escalates after 1 s
        await world.am.fire("NodeDiskPressure", group="nodes", node="rke2-general-1")
        roots = await wait_until("two threads", lambda: len(world.roots()) == 2 and world.roots())
        [vault] = [r for r in roots if "VaultSealed" in r.message]
        [disk] = [r for r in roots if "NodeDiskPressure" in r.message]
        now = datetime.now(timezone.utc)
        await world.am.client.create_silence(  # silenced: reconciliation would close its thread
            [SilenceMatcher(name="alertname", value="NodeDiskPressure")], now, now + timedelta(hours=1),
            created_by="alice", comment="maintenance")
        group = await bot.alerts.repo.by_root(vault.id)
        assert group is not None
        await wait_until("the escalation deadline passing",
                         lambda: datetime.now(timezone.utc) > bot.alerts.escalator.deadline(group))
        skipped = bot.alerts.passes_skipped
        await wait_until("both loops passing twice since", lambda: bot.alerts.passes_skipped >= skipped + 4)
        assert not bot.leadership.is_leader()
        assert not [p for p in world.replies(vault.id) if "**Escalation**" in p.message]
        assert not [p for p in world.replies(disk.id) if "**Closed**" in p.message]
        assert "FIRING" in world.sb.mattermost.posts[disk.id].message
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)

    # The other replica goes away: this one takes the Lease and does the work, once.
    try:
        await rival.release()
    finally:
        await kube.close()
    await wait_until("this replica leading", lambda: bot.leadership.is_leader())
    await wait_until("the escalation", lambda: [p for p in world.replies(vault.id) if "**Escalation**" in p.message])
    await wait_until("the closure", lambda: [p for p in world.replies(disk.id) if "**Closed**" in p.message])
    assert len([p for p in world.replies(vault.id) if "**Escalation**" in p.message]) == 1
    await wait_until("the root edited to CLOSED", lambda: "CLOSED" in world.sb.mattermost.posts[disk.id].message)
