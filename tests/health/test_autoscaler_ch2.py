"""autoscaler (2.5) through the sandbox: the log error is quoted with the runbook's cause, the
restart of the autoscaler (Resolution step 4) is proposed from it, and the healthy platform
shows the node groups and pools the autoscaler manages."""

from __future__ import annotations

import pytest

from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers
from bot.runtime import build_context

pytestmark = pytest.mark.asyncio
SOP = next(s for s in load_handlers() if s.id == "autoscaler")


async def report_of(sandbox):
    ctx = await build_context(sandbox.settings())
    try:
        return await run_sop(SOP, ctx)
    finally:
        await ctx.close()


async def test_healthy_autoscaler_shows_its_node_groups_and_pools(sandbox) -> None:
    report = await report_of(sandbox)
    assert report.status is Status.ok, report.findings
    shown = {f.target: f.summary for f in report.findings}
    assert shown["configmap/cluster-autoscaler-status"].startswith(
        "Running, cluster Healthy, scale-up NoActivity; node groups: fleet-default/rke2-general 1 (min 1, max 5), "
        "fleet-default/rke2-compute 1 (min 0, max 3)")
    assert shown["machine pools"] == "autoscaled pools: general 1..5, compute 0..3"


async def test_expired_rancher_token_is_quoted_and_a_restart_proposed(sandbox) -> None:
    await sandbox.apply("autoscaler-token-expired")
    report = await report_of(sandbox)
    [log] = [f for f in report.findings if f.target.endswith(" log")]
    assert log.summary.startswith("Rancher token expired or invalid: E1203 06:10:01.218734")
    assert "401 Unauthorized" in log.summary and "cloud-config" in log.next_step
    [restart] = log.actions
    assert (restart.action, restart.params) == ("restart", {"kind": "deployment", "namespace": "kube-system",
                                                            "name": "rancher-cluster-autoscaler"})
    pending = next(f for f in report.findings if f.target == "pending pods")
    assert "1 pod(s) Pending for resources, no scale-up triggered: mattermost/mattermost-" in pending.summary
    assert "Insufficient cpu; no event from the autoscaler" in pending.summary


async def test_a_sandbox_left_running_keeps_a_fresh_status_and_scenarios_keep_theirs(sandbox) -> None:
    """The sandbox's autoscaler rewrites its status's times each scan, as the real one does: a
    status 15 minutes old is stale (the loop stopped), the next scan makes it fresh again, and a
    scenario's backoff survives the rewrite."""
    from datetime import datetime, timedelta, timezone

    from sandbox.world import refresh_autoscaler_status

    kube = sandbox.platform.kube
    refresh_autoscaler_status(kube, datetime.now(timezone.utc) - timedelta(minutes=15))
    stale = {f.target: f for f in (await report_of(sandbox)).findings}["configmap/cluster-autoscaler-status"]
    assert stale.status is Status.warn and "stale: the autoscaler loop is not running" in stale.summary
    await sandbox.apply("autoscaler-scale-up-backoff")
    refresh_autoscaler_status(kube, datetime.now(timezone.utc))
    after = (await report_of(sandbox)).findings
    assert not any("stale" in f.summary for f in after)
    assert any("backoff" in f.summary.lower() or "backoff" in (f.details or "").lower() for f in after), after
    assert sandbox._ticking is not None and not sandbox._ticking.done()  # the scan loop runs
