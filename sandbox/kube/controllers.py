"""Instant workload controllers: when a client changes a Deployment/StatefulSet/DaemonSet/
ReplicaSet spec through the API (rollout restart, scale, image change), its status converges at
once, so ``kubectl rollout status`` and the bot's post-remediation checks see a finished rollout.

A scenario that wants a rollout to hang sets the HOLD_ANNOTATION on the object: its status then
only records the new observedGeneration. Pods are not created or deleted; scenarios own pods.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.kube.store import ObjectStore

Obj = dict[str, Any]

HOLD_ANNOTATION = "sandbox.sop-bot.dev/hold-rollout"
WORKLOAD_KINDS = frozenset({("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                            ("apps/v1", "DaemonSet"), ("apps/v1", "ReplicaSet")})


def _template_hash(obj: Obj) -> str:
    template = (obj.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _now_condition(kind: str, reason: str, message: str) -> Obj:
    from sandbox.kube.store import now_iso
    t = now_iso()
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastUpdateTime": t, "lastTransitionTime": t}


def reconcile(obj: Obj) -> None:
    """Bring a workload's status up to its spec, in place."""
    if (obj.get("apiVersion"), obj.get("kind")) not in WORKLOAD_KINDS:
        return
    meta = obj.setdefault("metadata", {})
    spec = obj.get("spec") or {}
    status = obj.setdefault("status", {})
    status["observedGeneration"] = int(meta.get("generation") or 1)
    if (meta.get("annotations") or {}).get(HOLD_ANNOTATION) == "true" or spec.get("paused"):
        return
    kind = obj["kind"]
    name = meta.get("name", "")
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        status.update(currentNumberScheduled=desired, numberReady=desired,
                      updatedNumberScheduled=desired, numberAvailable=desired, numberMisscheduled=0)
        status.pop("numberUnavailable", None)
        return
    n = int(spec.get("replicas", 1))
    status.update(replicas=n, readyReplicas=n, availableReplicas=n)
    if kind == "Deployment":
        status["updatedReplicas"] = n
        status.pop("unavailableReplicas", None)
        rs = f"{name}-{_template_hash(obj)}"
        status["conditions"] = [
            _now_condition("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            _now_condition("Progressing", "NewReplicaSetAvailable",
                           f'ReplicaSet "{rs}" has successfully progressed.'),
        ]
    elif kind == "StatefulSet":
        revision = f"{name}-{_template_hash(obj)}"
        status.update(currentReplicas=n, updatedReplicas=n, currentRevision=revision,
                      updateRevision=revision)
    else:
        status["fullyLabeledReplicas"] = n


def after_create(store: "ObjectStore", obj: Obj) -> None:
    """Side effects of a create that in-cluster controllers make right away: a new namespace
    gets its `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap; a new
    `kubernetes.io/service-account-token` Secret gets its long-lived token (the token controller)."""
    if (obj.get("apiVersion"), obj.get("kind"), obj.get("type")) == ("v1", "Secret", "kubernetes.io/service-account-token"):
        _fill_token_secret(store, obj)
        return
    if (obj.get("apiVersion"), obj.get("kind")) != ("v1", "Namespace"):
        return
    ns = obj["metadata"]["name"]
    if store.get("v1", "ServiceAccount", "default", ns) is None:
        store.add({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": ns}})
    template = next((cm for cm in store.list("v1", "ConfigMap")
                     if cm["metadata"]["name"] == "kube-root-ca.crt"), None)
    if template is not None and store.get("v1", "ConfigMap", "kube-root-ca.crt", ns) is None:
        store.add({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                "annotations": dict(template["metadata"].get("annotations") or {})},
                   "data": dict(template.get("data") or {})})


def _fill_token_secret(store: "ObjectStore", secret: Obj) -> None:
    """The legacy token controller: a Secret annotated with an existing ServiceAccount gets a
    token bound to that account's uid (10 years), its namespace and the cluster CA."""
    import base64

    meta = secret["metadata"]
    ns = meta.get("namespace", "")
    sa = store.get("v1", "ServiceAccount", (meta.get("annotations") or {}).get("kubernetes.io/service-account.name", ""), ns)
    tokens = getattr(store, "tokens", None)
    if sa is None or tokens is None or (secret.get("data") or {}).get("token"):
        return
    token, _ = tokens.issue(ns, sa["metadata"]["name"], sa["metadata"].get("uid", ""), 10 * 365 * 86400)
    ca = ((store.get("v1", "ConfigMap", "kube-root-ca.crt", ns) or {}).get("data") or {}).get("ca.crt", "")

    def fill(obj: Obj) -> None:
        obj.setdefault("metadata", {}).setdefault("annotations", {})["kubernetes.io/service-account.uid"] = \
            sa["metadata"].get("uid", "")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in
                       (("token", token), ("namespace", ns), ("ca.crt", ca))}
    store.update("v1", "Secret", meta["name"], ns, fill)


def pdb_view(store: "ObjectStore", pdb: Obj) -> Obj:
    """A PodDisruptionBudget as the disruption controller keeps it: its status recomputed from
    the pods now in the store (a scenario that makes pods unready changes the budget too). The
    stored object is left alone; only the served copy changes."""
    from sandbox.kube.eviction import budget
    b = budget(store, pdb)
    status = dict(pdb.get("status") or {})
    status.update(currentHealthy=b.current_healthy, desiredHealthy=b.desired_healthy,
                  expectedPods=b.expected, disruptionsAllowed=b.disruptions_allowed,
                  observedGeneration=int(pdb["metadata"].get("generation") or 1))
    allowed = b.disruptions_allowed > 0
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
    previous = next((c for c in status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
    same = previous.get("status") == ("True" if allowed else "False")
    conditions.append({"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                       "reason": "SufficientPods" if allowed else "InsufficientPods",
                       "message": "",  # required by metav1.Condition, empty as the controller sets it
                       "observedGeneration": status["observedGeneration"],
                       "lastTransitionTime": previous.get("lastTransitionTime") if same and previous.get(
                           "lastTransitionTime") else pdb["metadata"].get("creationTimestamp")})
    status["conditions"] = conditions
    return {**pdb, "status": status}
