"""The sandbox platform: the cluster's objects plus the Vault cluster, and the small mutations
scenarios share. Every mutation goes through ``ObjectStore.update/add/remove`` so
resourceVersions bump and watchers see it, which lets scenarios run on a live sandbox."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sandbox.exporter import Exporter
from sandbox.kube.store import Obj, ObjectStore
from sandbox.vault.kube_review import review as review_token
from sandbox.vault.state import VaultCluster

# apiVersions exactly as the real APIs (and the sandbox API server) serve them.
CORE = "v1"
APPS = "apps/v1"
POLICY = "policy/v1"
STORAGE = "storage.k8s.io/v1"
CERT_MANAGER = "cert-manager.io/v1"
CNPG = "postgresql.cnpg.io/v1"
GATEWAY = "gateway.networking.k8s.io/v1"
TRAEFIK = "traefik.io/v1alpha1"
CILIUM_ALPHA = "cilium.io/v2alpha1"
CILIUM = "cilium.io/v2"
ARGO = "argoproj.io/v1alpha1"
CAPI = "cluster.x-k8s.io/v1beta1"
HELM = "helm.cattle.io/v1"
KUBEVIRT = "kubevirt.io/v1"
LONGHORN = "longhorn.io/v1beta2"
RANCHER_PROVISIONING = "provisioning.cattle.io/v1"

DOMAIN = "example.com"
LB_IP = "203.0.113.202"


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class Platform:
    kube: ObjectStore
    vault: VaultCluster
    domain: str = DOMAIN
    # The Harvester management cluster (VMs, Rancher machines, Longhorn) as a second API server's
    # store: sandbox/world_mgmt.py builds it; None when a test builds a platform without one.
    mgmt: ObjectStore | None = None
    # Exporter metrics (CNPG, mysqld, redis…) served at the sandbox's /metrics (sandbox.exporter).
    metrics: Exporter = field(default_factory=Exporter)

    def __post_init__(self) -> None:
        # Vault's readiness probe and service registration: when a replica is unsealed or
        # sealed through the API, its pod's Ready condition and vault-* labels follow.
        self.vault.observe(lambda _index: sync_vault_pods(self))
        # Vault's Kubernetes auth reviews login tokens against this cluster's API server.
        self.vault.token_reviewer = lambda host, ca, jwt: review_token(self.kube, host, ca, jwt)

    def vault_names(self) -> list[str]:
        return [r.name for r in self.vault.replicas]

    # -- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> Obj:
        obj = self.kube.get(CORE, "Node", name)
        if obj is None:
            raise KeyError(f"node {name} not found")
        return obj

    def workers(self, pool: str | None = None) -> list[Obj]:
        """Worker nodes in name order, optionally of one pool (by hostname, as the runbook's
        node-labeler fallback does, so unlabeled workers still count)."""
        nodes = [n for n in self.kube.list(CORE, "Node")
                 if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]]
        return [n for n in nodes if pool is None or f"-{pool}-" in n["metadata"]["name"]]

    def pods(self, namespace: str, labels: dict[str, str] | None = None) -> list[Obj]:
        want = labels or {}
        return [p for p in self.kube.list(CORE, "Pod", namespace)
                if all(p["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]


# -- conditions --------------------------------------------------------------------------------
def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str,
                  message: str, **extra: Any) -> None:
    """Set one condition; lastTransitionTime moves only when the status changes (as controllers do)."""
    stamp = iso(now())
    for cond in conditions:
        if cond.get("type") == type_:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = stamp
            cond.update(status=status, reason=reason, message=message, **extra)
            if "lastHeartbeatTime" in cond:
                cond["lastHeartbeatTime"] = stamp
            return
    conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": stamp, **extra})


def set_node_condition(p: Platform, node: str, type_: str, status: str, reason: str,
                       message: str) -> Obj:
    return p.kube.update(CORE, "Node", node, "", lambda n: set_condition(
        n["status"]["conditions"], type_, status, reason, message))


def add_taint(p: Platform, node: str, key: str, effect: str = "NoSchedule") -> Obj:
    def fn(n: Obj) -> None:
        taints = n["spec"].setdefault("taints", [])
        if not any(t["key"] == key and t["effect"] == effect for t in taints):
            taint: dict[str, str] = {"key": key, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = iso(now())
            taints.append(taint)
    return p.kube.update(CORE, "Node", node, "", fn)


# -- pods --------------------------------------------------------------------------------------
def _pod_ready_conditions(pod: Obj, ready: bool, unready: list[str]) -> None:
    conds = pod["status"].setdefault("conditions", [])
    if ready:
        for t in ("Ready", "ContainersReady"):
            set_condition(conds, t, "True", "", "")
            for c in conds:
                if c["type"] == t:
                    c.pop("reason", None)
                    c.pop("message", None)
    else:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        set_condition(conds, "Ready", "False", "ContainersNotReady", msg)
        set_condition(conds, "ContainersReady", "False", "ContainersNotReady", msg)


def set_pod_ready(p: Platform, namespace: str, name: str, ready: bool) -> Obj:
    """Containers running but (not) passing their readiness probe."""
    def fn(pod: Obj) -> None:
        for cs in pod["status"].get("containerStatuses", []):
            cs["ready"] = ready
        _pod_ready_conditions(pod, ready, [c["name"] for c in pod["spec"]["containers"]])
    pod = p.kube.update(CORE, "Pod", name, namespace, fn)
    sync_owner_status(p, pod)
    return pod


def set_pod_waiting(p: Platform, namespace: str, name: str, reason: str, message: str, *,
                    restart_count: int | None = None, last_exit: tuple[int, str] | None = None,
                    phase: str | None = None, container: str | None = None) -> Obj:
    """One container stuck in ``waiting`` (CrashLoopBackOff, ImagePullBackOff, ...).
    ``last_exit`` = (exitCode, reason) fills lastState.terminated as the kubelet reports it."""
    stamp = now()

    def fn(pod: Obj) -> None:
        statuses = pod["status"].setdefault("containerStatuses", [])
        target = container or pod["spec"]["containers"][0]["name"]
        for cs in statuses:
            if cs["name"] != target:
                continue
            cs["ready"] = False
            cs["started"] = False
            cs["state"] = {"waiting": {"reason": reason, "message": message}}
            if restart_count is not None:
                cs["restartCount"] = restart_count
            if last_exit is not None:
                code, why = last_exit
                cs["lastState"] = {"terminated": {
                    "exitCode": code, "reason": why, "containerID": cs.get("containerID", ""),
                    "startedAt": iso(stamp - timedelta(seconds=40)),
                    "finishedAt": iso(stamp - timedelta(seconds=20))}}
        if phase is not None:
            pod["status"]["phase"] = phase
        _pod_ready_conditions(pod, False, [target])
    pod = p.kube.update(CORE, "Pod", name, namespace, fn)
    sync_owner_status(p, pod)
    return pod


def set_pod_unschedulable(p: Platform, namespace: str, name: str, message: str) -> Obj:
    """A pod the scheduler could not place: Pending, no node, PodScheduled False."""
    def fn(pod: Obj) -> None:
        pod["spec"].pop("nodeName", None)
        status = pod["status"]
        for key in ("hostIP", "hostIPs", "podIP", "podIPs", "startTime", "containerStatuses"):
            status.pop(key, None)
        status["phase"] = "Pending"
        status["conditions"] = []
        set_condition(status["conditions"], "PodScheduled", "False", "Unschedulable", message)
        status["conditions"][0]["lastProbeTime"] = None
    pod = p.kube.update(CORE, "Pod", name, namespace, fn)
    sync_owner_status(p, pod)
    return pod


def pod_is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def sync_owner_status(p: Platform, pod: Obj) -> None:
    """Recount ready/available replicas of the pod's controller (and the Deployment above a
    ReplicaSet) from its pods, as the controllers would."""
    ns = pod["metadata"].get("namespace", "")
    for ref in pod["metadata"].get("ownerReferences", []):
        kind, name = ref["kind"], ref["name"]
        if kind not in ("ReplicaSet", "StatefulSet", "DaemonSet"):
            continue
        owned = [q for q in p.kube.list(CORE, "Pod", ns)
                 if any(r["name"] == name and r["kind"] == kind
                        for r in q["metadata"].get("ownerReferences", []))]
        ready = sum(pod_is_ready(q) for q in owned)
        if p.kube.get(APPS, kind, name, ns) is None:
            continue
        owner = p.kube.update(APPS, kind, name, ns, lambda o: _recount(o, len(owned), ready))
        if kind == "ReplicaSet":
            for dref in owner["metadata"].get("ownerReferences", []):
                if dref["kind"] == "Deployment" and p.kube.get(APPS, "Deployment", dref["name"], ns):
                    p.kube.update(APPS, "Deployment", dref["name"], ns,
                                  lambda d: _recount(d, len(owned), ready))


def _recount(obj: Obj, total: int, ready: int) -> None:
    status = obj.setdefault("status", {})
    kind = obj["kind"]
    if kind == "DaemonSet":
        status.update(currentNumberScheduled=total, desiredNumberScheduled=total,
                      numberReady=ready, numberAvailable=ready, updatedNumberScheduled=total)
        if total - ready:
            status["numberUnavailable"] = total - ready
        else:
            status.pop("numberUnavailable", None)
        return
    status.update(replicas=total, readyReplicas=ready, availableReplicas=ready)
    if kind == "StatefulSet":
        status.update(currentReplicas=total, updatedReplicas=total)
    if kind == "Deployment":
        status["updatedReplicas"] = total
        if total - ready:
            status["unavailableReplicas"] = total - ready
        else:
            status.pop("unavailableReplicas", None)
        want = obj["spec"].get("replicas", total)
        if ready >= want:
            set_condition(status.setdefault("conditions", []), "Available", "True",
                          "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            set_condition(status.setdefault("conditions", []), "Available", "False",
                          "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    for key in ("readyReplicas", "availableReplicas"):
        if status.get(key) == 0:
            status.pop(key)  # the API omits zero counts


# -- cert-manager ------------------------------------------------------------------------------
def set_certificate_ready(p: Platform, namespace: str, name: str, ready: bool, reason: str,
                          message: str) -> Obj:
    def fn(cert: Obj) -> None:
        conds = cert.setdefault("status", {}).setdefault("conditions", [])
        set_condition(conds, "Ready", "True" if ready else "False", reason, message,
                      observedGeneration=cert["metadata"].get("generation", 1))
    return p.kube.update(CERT_MANAGER, "Certificate", name, namespace, fn)


def set_issuer_ready(p: Platform, name: str, ready: bool, reason: str, message: str) -> Obj:
    def fn(issuer: Obj) -> None:
        conds = issuer.setdefault("status", {}).setdefault("conditions", [])
        set_condition(conds, "Ready", "True" if ready else "False", reason, message,
                      observedGeneration=issuer["metadata"].get("generation", 1))
    return p.kube.update(CERT_MANAGER, "ClusterIssuer", name, "", fn)


# -- vault pods follow the Vault cluster -------------------------------------------------------
def sync_vault_pods(p: Platform) -> None:
    """The Helm chart's readiness probe (`vault status`) fails while sealed, and its service
    registration keeps the vault-active/vault-sealed/vault-initialized labels current."""
    for r in p.vault.replicas:
        pod = p.kube.get(CORE, "Pod", r.name, "vault")
        if pod is None:
            continue
        labels = {"vault-active": str(p.vault.is_active(r.index)).lower(),
                  "vault-sealed": str(r.sealed).lower(),
                  "vault-initialized": str(r.initialized).lower()}
        ready = r.initialized and not r.sealed and r.reachable
        if all(pod["metadata"]["labels"].get(k) == v for k, v in labels.items()) \
                and pod_is_ready(pod) == ready:
            continue
        p.kube.update(CORE, "Pod", r.name, "vault",
                      lambda o: o["metadata"]["labels"].update(labels))
        if r.reachable:
            set_pod_ready(p, "vault", r.name, ready)


# -- events ------------------------------------------------------------------------------------
def add_event(p: Platform, obj: Obj, reason: str, message: str, *, type_: str = "Warning",
              component: str = "kubelet", count: int = 1) -> Obj:
    meta = obj["metadata"]
    ns = meta.get("namespace") or "default"
    stamp = iso(now())
    return p.kube.add({
        "apiVersion": CORE, "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": ns},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                           "name": meta["name"], "namespace": meta.get("namespace", ""),
                           "uid": meta.get("uid", ""),
                           "resourceVersion": meta.get("resourceVersion", "")},
        "reason": reason, "message": message, "type": type_, "count": count,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": None,
        "source": {"component": component}, "reportingComponent": component,
        "reportingInstance": "",
    })


# -- what `kubectl logs` and `kubectl top` read --------------------------------------------------
def add_log(p: Platform, namespace: str, pod: str, lines: list[str], *, container: str | None = None,
            previous: bool = False, ago: timedelta = timedelta(minutes=2),
            spacing: timedelta = timedelta(seconds=1)) -> None:
    """Append timestamped lines to a container's log (the previous instance's with ``previous``);
    the last line is ``ago`` old. ``container`` defaults to the pod's first container."""
    obj = p.kube.get(CORE, "Pod", pod, namespace)
    if obj is None:
        raise LookupError(f"pod {namespace}/{pod} not found")
    name = container or obj["spec"]["containers"][0]["name"]
    end = datetime.now(timezone.utc) - ago
    stamped = [(end - spacing * (len(lines) - 1 - i), line) for i, line in enumerate(lines)]
    p.kube.container_logs.setdefault((namespace, pod, name, previous), []).extend(stamped)


