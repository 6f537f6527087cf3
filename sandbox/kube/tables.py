"""Server-side Table output (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``), which is
what ``kubectl get`` prints. Cells follow the real printers (pkg/printers/internalversion) for
built-in kinds and ``additionalPrinterColumns`` semantics for CRDs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from sandbox.kube.resources import Column, ResourceType

Obj = dict[str, Any]

_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
                "description": "Name must be unique within a namespace. More info: "
                               "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"}
_AGE_COLUMN = Column("Age", ".metadata.creationTimestamp", "date")


# -- durations ----------------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, which every AGE column uses."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: Any, now: datetime | None = None) -> str:
    t = _parse_time(value)
    if t is None:
        return "<unknown>"
    now = now or datetime.now(timezone.utc)
    return human_duration((now - t).total_seconds())


# -- JSONPath (the subset additionalPrinterColumns use) -----------------------------------------

_SEGMENT = re.compile(
    r"""\.(?P<key>[A-Za-z0-9_\-/]+)"""
    r"""|\[(?P<index>\d+|\*)\]"""
    r"""|\[\?\(@\.(?P<fkey>[A-Za-z0-9_.\-/]+)\s*==\s*['"](?P<fval>[^'"]*)['"]\)\]""")


def _compile_path(path: str) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
        if m.group("key") is not None:
            steps.append(("key", m.group("key")))
        elif m.group("index") is not None:
            idx = m.group("index")
            steps.append(("all", None) if idx == "*" else ("index", int(idx)))
        else:
            steps.append(("filter", (m.group("fkey").split("."), m.group("fval"))))
        pos = m.end()
    return steps


_PATHS: dict[str, list[tuple[str, Any]]] = {}


def jsonpath(obj: Any, path: str) -> list[Any]:
    steps = _PATHS.get(path)
    if steps is None:
        steps = _PATHS[path] = _compile_path(path)
    current = [obj]
    for kind, arg in steps:
        nxt: list[Any] = []
        for node in current:
            if kind == "key":
                if isinstance(node, dict) and node.get(arg) is not None:
                    nxt.append(node[arg])
            elif kind == "index":
                if isinstance(node, list) and -len(node) <= arg < len(node):
                    nxt.append(node[arg])
            elif kind == "all":
                if isinstance(node, list):
                    nxt.extend(node)
                elif isinstance(node, dict):
                    nxt.extend(node.values())
            else:
                keys, value = arg
                for item in node if isinstance(node, list) else []:
                    cur: Any = item
                    for k in keys:
                        cur = cur.get(k) if isinstance(cur, dict) else None
                    if cur is not None and str(cur) == value:
                        nxt.append(item)
        current = nxt
    return current


def _path_cell(obj: Obj, col: Column) -> Any:
    values = jsonpath(obj, col.source)
    if not values:
        return None
    if col.type == "date":
        return age(values[0])
    if len(values) == 1:
        v = values[0]
        if isinstance(v, (dict, list)):
            import json
            return json.dumps(v, separators=(",", ":"))
        return v if col.type != "string" else (str(v).lower() if isinstance(v, bool) else v)
    return ",".join(str(v) for v in values)


# -- computed cells of built-in kinds -----------------------------------------------------------

def _g(obj: Any, *keys: str | int) -> Any:
    for k in keys:
        if isinstance(k, int):
            obj = obj[k] if isinstance(obj, list) and len(obj) > k else None
        else:
            obj = obj.get(k) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c.get("type"): c for c in _g(obj, "status", "conditions") or [] if isinstance(c, dict)}


def node_status(obj: Obj) -> str:
    ready = _conditions(obj).get("Ready")
    parts = ["Unknown" if ready is None else "Ready" if ready.get("status") == "True" else "NotReady"]
    if _g(obj, "spec", "unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(obj: Obj) -> str:
    roles: set[str] = set()
    for k, v in (_g(obj, "metadata", "labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k.split("/", 1)[1]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(obj: Obj, kind: str) -> str:
    for a in _g(obj, "status", "addresses") or []:
        if a.get("type") == kind:
            return str(a.get("address"))
    return "<none>"


def pod_status_and_counts(obj: Obj) -> tuple[str, int, int, str]:
    """(STATUS, ready containers, total containers, RESTARTS) as `kubectl get pods` shows."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    total = len(spec.get("containers") or [])
    ready_n = restarts = 0
    last_restart: datetime | None = None
    reason = status.get("phase") or ""
    if status.get("reason"):
        reason = status["reason"]
    conds = _conditions(obj)
    sched = conds.get("PodScheduled")
    if sched and sched.get("status") == "False" and sched.get("reason") == "SchedulingGated":
        reason = "SchedulingGated"

    def note_restart(cs: Obj) -> None:
        nonlocal last_restart
        t = _parse_time(_g(cs, "lastState", "terminated", "finishedAt"))
        if t and (last_restart is None or t > last_restart):
            last_restart = t

    initializing = False
    init_specs = spec.get("initContainers") or []
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        note_restart(cs)
        term, wait = _g(cs, "state", "terminated"), _g(cs, "state", "waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode')}"
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    initialized = (conds.get("Initialized") or {}).get("status") == "True"
    if not initializing or initialized:
        restarts = 0
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            note_restart(cs)
            wait, term = _g(cs, "state", "waiting"), _g(cs, "state", "terminated")
            if wait and wait.get("reason"):
                reason = wait["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                reason = (f"Signal:{term['signal']}" if term.get("signal")
                          else f"ExitCode:{term.get('exitCode')}")
            elif cs.get("ready") and _g(cs, "state", "running") is not None:
                has_running = True
                ready_n += 1
        if reason == "Completed" and has_running:
            reason = "Running" if (conds.get("Ready") or {}).get("status") == "True" else "NotReady"
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({age(last_restart.isoformat())} ago)"
    return reason, ready_n, total, restarts_cell


def _ports(obj: Obj) -> str:
    out = []
    for p in _g(obj, "spec", "ports") or []:
        proto = p.get("protocol") or "TCP"
        out.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort")
                   else f"{p.get('port')}/{proto}")
    return ",".join(out) or "<none>"


