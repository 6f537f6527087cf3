"""The Harvester management cluster: the sandbox's second API server as kubectl sees it (VMs,
instances, Rancher machines, Longhorn volumes, virt-api's start/restart subresources), the SOPs
that read it through ``kube_mgmt`` and the actions they propose, run end to end, and what a user
sees when no management cluster is configured."""

from __future__ import annotations

import base64
import json

from bot.approvals.actions import ACTIONS, ActionEnv
from bot.config import RemediationConfig
from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers
from bot.runtime import build_context, check_connections
from sandbox.kube.kubectl import kubectl as run_kubectl
from sandbox.platform import CAPI, KUBEVIRT

REGISTRY = {s.id: s for s in load_handlers()}
MGMT_SOPS = ("node-join", "harvester-vms", "vm-boot-config", "longhorn-volumes")


async def kubectl(sandbox, *args: str):
    return await run_kubectl(sandbox.mgmt_kubeconfig, *args)


def ready(sandbox, node: str) -> str:
    return next(c["status"] for c in sandbox.platform.node(node)["status"]["conditions"] if c["type"] == "Ready")


async def test_kubectl_reads_the_management_cluster_as_the_runbook_does(sandbox) -> None:
    vms = (await kubectl(sandbox, "get", "virtualmachines", "-n", "default", "--no-headers")).ok().splitlines()
    assert len(vms) == 6 and all(" Running " in line for line in vms), vms
    vmi = (await kubectl(sandbox, "get", "vmi", "rke2-cp-1", "-n", "default", "-o", "json")).ok()
    assert json.loads(vmi)["status"]["phase"] == "Running"
    fw = (await kubectl(sandbox, "get", "vm", "rke2-cp-1", "-n", "default", "-o",
                        "jsonpath={.spec.template.spec.domain.firmware}")).ok()
    assert json.loads(fw) == {"bootloader": {"efi": {"secureBoot": False}}}
    machines = (await kubectl(sandbox, "get", "machines.cluster.x-k8s.io", "-A", "--no-headers")).ok()
    assert machines.count("Running") == 6 and "fleet-default" in machines
    volumes = (await kubectl(sandbox, "get", "volumes.longhorn.io", "-A", "--no-headers")).ok()
    assert volumes.count("healthy") == 6


async def test_virt_api_start_and_restart_subresources(sandbox, tmp_path) -> None:
    await sandbox.apply("harvester-vm-stopped")
    path = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/rke2-general-1"
    dry, empty = tmp_path / "dry.json", tmp_path / "empty.json"
    dry.write_text('{"dryRun": ["All"]}')
    empty.write_text("{}")
    restart = await kubectl(sandbox, "replace", "--raw", f"{path}/restart", "-f", str(empty))
    assert restart.returncode != 0 and "VM is not running" in restart.stderr
    (await kubectl(sandbox, "replace", "--raw", f"{path}/start", "-f", str(dry))).ok()
    mgmt = sandbox.platform.mgmt
    assert mgmt.get(KUBEVIRT, "VirtualMachine", "rke2-general-1", "default")["status"]["printableStatus"] == "Stopped"
    assert ready(sandbox, "rke2-general-1") == "Unknown"
    (await kubectl(sandbox, "replace", "--raw", f"{path}/start", "-f", str(empty))).ok()
    assert mgmt.get(KUBEVIRT, "VirtualMachine", "rke2-general-1", "default")["status"]["printableStatus"] == "Running"
    assert mgmt.get(KUBEVIRT, "VirtualMachineInstance", "rke2-general-1", "default")["status"]["phase"] == "Running"
    assert ready(sandbox, "rke2-general-1") == "True"  # the guest node follows its VM
    again = await kubectl(sandbox, "replace", "--raw", f"{path}/start", "-f", str(empty))
    assert again.returncode != 0 and "VM is already running" in again.stderr
    uid = mgmt.get(KUBEVIRT, "VirtualMachineInstance", "rke2-general-1", "default")["metadata"]["uid"]
    (await kubectl(sandbox, "replace", "--raw", f"{path}/restart", "-f", str(empty))).ok()
    assert mgmt.get(KUBEVIRT, "VirtualMachineInstance", "rke2-general-1", "default")["metadata"]["uid"] != uid


