"""Remediations on the Harvester management cluster (through ``ctx.kube_mgmt``, its own
kubeconfig and RBAC: charts/sop-bot/templates/rbac-management.yaml): start or restart the VM
behind a node through KubeVirt's subresource API (2.2, 2.4), delete a Rancher machine stuck
provisioning so the autoscaler recreates it (2.1).

Plans are read-only: a GET plus the same call with ``dryRun: ["All"]`` (virt-api's
StartOptions/RestartOptions carry it in the body) or ``?dryRun=All`` for the delete.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bot.sdk import (Action, ActionEnv, ActionParams, K8sName, K8sNamespace, KubeClient, Outcome, Plan,
                     Risk, SourceError, fingerprint, remediation_action)
from handlers.actions.common import Unavailable, meta

KUBEVIRT_API = "kubevirt.io/v1"
SUBRESOURCES_API = "subresources.kubevirt.io/v1"
CAPI_API = "cluster.x-k8s.io/v1beta1"
NO_MGMT = "no management cluster configured (kubernetes.mgmt_kubeconfig)"


def mgmt(env: ActionEnv) -> KubeClient:
    if env.ctx.kube_mgmt is None:
        raise Unavailable(NO_MGMT)
    return env.ctx.kube_mgmt


def _vm_path(namespace: str, name: str, verb: str) -> str:
    return f"/apis/{SUBRESOURCES_API}/namespaces/{namespace}/virtualmachines/{name}/{verb}"


def _vm_state(vm: dict[str, Any]) -> str:
    return (vm.get("status") or {}).get("printableStatus") or "Unknown"


class VmParams(ActionParams):
    namespace: K8sNamespace = Field(description="the VM's namespace in Harvester")
    name: K8sName = Field(description="VM name (the node's name)")


class _VmVerb(Action[VmParams]):
    params = VmParams
    section = "2.2"
    verb = "start"
    changes = "PUTs the VM's start subresource in Harvester (KubeVirt virt-api)"

    def enabled(self, env: ActionEnv, params: VmParams) -> str | None:
        return None if env.ctx.kube_mgmt is not None else NO_MGMT

    def _refuse(self, state: str) -> str | None:
        """Why this verb does nothing for a VM in ``state`` (None: it applies)."""
        raise NotImplementedError

    async def _call(self, env: ActionEnv, p: VmParams, dry_run: bool) -> None:
        body: dict[str, Any] = {"dryRun": ["All"]} if dry_run else {}
        await mgmt(env).request("PUT", _vm_path(p.namespace, p.name, self.verb), body=body)

    async def plan(self, env: ActionEnv, p: VmParams) -> Plan:
        vm = await mgmt(env).get(KUBEVIRT_API, "virtualmachines", p.name, p.namespace)
        state = _vm_state(vm)
        runbook = [f"virtctl {self.verb} {p.name} -n {p.namespace}  (or Harvester UI > VMs > {self.verb.title()})",
                   f"kubectl --kubeconfig=cluster/kubeconfig-harvester.yaml get vm {p.name} -n {p.namespace}"]
        why_not = self._refuse(state)
        if why_not:
            return Plan(nothing_to_do=why_not, runbook=runbook)
        await self._call(env, p, dry_run=True)
        return Plan(operations=[f"PUT {SUBRESOURCES_API} virtualmachines/{self.verb} {p.namespace}/{p.name}"],
                    preview=f"virt-api accepted the {self.verb} (dry run). The VM is {state} now.",
                    dry_run=True, state=fingerprint([state, meta(vm).get("resourceVersion")]),
                    state_text=f"VM {p.name} {state}", runbook=runbook)

    async def run(self, env: ActionEnv, p: VmParams) -> Outcome:
        try:
            await self._call(env, p, dry_run=False)
        except SourceError as exc:
            return Outcome(ok=False, summary=f"{self.verb} of VM {p.namespace}/{p.name} refused: {exc.reason}")
        vm = await mgmt(env).get(KUBEVIRT_API, "virtualmachines", p.name, p.namespace)
        return Outcome(ok=True, summary=f"VM {p.namespace}/{p.name} {self.verb} requested; it is "
                                        f"{_vm_state(vm)} (its node rejoins once the guest has booted)")


@remediation_action
class StartVm(_VmVerb):
    name = "start-vm"
    title = "Start the Harvester VM behind a node"
    step = "If VM crashed: start the VM from Harvester's API"
    risk = Risk.low
    verb = "start"

    def _refuse(self, state: str) -> str | None:
        return f"the VM is already {state}" if state == "Running" else None


@remediation_action
class RestartVm(_VmVerb):
    name = "restart-vm"
    title = "Restart the Harvester VM behind a node (reboots it)"
    step = "If VM crashed: reboot the VM from Harvester's API"
    risk = Risk.high  # it reboots a node: its pods go with it
    verb = "restart"
    changes = "PUTs the VM's restart subresource in Harvester (the instance is replaced)"

    def _refuse(self, state: str) -> str | None:
        return "the VM is Stopped: use start-vm" if state == "Stopped" else None


class MachineParams(ActionParams):
    namespace: K8sNamespace = Field("fleet-default", description="the Machine's namespace")
    name: K8sName = Field(description="Machine name")


@remediation_action
class DeleteMachine(Action[MachineParams]):
    name = "delete-machine"
    title = "Delete a Rancher machine stuck provisioning (the autoscaler recreates it)"
    section = "2.1"
    step = "Step 4: delete the stuck machine and let the autoscaler recreate it"
    risk = Risk.high
    params = MachineParams
    changes = "deletes a cluster.x-k8s.io Machine in the management cluster (its VM goes with it)"

    def enabled(self, env: ActionEnv, params: MachineParams) -> str | None:
        return None if env.ctx.kube_mgmt is not None else NO_MGMT

    async def plan(self, env: ActionEnv, p: MachineParams) -> Plan:
        k = mgmt(env)
        machine = await k.get(CAPI_API, "machines", p.name, p.namespace)
        status = machine.get("status") or {}
        phase = status.get("phase") or "Pending"
        node = (status.get("nodeRef") or {}).get("name")
        runbook = [f"kubectl delete machine {p.name} -n {p.namespace}"]
        if phase == "Running" and node:
            # A machine that joined backs a working node: that is 2.2's drain + delete, not this.
            return Plan(blocked=f"{p.name} is Running as node {node}: drain and delete the node instead (2.2)",
                        runbook=runbook)
        if meta(machine).get("deletionTimestamp"):
            return Plan(nothing_to_do=f"{p.name} is already being deleted", runbook=runbook)
        await k.delete(CAPI_API, "machines", p.name, p.namespace, dry_run=True)
        return Plan(operations=[f"DELETE {CAPI_API} machines {p.namespace}/{p.name}"],
                    preview=f"The API server accepted the delete (dry run). The machine is {phase}, "
                            f"created {meta(machine).get('creationTimestamp')}, no node joined.",
                    dry_run=True, state=fingerprint([phase, meta(machine).get("uid")]),
                    state_text=f"machine {p.name} {phase}", runbook=runbook,
                    warnings=["Rancher deletes the machine's VM in Harvester; the pool's autoscaler "
                              "provisions a new one"])

    async def run(self, env: ActionEnv, p: MachineParams) -> Outcome:
        await mgmt(env).delete(CAPI_API, "machines", p.name, p.namespace)
        return Outcome(ok=True, summary=f"machine {p.namespace}/{p.name} deleted; the autoscaler recreates it")