def _svc_external(obj: Obj) -> str:
    typ = _g(obj, "spec", "type") or "ClusterIP"
    ext = list(_g(obj, "spec", "externalIPs") or [])
    if typ == "LoadBalancer":
        ips = [i.get("ip") or i.get("hostname") for i in _g(obj, "status", "loadBalancer", "ingress") or []]
        ips = [i for i in ips if i] + ext
        return ",".join(ips) if ips else "<pending>"
    if typ == "ExternalName":
        return str(_g(obj, "spec", "externalName") or "<none>")
    return ",".join(ext) or "<none>"


def _selector_map(sel: Any) -> str:
    if not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _label_selector(sel: Any) -> str:
    if not sel:
        return "<none>"
    from sandbox.kube.selectors import label_selector_string
    return label_selector_string(sel) or "<none>"


def _endpoints(obj: Obj) -> str:
    eps: list[str] = []
    for subset in obj.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                eps.append(f"{addr.get('ip')}:{port.get('port')}" if port else str(addr.get("ip")))
    if not eps:
        return "<none>"
    return ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")


_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
          "ReadWriteOncePod": "RWOP"}


def _access_modes(obj: Obj) -> str:
    modes = _g(obj, "status", "accessModes") if obj.get("kind") == "PersistentVolumeClaim" else None
    modes = modes or _g(obj, "spec", "accessModes") or []
    return ",".join(_MODES.get(m, m) for m in modes)


def _containers(obj: Obj, field: str) -> str:
    cs = _g(obj, "spec", "template", "spec", "containers") or []
    return ",".join(str(c.get(field)) for c in cs) or "<none>"


def _job_status(obj: Obj) -> str:
    conds = _conditions(obj)
    for t, label in (("Complete", "Complete"), ("Failed", "Failed"),
                     ("FailureTarget", "FailureTarget"), ("SuccessCriteriaMet", "SuccessCriteriaMet"),
                     ("Suspended", "Suspended")):
        if (conds.get(t) or {}).get("status") == "True":
            return label
    return "Running"


def _job_duration(obj: Obj) -> str:
    start = _parse_time(_g(obj, "status", "startTime"))
    if start is None:
        return ""
    end = _parse_time(_g(obj, "status", "completionTime")) or datetime.now(timezone.utc)
    return human_duration((end - start).total_seconds())


def _pdb_value(obj: Obj, key: str) -> str:
    v = _g(obj, "spec", key)
    return "N/A" if v is None else str(v)


def _event_object(obj: Obj) -> str:
    io = obj.get("involvedObject") or {}
    return f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}"


def _event_last_seen(obj: Obj) -> str:
    for v in (obj.get("lastTimestamp"), _g(obj, "series", "lastObservedTime"), obj.get("eventTime"),
              obj.get("firstTimestamp"), _g(obj, "metadata", "creationTimestamp")):
        if v:
            return age(v)
    return "<unknown>"


def _hpa_targets(obj: Obj) -> str:
    out = []
    current = {m.get("resource", {}).get("name"): m for m in _g(obj, "status", "currentMetrics") or []}
    for m in _g(obj, "spec", "metrics") or []:
        res = m.get("resource") or {}
        name = res.get("name")
        target = _g(res, "target", "averageUtilization")
        cur = _g(current.get(name) or {}, "resource", "current", "averageUtilization")
        out.append(f"{name}: {'<unknown>' if cur is None else str(cur) + '%'}/{target}%")
    return ", ".join(out) or "<none>"