async def test_a_stopped_vm_is_started_through_the_proposed_action(sandbox) -> None:
    await sandbox.apply("harvester-vm-stopped")
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["harvester-vms"], ctx)
        vm = next(f for f in report.findings if f.target == "vm/default/rke2-general-1")
        assert vm.status is Status.crit and "VM Stopped in Harvester" in vm.summary
        (suggested,) = vm.actions
        assert (suggested.action, suggested.params) == ("start-vm", {"namespace": "default", "name": "rke2-general-1"})
        action = ACTIONS["start-vm"]
        env = ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True, approvers=["alice"]))
        params = action.parse(suggested.params)
        plan = await action.plan(env, params)
        assert plan.dry_run and plan.operations == [
            "PUT subresources.kubevirt.io/v1 virtualmachines/start default/rke2-general-1"]
        assert "The VM is Stopped now" in plan.preview
        assert ready(sandbox, "rke2-general-1") == "Unknown"  # the dry run changed nothing
        outcome = await action.run(env, params)
        assert outcome.ok and "Running" in outcome.summary, outcome.summary
        assert ready(sandbox, "rke2-general-1") == "True"
        assert (await action.plan(env, params)).nothing_to_do == "the VM is already Running"
        after = await run_sop(REGISTRY["harvester-vms"], ctx)
        assert after.status is Status.ok, [f.summary for f in after.findings]
    finally:
        await ctx.close()


async def test_a_crashed_vm_is_restarted_and_a_stuck_machine_deleted(sandbox) -> None:
    await sandbox.apply("harvester-vm-crashloop", "rancher-machine-stuck")
    ctx = await build_context(sandbox.settings())
    env = ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True, approvers=["alice"]))
    try:
        vms = await run_sop(REGISTRY["harvester-vms"], ctx)
        (crashed,) = [f for f in vms.findings if f.actions]
        assert crashed.actions[0].action == "restart-vm" and ACTIONS["restart-vm"].risk.value == "high"
        restart = ACTIONS["restart-vm"]
        assert (await restart.run(env, restart.parse(crashed.actions[0].params))).ok
        assert ready(sandbox, "rke2-database-1") == "True"

        join = await run_sop(REGISTRY["node-join"], ctx)
        stuck = next(f for f in join.findings if f.target == "machine/rke2-general-2-machine")
        assert stuck.status is Status.crit and "stuck Provisioning for 20 min" in stuck.summary
        assert [a.action for a in stuck.actions] == ["delete-machine"]
        delete = ACTIONS["delete-machine"]
        params = delete.parse(stuck.actions[0].params)
        plan = await delete.plan(env, params)
        assert plan.dry_run and plan.operations == [
            "DELETE cluster.x-k8s.io/v1beta1 machines fleet-default/rke2-general-2-machine"]
        assert sandbox.platform.mgmt.get(CAPI, "Machine", "rke2-general-2-machine", "fleet-default")
        assert (await delete.run(env, params)).ok
        assert sandbox.platform.mgmt.get(CAPI, "Machine", "rke2-general-2-machine", "fleet-default") is None
        # A machine that joined as a node is not this action's to delete (2.2's drain + delete is).
        blocked = await delete.plan(env, delete.parse({"name": "rke2-general-1-machine"}))
        assert blocked.blocked and "Running as node rke2-general-1" in blocked.blocked
        assert (await run_sop(REGISTRY["node-join"], ctx)).status is Status.ok
    finally:
        await ctx.close()


async def test_with_the_clusters_api_down_the_cp_vms_are_still_read(sandbox) -> None:
    await sandbox.apply("harvester-cp-vms-down")
    await sandbox._kube.stop()  # the API server is unreachable, as with every CP node down
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["harvester-vms"], ctx)
        text = "\n".join(f"{f.status.value} {f.target}: {f.summary}" for f in report.findings)
        assert "crit kubernetes API: the bot cannot reach the cluster's API" in text
        assert "all 3 control-plane VMs are down in Harvester" in text
        assert "crit rancher cluster/rke2: Rancher shows the cluster unavailable: Cluster agent is not connected" in text
        assert [a.action for f in report.findings for a in f.actions] == ["start-vm"] * 3
    finally:
        await ctx.close()


async def test_user_data_in_a_secret_is_named_not_read_and_base64_is_decoded(sandbox) -> None:
    def secret_ref(vm):
        (vol,) = [v for v in vm["spec"]["template"]["spec"]["volumes"] if "cloudInitNoCloud" in v]
        vol["cloudInitNoCloud"] = {"secretRef": {"name": "rke2-general-1-cloudinit"}}

    def base64_broken(vm):
        (vol,) = [v for v in vm["spec"]["template"]["spec"]["volumes"] if "cloudInitNoCloud" in v]
        vol["cloudInitNoCloud"] = {"userDataBase64": base64.b64encode(b"#cloud-config\nruncmd: [a, b\n").decode()}

    mgmt = sandbox.platform.mgmt
    mgmt.update(KUBEVIRT, "VirtualMachine", "rke2-general-1", "default", secret_ref)
    mgmt.update(KUBEVIRT, "VirtualMachine", "rke2-compute-1", "default", base64_broken)
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["vm-boot-config"], ctx)
        by = {f.target: f for f in report.findings}
        assert by["cloud-init in Secrets"].status is Status.unknown
        assert "rke2-general-1 (Secret rke2-general-1-cloudinit)" in by["cloud-init in Secrets"].summary
        broken = by["vm/default/rke2-compute-1"]
        assert broken.status is Status.crit and "not valid YAML at line 3 column 1" in broken.summary
        assert report.status is Status.crit
    finally:
        await ctx.close()


