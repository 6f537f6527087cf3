"""The Harvester management cluster behind the guest RKE2 cluster, as a healthy baseline.

Harvester runs the guest's nodes as KubeVirt VirtualMachines (one per RKE2 node, named like the
node, in ``VM_NAMESPACE``), each with its running VirtualMachineInstance; its Longhorn keeps each
VM's root disk as a ``longhorn.io/v1beta2`` Volume; and the Rancher it hosts provisions the guest
cluster through Cluster API.

Where the Machines live: Rancher keeps a downstream cluster's ``cluster.x-k8s.io`` Machines (and
its ``provisioning.cattle.io`` Cluster) in the ``fleet-default`` namespace of the cluster Rancher
runs in, not in the downstream cluster. Here Rancher runs on the Harvester cluster (runbook 2.4
reads Rancher's logs there), so the Machines are in this store, not the guest's; the guest's
Nodes carry the ``cluster.x-k8s.io/machine`` annotation pointing at theirs. (sandbox/world.py
still writes a copy into the guest for code that reads Machines there — 10.2's procedure; real
Rancher has none in the downstream cluster, so new code reads them through ``kube_mgmt``.)

``build_mgmt(guest)`` derives everything from the guest's Nodes; ``link(platform)`` makes each
guest node follow its VM (a stopped VM's node goes NotReady, a started one Ready again), so the
start/restart subresources (sandbox/kube/kubevirt.py) repair what a scenario broke.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from sandbox.kube import kubevirt
from sandbox.kube.store import Obj, ObjectStore
from sandbox.platform import (CAPI, CORE, KUBEVIRT, LONGHORN, RANCHER_PROVISIONING, Platform,
                              add_taint, iso, now, set_condition)

VM_NAMESPACE = "default"
HOSTS = ("harvester-1", "harvester-2", "harvester-3")
CLUSTER = "rke2"
HARVESTER_VERSION = "v1.34.2+rke2r1"  # Harvester 1.6's own RKE2
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
NAMESPACES = ("default", "kube-system", "cattle-system", "fleet-default", "harvester-system",
              "longhorn-system")
# What the guest VMs boot with: the golden image is built for UEFI (runbook 2.7).
USER_DATA = """#cloud-config
package_update: false
packages:
  - qemu-guest-agent
  - iscsi-initiator-utils
write_files:
  - path: /etc/sysctl.d/90-rke2.conf
    content: |
      net.ipv4.ip_forward = 1
      fs.inotify.max_user_instances = 8192
runcmd:
  - systemctl enable --now qemu-guest-agent.service
  - sysctl --system
"""
NETWORK_DATA = """version: 2
ethernets:
  enp1s0:
    dhcp4: true