def _cpu(cores: float) -> str:
    return f"{max(1, round(cores * 1e9))}n"


def _mem(byte_count: float) -> str:
    return f"{max(1, round(byte_count / 1024))}Ki"


def add_resource_metrics(store: ObjectStore, *, seed: int = 0, skip_namespaces: tuple[str, ...] = ()) -> None:
    """metrics-server's NodeMetrics and PodMetrics for the running pods and their nodes: modest,
    deterministic usage (nodes 10-35 % CPU, 30-55 % memory; containers a few millicores and
    tens of MiB). Namespaces in ``skip_namespaces`` (bulk filler) get none."""
    import random

    rng = random.Random(seed + 7)
    stamp = iso(now())
    for node in store.list(CORE, "Node"):
        alloc = node["status"]["allocatable"]
        cores = float(alloc["cpu"])
        mem = float(alloc["memory"].removesuffix("Ki")) * 1024
        store.add({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics",
                   "metadata": {"name": node["metadata"]["name"], "labels": dict(node["metadata"].get("labels") or {})},
                   "timestamp": stamp, "window": "20.05s",
                   "usage": {"cpu": _cpu(cores * rng.uniform(0.10, 0.35)), "memory": _mem(mem * rng.uniform(0.30, 0.55))}})
    for pod in store.list(CORE, "Pod"):
        meta = pod["metadata"]
        if meta.get("namespace") in skip_namespaces or (pod.get("status") or {}).get("phase") != "Running":
            continue
        store.add({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                   "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                "labels": dict(meta.get("labels") or {})},
                   "timestamp": stamp, "window": "15.012s",
                   "containers": [{"name": c["name"], "usage": {"cpu": _cpu(rng.uniform(0.002, 0.08)),
                                                               "memory": _mem(rng.uniform(20, 400) * 2 ** 20)}}
                                  for c in pod["spec"]["containers"]]})
