"""The pods/eviction subresource's PodDisruptionBudget check, as the real eviction REST handler
(pkg/registry/core/pod/storage/eviction.go) makes it. The budget is computed from the pods in the
store at the time of the request, so scenarios only need to set pod readiness."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sandbox.kube.errors import ApiError, pdb_blocks
from sandbox.kube.selectors import from_label_selector_object, labels_match
from sandbox.kube.store import ObjectStore

Obj = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    name: str
    expected: int
    current_healthy: int
    desired_healthy: int

    @property
    def disruptions_allowed(self) -> int:
        return max(0, self.current_healthy - self.desired_healthy)


def pod_ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _scaled(value: Any, expected: int) -> int:
    """An IntOrString: an int, or "N%" of expected rounded up (as intstr.GetScaledValueFromIntOrPercent)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * expected / 100)
    return int(value)


def matching_pdbs(store: ObjectStore, pod: Obj) -> list[Obj]:
    ns = pod["metadata"].get("namespace", "")
    out = []
    for pdb in store.list("policy/v1", "PodDisruptionBudget", ns):
        sel = from_label_selector_object((pdb.get("spec") or {}).get("selector"))
        if sel is not None and labels_match(sel, pod):
            out.append(pdb)
    return out


_SCALABLE = {"ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "Deployment": "apps/v1",
             "ReplicationController": "v1", "Rollout": "argoproj.io/v1alpha1"}


def _controller_replicas(store: ObjectStore, namespace: str, ref: Obj) -> int | None:
    """spec.replicas of a pod's controller (a ReplicaSet's Deployment when it has one)."""
    kind = ref.get("kind", "")
    api_version = _SCALABLE.get(kind)
    if api_version is None:
        return None
    owner = store.get(api_version, kind, ref.get("name", ""), namespace)
    if owner is None:
        return None
    if kind == "ReplicaSet":
        for up in owner["metadata"].get("ownerReferences") or []:
            if up.get("controller") and up.get("kind") == "Deployment":
                return _controller_replicas(store, namespace, up) or 0
    return int((owner.get("spec") or {}).get("replicas", 1))


def expected_pods(store: ObjectStore, namespace: str, pods: list[Obj]) -> int:
    """How many pods the budget expects: the replicas of their controllers (as the disruption
    controller reads them through the scale subresource), or the pods themselves when they have
    none. Evicted pods that are not yet replaced therefore still count."""
    total = 0
    seen: set[tuple[str, str]] = set()
    for p in pods:
        ref = next((r for r in p["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None:
            total += 1
            continue
        key = (ref.get("kind", ""), ref.get("name", ""))
        if key in seen:
            continue
        seen.add(key)
        replicas = _controller_replicas(store, namespace, ref)
        if replicas is None:
            total += sum(1 for q in pods if ref in (q["metadata"].get("ownerReferences") or []))
        else:
            total += replicas
    return total


def budget(store: ObjectStore, pdb: Obj) -> Budget:
    spec = pdb.get("spec") or {}
    sel = from_label_selector_object(spec.get("selector"))
    ns = pdb["metadata"].get("namespace", "")
    pods = [p for p in store.list("v1", "Pod", ns) if sel is not None and labels_match(sel, p)]
    expected = expected_pods(store, ns, pods)
    healthy = sum(1 for p in pods if pod_ready(p))
    if spec.get("minAvailable") is not None:
        desired = _scaled(spec["minAvailable"], expected)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
    else:
        desired = 0
    return Budget(pdb["metadata"]["name"], expected, healthy, desired)


def check_eviction(store: ObjectStore, pod: Obj) -> None:
    """Raise the real server's 429 (or 500) when the eviction must be refused."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
        return  # such pods do not count against any budget
    pdbs = matching_pdbs(store, pod)
    if not pdbs:
        return
    if len(pdbs) > 1:
        raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, "
                       "which the eviction subresource does not support.")
    b = budget(store, pdbs[0])
    if not pod_ready(pod):
        policy = (pdbs[0].get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
        if policy == "AlwaysAllow" or b.current_healthy >= b.desired_healthy:
            return
    elif b.disruptions_allowed > 0:
        return
    raise pdb_blocks(b.name, b.desired_healthy, b.current_healthy)