"""


def _uid(rng: random.Random) -> str:
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def vm_object(name: str, *, cpu: int, mem_gi: int, firmware: str = "efi",
              user_data: str = USER_DATA, created: str, disk_claim: str) -> Obj:
    """A guest node's VM as Rancher's Harvester node driver creates it."""
    bootloader: dict[str, Any] = {"efi": {"secureBoot": False}} if firmware == "efi" else {"bios": {}}
    labels = {"harvesterhci.io/creator": "docker-machine-driver-harvester", "harvesterhci.io/vmName": name}
    return {
        "apiVersion": KUBEVIRT, "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": VM_NAMESPACE, "creationTimestamp": created,
                     "labels": dict(labels), "finalizers": ["harvesterhci.io/VMController.UnsetOwnerOfPVCs"],
                     "annotations": {"harvesterhci.io/volumeClaimTemplates":
                                     f'[{{"metadata":{{"name":"{disk_claim}"}}}}]'}},
        "spec": {
            "runStrategy": "RerunOnFailure",
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "domain": {
                        "cpu": {"cores": cpu, "sockets": 1, "threads": 1},
                        "firmware": {"bootloader": bootloader},
                        "machine": {"type": "q35"},
                        "devices": {
                            "disks": [{"name": "disk-0", "bootOrder": 1, "disk": {"bus": "virtio"}},
                                      {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "nic-0", "bridge": {}, "model": "virtio"}]},
                        "resources": {"limits": {"cpu": str(cpu), "memory": f"{mem_gi}Gi"}},
                    },
                    "evictionStrategy": "LiveMigrate",
                    "networks": [{"name": "nic-0", "multus": {"networkName": "default/vm-network"}}],
                    "volumes": [
                        {"name": "disk-0", "persistentVolumeClaim": {"claimName": disk_claim}},
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data,
                                                                      "networkData": NETWORK_DATA}}],
                },
            },
        },
        "status": {},
    }


def machine_object(node: str, *, pool: str, control_plane: bool, created: str, ip: str | None,
                   kubelet: str | None, phase: str = "Running") -> Obj:
    """The CAPI Machine Rancher keeps for one guest node (no nodeRef while Provisioning)."""
    status: dict[str, Any] = {"phase": phase, "bootstrapReady": phase != "Pending",
                              "infrastructureReady": phase in ("Running", "Provisioned"),
                              "lastUpdated": created, "observedGeneration": 2}
    if phase == "Running":
        status.update(nodeRef={"apiVersion": "v1", "kind": "Node", "name": node},
                      addresses=[{"type": "InternalIP", "address": ip or ""}],
                      nodeInfo={"kubeletVersion": kubelet or ""},
                      conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": created},
                                  {"type": "NodeHealthy", "status": "True", "lastTransitionTime": created}])
    else:
        status["conditions"] = [
            {"type": "Ready", "status": "False", "severity": "Info", "reason": "WaitingForNodeRef",
             "lastTransitionTime": created},
            {"type": "NodeHealthy", "status": "False", "severity": "Info", "reason": "WaitingForNodeRef",
             "lastTransitionTime": created}]
    roles = {"rke.cattle.io/control-plane-role": "true", "rke.cattle.io/etcd-role": "true",
             "cluster.x-k8s.io/control-plane": "true"} if control_plane else {"rke.cattle.io/worker-role": "true"}
    return {
        "apiVersion": CAPI, "kind": "Machine",
        "metadata": {"name": f"{node}-machine", "namespace": "fleet-default", "creationTimestamp": created,
                     "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER,
                                "rke.cattle.io/rke-machine-pool-name": pool, **roles}},
        "spec": {"clusterName": CLUSTER, "providerID": f"harvester://{node}",
                 "bootstrap": {"configRef": {"apiVersion": "rke.cattle.io/v1", "kind": "RKEBootstrap",
                                             "name": f"{node}-bootstrap", "namespace": "fleet-default"}},
                 "infrastructureRef": {"apiVersion": "rke-machine.cattle.io/v1", "kind": "HarvesterMachine",
                                       "name": node, "namespace": "fleet-default"}},
        "status": status,
    }


def volume_object(rng: random.Random, *, pvc: str, size_gi: int, host: str, created: str) -> Obj:
    return {
        "apiVersion": LONGHORN, "kind": "Volume",
        "metadata": {"name": f"pvc-{_uid(rng)}", "namespace": "longhorn-system", "creationTimestamp": created,
                     "labels": {"longhornvolume": "", "recurring-job-group.longhorn.io/default": "enabled"}},
        "spec": {"size": str(size_gi * 1024 ** 3), "numberOfReplicas": 3, "frontend": "blockdev",
                 "dataLocality": "disabled", "accessMode": "rwo", "dataEngine": "v1"},
        "status": {"state": "attached", "robustness": "healthy", "currentNodeID": host,
                   "kubernetesStatus": {"namespace": VM_NAMESPACE, "pvcName": pvc, "pvName": "",
                                        "pvStatus": "Bound", "workloadsStatus": []},
                   "conditions": [{"type": "Scheduled", "status": "True", "reason": "", "message": "",
                                   "lastTransitionTime": created}]},
    }


def build_mgmt(guest: ObjectStore, *, seed: int = 0, t0: datetime | None = None) -> ObjectStore:
    """The healthy management cluster for the guest cluster in ``guest``."""
    rng = random.Random(seed + 101)
    t0 = t0 or now()
    created = iso(t0 - timedelta(days=21))
    store = ObjectStore()
    for ns in NAMESPACES:
        store.add({"apiVersion": CORE, "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns},
                                "creationTimestamp": iso(t0 - timedelta(days=60))},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    for i, host in enumerate(HOSTS):
        store.add(_host_node(host, i, iso(t0 - timedelta(days=60))))
    store.add({"apiVersion": RANCHER_PROVISIONING, "kind": "Cluster",
               "metadata": {"name": CLUSTER, "namespace": "fleet-default", "creationTimestamp": created},
               "spec": {"kubernetesVersion": "v1.34.2+rke2r1", "cloudCredentialSecretName": "cattle-global-data:cc-harvester",
                        "rkeConfig": {"machinePools": json.loads(json.dumps(MACHINE_POOLS))}},
               "status": {"ready": True, "clusterName": "c-m-7x2kq9vd", "clientSecretName": f"{CLUSTER}-kubeconfig",
                          "observedGeneration": 3,
                          "conditions": [{"type": "Ready", "status": "True", "lastUpdateTime": created},
                                         {"type": "Provisioned", "status": "True", "lastUpdateTime": created},
                                         {"type": "Updated", "status": "True", "lastUpdateTime": created}]}})
    for j, node in enumerate(guest.list(CORE, "Node")):
        add_guest_vm(store, rng, node, host=HOSTS[j % len(HOSTS)], created=created)
    return store


# cluster.tf's pools as Rancher holds them; the autoscaler reads min/max (and, for a pool it may
# scale to zero, the node's resources) from machineDeploymentAnnotations (runbook 2.5).
_AS = "cluster.provisioning.cattle.io/autoscaler-"
MACHINE_POOLS: list[dict[str, Any]] = [
    {"name": "control-plane", "quantity": 3, "controlPlaneRole": True, "etcdRole": True, "workerRole": False,
     "machineConfigRef": {"kind": "HarvesterConfig", "name": "nc-rke2-control-plane"}},
    {"name": "general", "quantity": 1, "workerRole": True,
     "machineConfigRef": {"kind": "HarvesterConfig", "name": "nc-rke2-general"},
     "machineDeploymentAnnotations": {f"{_AS}min-size": "1", f"{_AS}max-size": "5"}},
    {"name": "compute", "quantity": 1, "workerRole": True,
     "machineConfigRef": {"kind": "HarvesterConfig", "name": "nc-rke2-compute"},
     "machineDeploymentAnnotations": {f"{_AS}min-size": "0", f"{_AS}max-size": "3",
                                      f"{_AS}resource-cpu": "8", f"{_AS}resource-memory": "32Gi",
                                      f"{_AS}resource-ephemeral-storage": "100Gi"}},
    {"name": "database", "quantity": 1, "workerRole": True,
     "machineConfigRef": {"kind": "HarvesterConfig", "name": "nc-rke2-database"}},
]


def _host_node(name: str, i: int, created: str) -> Obj:
    stamp = iso(now())
    return {"apiVersion": CORE, "kind": "Node",
            "metadata": {"name": name, "creationTimestamp": created,
                         "labels": {"kubernetes.io/hostname": name, "harvesterhci.io/managed": "true",
                                    CONTROL_PLANE: "true", "node-role.kubernetes.io/etcd": "true"}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status",
                                       "lastHeartbeatTime": stamp, "lastTransitionTime": created}],
                       "addresses": [{"type": "InternalIP", "address": f"192.168.10.{11 + i}"},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": HARVESTER_VERSION, "osImage": "Harvester v1.6.0"}}}


def add_guest_vm(store: ObjectStore, rng: random.Random, node: Obj, *, host: str, created: str) -> None:
    """VM (running), its VMI, its root disk's Longhorn volume and its Machine, for one guest node."""
    meta, status = node["metadata"], node.get("status") or {}
    name = meta["name"]
    labels = meta.get("labels") or {}
    cp = CONTROL_PLANE in labels
    alloc = status.get("capacity") or {}
    cpu = int(alloc.get("cpu", "4"))
    mem_gi = round(int(str(alloc.get("memory", "16777216Ki")).removesuffix("Ki")) / 1024 ** 2) or 16
    ip = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), "")
    claim = f"{name}-disk-0-{''.join(rng.choice('bcdfghjklmnpqrstvwxz2456789') for _ in range(5))}"
    store.add(vm_object(name, cpu=cpu, mem_gi=mem_gi, created=created, disk_claim=claim))
    kubevirt.set_vm_running(store, VM_NAMESPACE, name, kubevirt.RUNNING, node=host, ip=ip)
    store.add(volume_object(rng, pvc=claim, size_gi=100, host=host, created=created))
    store.add(machine_object(name, pool=labels.get("rke.cattle.io/rke-machine-pool-name", "general"),
                             control_plane=cp, created=created, ip=ip,
                             kubelet=(status.get("nodeInfo") or {}).get("kubeletVersion")))


