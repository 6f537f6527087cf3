"""Deletion as the API server and its built-in controllers do it: finalizers hold an object in
Terminating (deletionTimestamp set) until they are removed, namespaces wait for their contents,
and the finalizers that built-in controllers own are released when their condition holds:

- ``kubernetes.io/pvc-protection``: no running pod mounts the claim any more,
- ``kubernetes.io/pv-protection``: no claim is bound to the volume any more,
- ``foregroundDeletion`` / ``orphan``: the garbage collector (no dependents are modelled).

Any other finalizer (an operator's, or one a scenario sets) sticks until a client patches it
away, which is how the runbook's "stuck on finalizers" problems look.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.resources import Catalog, ResourceType
from sandbox.kube.store import ObjectStore, now_iso

Obj = dict[str, Any]

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
_GC = frozenset({"foregroundDeletion", "orphan"})


def _pod_uses_claim(pod: Obj, claim: str) -> bool:
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if (vol.get("persistentVolumeClaim") or {}).get("claimName") == claim:
            return True
    return False


def _released(store: ObjectStore, obj: Obj, finalizer: str) -> bool:
    meta = obj["metadata"]
    if finalizer in _GC:
        return True
    if finalizer == PVC_PROTECTION and obj.get("kind") == "PersistentVolumeClaim":
        ns = meta.get("namespace", "")
        return not any(_pod_uses_claim(p, meta["name"]) for p in store.list("v1", "Pod", ns))
    if finalizer == PV_PROTECTION and obj.get("kind") == "PersistentVolume":
        return not any((c.get("spec") or {}).get("volumeName") == meta["name"]
                       for c in store.list("v1", "PersistentVolumeClaim"))
    return False


def _pending_finalizers(store: ObjectStore, obj: Obj) -> list[str]:
    return [f for f in obj["metadata"].get("finalizers") or [] if not _released(store, obj, f)]


def _mark_terminating(store: ObjectStore, obj: Obj, finalizers: list[str]) -> Obj:
    meta = obj["metadata"]
    meta["finalizers"] = finalizers
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = now_iso()
        meta["deletionGracePeriodSeconds"] = 0
    if obj.get("kind") == "Namespace":
        obj.setdefault("status", {})["phase"] = "Terminating"
    return store.replace(obj)


class Deleter:
    def __init__(self, store: ObjectStore, catalog: Catalog):
        self.store = store
        self.catalog = catalog

    def delete(self, rt: ResourceType, obj: Obj) -> Obj:
        """Delete ``obj`` (a store object); returns it as the DELETE response shows it: gone,
        or Terminating when finalizers or (for a namespace) contents remain."""
        if rt.kind == "Namespace" and not rt.group:
            return self._delete_namespace(obj)
        pending = _pending_finalizers(self.store, obj)
        if pending:
            return _mark_terminating(self.store, obj, pending)
        return self._remove(rt, obj)

    def finish_if_released(self, rt: ResourceType, obj: Obj) -> bool:
        """After an update: a Terminating object whose finalizers are all gone is removed."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or _pending_finalizers(self.store, obj):
            return False
        if rt.kind == "Namespace" and not rt.group:
            if self._namespace_has_content(meta["name"]):
                return False
        self._remove(rt, obj)
        return True

    # -- internals ---------------------------------------------------------------------------
    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        removed = self.store.remove(rt.api_version, rt.kind, meta["name"], ns) or obj
        self._after_removal(rt, removed)
        return removed

    def _after_removal(self, rt: ResourceType, removed: Obj) -> None:
        """Removing one object can release the finalizers another one waits on."""
        if not rt.group and rt.kind == "Pod":
            for vol in (removed.get("spec") or {}).get("volumes") or []:
                claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
                pvc = self.store.get("v1", "PersistentVolumeClaim", claim or "",
                                     removed["metadata"].get("namespace", ""))
                if claim and pvc is not None:
                    self._retry("v1", "PersistentVolumeClaim", pvc)
        elif not rt.group and rt.kind == "PersistentVolumeClaim":
            pv = self.store.get("v1", "PersistentVolume", (removed.get("spec") or {}).get("volumeName") or "")
            if pv is not None:
                self._retry("v1", "PersistentVolume", pv)
        ns = removed["metadata"].get("namespace", "")
        if rt.namespaced and ns:
            namespace = self.store.get("v1", "Namespace", ns)
            if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
                ns_rt = self.catalog.for_kind("v1", "Namespace")
                assert ns_rt is not None
                self.finish_if_released(ns_rt, namespace)

    def _retry(self, api_version: str, kind: str, obj: Obj) -> None:
        if not obj["metadata"].get("deletionTimestamp"):
            return
        rt = self.catalog.for_kind(api_version, kind)
        assert rt is not None
        pending = _pending_finalizers(self.store, obj)
        if pending:
            if pending != obj["metadata"].get("finalizers"):
                _mark_terminating(self.store, obj, pending)
        else:
            self._remove(rt, obj)

    def _namespace_has_content(self, namespace: str) -> bool:
        return any(self.store.list(rt.api_version, rt.kind, namespace)
                   for rt in self.catalog.resources if rt.namespaced)

    def _delete_namespace(self, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        ns_rt = self.catalog.for_kind("v1", "Namespace")
        assert ns_rt is not None
        if not ns_obj["metadata"].get("deletionTimestamp"):
            ns_obj = _mark_terminating(self.store, ns_obj,
                                       list(ns_obj["metadata"].get("finalizers") or []))
        for rt in self.catalog.resources:
            if rt.namespaced:
                for obj in list(self.store.list(rt.api_version, rt.kind, name)):
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.delete(rt, obj)
        current = self.store.get("v1", "Namespace", name)
        if current is None or self.finish_if_released(ns_rt, current):
            return ns_obj  # gone: the response shows it as last seen, Terminating
        return current
