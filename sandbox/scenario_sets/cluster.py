"""Scenarios for runbook chapters 1-2: triage quick checks, nodes, etcd, API server, autoscaler, labels."""

from __future__ import annotations

from datetime import timedelta

from sandbox import etcd_metrics
from sandbox.kube.store import Obj
from sandbox.platform import (CORE, Platform, add_event, add_log, add_taint, iso, now, set_condition,
                              set_pod_unschedulable, set_pod_waiting)
from sandbox.scenario_model import Scenario, _first_pod, _scheduling_message, _worker
from sandbox.world import AUTOSCALER_GROUPS, autoscaler_status, etcd_snapshot


# -- chapter 1: what the flowchart's pod branches read ---------------------------------------------
def _crashloop_oomkilled(p: Platform) -> None:
    """argocd-repo-server killed by the kernel at its memory limit, over and over."""
    pod = _first_pod(p, "argocd", {"app.kubernetes.io/name": "argocd-repo-server"})
    name = pod["metadata"]["name"]
    set_pod_waiting(p, "argocd", name, "CrashLoopBackOff",
                    f"back-off 5m0s restarting failed container=argocd-repo-server pod={name}_argocd({pod['metadata']['uid']})",
                    restart_count=11, last_exit=(137, "OOMKilled"))
    add_event(p, p.kube.get(CORE, "Pod", name, "argocd") or pod, "BackOff",
              "Back-off restarting failed container argocd-repo-server in pod " + name, count=31)


def _crashloop_permission_denied(p: Platform) -> None:
    """Keycloak cannot write its data directory: the volume's owner does not match runAsUser."""
    pod = _first_pod(p, "keycloak", {"app": "keycloak"})
    name = pod["metadata"]["name"]
    set_pod_waiting(p, "keycloak", name, "CrashLoopBackOff",
                    f"back-off 2m40s restarting failed container=keycloak pod={name}_keycloak({pod['metadata']['uid']})",
                    restart_count=6, last_exit=(1, "Error"))
    add_log(p, "keycloak", name, [
        "Updating the configuration and installing your custom providers, if any. Please wait.",
        "ERROR: Failed to start server in (production) mode",
        "ERROR: /opt/keycloak/data/tmp/kc-gzip-cache: Permission denied",
    ], previous=True)


def _pending_no_matching_node(p: Platform) -> None:
    """The mattermost pod asks for a pool no node carries (nodeSelector workload-type=gpu)."""
    pod = _first_pod(p, "mattermost", {"app": "mattermost"})
    name = pod["metadata"]["name"]
    p.kube.update(CORE, "Pod", name, "mattermost",
                  lambda o: o["spec"].update(nodeSelector={"workload-type": "gpu"}))
    message = _scheduling_message(p, "node(s) didn't match Pod's node affinity/selector").replace(
        "No preemption victims found for incoming pod", "Preemption is not helpful for scheduling")
    pod = set_pod_unschedulable(p, "mattermost", name, message)
    add_event(p, pod, "FailedScheduling", message, component="default-scheduler")


