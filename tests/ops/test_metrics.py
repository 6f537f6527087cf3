"""``GET /metrics`` end to end: what an operator's Prometheus scrapes after people and
Alertmanager used the bot through the sandbox."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.alerts.support import alert, payload
from tests.approvals.support import propose, wait_state
from tests.test_slash_e2e import run_as, wait_thread

COREDNS = ("kube-system", "rke2-coredns-rke2-coredns")


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for family in text_string_to_metric_families(text) for s in family.samples}

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(bot) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{bot.url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


async def test_slash_command_alert_and_approval_move_the_counters(sandbox, bot):
    m = await scrape(bot)
    assert m("sopbot_slash_commands_total", command="vault-status") == 0
    assert m("sopbot_chat_queue_depth") == 0  # exported before anything happened
    assert "sopbot_webhooks_received_total" in m.text

    # A slash command: counted by SOP id, its run timed, its findings counted by status.
    await sandbox.apply("vault-partially-sealed")
    await run_as(sandbox, "alice", "/sop vault-status")
    await wait_thread(sandbox, bot)
    sealed = sum(r.sealed for r in sandbox.platform.vault.replicas)
    async with httpx.AsyncClient(timeout=10) as http:  # a forged command, refused
        await http.post(f"{bot.url}/mattermost/command", data={"token": "wrong", "text": "vault-status"})
    m = await scrape(bot)
    assert m("sopbot_slash_commands_total", command="vault-status") == 1
    assert m("sopbot_slash_commands_rejected_total", reason="unauthorized") == 1
    assert m("sopbot_handler_duration_seconds_count", sop="vault-status") == 1
    assert m("sopbot_handler_duration_seconds_sum", sop="vault-status") > 0
    assert m("sopbot_findings_total", sop="vault-status", status="crit") >= sealed > 0
    assert m("sopbot_chat_writes_total") >= 3  # root, report, edit of the root
    assert m("sopbot_chat_queue_depth") == 0
    assert m("sopbot_background_tasks") == 0

    # An Alertmanager webhook routed to vault-status, and one without credentials.
    body = payload("vault", [alert("VaultSealed", pod="vault-0")])
    async with httpx.AsyncClient(timeout=10) as http:
        ok = await http.post(f"{bot.url}/alertmanager", json=body,
                             headers={"Authorization": f"Bearer {sandbox.alertmanager_token}"})
        refused = await http.post(f"{bot.url}/alertmanager", json=body)
    assert (ok.status_code, refused.status_code) == (200, 401)
    await bot.alerts.idle()
    m = await scrape(bot)
    assert m("sopbot_webhooks_received_total") == 2
    assert m("sopbot_webhooks_rejected_total", reason="unauthorized") == 1
    assert m("sopbot_alerts_routed_total", sop="vault-status") == 1
    assert m("sopbot_handler_duration_seconds_count", sop="vault-status") == 2

    # A remediation proposed with /sop fix and approved by reaction.
    p = await propose(sandbox, "alice", f"scale namespace={COREDNS[0]} name={COREDNS[1]} replicas=3")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    m = await scrape(bot)
    assert m("sopbot_slash_commands_total", command="fix") == 1
    assert m("sopbot_approvals_total", outcome="approved") == 1
    assert m("sopbot_remediations_total", action="scale", result="succeeded") == 1
    assert m("sopbot_approvals_total", outcome="rejected") == 0

    # No secret from the config ever appears in a label or help text.
    for secret in (sandbox.mattermost.slash_token, sandbox.alertmanager_token,
                   sandbox.mattermost.tokens["sop-bot"], sandbox.platform.vault.root_token):
        assert secret not in m.text


async def test_free_text_never_becomes_a_label(sandbox, bot):
    await run_as(sandbox, "alice", "/sop no-such-sop password=hunter2")
    await run_as(sandbox, "alice", "/sop")
    m = await scrape(bot)
    assert m("sopbot_slash_commands_total", command="unknown") == 1
    assert m("sopbot_slash_commands_total", command="help") == 1
    assert "no-such-sop" not in m.text and "hunter2" not in m.text


async def test_rejected_webhooks_are_counted_by_reason(sandbox, bot):
    auth = {"Authorization": f"Bearer {sandbox.alertmanager_token}"}
    async with httpx.AsyncClient(base_url=bot.url, timeout=10) as http:
        assert (await http.post("/alertmanager", content=b"{not json", headers=auth)).status_code == 400
        assert (await http.post("/alertmanager", json={"version": "3"}, headers=auth)).status_code == 400
        big = b"x" * (bot.settings.alertmanager.max_body_bytes + 1)
        assert (await http.post("/alertmanager", content=big, headers=auth)).status_code == 413
    m = await scrape(bot)
    assert m("sopbot_webhooks_received_total") == 3
    assert m("sopbot_webhooks_rejected_total", reason="invalid") == 2
    assert m("sopbot_webhooks_rejected_total", reason="too_large") == 1
    assert m("sopbot_alerts_routed_total", sop="vault-status") == 0


async def test_a_scheduled_health_check_is_counted_by_schedule_and_outcome(sandbox, bot):
    from datetime import datetime, timezone

    from tests.approvals.conftest import wait_for

    scheduler = bot.health.scheduler
    await wait_for(lambda: scheduler.elector.is_leader, what="the scheduler lease")
    fire_time = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
    assert await scheduler.run_once("daily", fire_time)
    assert not await scheduler.run_once("daily", fire_time)  # once per fire time, counted once
    m = await scrape(bot)
    outcomes = {s: m("sopbot_scheduled_runs_total", schedule="daily", outcome=s)
                for s in ("ok", "warn", "crit", "unknown", "error")}
    assert sum(outcomes.values()) == 1 and outcomes["error"] == 0, outcomes
    # Every area of the daily check is a timed SOP run.
    areas = bot.health.checks_for(bot.health.schedule("daily"))
    for check in areas:
        assert m("sopbot_handler_duration_seconds_count", sop=check.sop_id) >= 1, check.sop_id


async def test_websocket_reconnects_and_429s_are_exported(sandbox, bot):
    from sandbox.mattermost.state import RateLimit
    from tests.approvals.conftest import wait_for

    await wait_for(lambda: bot.events.connected, what="the websocket")
    assert (await scrape(bot))("sopbot_websocket_reconnects_total") == 0
    await sandbox.mattermost.disconnect_websockets()
    await wait_for(lambda: bot.events.reconnects == 1, what="the websocket to reconnect")
    assert (await scrape(bot))("sopbot_websocket_reconnects_total") == 1

    # Stricter than the bot's own limiter: Mattermost answers 429 and the bot waits as told.
    sandbox.mattermost.rate_limit = RateLimit(per_sec=8, burst=2)
    for i in range(3):  # distinct arguments: identical concurrent commands share one run
        await run_as(sandbox, "alice", f"/sop vault-status replica=vault-{i}")
    await bot.bot.drain()
    m = await scrape(bot)
    assert m("sopbot_chat_rate_limited_total") == bot.chat.queue.rate_limited > 0
    assert m("sopbot_chat_rate_limited_wait_seconds_total") > 0
    assert m("sopbot_chat_wait_seconds_total") >= m("sopbot_chat_rate_limited_wait_seconds_total")
    assert m("sopbot_chat_writes_total") >= 9  # three threads: root, report, edit each
