"""ReplicationLag, HighConnections (runbook 6.2, 6.6), LokiDown and AlloyDown (7.4): the SOPs
mapped to them read the same signal the alert does, evaluated by a real Prometheus. (The CNPG
SOPs' findings are tested in test_database_signals.py.)"""

from __future__ import annotations

import pytest

from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Status
from bot.registry import REGISTRY, load_handlers

from .conftest import Platform, diagnose, problems

load_handlers()


@pytest.mark.parametrize("alert,sop_id", [("ReplicationLag", "cnpg-replica-lag"), ("HighConnections", "cnpg-connections"),
                                          ("LokiDown", "logging-signals"), ("AlloyDown", "logging-signals")])
def test_each_alert_maps_to_the_sop_reading_its_signal(alert: str, sop_id: str) -> None:
    assert [s.id for s in REGISTRY.for_alert(alert)] == [sop_id]


async def test_healthy_signals_are_ok(platform: Platform) -> None:
    platform.healthy()
    await platform.settle(scrapes=2)
    logging = await diagnose(platform, "logging-signals")
    assert [(f.target, f.summary) for f in logging.findings] == [
        ("job/loki", "1 target(s) up"), ("job/alloy", "3 target(s) up")]


async def test_loki_down_and_one_alloy_down(platform: Platform) -> None:
    platform.healthy()
    platform.loki.up = False
    platform.alloy[1].up = False
    await platform.settle(scrapes=2)
    found = problems(await diagnose(platform, "logging-signals"))
    assert found["job/loki"] == (Status.crit, f"LokiDown: 1 of 1 target(s) down: {platform.loki.instance}")
    assert found["job/alloy"] == (Status.warn, f"AlloyDown: 1 of 3 target(s) down: {platform.alloy[1].instance}")
    platform.healthy()
    await platform.settle(scrapes=2)


async def test_without_prometheus_the_signal_is_unknown() -> None:
    report = await run_sop(REGISTRY.get("logging-signals"), HandlerContext())
    assert report.status is Status.unknown and "prometheus.url" in report.findings[0].summary
