"""KubeVirt's VM state as Harvester serves it, and virt-api's subresource API.

``PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/start|stop|restart``
is what ``virtctl start`` and Harvester's UI call: the body is ``StartOptions``/``StopOptions``/
``RestartOptions`` (``dryRun: ["All"]`` checks without changing anything), success is 202 with an
empty body, a VM in the wrong state is 409 ("VM is already running", "VM is not running").
The path is answered here, outside the resource catalog, because the real group only carries
subresources (no ``virtualmachines`` resource of its own for kubectl to map).

State transitions keep the VirtualMachine and its VirtualMachineInstance consistent
(``set_vm_running``); observers (the sandbox platform) hear about every change, so the guest
node behind a VM follows it (Ready when it runs, NodeStatusUnknown when it stops).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.kube.errors import ApiError, bad_request, method_not_allowed
from sandbox.kube.store import Obj, ObjectStore, now_iso

KUBEVIRT = "kubevirt.io/v1"
PREFIX = "/apis/subresources.kubevirt.io/v1/"
ACTIONS = ("start", "stop", "restart")
# VM printableStatus values (kubevirt.io/api/core/v1 VirtualMachinePrintableStatus) we model.
RUNNING, STOPPED, CRASHLOOP, UNSCHEDULABLE = "Running", "Stopped", "CrashLoopBackOff", "ErrorUnschedulable"

@dataclass
class _State:
    """Per store: who hears about VM changes, and where each VM's instance last ran."""

    observers: list[Callable[[Obj], None]] = field(default_factory=list)
    last_place: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (ns, name) -> (host, ip)


def _state(store: ObjectStore) -> _State:
    # Kept on the store itself (not in a module dict keyed by id()), so it lives and dies with it.
    return store.__dict__.setdefault("_kubevirt", _State())


def _first_host(store: ObjectStore) -> str:
    nodes = store.list("v1", "Node")
    return nodes[0]["metadata"]["name"] if nodes else "harvester-1"


def observe(store: ObjectStore, fn: Callable[[Obj], None]) -> None:
    _state(store).observers.append(fn)


def _notify(store: ObjectStore, vm: Obj) -> None:
    for fn in _state(store).observers:
        fn(vm)


def _cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": status, "lastProbeTime": None,
                         "lastTransitionTime": now_iso()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _mac(name: str) -> str:
    h = uuid.uuid5(uuid.NAMESPACE_DNS, name).hex
    return "52:54:00:" + ":".join(h[i:i + 2] for i in (0, 2, 4))


def vmi_for(vm: Obj, node: str, ip: str, *, agent: bool = True) -> Obj:
    """The running instance of ``vm`` on Harvester host ``node``, as virt-handler reports it."""
    meta = vm["metadata"]
    spec = vm["spec"]["template"]["spec"]
    conditions = [_cond("Ready", "True"), _cond("LiveMigratable", "True")]
    if agent:  # qemu-guest-agent answered: the guest OS booted
        conditions.append(_cond("AgentConnected", "True"))
    return {
        "apiVersion": KUBEVIRT, "kind": "VirtualMachineInstance",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                     "labels": dict((vm["spec"]["template"].get("metadata") or {}).get("labels") or {}),
                     "ownerReferences": [{"apiVersion": KUBEVIRT, "kind": "VirtualMachine",
                                          "name": meta["name"], "uid": meta.get("uid", ""),
                                          "controller": True, "blockOwnerDeletion": True}],
                     "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"]},
        "spec": {"domain": spec["domain"], "volumes": spec.get("volumes", []),
                 "networks": spec.get("networks", [])},
        "status": {"phase": "Running", "nodeName": node, "conditions": conditions,
                   "interfaces": [{"name": "default", "ipAddress": ip, "ipAddresses": [ip],
                                   "mac": _mac(meta["name"]),
                                   "interfaceName": "eth0", "infoSource": "domain, guest-agent"}],
                   "guestOSInfo": {"id": "rocky", "name": "Rocky Linux", "version": "9.5"} if agent else {},
                   "qosClass": "Burstable", "launcherContainerImageVersion": "registry.suse.com/suse/sles/15.6/virt-launcher:1.4.0"},
    }


