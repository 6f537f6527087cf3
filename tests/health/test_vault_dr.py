"""vault-dr (10.4, 11.5) in the cases the scenarios do not cover: no snapshot location
configured (snapshots by hand: not visible, not an alarm), a configured CronJob that is not
there, and a suspended one."""

from __future__ import annotations

from bot.engine import run_sop
from bot.registry import load_handlers
from bot.runtime import build_context

VAULT_DR = next(s for s in load_handlers() if s.id == "vault-dr")


async def rows(sandbox, checks: dict | None = None) -> list[tuple[str, str, str]]:
    settings = sandbox.settings(**({"checks": checks} if checks is not None else {}))
    ctx = await build_context(settings)
    try:
        report = await run_sop(VAULT_DR, ctx)
    finally:
        await ctx.close()
    return [(f.status.value, f.target, f.summary) for f in report.findings]


async def test_without_a_configured_location_it_says_what_it_cannot_see(sandbox):
    [(status, target, summary)] = await rows(sandbox, checks={})
    assert (status, target) == ("ok", "vault snapshots")
    assert summary.startswith("no snapshot location configured (checks.vault-dr.snapshot_cronjob)")


async def test_the_healthy_world_has_a_two_day_old_snapshot(sandbox):
    [(status, target, summary)] = await rows(sandbox)
    assert (status, target) == ("ok", "cronjob/vault/vault-raft-snapshot")
    assert summary.startswith("last successful Raft snapshot 2.0 days ago (schedule 0 3 * * 0)")
    assert "the file itself is not listed" in summary


async def test_a_missing_or_suspended_snapshot_job_warns(sandbox):
    missing = await rows(sandbox, checks={"vault-dr": {"snapshot_cronjob": "vault/nightly-snapshot"}})
    assert missing == [("warn", "cronjob/vault/nightly-snapshot", "snapshot job missing: no CronJob "
                        "vault/nightly-snapshot (checks.vault-dr.snapshot_cronjob)")]
    sandbox.platform.kube.update("batch/v1", "CronJob", "vault-raft-snapshot", "vault",
                                 lambda c: c["spec"].update(suspend=True))
    suspended = await rows(sandbox)
    assert ("warn", "cronjob/vault/vault-raft-snapshot",
            "snapshot job suspended (spec.suspend=true, schedule 0 3 * * 0)") in suspended
