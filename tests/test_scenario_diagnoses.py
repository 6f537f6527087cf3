"""Every sandbox scenario declares what a correct diagnosis says (runbook section, status, root
cause); running the SOPs that cover that section against the broken sandbox must say exactly that.
The healthy platform gives ok in every one of those SOPs (no false alarm)."""

from __future__ import annotations

import pytest

from bot.engine import run_sop
from bot.models import Report, Status
from bot.registry import SOP, load_handlers
from bot.runtime import build_context
from sandbox.scenarios import SCENARIOS, Scenario

REGISTRY = load_handlers()
BROKEN = [s for s in SCENARIOS.values() if s.name != "healthy"]


@pytest.fixture
async def sandbox(tmp_path):
    """The sandbox with a real Prometheus scraping its exporter metrics: the SOPs that read
    Prometheus (replication lag, connections, Galera, Sentinel) see what the scenario broke."""
    from sandbox.runner import Sandbox

    async with Sandbox(workdir=tmp_path / "sandbox", prometheus=True) as sb:
        yield sb


def covering(section: str) -> list[SOP]:
    """The SOPs whose declared runbook entries include ``section`` (or a sub-problem of it)."""
    return [s for s in REGISTRY if s.covers(section)]


def problems(reports: list[Report]) -> str:
    return "\n".join(f"{r.sop_id}: {f.status.value} {f.target} | {f.summary} | {f.details}"
                     for r in reports for f in r.findings if f.status is not Status.ok)


async def diagnose(sandbox, sops: list[SOP]) -> list[Report]:
    ctx = await build_context(sandbox.settings())
    try:
        return [await run_sop(s, ctx) for s in sops]
    finally:
        await ctx.close()


def test_every_broken_scenario_declares_section_status_and_cause() -> None:
    for s in BROKEN:
        assert s.section and s.status in ("warn", "crit") and s.cause, s.name
        assert covering(s.section), f"{s.name}: no SOP covers runbook {s.section}"
    assert SCENARIOS["healthy"].status == "ok"


@pytest.mark.parametrize("scenario", BROKEN, ids=lambda s: s.name)
async def test_the_sops_of_its_section_name_the_declared_cause(sandbox, scenario: Scenario) -> None:
    await sandbox.apply(scenario.name)
    reports = await diagnose(sandbox, covering(scenario.section))
    worst = max((r.status for r in reports), key=lambda s: s.rank)
    text = problems(reports)
    assert worst is Status(scenario.status), text
    assert scenario.cause in text, text


async def test_healthy_platform_is_ok_in_every_sop_a_scenario_runs(sandbox) -> None:
    sops = {s.id: s for sc in BROKEN for s in covering(sc.section)}
    reports = await diagnose(sandbox, list(sops.values()))
    assert problems(reports) == ""
    assert {r.sop_id for r in reports if r.status is Status.ok} == set(sops)