def set_vm_running(store: ObjectStore, namespace: str, name: str, printable: str, *,
                   node: str | None = None, ip: str | None = None, agent: bool = True,
                   message: str = "") -> Obj:
    """Put a VM in one printableStatus, its instance following: Running (a fresh VMI),
    Stopped (no VMI, runStrategy Halted), CrashLoopBackOff (start failures, no VMI) or
    ErrorUnschedulable (VMI Pending, PodScheduled False with the scheduler's ``message``)."""
    vm = store.get(KUBEVIRT, "VirtualMachine", name, namespace)
    if vm is None:
        raise KeyError(f"VirtualMachine {namespace}/{name} not found")
    old = store.get(KUBEVIRT, "VirtualMachineInstance", name, namespace)
    places = _state(store).last_place
    if old is not None:  # where it ran, so a start puts it back there with its (DHCP-pinned) address
        st = old.get("status") or {}
        places[(namespace, name)] = (st.get("nodeName") or "", ((st.get("interfaces") or [{}])[0]).get("ipAddress", ""))
        store.remove(KUBEVIRT, "VirtualMachineInstance", name, namespace)
    last_node, last_ip = places.get((namespace, name), ("", ""))
    node = node or last_node or _first_host(store)
    ip = ip or last_ip
    status: dict[str, Any]
    if printable == RUNNING:
        store.add(vmi_for(vm, node, ip or "", agent=agent))
        status = {"printableStatus": RUNNING, "ready": True, "created": True,
                  "conditions": [_cond("Ready", "True"), _cond("LiveMigratable", "True")]}
    elif printable == STOPPED:
        status = {"printableStatus": STOPPED, "conditions": [
            _cond("Ready", "False", "VMINotExists", "VMI does not exist")]}
    elif printable == CRASHLOOP:
        status = {"printableStatus": CRASHLOOP, "conditions": [
            _cond("Ready", "False", "VMINotExists", "VMI does not exist")],
            "startFailure": {"consecutiveFailCount": 5, "lastFailedVMIUID": str(uuid.uuid4()),
                             "retryAfterTimestamp": now_iso()}}
    elif printable == UNSCHEDULABLE:
        vmi = vmi_for(vm, node, "", agent=False)
        vmi["status"] = {"phase": "Scheduling", "conditions": [
            _cond("Ready", "False", "GuestNotRunning", "Guest VM is not reported as running"),
            _cond("PodScheduled", "False", "Unschedulable", message)]}
        store.add(vmi)
        status = {"printableStatus": UNSCHEDULABLE, "created": True, "conditions": [
            _cond("Ready", "False", "GuestNotRunning", "Guest VM is not reported as running"),
            _cond("PodScheduled", "False", "Unschedulable", message)]}
    else:
        raise ValueError(f"unsupported printableStatus {printable}")

    def fn(o: Obj) -> None:
        o["spec"]["runStrategy"] = "Halted" if printable == STOPPED else "RerunOnFailure"
        o["spec"].pop("running", None)
        o["status"] = status
    vm = store.update(KUBEVIRT, "VirtualMachine", name, namespace, fn)
    _notify(store, vm)
    return vm


def _conflict(name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on virtualmachine.kubevirt.io '
                    f'"{name}": {why}', {"name": name, "group": "kubevirt.io", "kind": "virtualmachine"})


def vm_action(store: ObjectStore, namespace: str, name: str, action: str, dry_run: bool) -> None:
    """What virt-api does for one subresource call (raises ApiError as it answers)."""
    vm = store.get(KUBEVIRT, "VirtualMachine", name, namespace)
    if vm is None:
        raise ApiError(404, "NotFound", f'virtualmachine.kubevirt.io "{name}" not found',
                       {"name": name, "group": "kubevirt.io", "kind": "virtualmachine"})
    running = store.get(KUBEVIRT, "VirtualMachineInstance", name, namespace) is not None \
        and (vm.get("status") or {}).get("printableStatus") == RUNNING
    if action == "start" and running:
        raise _conflict(name, "VM is already running")
    if action in ("stop", "restart") and (vm.get("spec") or {}).get("runStrategy") == "Halted":
        raise _conflict(name, "VM is not running")
    if dry_run:
        return
    set_vm_running(store, namespace, name, STOPPED if action == "stop" else RUNNING)


async def handle(request: web.Request, store: ObjectStore) -> web.StreamResponse:
    """Route one request under ``PREFIX``; 202 Accepted on success as virt-api answers."""
    parts = request.path[len(PREFIX):].strip("/").split("/")
    if not (len(parts) == 5 and parts[0] == "namespaces" and parts[2] == "virtualmachines"
            and parts[4] in ACTIONS):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if request.method != "PUT":
        raise method_not_allowed()
    raw = await request.read()
    try:
        options = json.loads(raw) if raw else {}
    except ValueError:
        raise bad_request("error decoding request body") from None
    dry = options.get("dryRun") if isinstance(options, dict) else None
    if dry not in (None, [], ["All"]):
        raise bad_request(f'dryRun: Unsupported value: "{dry}": supported values: "All"')
    vm_action(store, parts[1], parts[3], parts[4], bool(dry))
    return web.Response(status=202)