async def test_without_a_management_cluster_each_sop_says_so_once_and_no_alarm(sandbox) -> None:
    settings = sandbox.settings(kubernetes={"kubeconfig": str(sandbox.kubeconfig)})
    ctx = await build_context(settings)
    try:
        assert ctx.kube_mgmt is None
        for sop_id in MGMT_SOPS:
            report = await run_sop(REGISTRY[sop_id], ctx)
            assert report.status is Status.ok, sop_id
            (only,) = report.findings
            assert only.target == "management cluster"
            assert only.summary.startswith("no management cluster configured (kubernetes.mgmt_kubeconfig")
        env = ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True))
        for name in ("start-vm", "restart-vm", "delete-machine"):
            action = ACTIONS[name]
            raw = {"name": "rke2-cp-1"} if name == "delete-machine" else {"namespace": "default", "name": "x"}
            assert action.enabled(env, action.parse(raw)) == "no management cluster configured (kubernetes.mgmt_kubeconfig)"
    finally:
        await ctx.close()


async def test_check_config_says_whether_the_management_cluster_answers(sandbox, tmp_path) -> None:
    results = await check_connections(sandbox.settings())
    assert results["harvester"] is None and results["kubernetes"] is None
    bad = tmp_path / "not-a-kubeconfig"
    bad.write_text("clusters: [")
    broken = await check_connections(sandbox.settings(
        kubernetes={"kubeconfig": str(sandbox.kubeconfig), "mgmt_kubeconfig": str(bad)}))
    assert broken["harvester"] == f"{bad}: not a usable kubeconfig"
    without = await check_connections(sandbox.settings(kubernetes={"kubeconfig": str(sandbox.kubeconfig)}))
    assert "harvester" not in without


async def test_a_vm_named_unlike_its_node_is_found_through_rancher_s_machine(sandbox) -> None:
    import copy

    from sandbox.kube import kubevirt

    mgmt = sandbox.platform.mgmt
    vm = copy.deepcopy(mgmt.get(KUBEVIRT, "VirtualMachine", "rke2-general-1", "default"))
    mgmt.remove(KUBEVIRT, "VirtualMachine", "rke2-general-1", "default")
    mgmt.remove(KUBEVIRT, "VirtualMachineInstance", "rke2-general-1", "default")
    vm["metadata"] = {"name": "rke2-pool-general-x7k2p", "namespace": "default", "labels": vm["metadata"]["labels"]}
    mgmt.add(vm)
    kubevirt.set_vm_running(mgmt, "default", "rke2-pool-general-x7k2p", kubevirt.STOPPED)
    mgmt.update(CAPI, "Machine", "rke2-general-1-machine", "fleet-default",
                lambda m: m["spec"]["infrastructureRef"].update(name="rke2-pool-general-x7k2p"))
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["harvester-vms"], ctx)
        (stopped,) = [f for f in report.findings if f.actions]
        assert stopped.target == "vm/default/rke2-pool-general-x7k2p" and "VM Stopped in Harvester" in stopped.summary
        assert stopped.actions[0].params == {"namespace": "default", "name": "rke2-pool-general-x7k2p"}
    finally:
        await ctx.close()


async def test_a_faulted_longhorn_volume_is_critical_and_names_its_claim(sandbox) -> None:
    from sandbox.platform import LONGHORN

    mgmt = sandbox.platform.mgmt
    vol = mgmt.list(LONGHORN, "Volume", "longhorn-system")[0]
    mgmt.update(LONGHORN, "Volume", vol["metadata"]["name"], "longhorn-system",
                lambda v: v["status"].update(robustness="faulted"))
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["longhorn-volumes"], ctx)
        by = {f.target: f for f in report.findings}
        faulted = by["faulted volumes"]
        pvc = vol["status"]["kubernetesStatus"]["pvcName"]
        assert faulted.status is Status.crit and f"{vol['metadata']['name']} ({pvc})" in faulted.summary
        assert "no Harvester node is NotReady" in faulted.summary
        assert by["volumes"].summary == "5/6 Longhorn volumes healthy" and report.status is Status.crit
    finally:
        await ctx.close()