# -- the guest node follows its VM ---------------------------------------------------------------
def link(p: Platform) -> None:
    """A VM that stops or crashes takes its guest node down (the node controller marks it
    Unknown, taints it unreachable); a VM running again brings it back Ready."""
    if p.mgmt is not None:
        kubevirt.observe(p.mgmt, lambda vm: (sync_guest_node(p, vm), sync_rancher_cluster(p)))


_UNKNOWN = "Kubelet stopped posting node status."


def sync_guest_node(p: Platform, vm: Obj) -> None:
    name = vm["metadata"]["name"]
    node = p.kube.get(CORE, "Node", name)
    if node is None:
        return
    running = (vm.get("status") or {}).get("printableStatus") == kubevirt.RUNNING
    ready = next((c for c in node["status"]["conditions"] if c["type"] == "Ready"), {})
    if running and ready.get("status") == "Unknown":
        def up(n: Obj) -> None:
            conds = n["status"]["conditions"]
            for type_, reason, message in (
                    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available")):
                set_condition(conds, type_, "False", reason, message)
            set_condition(conds, "Ready", "True", "KubeletReady", "kubelet is posting ready status")
            n["spec"]["taints"] = [t for t in n["spec"].get("taints") or []
                                   if t["key"] != "node.kubernetes.io/unreachable"] or None
            if n["spec"]["taints"] is None:
                del n["spec"]["taints"]
        p.kube.update(CORE, "Node", name, "", up)
    elif not running and ready.get("status") != "Unknown":
        def down(n: Obj) -> None:
            for c in n["status"]["conditions"]:
                beat = c.get("lastHeartbeatTime")  # the kubelet's last post: it stopped then
                set_condition(n["status"]["conditions"], c["type"], "Unknown", "NodeStatusUnknown", _UNKNOWN)
                if beat:
                    c["lastHeartbeatTime"] = beat
        p.kube.update(CORE, "Node", name, "", down)
        add_taint(p, name, "node.kubernetes.io/unreachable", "NoSchedule")
        add_taint(p, name, "node.kubernetes.io/unreachable", "NoExecute")


def sync_rancher_cluster(p: Platform) -> None:
    """Rancher's view: with no control-plane VM running its cluster agent loses the tunnel and
    the provisioning Cluster turns not Ready; one running again brings it back."""
    store = mgmt_store(p)
    cluster = store.get(RANCHER_PROVISIONING, "Cluster", CLUSTER, "fleet-default")
    if cluster is None:
        return
    cps = [m["spec"]["infrastructureRef"]["name"] for m in store.list(CAPI, "Machine", "fleet-default")
           if (m["metadata"].get("labels") or {}).get("rke.cattle.io/control-plane-role") == "true"]
    up = any((store.get(KUBEVIRT, "VirtualMachine", vm, VM_NAMESPACE) or {}).get("status", {}).get(
        "printableStatus") == kubevirt.RUNNING for vm in cps)
    if bool(cluster["status"].get("ready")) == up:
        return

    def fn(c: Obj) -> None:
        c["status"]["ready"] = up
        cond = next(x for x in c["status"]["conditions"] if x["type"] == "Ready")
        cond.update(status="True" if up else "False", lastUpdateTime=iso(now()))
        if up:
            cond.pop("message", None)
            cond.pop("reason", None)
        else:
            cond.update(reason="Disconnected", message="Cluster agent is not connected")
    store.update(RANCHER_PROVISIONING, "Cluster", CLUSTER, "fleet-default", fn)


# -- what scenarios change -----------------------------------------------------------------------
def mgmt_store(p: Platform) -> ObjectStore:
    if p.mgmt is None:
        raise LookupError("this platform has no management cluster (build_platform makes one)")
    return p.mgmt


def set_vm_state(p: Platform, name: str, printable: str, message: str = "") -> Obj:
    return kubevirt.set_vm_running(mgmt_store(p), VM_NAMESPACE, name, printable, message=message)


def add_stuck_machine(p: Platform, node: str, *, pool: str, minutes: float, firmware: str = "efi",
                      user_data: str = USER_DATA, agent: bool = True,
                      printable: str = kubevirt.RUNNING, message: str = "", vm: bool = True,
                      infra_message: str = "") -> None:
    """A scale-up whose node never joined: Machine Provisioning for ``minutes``, its VM in
    ``printable`` state (Running: the instance is up, the guest agent connected when ``agent``);
    without ``vm`` none was created and the Machine's InfrastructureReady says ``infra_message``."""
    store = mgmt_store(p)
    created = iso(now() - timedelta(minutes=minutes))
    rng = random.Random(node)
    claim = f"{node}-disk-0-{''.join(rng.choice('bcdfghjklmnpqrstvwxz2456789') for _ in range(5))}"
    if not vm:
        machine = machine_object(node, pool=pool, control_plane=False, created=created, ip=None, kubelet=None,
                                 phase="Provisioning")
        machine["status"]["conditions"].insert(0, {
            "type": "InfrastructureReady", "status": "False", "severity": "Error", "reason": "ProvisioningFailed",
            "message": infra_message, "lastTransitionTime": iso(now() - timedelta(minutes=2))})
        store.add(machine)
        return
    store.add(vm_object(node, cpu=8, mem_gi=32, firmware=firmware, user_data=user_data,
                        created=created, disk_claim=claim))
    host = HOSTS[len(store.list(KUBEVIRT, "VirtualMachine")) % len(HOSTS)]
    if printable == kubevirt.RUNNING:
        kubevirt.set_vm_running(store, VM_NAMESPACE, node, printable, node=host, ip="10.0.1.40", agent=agent)
    else:
        kubevirt.set_vm_running(store, VM_NAMESPACE, node, printable, node=host, message=message)
    store.add(volume_object(rng, pvc=claim, size_gi=100, host=host, created=created))
    store.add(machine_object(node, pool=pool, control_plane=False, created=created, ip=None, kubelet=None,
                             phase="Provisioning"))


def set_user_data(p: Platform, name: str, user_data: str) -> Obj:
    def fn(vm: Obj) -> None:
        for vol in vm["spec"]["template"]["spec"]["volumes"]:
            if "cloudInitNoCloud" in vol:
                vol["cloudInitNoCloud"]["userData"] = user_data
    return mgmt_store(p).update(KUBEVIRT, "VirtualMachine", name, VM_NAMESPACE, fn)


def host_down(p: Platform, host: str) -> None:
    """A Harvester host offline: its node Unknown, the Longhorn volumes with a replica on it
    degraded (the other two replicas keep serving)."""
    store = mgmt_store(p)

    def fn(n: Obj) -> None:
        set_condition(n["status"]["conditions"], "Ready", "Unknown", "NodeStatusUnknown", _UNKNOWN)
    store.update(CORE, "Node", host, "", fn)
    for vol in store.list(LONGHORN, "Volume"):
        def degrade(v: Obj) -> None:
            v["status"]["robustness"] = "degraded"
        store.update(LONGHORN, "Volume", vol["metadata"]["name"], "longhorn-system", degrade)
