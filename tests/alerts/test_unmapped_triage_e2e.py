"""An alert no SOP handles gets a triage, not only "closest sections": the runbook's flowchart
is walked from where the alert's words point, through the real webhook, the sandbox platform and
the sandbox Mattermost."""

from __future__ import annotations

import httpx
import pytest

from bot.runtime import Runtime
from tests.alerts.support import alert, payload

pytestmark = pytest.mark.asyncio


async def _send_unmapped(sandbox, name: str, summary: str) -> str:
    rt = Runtime(sandbox.settings(alertmanager={"webhook_token": sandbox.alertmanager_token,
                                                "reconcile_interval_s": 3600}))
    await rt.start()
    try:
        body = payload("dns", [alert(name, fp="d1")])
        body["alerts"][0]["annotations"]["summary"] = summary
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{sandbox.bot_url}/alertmanager", json=body,
                                   headers={"Authorization": f"Bearer {sandbox.alertmanager_token}"})
        assert resp.status_code == 200, resp.text
        assert rt.alerts is not None
        await rt.alerts.idle(timeout_s=60)
    finally:
        await rt.stop()
    bot_id = sandbox.mattermost.user("sop-bot").id
    [root] = [p for p in sandbox.mattermost.posts_in("sop-alerts") if p.user_id == bot_id and not p.root_id]
    [reply] = [p.message for p in sandbox.mattermost.thread(root.id) if p.id != root.id]
    return reply


async def test_an_unmapped_dns_alert_walks_the_network_flowchart_to_the_coredns_cause(sandbox) -> None:
    await sandbox.apply("coredns-down")
    reply = await _send_unmapped(sandbox, "ClusterLookupsFailing", "DNS lookups fail from pods")
    assert "No SOP matches `ClusterLookupsFailing`" in reply
    assert "Triage path (flowchart of" in reply
    assert "→ **Not Running** — 0 of 2 CoreDNS pods Running and Ready" in reply  # the evidence
    assert "Read the CoreDNS logs and restart it" in reply  # the leaf its evidence leads to
    assert ":red_circle: `dns-health` — " in reply and "CoreDNS pods crashed" in reply  # the SOP it ran


async def test_an_unmapped_alert_whose_words_match_nothing_starts_at_the_root(sandbox) -> None:
    reply = await _send_unmapped(sandbox, "QuuxFrobnicated", "zzz")
    assert "Triage path (flowchart of" in reply
    assert "What is affected?" in reply  # section 1's first question, answered from evidence
