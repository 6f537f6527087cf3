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
