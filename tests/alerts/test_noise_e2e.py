"""Noise that would bury the signal, through the bot's real webhook endpoint and the sandbox
Mattermost: a reply cap per group (the rest folded into the root), flap damping, and one
diagnosis per (SOP, target) per storm."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from bot.runtime import Runtime
from tests.alerts.support import alert, payload

pytestmark = pytest.mark.asyncio


class Bot:
    def __init__(self, sandbox, runtime: Runtime):
        self.sb, self.rt = sandbox, runtime

    async def send(self, *bodies: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for body in bodies:
                resp = await http.post(f"{self.sb.bot_url}/alertmanager", json=body,
                                       headers={"Authorization": f"Bearer {self.sb.alertmanager_token}"})
                assert resp.status_code == 200, resp.text
        await self.settled()

    async def settled(self) -> None:
        assert self.rt.alerts is not None
        await self.rt.alerts.idle(timeout_s=60)
        await self.rt.alerts.storm.join()
        await self.rt.alerts.idle(timeout_s=60)

    def roots(self) -> list:
        bot_id = self.sb.mattermost.user("sop-bot").id
        return [p for p in self.sb.mattermost.posts_in("sop-alerts") if p.user_id == bot_id and not p.root_id]

    def replies(self, root_id: str) -> list:
        return [p for p in self.sb.mattermost.thread(root_id) if p.id != root_id]


@pytest.fixture
async def make_bot(sandbox):
    runtimes: list[Runtime] = []

    async def start(**alertmanager: Any) -> Bot:
        rt = Runtime(sandbox.settings(alertmanager={"webhook_token": sandbox.alertmanager_token,
                                                    "reconcile_interval_s": 3600, **alertmanager}))
        await rt.start()
        runtimes.append(rt)
        return Bot(sandbox, rt)

    yield start
    for rt in runtimes:
        await rt.stop()


async def test_a_group_of_many_unmapped_alerts_gets_capped_replies_and_the_rest_in_its_root(make_bot):
    bot = await make_bot(replies_per_group=5)
    names = [f"UnknownThing{i:03d}" for i in range(40)]
    await bot.send(payload("zoo", [alert(n, fp=f"z{i}") for i, n in enumerate(names)]))
    [root] = bot.roots()
    replies = [r.message for r in bot.replies(root.id)]
    assert len(replies) == 5 and all("No SOP matches" in r for r in replies)
    assert "**No SOP matches 40 alert names** (a reply for at most 5 per 600 s)" in root.message
    assert "`UnknownThing000`" in root.message and "and 20 more" in root.message
    # More notifications of the group (new names, repeats) add no reply within the window.
    more = [f"Other{i}" for i in range(10)]
    await bot.send(payload("zoo", [alert(n, fp=f"z{i}") for i, n in enumerate(names)]
                           + [alert(n, fp=f"o{i}") for i, n in enumerate(more)]))
    assert len(bot.replies(root.id)) == 5
    assert "**No SOP matches 50 alert names**" in bot.roots()[0].message


async def test_a_flapping_group_is_diagnosed_once_per_window(sandbox, make_bot):
    # Re-diagnosis after 0 s: without damping every time it fires again would run vault-status.
    bot = await make_bot(rediagnose_after_s=0, flap_window_s=600)
    firing = payload("vault", [alert("VaultSealed", fp="v1")])
    resolved = payload("vault", [alert("VaultSealed", "resolved", fp="v1")])
    await bot.send(firing)
    [root] = bot.roots()
    diagnoses = lambda: [r for r in bot.replies(root.id) if "`vault-status`" in r.message]  # noqa: E731
    assert len(diagnoses()) == 1
    await sandbox.apply("vault-sealed")  # what a fresh diagnosis would report differently
    for _ in range(3):
        await bot.send(resolved, firing)
    assert len(diagnoses()) == 1, [d.message[:80] for d in diagnoses()]
    assert sum(":repeat: **Firing again**" in r.message for r in bot.replies(root.id)) == 3


async def test_a_storm_gets_one_diagnosis_per_sop_and_target_listing_the_groups(make_bot):
    bot = await make_bot(storm_groups=3, storm_window_s=300)
    bodies = [payload(f"pods-{i}", [alert("KubePodCrashLooping", fp=f"p{i}", namespace=f"ns-{i}", pod=f"app-{i}")],
                      namespace=f"ns-{i}")
              for i in range(25)]
    await bot.send(*bodies)
    roots = bot.roots()
    storm = next(r for r in roots if "Alert storm" in r.message)
    assert len(roots) == 4  # three groups before the storm, then the storm thread
    pod_health = [r for r in bot.replies(storm.id) if "pod-health" in r.message]
    assert len(pod_health) == 1, len(pod_health)
    covering = pod_health[0]
    await asyncio.sleep(0)
    assert "_Covers 22 alert groups of this storm:_" in covering.message
    assert "`group=pods-3`" in covering.message or "`namespace=ns-3`" in covering.message
