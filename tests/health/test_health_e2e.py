"""The health report as people see it: posted by the running bot in the sandbox's Mattermost —
on demand (``/sop health``) and from a schedule — and in a terminal (``sopbot healthcheck``)."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone

import httpx
import pytest
import yaml

from bot.runtime import Runtime
from tests.health.conftest import am_section


async def run_as(sandbox, username: str, command: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sandbox.mattermost_url, timeout=30) as http:
        return await http.post("/api/v4/commands/execute",
                               headers={"Authorization": f"Bearer {sandbox.mattermost.tokens[username]}"},
                               json={"channel_id": sandbox.channel_id, "command": command})


def bot_roots(sandbox, channel_id: str) -> list:
    bot_id = sandbox.mattermost.user("sop-bot").id
    return [p for p in sandbox.mattermost.posts_in(channel_id) if p.user_id == bot_id and not p.root_id]


@pytest.fixture
async def health_bot(sandbox, alertmanager):
    runtime = Runtime(sandbox.settings(alertmanager=am_section(sandbox, alertmanager)))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_slash_health_posts_root_and_a_reply_per_problem_area(sandbox, health_bot):
    await sandbox.apply("vault-sealed", "pvc-pending")
    resp = await run_as(sandbox, "alice", "/sop health")
    assert resp.status_code == 200
    assert "Running the `daily` health check (12 areas)" in resp.json()["text"]
    await health_bot.bot.drain()
    roots = bot_roots(sandbox, sandbox.channel_id)
    assert len(roots) == 1
    root = roots[0]
    assert "**2 critical, 2 warnings**" in root.message.splitlines()[0]
    assert "- :red_circle: **Vault** — " in root.message
    assert "- :white_check_mark: **Traefik** — external IP 203.0.113.202" in root.message
    assert "first report" in root.message
    replies = sandbox.mattermost.thread(root.id)[1:]
    assert [r.message.split(" — ", 1)[0] for r in replies] == ["**Vault**", "**Certificates**", "**Pods**", "**PVCs**"]
    vault = replies[0].message
    assert "dig deeper with `/sop vault-status`" in vault and "5.2 step 3" in vault
    pvcs = replies[3].message
    assert "/sop pvc-health" in pvcs and "uptime-kuma" in pvcs and "8.1" in pvcs


async def test_second_report_says_what_changed(sandbox, health_bot):
    await run_as(sandbox, "alice", "/sop health")
    await health_bot.bot.drain()
    await sandbox.apply("lb-ip-pending")
    await run_as(sandbox, "bob", "/sop health")
    await health_bot.bot.drain()
    second = bot_roots(sandbox, sandbox.channel_id)[-1]
    assert "**What changed since the last report**" in second.message
    assert "1 new, 0 resolved, 0 still open" in second.message
    assert "Traefik: svc/kube-system/rke2-traefik: EXTERNAL-IP <pending>" in second.message


async def test_unknown_schedule_name_is_refused(sandbox, health_bot):
    text = (await run_as(sandbox, "alice", "/sop health weekly")).json()["text"]
    assert text == "No health schedule `weekly` (configured: daily)."
    await health_bot.bot.drain()
    assert bot_roots(sandbox, sandbox.channel_id) == []


async def test_scheduled_run_posts_in_the_configured_channel(sandbox, alertmanager):
    settings = sandbox.settings(alertmanager=am_section(sandbox, alertmanager),
                                health={"channel": "town-square", "lease_namespace": "default",
                                        "schedules": [{"name": "daily", "cron": "0 8 * * *"},
                                                      {"name": "p1-only", "cron": "30 7 * * *",
                                                       "severities": ["P1"], "channel": "sop-alerts"},
                                                      {"name": "quiet", "cron": "0 * * * *", "channel": "sop-ops",
                                                       "quiet_when_ok": True}]})
    runtime = Runtime(settings)
    await runtime.start()
    try:
        sched = runtime.health.scheduler
        assert await sched.lease_step() is True  # the only replica: it leads
        fire = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
        assert await sched.run_once("daily", fire) is True
        assert await sched.run_once("p1-only", fire) is True
        assert await sched.run_once("daily", fire) is False  # once per fire time
        assert await sched.run_once("quiet", fire) is True
        await sandbox.apply("lb-ip-pending")
        assert await sched.run_once("quiet", fire.replace(hour=9)) is True
    finally:
        await runtime.stop()
    quiet = bot_roots(sandbox, sandbox.mattermost.channel("sop-ops").id)
    assert len(quiet) == 1  # the all-good run posted nothing, the broken one did
    assert "**1 critical**" in quiet[0].message
    town = sandbox.mattermost.channel("town-square").id
    daily = bot_roots(sandbox, town)
    assert len(daily) == 1 and "Health check `daily`: **all good**" in daily[0].message
    hourly = bot_roots(sandbox, sandbox.channel_id)
    assert len(hourly) == 1
    # P1-only: the Vault and Gateways areas (runbook severity P1), nothing else
    assert "**Vault**" in hourly[0].message and "**Gateways**" in hourly[0].message
    assert "**Pods**" not in hourly[0].message and "**Nodes**" not in hourly[0].message


async def test_sopbot_healthcheck_exit_codes(sandbox, alertmanager, tmp_path):
    config = tmp_path / "sopbot.yaml"
    data = sandbox.bot_config()
    data["alertmanager"] = am_section(sandbox, alertmanager)
    config.write_text(yaml.safe_dump(data))

    async def healthcheck() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "healthcheck", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode, out.decode()

    code, out = await healthcheck()
    assert code == 0, out
    assert out.startswith("Health check daily: ALL GOOD")
    await sandbox.apply("cert-expiring")
    code, out = await healthcheck()
    assert code == 1, out
    assert "[ WARN  ] Certificates" in out and "keycloak-example-com-tls" in out
    assert "New:" in out  # the store remembers the previous run
    await sandbox.apply("lb-ip-pending")
    code, out = await healthcheck()
    assert code == 2, out
    assert "[ CRIT  ] Traefik" in out
