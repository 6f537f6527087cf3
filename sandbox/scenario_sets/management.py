"""Scenarios on the management cluster: Harvester VMs, Rancher machines, Longhorn volumes (runbook
2.1, 2.2, 2.4, 2.7, 2.8, 8.4). Each breaks ``Platform.mgmt`` (sandbox/world_mgmt.py) the way the
root cause reads there; a VM that stops takes its guest node down with it (world_mgmt.link)."""

from __future__ import annotations

from sandbox.kube import kubevirt
from sandbox.platform import Platform
from sandbox.scenario_model import Scenario, _worker
from sandbox.world import CP_NODES
from sandbox.world_mgmt import USER_DATA, add_stuck_machine, host_down, set_user_data, set_vm_state

# Terraform's indent() indents lines 2+ only: the second sysctl line lands outside the block.
BROKEN_USER_DATA = USER_DATA.replace("\n      fs.inotify", "\n    fs.inotify")
NEW_NODE = "rke2-general-2"  # a scale-up of the general pool that never joined


def _vm_stopped(p: Platform) -> None:
    set_vm_state(p, _worker(p, "general"), kubevirt.STOPPED)


def _vm_crashloop(p: Platform) -> None:
    set_vm_state(p, _worker(p, "database"), kubevirt.CRASHLOOP)


def _cp_vms_down(p: Platform) -> None:
    for node in CP_NODES:
        set_vm_state(p, node, kubevirt.STOPPED)


def _machine_stuck(p: Platform) -> None:
    """VM up and booted, EFI and valid cloud-init: what is left is the VM reaching Rancher."""
    add_stuck_machine(p, NEW_NODE, pool="general", minutes=20)


def _machine_unschedulable(p: Platform) -> None:
    add_stuck_machine(p, NEW_NODE, pool="general", minutes=25, printable=kubevirt.UNSCHEDULABLE,
                      message="0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are "
                              "available: 3 No preemption victims found for incoming pod.")


def _vm_bios(p: Platform) -> None:
    """The EFI patches did not apply to a new VM: it sits at 'No bootable device' (no guest agent)."""
    add_stuck_machine(p, NEW_NODE, pool="general", minutes=18, firmware="bios", agent=False)


def _machine_efi(p: Platform) -> None:
    add_stuck_machine(p, "rke2-compute-2", pool="compute", minutes=22, firmware="bios", agent=False)


def _machine_cloud_init(p: Platform) -> None:
    """The guest booted (agent up) but cloud-init stopped at the YAML: RKE2 never installed."""
    add_stuck_machine(p, NEW_NODE, pool="general", minutes=30, user_data=BROKEN_USER_DATA)


def _machine_no_vm(p: Platform) -> None:
    """The node driver could not create the VM: no VM, the Machine's InfrastructureReady says why."""
    add_stuck_machine(p, NEW_NODE, pool="general", minutes=40, vm=False, infra_message=(
        "failed creating server [fleet-default/rke2-general-2] of kind (HarvesterMachine) for machine "
        "rke2-general-2-machine in infrastructure provider: CreateError: Error creating machine: Error in driver "
        "during machine creation: failed to create volume rke2-general-2-disk-0: storage class harvester-longhorn: "
        "insufficient storage"))


def _cloud_init_yaml(p: Platform) -> None:
    set_user_data(p, _worker(p, "compute"), BROKEN_USER_DATA)


def _longhorn_degraded(p: Platform) -> None:
    host_down(p, "harvester-2")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("harvester-vm-stopped", "the VM behind a general worker is stopped in Harvester: the node is NotReady",
             _vm_stopped, section="2.2", status="crit",
             cause="is NotReady because its VM is not running: VM Stopped in Harvester"),
    Scenario("harvester-vm-crashloop", "the VM behind the database worker crashes on every start",
             _vm_crashloop, section="2.2", status="crit", cause="VM crashed: CrashLoopBackOff"),
    Scenario("harvester-cp-vms-down", "all three control-plane VMs are stopped in Harvester",
             _cp_vms_down, section="2.4", status="crit",
             cause="all 3 control-plane VMs are down in Harvester"),
    Scenario("rancher-machine-stuck", "a new general machine has been Provisioning for 20 minutes; its VM runs",
             _machine_stuck, section="2.1", status="crit",
             cause="the VM reaching the Rancher API is left"),
    Scenario("rancher-machine-unschedulable", "a new machine's VM fits on no Harvester host (memory)",
             _machine_unschedulable, section="2.1", status="crit",
             cause="VM ErrorUnschedulable: 0/3 nodes are available: 3 Insufficient memory"),
    Scenario("rancher-machine-efi", "a new compute machine's VM has BIOS firmware: it never boots, no node",
             _machine_efi, section="2.1", status="crit",
             cause="EFI boot issue: firmware bootloader is bios, the golden image needs efi"),
    Scenario("rancher-machine-cloud-init", "a new machine's VM booted but its cloud-init user data is malformed",
             _machine_cloud_init, section="2.1", status="crit",
             cause="cloud-init failure: user data is not valid YAML at line 11 column 1"),
    Scenario("rancher-machine-no-vm", "the node driver could not create a new machine's VM (storage)",
             _machine_no_vm, section="2.1", status="crit",
             cause="no VM for it in Harvester (the node driver did not create one): InfrastructureReady False"),
    Scenario("harvester-vm-bios", "a new machine's VM boots with BIOS firmware; the golden image needs EFI",
             _vm_bios, section="2.7", status="crit",
             cause="EFI boot issue: firmware bootloader is bios, the golden image needs efi"),
    Scenario("harvester-cloud-init-yaml", "a compute VM's cloud-init user data is malformed (indent())",
             _cloud_init_yaml, section="2.8", status="crit",
             cause="user data is not valid YAML at line 11 column 1: could not find expected ':'"),
    Scenario("longhorn-degraded", "a Harvester host is offline: Longhorn volumes are degraded",
             _longhorn_degraded, section="8.4", status="warn",
             cause="Harvester node(s) offline: harvester-2"),
)