# -- 2.2 Node NotReady -----------------------------------------------------------------------------
def _kubelet_silent(p: Platform, node: str, minutes: float) -> None:
    """What the node controller writes once the kubelet stops posting status: every condition
    Unknown (NodeStatusUnknown), heartbeats frozen, the unreachable taints."""
    beat = iso(now() - timedelta(minutes=minutes))

    def fn(n: Obj) -> None:
        for cond in n["status"]["conditions"]:
            set_condition([cond], cond["type"], "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
            cond["lastHeartbeatTime"] = beat
    p.kube.update(CORE, "Node", node, "", fn)
    add_taint(p, node, "node.kubernetes.io/unreachable", "NoSchedule")
    add_taint(p, node, "node.kubernetes.io/unreachable", "NoExecute")
    add_event(p, p.node(node), "NodeNotReady", f"Node {node} status is now: NodeNotReady",
              type_="Normal", component="node-controller")


def _node_kubelet_stopped(p: Platform) -> None:
    _kubelet_silent(p, _worker(p, "compute"), 6)


def _nodes_not_ready_together(p: Platform) -> None:
    """Two workers on the same Harvester host go silent within a minute of each other."""
    _kubelet_silent(p, _worker(p, "general"), 4)
    _kubelet_silent(p, _worker(p, "compute"), 4)


def _node_memory_pressure(p: Platform) -> None:
    node = _worker(p, "database")
    p.kube.update(CORE, "Node", node, "", lambda n: set_condition(
        n["status"]["conditions"], "MemoryPressure", "True", "KubeletHasInsufficientMemory",
        "kubelet has insufficient memory available"))
    add_taint(p, node, "node.kubernetes.io/memory-pressure", "NoSchedule")
    add_event(p, p.node(node), "EvictionThresholdMet", "Attempting to reclaim memory", component="kubelet")


# -- 2.6 Node Labels Missing -----------------------------------------------------------------------
def _labels_race(p: Platform) -> None:
    """A compute node came up before Rancher set its machine-pool label: node-labeler (running)
    had nothing to go by, so the node has no workload-type either."""
    node = _worker(p, "compute")

    def fn(n: Obj) -> None:
        n["metadata"]["labels"].pop("workload-type", None)
        n["metadata"]["labels"].pop("rke.cattle.io/rke-machine-pool-name", None)
    p.kube.update(CORE, "Node", node, "", fn)


# -- 2.9 Golden Image Issues -----------------------------------------------------------------------
def _golden_image_drift(p: Platform) -> None:
    """One pool rebuilt from an older golden image: another Rocky release and kernel."""
    node = _worker(p, "compute")

    def fn(n: Obj) -> None:
        n["status"]["nodeInfo"].update(osImage="Rocky Linux 9.4 (Blue Onyx)",
                                       kernelVersion="5.14.0-427.13.1.el9_4.x86_64")
    p.kube.update(CORE, "Node", node, "", fn)


# -- 2.3 etcd Cluster Health Degraded (members' metrics, evaluated by a real Prometheus) -----------
def _etcd(p: Platform, i: int) -> etcd_metrics.Member:
    return list(etcd_metrics.members(p.metrics).values())[i]


def _etcd_member_down(p: Platform) -> None:
    """rke2-cp-3's etcd crashed: its :2381 no longer answers; the other two keep quorum."""
    m = _etcd(p, 2)
    m.up = False
    etcd_metrics.publish(p.metrics, m)


def _etcd_slow_fsync(p: Platform) -> None:
    """rke2-cp-2's disk stalls: WAL fsyncs take 800 ms (the runbook's > 500 ms)."""
    m = _etcd(p, 1)
    m.fsync.latency = 0.8
    etcd_metrics.publish(p.metrics, m)


def _etcd_quorum_lost(p: Platform) -> None:
    """Two of three CP nodes' etcd down: no quorum, a restore from snapshot (10.3)."""
    for i in (1, 2):
        m = _etcd(p, i)
        m.up = False
        etcd_metrics.publish(p.metrics, m)


# -- 2.3 / 10.3 etcd snapshots --------------------------------------------------------------------
SNAPSHOTS = "k3s.cattle.io/v1"


def _drop_snapshots(p: Platform, newer_than_hours: float | None = None) -> None:
    cutoff = now() - timedelta(hours=newer_than_hours) if newer_than_hours is not None else None
    for snap in p.kube.list(SNAPSHOTS, "ETCDSnapshotFile"):
        taken = snap["status"]["creationTime"]
        if cutoff is None or taken > iso(cutoff):
            p.kube.remove(SNAPSHOTS, "ETCDSnapshotFile", snap["metadata"]["name"])


def _etcd_snapshots_late(p: Platform) -> None:
    """The snapshot schedule stopped a day ago: nothing newer than 20 hours."""
    _drop_snapshots(p, newer_than_hours=20)


def _etcd_snapshot_failed(p: Platform) -> None:
    """The last run on rke2-cp-1 failed: the snapshot directory's disk is full."""
    taken = now() - timedelta(minutes=50)
    etcd_snapshot(p.kube, "rke2-cp-1", taken, size=0, ready=False,
                  error="failed to save snapshot: write /var/lib/rancher/rke2/server/db/snapshots/"
                        f"etcd-snapshot-rke2-cp-1-{int(taken.timestamp())}.part: no space left on device")


def _etcd_snapshots_missing(p: Platform) -> None:
    _drop_snapshots(p)


# -- 2.4 API Server Unreachable -------------------------------------------------------------------
def _apiserver_cp_down(p: Platform) -> None:
    """rke2-cp-2's kube-apiserver crash-loops (its etcd client cannot connect): its own
    /healthz and /readyz fail while the other two still serve the API."""
    name = "kube-apiserver-rke2-cp-2"
    set_pod_waiting(p, "kube-system", name, "CrashLoopBackOff",
                    f"back-off 1m20s restarting failed container=kube-apiserver pod={name}_kube-system",
                    restart_count=5, last_exit=(1, "Error"))
    add_log(p, "kube-system", name, [
        'W1203 06:11:02.518810       1 logging.go:55] [core] grpc: addrConn.createTransport failed to connect to '
        '{Addr: "127.0.0.1:2379"}. Err: connection error: desc = "transport: Error while dialing: dial tcp '
        '127.0.0.1:2379: connect: connection refused"',
        'E1203 06:11:22.519004       1 run.go:72] "command failed" err="context deadline exceeded"',
    ], previous=True)


# -- 2.5 Cluster Autoscaler Not Scaling -----------------------------------------------------------
AUTOSCALER = {"app.kubernetes.io/name": "rancher-cluster-autoscaler"}
RANCHER_URL = "https://rancher.example.com"


def _pending_for_cpu(p: Platform) -> None:
    """A compute workload that no node has room for: the autoscaler should add a node."""
    pod = _first_pod(p, "mattermost", {"app": "mattermost"})
    message = _scheduling_message(p, "Insufficient cpu")
    pod = set_pod_unschedulable(p, "mattermost", pod["metadata"]["name"], message)
    p.kube.update(CORE, "Pod", pod["metadata"]["name"], "mattermost", lambda o: o["status"]["conditions"][0].update(
        lastTransitionTime=iso(now() - timedelta(minutes=12))))
    add_event(p, pod, "FailedScheduling", message, component="default-scheduler")


def _autoscaler_log(p: Platform, lines: list[str]) -> None:
    pod = _first_pod(p, "kube-system", AUTOSCALER)
    add_log(p, "kube-system", pod["metadata"]["name"], lines, ago=timedelta(seconds=20), spacing=timedelta(seconds=10))


def _autoscaler_token_expired(p: Platform) -> None:
    _pending_for_cpu(p)
    _autoscaler_log(p, [
        "I1203 06:10:01.004211       1 static_autoscaler.go:296] Starting main loop",
        f'E1203 06:10:01.218734       1 rancher_provider.go:182] failed to get node groups: rancher API request '
        f'"{RANCHER_URL}/v1/provisioning.cattle.io.clusters/fleet-default/rke2" returned 401 Unauthorized: '
        '{"type":"error","status":"401","message":"must authenticate"}',
        "E1203 06:10:01.218801       1 static_autoscaler.go:329] Failed to refresh cloud provider config",
    ])


def _autoscaler_ca_untrusted(p: Platform) -> None:
    _pending_for_cpu(p)
    _autoscaler_log(p, [
        "I1203 06:10:01.004211       1 static_autoscaler.go:296] Starting main loop",
        f'E1203 06:10:01.331090       1 rancher_provider.go:182] failed to get node groups: Get '
        f'"{RANCHER_URL}/v1/provisioning.cattle.io.clusters/fleet-default/rke2": tls: failed to verify '
        'certificate: x509: certificate signed by unknown authority',
    ])


def _autoscaler_cloud_config(p: Platform) -> None:
    _pending_for_cpu(p)
    _autoscaler_log(p, [
        "I1203 06:09:58.100221       1 main.go:604] Cluster Autoscaler 1.33.0",
        "F1203 06:09:58.102937       1 main.go:687] Failed to create autoscaler: rancher: unable to load "
        "cloud config: open /config/cloud-config: no such file or directory",
    ])


def _autoscaler_pool_annotations(p: Platform) -> None:
    """cluster.tf lost the general pool's min/max: the autoscaler no longer manages it."""
    assert p.mgmt is not None

    def strip(c: Obj) -> None:
        for pool in c["spec"]["rkeConfig"]["machinePools"]:
            if pool["name"] == "general":
                pool.pop("machineDeploymentAnnotations", None)
    p.mgmt.update("provisioning.cattle.io/v1", "Cluster", "rke2", "fleet-default", strip)
    groups = [g for g in AUTOSCALER_GROUPS if not g["name"].endswith("general")]
    p.kube.update(CORE, "ConfigMap", "cluster-autoscaler-status", "kube-system",
                  lambda cm: cm["data"].update(status=autoscaler_status(now(), groups)))


def _autoscaler_scale_up_backoff(p: Platform) -> None:
    """It asked for a node 20 minutes ago; Harvester had no room, so none came: backoff."""
    _pending_for_cpu(p)
    groups = [dict(g) for g in AUTOSCALER_GROUPS]
    groups[0].update(target=2, scale_up="Backoff",
                     backoff=("timeout", "Scale-up timed out for node group fleet-default/rke2-general after 15m0s"))
    p.kube.update(CORE, "ConfigMap", "cluster-autoscaler-status", "kube-system",
                  lambda cm: cm["data"].update(status=autoscaler_status(now(), groups)))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("crashloop-oomkilled", "argocd-repo-server in CrashLoopBackOff, last termination OOMKilled (1)",
             _crashloop_oomkilled, section="1", status="warn", cause="pod(s) OOMKilled"),
    Scenario("crashloop-permission-denied", "keycloak in CrashLoopBackOff: its data directory 'Permission denied' (1)",
             _crashloop_permission_denied, section="1", status="warn",
             cause="/opt/keycloak/data/tmp/kc-gzip-cache: Permission denied"),
    Scenario("pending-no-matching-node", "the mattermost pod Pending: nodeSelector workload-type=gpu matches no node (1, 2.6)",
             _pending_no_matching_node, section="1", status="warn",
             cause="Pending (node(s) didn't match Pod's node affinity/selector"),
    Scenario("node-kubelet-stopped", "rke2-compute-1's kubelet stopped posting status 6 minutes ago (2.2)",
             _node_kubelet_stopped, section="2.2", status="crit", cause="kubelet stopped posting node status"),
    Scenario("nodes-not-ready-together", "two workers NotReady at once: network or Harvester host (2.2)",
             _nodes_not_ready_together, section="2.2", status="crit", cause="2 nodes NotReady at once"),
    Scenario("node-memory-pressure", "rke2-database-1 has MemoryPressure=True, pods being evicted (2.2)",
             _node_memory_pressure, section="2.2", status="warn", cause="pressure | MemoryPressure"),
    Scenario("labels-race", "a compute node without workload-type nor its machine-pool label (2.6 label race)",
             _labels_race, section="2.6", status="warn", cause="label race: rke2-compute-1 without"),
    Scenario("etcd-member-down", "the etcd member on rke2-cp-3 is down; two of three keep quorum (2.3)",
             _etcd_member_down, section="2.3", status="crit", cause="10.0.1.12:2381 | down: Prometheus cannot scrape it"),
    Scenario("etcd-slow-fsync", "WAL fsync p99 on rke2-cp-2 about 800 ms (2.3: > 500 ms)",
             _etcd_slow_fsync, section="2.3", status="crit", cause="10.0.1.11:2381 | leader seen, WAL fsync p99 "),
    Scenario("etcd-quorum-lost", "two of three etcd members down: quorum lost (2.3 → 10.3)",
             _etcd_quorum_lost, section="2.3", status="crit", cause="quorum lost: 1 of 3 members up with a leader"),
    Scenario("etcd-snapshots-late", "no etcd snapshot for 20 hours: the 6-hourly schedule stopped (2.3, 10.3)",
             _etcd_snapshots_late, section="10.3", status="warn", cause="etcd snapshots late, the schedule is every 6h"),
    Scenario("etcd-snapshot-failed", "the last etcd snapshot on rke2-cp-1 failed: no space left on device (2.3)",
             _etcd_snapshot_failed, section="10.3", status="warn",
             cause="etcd snapshot failed on rke2-cp-1: failed to save snapshot"),
    Scenario("etcd-snapshots-missing", "no etcd snapshot at all: a lost quorum could not be restored (2.3, 10.3)",
             _etcd_snapshots_missing, section="10.3", status="crit", cause="no etcd snapshot available"),
    Scenario("apiserver-cp-down", "rke2-cp-2's API server fails /healthz and /readyz (etcd check failed) (2.4)",
             _apiserver_cp_down, section="2.4", status="warn",
             cause="API server down on a control-plane node: 1 of 3 (rke2-cp-2)"),
    Scenario("autoscaler-token-expired", "a pod Pending for CPU; the autoscaler's Rancher token is rejected (401) (2.5)",
             _autoscaler_token_expired, section="2.5", status="warn",
             cause="Rancher token expired or invalid: E1203"),
    Scenario("autoscaler-ca-untrusted", "the autoscaler does not trust Rancher's CA (x509) (2.5)",
             _autoscaler_ca_untrusted, section="2.5", status="warn",
             cause="Rancher CA certificate not trusted: "),
    Scenario("autoscaler-cloud-config", "the autoscaler cannot load its cloud-config (2.5)",
             _autoscaler_cloud_config, section="2.5", status="warn",
             cause="cloud-config wrong or missing: F1203"),
    Scenario("autoscaler-pool-annotations", "the general pool lost autoscaler-min-size/max-size (2.5)",
             _autoscaler_pool_annotations, section="2.5", status="warn",
             cause="machine pool min/max annotations missing: general lacks autoscaler-min-size, autoscaler-max-size"),
    Scenario("autoscaler-scale-up-backoff", "scale-up of the general pool timed out (Harvester capacity) (2.5)",
             _autoscaler_scale_up_backoff, section="2.5", status="warn",
             cause="scale-up timed out, node group fleet-default/rke2-general in backoff"),
    Scenario("golden-image-drift", "rke2-compute-1 runs Rocky 9.4 and an older kernel, the rest Rocky 9.5 (2.9)",
             _golden_image_drift, section="2.9", status="warn", cause="nodes built from different golden images"),
)
