"""node-health (2.2) and node-labels (2.6) as a user reads them: a NotReady node quoted with its
condition, reason and heartbeat age; two at once named as the network or the hypervisor; the
labeler's image missing from Harbor with the kubelet's pull error."""

from __future__ import annotations

import pytest

from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers
from bot.runtime import build_context

pytestmark = pytest.mark.asyncio
SOPS = {s.id: s for s in load_handlers()}


async def findings(sandbox, sop_id: str) -> dict:
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(SOPS[sop_id], ctx)
    finally:
        await ctx.close()
    return {f.target: f for f in report.findings}


async def test_a_silent_kubelet_is_named_with_its_heartbeat_age(sandbox) -> None:
    await sandbox.apply("node-kubelet-stopped")
    node = (await findings(sandbox, "node-health"))["node/rke2-compute-1"]
    assert node.status is Status.crit
    assert node.summary.startswith("NotReady: kubelet stopped posting node status; Ready=Unknown (NodeStatusUnknown): "
                                   "Kubelet stopped posting node status.; last heartbeat ")
    assert node.summary.endswith("m ago") and "systemctl restart rke2-agent" in node.next_step


async def test_two_nodes_not_ready_at_once_point_past_the_kubelet(sandbox) -> None:
    await sandbox.apply("nodes-not-ready-together")
    together = (await findings(sandbox, "node-health"))["NotReady together"]
    assert together.summary == ("2 nodes NotReady at once (rke2-compute-1, rke2-general-1): the network or the "
                                "Harvester host, not one kubelet")
    assert "escalate to the infrastructure team" in together.next_step


async def test_disk_pressure_not_ready_quotes_the_pleg_message(sandbox) -> None:
    await sandbox.apply("node-disk-pressure")
    node = (await findings(sandbox, "node-health"))["node/rke2-general-1"]
    assert "Ready=False (KubeletNotReady): container runtime status check may not have completed yet" in node.summary
    assert "; DiskPressure; last heartbeat" in node.summary and "crictl rmi --prune" in node.next_step


async def test_labeler_image_missing_from_harbor_is_named(sandbox) -> None:
    await sandbox.apply("unlabeled-nodes")
    shown = await findings(sandbox, "node-labels")
    [pod] = [f for t, f in shown.items() if t.startswith("pod/node-labeler/")]
    assert pod.summary.startswith("node-labeler image missing from Harbor: ImagePullBackOff for "
                                  "harbor.example.com/library/node-labeler:0.3.0")
    assert [a.action for a in shown["workload-type label"].actions] == ["label-nodes"]


async def test_healthy_nodes_and_labels_are_ok(sandbox) -> None:
    for sop_id in ("node-health", "node-labels", "golden-image"):
        shown = await findings(sandbox, sop_id)
        assert all(f.status is Status.ok for f in shown.values()), (sop_id, shown)
    assert (await findings(sandbox, "golden-image"))["node images"].summary.startswith(
        "all 6 nodes on Rocky Linux 9.5 (Blue Onyx), kernel 5.14.0-503.14.1.el9_5.x86_64")


async def test_golden_image_drift_names_the_odd_node_and_what_differs(sandbox) -> None:
    await sandbox.apply("golden-image-drift")
    drift = (await findings(sandbox, "golden-image"))["node images"]
    assert drift.status is Status.warn
    assert drift.summary == ("nodes built from different golden images: 5 on Rocky Linux 9.5 (Blue Onyx) / kernel "
                             "5.14.0-503.14.1.el9_5.x86_64 / containerd://2.1.4-k3s1; 1 on Rocky Linux 9.4 (Blue Onyx) / "
                             "kernel 5.14.0-427.13.1.el9_4.x86_64: rke2-compute-1")
    assert "virtio" in drift.details and "SSH" in drift.details
