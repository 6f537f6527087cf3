"""cnpg-replica-lag (6.2, ReplicationLag) and cnpg-connections (6.6, HighConnections) on the CNPG
exporter's metrics, evaluated by a real Prometheus: the lag's trend decides warn or crit."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Status
from bot.registry import REGISTRY, load_handlers

from .conftest import Platform, diagnose, problems

load_handlers()

# The lag trend over the last few scrapes (production: 10m).
CHECKS = {"cnpg-replica-lag": {"growth_window": "3s"}}


async def test_healthy_lag_and_connections_are_ok(platform: Platform) -> None:
    platform.healthy()
    await platform.settle(scrapes=8)  # the 3 s trend window holds only the healthy state
    lag = await diagnose(platform, "cnpg-replica-lag", CHECKS)
    assert [(f.status, f.summary) for f in lag.findings] == [
        (Status.ok, "2 instance(s): max replication lag 0.6 s")]
    conns = await diagnose(platform, "cnpg-connections", CHECKS)
    assert [(f.status, f.summary) for f in conns.findings] == [
        (Status.ok, "3 instance(s): max connection use 23%; Poolers not checked (no Kubernetes access)")]


async def test_growing_lag_is_critical_and_catching_up_is_a_warning(platform: Platform) -> None:
    platform.healthy()
    for lag in (40, 60, 80, 100, 120):  # a replica falling behind, scrape after scrape
        platform.cnpg.lag_s["keycloak-pg-3"] = lag
        await platform.settle(scrapes=1)
    status, summary = problems(await diagnose(platform, "cnpg-replica-lag", CHECKS))["pod/database/keycloak-pg-3"]
    assert status is Status.crit
    assert summary.startswith("replication lag 120 s (ReplicationLag above 30 s); replica lag growing over 3s (+")
    for lag in (110, 95, 80, 65, 50, 45, 40):  # now catching up, still above the alert's 30 s
        platform.cnpg.lag_s["keycloak-pg-3"] = lag
        await platform.settle(scrapes=1)
    status, summary = problems(await diagnose(platform, "cnpg-replica-lag", CHECKS))["pod/database/keycloak-pg-3"]
    assert status is Status.warn
    assert summary.startswith("replication lag 40 s (ReplicationLag above 30 s); replica catching up (-")
    platform.cnpg.lag_s["keycloak-pg-3"] = 400  # past the runbook's 5 minutes: escalate
    await platform.settle(scrapes=8)
    report = await diagnose(platform, "cnpg-replica-lag", CHECKS)
    assert problems(report)["pod/database/keycloak-pg-3"][0] is Status.crit
    assert "escalate to the DBA" in report.findings[1].next_step
    platform.healthy()
    await platform.settle(scrapes=2)


async def test_connections_near_max_connections(platform: Platform) -> None:
    platform.healthy()
    platform.cnpg.backends["keycloak-pg-1"] = 92
    await platform.settle(scrapes=2)
    found = problems(await diagnose(platform, "cnpg-connections", CHECKS))
    assert found == {"pod/database/keycloak-pg-1": (
        Status.warn, "92/100 connections (92%, HighConnections above 80%)")}
    platform.healthy()
    await platform.settle(scrapes=2)


async def test_without_prometheus_lag_is_unknown() -> None:
    report = await run_sop(REGISTRY.get("cnpg-replica-lag"), HandlerContext())
    assert report.status is Status.unknown and "prometheus.url" in report.findings[0].summary