COMPUTED: dict[str, Callable[[Obj], Any]] = {
    "node_status": node_status,
    "node_roles": node_roles,
    "node_internal_ip": lambda o: _node_address(o, "InternalIP"),
    "node_external_ip": lambda o: _node_address(o, "ExternalIP"),
    "pod_ready": lambda o: (lambda s: f"{s[1]}/{s[2]}")(pod_status_and_counts(o)),
    "pod_status": lambda o: pod_status_and_counts(o)[0],
    "pod_restarts": lambda o: pod_status_and_counts(o)[3],
    "pod_readiness_gates": lambda o: ",".join(
        g.get("conditionType", "") for g in _g(o, "spec", "readinessGates") or []) or "<none>",
    "svc_external_ip": _svc_external,
    "svc_ports": _ports,
    "svc_selector": lambda o: _selector_map(_g(o, "spec", "selector")),
    "endpoints": _endpoints,
    "event_last_seen": _event_last_seen,
    "event_object": _event_object,
    "data_count": lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
    "access_modes": _access_modes,
    "secret_count": lambda o: len(o.get("secrets") or []),
    "ingress_ports": lambda o: "80, 443" if _g(o, "spec", "tls") else "80",
    "terminating_or_phase": lambda o: ("Terminating" if _g(o, "metadata", "deletionTimestamp")
                                       else _g(o, "status", "phase") or "<none>"),
    "pv_claim": lambda o: (f"{_g(o, 'spec', 'claimRef', 'namespace')}/{_g(o, 'spec', 'claimRef', 'name')}"
                           if _g(o, "spec", "claimRef") else ""),
    "ready_of_replicas": lambda o: f"{_g(o, 'status', 'readyReplicas') or 0}/{_g(o, 'spec', 'replicas') or 0}",
    "containers": lambda o: _containers(o, "name"),
    "images": lambda o: _containers(o, "image"),
    "selector": lambda o: _label_selector(_g(o, "spec", "selector")),
    "node_selector": lambda o: _selector_map(_g(o, "spec", "template", "spec", "nodeSelector")),
    "job_status": _job_status,
    "job_completions": lambda o: f"{_g(o, 'status', 'succeeded') or 0}/{_g(o, 'spec', 'completions') or 1}",
    "job_duration": _job_duration,
    "cronjob_active": lambda o: len(_g(o, "status", "active") or []),
    "pdb_min_available": lambda o: _pdb_value(o, "minAvailable"),
    "pdb_max_unavailable": lambda o: _pdb_value(o, "maxUnavailable"),
    "hpa_reference": lambda o: f"{_g(o, 'spec', 'scaleTargetRef', 'kind')}/{_g(o, 'spec', 'scaleTargetRef', 'name')}",
    "hpa_targets": _hpa_targets,
    "netpol_selector": lambda o: _label_selector(_g(o, "spec", "podSelector")),
}


# -- the Table ----------------------------------------------------------------------------------

def table_columns(rt: ResourceType) -> list[Column]:
    cols = list(rt.columns)
    if rt.age_column:
        cols.append(_AGE_COLUMN)
    return cols


def column_definitions(rt: ResourceType) -> list[Obj]:
    defs = [dict(_NAME_COLUMN)]
    for c in table_columns(rt):
        defs.append({"name": c.name, "type": c.type if c.type != "date" else "string",
                     "format": c.format, "description": c.description or c.name,
                     "priority": c.priority})
    return defs


def _cell(obj: Obj, col: Column) -> Any:
    if col.source.startswith("@"):
        return COMPUTED[col.source[1:]](obj)
    return _path_cell(obj, col)


def _row_object(rt: ResourceType, obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return {"apiVersion": rt.api_version, "kind": rt.kind, **obj}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def rows(rt: ResourceType, objs: Iterable[Obj], include: str = "Metadata") -> list[Obj]:
    cols = table_columns(rt)
    out = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if rt.kind == "StorageClass" and (meta.get("annotations") or {}).get(
                "storageclass.kubernetes.io/is-default-class") == "true":
            name = f"{name} (default)"  # as the real StorageClass printer marks it
        cells: list[Any] = [name]
        for c in cols:
            value = _cell(obj, c)
            if value is None and not rt.crd:  # typed fields of built-in kinds are never null
                value = 0 if c.type == "integer" else "<none>" if c.type == "string" else value
            cells.append(value)
        row: Obj = {"cells": cells}
        ro = _row_object(rt, obj, include)
        if ro is not None:
            row["object"] = ro
        out.append(row)
    return out


def table(rt: ResourceType, objs: Iterable[Obj], list_meta: Obj, include: str = "Metadata") -> Obj:
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": column_definitions(rt), "rows": rows(rt, objs, include)}
