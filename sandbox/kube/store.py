"""The sandbox cluster's objects: plain Kubernetes JSON dicts keyed by (apiVersion, kind).

The world builder and scenarios write here directly; the API server serves from here. Every
write bumps the cluster-wide resourceVersion and is published to watchers.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sandbox.kube.tokens import TokenIssuer

Obj = dict[str, Any]
TypeKey = tuple[str, str]  # (apiVersion, kind)
ObjKey = tuple[str, str]  # (namespace or "", name)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj


@dataclass
class ObjectStore:
    _types: dict[TypeKey, dict[ObjKey, Obj]] = field(default_factory=dict)
    resource_version: int = 1000
    _watchers: list[tuple[TypeKey, asyncio.Queue[WatchEvent]]] = field(default_factory=list)
    # Sorted keys per type, dropped when a key is added or removed (not on in-place updates),
    # so paginated lists bisect instead of sorting every page.
    _sorted_keys: dict[TypeKey, list[ObjKey]] = field(default_factory=dict)
    # Container logs served by pods/{name}/log, keyed (namespace, pod name); scenarios set them.
    pod_logs: dict[ObjKey, str] = field(default_factory=dict)
    # Timestamped lines per container: (namespace, pod, container, previous) -> [(time, line)],
    # so sinceSeconds, --previous and -c are answered as the kubelet does (sandbox/kube/podlogs.py).
    container_logs: dict[tuple[str, str, str, bool], list[tuple[datetime, str]]] = field(default_factory=dict)
    # What `kubectl exec` into a pod answers, keyed (namespace, pod name): a function
    # (container, command) -> (stdout, stderr, exit code); see sandbox/kube/execs.py.
    pod_exec: dict[ObjKey, Callable[[str, list[str]], tuple[str, str, int]]] = field(default_factory=dict)
    # serviceaccounts/<sa>/token: signed JWTs, remembered for TokenReview (sandbox/kube/tokens.py).
    tokens: TokenIssuer = field(default_factory=TokenIssuer)
    # Recent events of the kinds an API client has read (see track_history), so a watch that
    # starts from a list's resourceVersion misses nothing written in between.
    _history: dict[TypeKey, deque[tuple[int, WatchEvent]]] = field(default_factory=dict)

    # -- reads -------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        return self._types.get((api_version, kind), {}).get((namespace or "", name))

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind, in (namespace, name) order: a stable order for limit/continue."""
        objs = self._types.get((api_version, kind), {})
        keys = self.sorted_keys(api_version, kind)
        if namespace:  # keys sort by namespace first: bisect to the namespace's run
            keys = keys[bisect_left(keys, (namespace, "")):bisect_left(keys, (namespace + "\x00", ""))]
        return [objs[k] for k in keys]

    def count(self, api_version: str, kind: str) -> int:
        return len(self._types.get((api_version, kind), {}))

    def sorted_keys(self, api_version: str, kind: str) -> list[ObjKey]:
        """All (namespace, name) keys of a kind in sorted order; cached between key-set changes.
        Callers must not mutate the returned list."""
        key = (api_version, kind)
        keys = self._sorted_keys.get(key)
        if keys is None:
            keys = self._sorted_keys[key] = sorted(self._types.get(key, {}))
        return keys

    def types(self) -> list[TypeKey]:
        """Every (apiVersion, kind) that has held objects."""
        return list(self._types)

    # -- writes ------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def add(self, obj: Obj) -> Obj:
        """Create: fills uid, resourceVersion, creationTimestamp, generation. Replaces silently
        if it exists (the world builder relies on that); the API server checks for 409 itself."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._next_rv()
        key = (obj["apiVersion"], obj["kind"])
        existed = (meta.get("namespace", ""), meta["name"]) in self._types.get(key, {})
        self._types.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = obj
        if not existed:
            self._sorted_keys.pop(key, None)
        self._publish(key, WatchEvent("MODIFIED" if existed else "ADDED", obj))
        return obj

    def replace(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        key = (obj["apiVersion"], obj["kind"])
        objs = self._types.setdefault(key, {})
        okey = (meta.get("namespace", ""), meta["name"])
        if okey not in objs:
            self._sorted_keys.pop(key, None)
        objs[okey] = obj
        self._publish(key, WatchEvent("MODIFIED", obj))
        return obj

    def update(self, api_version: str, kind: str, name: str, namespace: str,
               fn: Callable[[Obj], None]) -> Obj:
        """Mutate an object in place through ``fn`` and record it as a new version."""
        obj = self.get(api_version, kind, name, namespace)
        if obj is None:
            raise KeyError(f"{kind} {namespace}/{name} not found")
        fn(obj)
        return self.replace(obj)

    def remove(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        key = (api_version, kind)
        obj = self._types.get(key, {}).pop((namespace or "", name), None)
        if obj is not None:
            self._sorted_keys.pop(key, None)
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._publish(key, WatchEvent("DELETED", obj))
        return obj

    # -- watch -------------------------------------------------------------------------------
    def subscribe(self, api_version: str, kind: str) -> asyncio.Queue[WatchEvent]:
        q: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.append(((api_version, kind), q))
        return q

    def unsubscribe(self, q: asyncio.Queue[WatchEvent]) -> None:
        self._watchers = [(k, w) for k, w in self._watchers if w is not q]

    def track_history(self, api_version: str, kind: str, maxlen: int | None = None) -> None:
        """Keep the last ``maxlen`` (default 10000) events of a kind. Idempotent; an explicit
        ``maxlen`` resizes the history (a small one simulates etcd compaction)."""
        key = (api_version, kind)
        history = self._history.get(key)
        if history is None:
            self._history[key] = deque(maxlen=maxlen or 10000)
        elif maxlen is not None and history.maxlen != maxlen:
            self._history[key] = deque(history, maxlen=maxlen)

    def events_since(self, api_version: str, kind: str, resource_version: int) -> list[WatchEvent] | None:
        """Events of a tracked kind newer than ``resource_version``; None when the history does not
        reach back that far (or the kind is not tracked)."""
        history = self._history.get((api_version, kind))
        if history is None:
            return None
        if history and history[0][0] > resource_version + 1 and len(history) == history.maxlen:
            return None
        return [WatchEvent(e.type, copy.deepcopy(e.object)) for rv, e in history if rv > resource_version]

    def _publish(self, key: TypeKey, event: WatchEvent) -> None:
        history = self._history.get(key)
        if history is not None:
            rv = int(event.object["metadata"]["resourceVersion"])
            history.append((rv, WatchEvent(event.type, copy.deepcopy(event.object))))
        for k, q in self._watchers:
            if k == key:
                q.put_nowait(WatchEvent(event.type, copy.deepcopy(event.object)))
