"""/sop etcd-health (runbook 2.3) against a real Prometheus scraping three etcd members."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.clients.prometheus import PrometheusClient
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Report, Status
from bot.registry import REGISTRY, BadArguments, load_handlers

from .conftest import RATE_WINDOW, Platform

load_handlers()
SOP = REGISTRY.get("etcd-health")


@pytest.fixture
async def ctx(platform: Platform) -> AsyncIterator[HandlerContext]:
    c = HandlerContext(prometheus=PrometheusClient(platform.url, timeout_s=5),
                       checks={"etcd-health": {"rate_window": RATE_WINDOW}})
    try:
        yield c
    finally:
        await c.close()


async def diagnose(ctx: HandlerContext, **args: str) -> Report:
    return await run_sop(SOP, ctx, SOP.parse_args(args))


def by_target(report: Report) -> dict:
    return {f.target: f for f in report.findings}


async def test_healthy_cluster_reports_every_member_ok(platform: Platform, ctx: HandlerContext):
    platform.healthy()
    await platform.settle()
    report = await diagnose(ctx)
    assert report.status == Status.ok, report.findings
    found = by_target(report)
    assert found["members"].summary == "3 of 3 members up with a leader"
    for m in platform.members:
        # 2 ms fsyncs, 4 ms round trips; histogram_quantile interpolates inside the bucket
        # holding them (1–2 ms, 3.2–6.4 ms), hence p99 near each bucket's upper bound
        assert found[m.instance].summary == "leader seen, WAL fsync p99 2.0 ms, peer RTT p99 6.4 ms"
        assert found[m.instance].status == Status.ok and not found[m.instance].next_step


async def test_member_without_leader_and_slow_fsync_are_named(platform: Platform, ctx: HandlerContext):
    platform.healthy()
    no_leader, slow, _ = platform.members
    no_leader.has_leader = False
    slow.fsync_s = 0.8  # the runbook's "WAL fsync > 500ms"
    await platform.settle()
    report = await diagnose(ctx)
    found = by_target(report)
    assert report.status == Status.crit
    assert found[no_leader.instance].summary == "no leader (etcd_server_has_leader 0)"
    assert found[no_leader.instance].next_step.startswith("2.3: a member without a leader")
    assert found[slow.instance].status == Status.crit
    assert "WAL fsync p99 1019 ms" in found[slow.instance].summary  # in the 0.512–1.024 s bucket
    assert "iostat" in found[slow.instance].next_step
    # two of three still have a leader: quorum holds, the member count says what is wrong
    assert found["members"].summary == "2 of 3 members up with a leader (1 without a leader)"
    assert "quorum" not in found


async def test_fsync_above_etcd_guidance_warns(platform: Platform, ctx: HandlerContext):
    platform.healthy()
    platform.members[2].fsync_s = 0.03
    platform.members[2].rtt_s = 0.3
    await platform.settle()
    found = by_target(await diagnose(ctx))
    member = found[platform.members[2].instance]
    assert member.status == Status.warn
    assert member.summary == "leader seen, WAL fsync p99 32 ms, peer RTT p99 408 ms"
    assert "iostat" in member.next_step and "port 2380" in member.next_step


async def test_two_of_three_down_is_quorum_lost_and_points_to_the_restore(platform: Platform,
                                                                            ctx: HandlerContext):
    platform.healthy()
    for m in platform.members[:2]:
        m.up = False
    await platform.settle()
    report = await diagnose(ctx)
    found = by_target(report)
    assert report.findings[0].target == "quorum"
    assert found["quorum"].summary == "quorum lost: 1 of 3 members up with a leader (2 down); quorum needs 2"
    assert found["quorum"].next_step.startswith("2.3 → 10.3")
    for m in platform.members[:2]:
        assert found[m.instance].summary == "down: Prometheus cannot scrape it"
        assert "systemctl restart rke2-server" in found[m.instance].next_step


async def test_one_instance_only(platform: Platform, ctx: HandlerContext):
    platform.healthy()
    platform.members[1].has_leader = False
    await platform.settle()
    report = await diagnose(ctx, instance=platform.members[0].instance)
    assert [f.target for f in report.findings] == [platform.members[0].instance]
    assert report.status == Status.ok
    report = await diagnose(ctx, instance="127.0.0.1:1")
    assert report.status == Status.unknown
    assert report.findings[0].summary == "Prometheus has no etcd target 127.0.0.1:1"


def test_instance_must_be_host_port():
    with pytest.raises(BadArguments):
        SOP.parse_args({"instance": 'x"} or vector(1)'})


async def test_without_prometheus_one_unknown_finding():
    report = await run_sop(SOP, HandlerContext())
    assert [(f.status, f.target, f.summary) for f in report.findings] == [
        (Status.unknown, "prometheus", "no Prometheus configured (prometheus.url)")]
