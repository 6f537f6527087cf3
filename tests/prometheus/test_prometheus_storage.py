"""/sop prometheus-storage (runbook 7.4, PrometheusStorageAlmostFull) against a real Prometheus
scraping the kubelet's volume stats of its PVC and kube-state-metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.clients.prometheus import PrometheusClient
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Report, Status
from bot.registry import REGISTRY, load_handlers

from .conftest import GIB, Platform

load_handlers()
SOP = REGISTRY.get("prometheus-storage")
PVC = "pvc/prometheus-prometheus-0"


async def diagnose(platform: Platform, checks: dict | None = None) -> Report:
    ctx = HandlerContext(prometheus=PrometheusClient(platform.url, timeout_s=5), checks=checks or {})
    try:
        return await run_sop(SOP, ctx)
    finally:
        await ctx.close()


async def test_volume_with_room_is_ok(platform: Platform):
    platform.healthy()  # 70 GiB of 100 GiB free
    await platform.settle(scrapes=2)
    report = await diagnose(platform)
    assert [(f.status, f.target, f.summary) for f in report.findings] == [
        (Status.ok, PVC, "30% used (30.0 of 100.0 GiB, 70.0 GiB free)")]


async def test_volume_95_percent_full_is_critical_with_the_runbook_steps(platform: Platform):
    platform.healthy()
    platform.kubelet.available = 5 * GIB
    await platform.settle(scrapes=2)
    report = await diagnose(platform)
    [finding] = report.findings
    assert finding.status == Status.crit
    assert finding.summary == "95% used (95.0 of 100.0 GiB, 5.0 GiB free)"
    assert "--storage.tsdb.retention.time=15d" in finding.next_step
    assert finding.next_step.startswith("7.4: ")


async def test_thresholds_come_from_the_checks_config(platform: Platform):
    platform.healthy()
    platform.kubelet.available = 12 * GIB
    await platform.settle(scrapes=2)
    assert (await diagnose(platform)).status == Status.warn  # 88% ≥ the default 85%
    relaxed = {"prometheus-storage": {"warn_used_percent": 90, "crit_used_percent": 97}}
    assert (await diagnose(platform, relaxed)).status == Status.ok
    bad = {"prometheus-storage": {"warn_used_percnt": 90}}
    [finding] = (await diagnose(platform, bad)).findings
    assert finding.status == Status.unknown and "checks.prometheus-storage" in finding.summary


async def test_oom_killed_prometheus_is_reported(platform: Platform):
    platform.healthy()
    platform.kubelet.oom_killed = True
    await platform.settle(scrapes=2)
    found = {f.target: f for f in (await diagnose(platform)).findings}
    oom = found["pod/prometheus-0"]
    assert oom.status == Status.warn and oom.summary == "Prometheus was last restarted OOMKilled"
    assert "resources.limits.memory" in oom.next_step
    assert found[PVC].status == Status.ok


async def test_no_volume_metrics_is_unknown(platform: Platform):
    report = await diagnose(platform, {"prometheus-storage": {"namespace": "elsewhere"}})
    [finding] = report.findings
    assert finding.status == Status.unknown
    assert finding.summary == "no kubelet_volume_stats for PVC prometheus-.* in elsewhere"


async def test_without_prometheus_one_unknown_finding():
    report = await run_sop(SOP, HandlerContext())
    assert [(f.status, f.summary) for f in report.findings] == [
        (Status.unknown, "no Prometheus configured (prometheus.url)")]


async def test_prometheus_down_is_unknown_not_a_crash():
    from .conftest import free_port

    ctx = HandlerContext(prometheus=PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=2))
    try:
        report = await run_sop(SOP, ctx)
    finally:
        await ctx.close()
    [finding] = report.findings
    assert finding.status == Status.unknown and finding.target == "prometheus"
    assert "unreachable" in finding.summary
