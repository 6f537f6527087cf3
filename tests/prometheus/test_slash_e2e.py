"""/sop etcd-health end to end: typed in the sandbox's Mattermost, answered by the running bot
configured with the real Prometheus (prometheus.url), posted as a thread."""

from __future__ import annotations

from bot.config import PrometheusConfig
from bot.runtime import Runtime
from tests.test_slash_e2e import run_as, wait_thread

from .conftest import RATE_WINDOW, Platform


async def test_sop_etcd_health_thread_names_the_leaderless_member(sandbox, platform: Platform):
    platform.healthy()
    no_leader = platform.members[1]
    no_leader.has_leader = False
    await platform.settle()
    settings = sandbox.settings(prometheus=PrometheusConfig(url=platform.url),
                                checks={"etcd-health": {"rate_window": RATE_WINDOW}})
    bot = Runtime(settings)
    await bot.start()
    try:
        resp = await run_as(sandbox, "alice", "/sop etcd-health")
        assert resp.status_code == 200
        assert "Running `etcd-health`" in resp.json()["text"]
        root, report = await wait_thread(sandbox, bot)
    finally:
        await bot.stop()
    assert "@alice ran `/sop etcd-health`" in root.message and "CRIT" in root.message
    assert f"| :red_circle: | {no_leader.instance} | no leader (etcd_server_has_leader 0)" in report.message
    assert "2 of 3 members up with a leader (1 without a leader)" in report.message
    for m in (platform.members[0], platform.members[2]):
        assert f"| :white_check_mark: | {m.instance} | leader seen, WAL fsync p99 2.0 ms" in report.message
    assert "2.3: a member without a leader" in report.message  # the runbook's next step
