"""Label and field selectors: the query-string forms (``labelSelector``, ``fieldSelector``) and
the LabelSelector objects that PDBs and workloads carry."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.kube.errors import ApiError, bad_request

Obj = dict[str, Any]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin also match objects without the label, as the real server does
        return not present or labels[self.key] not in self.values


LabelSelector = tuple[Requirement, ...]

_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),!=]+)")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip() == "":
                break
            raise bad_request(f"unable to parse requirement: invalid label selector {text!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_label_selector(text: str | None) -> LabelSelector:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h``."""
    if not text or not text.strip():
        return ()
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def fail() -> ApiError:
        return bad_request(f"unable to parse requirement: found '{toks[i] if i < len(toks) else ''}'"
                           f", expected: identifier")

    while i < len(toks):
        if toks[i] == "!":
            if i + 1 >= len(toks):
                raise fail()
            reqs.append(Requirement(toks[i + 1], "!"))
            i += 2
        else:
            key = toks[i]
            if key in "(),=":
                raise fail()
            i += 1
            if i >= len(toks) or toks[i] == ",":
                reqs.append(Requirement(key, "exists"))
            elif toks[i] in ("=", "==", "!="):
                op = "!=" if toks[i] == "!=" else "="
                value = ""
                if i + 1 < len(toks) and toks[i + 1] not in ",()":
                    value = toks[i + 1]
                    i += 1
                i += 1
                reqs.append(Requirement(key, op, (value,)))
            elif toks[i] in ("in", "notin"):
                op = toks[i]
                i += 1
                if i >= len(toks) or toks[i] != "(":
                    raise bad_request(f"unable to parse requirement: found '{toks[i] if i < len(toks) else ''}', expected: '('")
                i += 1
                values: list[str] = []
                while i < len(toks) and toks[i] != ")":
                    if toks[i] != ",":
                        values.append(toks[i])
                    i += 1
                if i >= len(toks):
                    raise bad_request("unable to parse requirement: found '', expected: ')'")
                i += 1
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise fail()
        if i < len(toks):
            if toks[i] != ",":
                raise fail()
            i += 1
    return tuple(reqs)


def labels_match(selector: LabelSelector, obj: Obj) -> bool:
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in selector)


def from_label_selector_object(sel: Obj | None) -> LabelSelector | None:
    """A LabelSelector object (matchLabels/matchExpressions). None for a null selector, which
    matches nothing; an empty one matches everything."""
    if sel is None:
        return None
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in sel.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return tuple(reqs)


def label_selector_string(sel: Obj | None) -> str:
    """The string form of a LabelSelector object, as Scale.status.selector carries it."""
    parts: list[str] = []
    for k, v in sorted(((sel or {}).get("matchLabels") or {}).items()):
        parts.append(f"{k}={v}")
    for expr in (sel or {}).get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(sorted(expr.get("values") or ()))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


# -- field selectors ----------------------------------------------------------------------------

FieldSelector = tuple[tuple[str, bool, str], ...]  # (field, equal?, value)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text or not text.strip():
        return ()
    out: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            f, v = part.split("!=", 1)
            out.append((f.strip(), False, v.strip()))
        elif "==" in part:
            f, v = part.split("==", 1)
            out.append((f.strip(), True, v.strip()))
        elif "=" in part:
            f, v = part.split("=", 1)
            out.append((f.strip(), True, v.strip()))
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
    return tuple(out)


def _path(*keys: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(k)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)
    return get


def _bool_path(*keys: str) -> Callable[[Obj], str]:
    inner = _path(*keys)
    return lambda obj: inner(obj) or "false"


_COMMON: dict[str, Callable[[Obj], str]] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
# The fields each built-in kind's real registry lets you select on.
FIELDS: dict[tuple[str, str], dict[str, Callable[[Obj], str]]] = {
    ("", "Pod"): {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": _bool_path("spec", "hostNetwork"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    ("", "Node"): {"spec.unschedulable": _bool_path("spec", "unschedulable")},
    ("", "Event"): {
        **{f"involvedObject.{k}": _path("involvedObject", k) for k in (
            "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _path("reason"), "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"), "type": _path("type"),
    },
    ("", "Secret"): {"type": _path("type")},
    ("", "Namespace"): {"status.phase": _path("status", "phase")},
    ("", "PersistentVolumeClaim"): {"status.phase": _path("status", "phase")},
    ("", "PersistentVolume"): {"status.phase": _path("status", "phase")},
    ("apps", "ReplicaSet"): {"status.replicas": _path("status", "replicas")},
    ("batch", "Job"): {"status.successful": _path("status", "succeeded")},
}


def compile_field_selector(sel: FieldSelector, group: str, kind: str,
                           crd: bool) -> Callable[[Obj], bool] | None:
    """A predicate for the selector, or None when it selects everything. Unknown fields are a
    400, as on the real server."""
    if not sel:
        return None
    table = {**_COMMON, **FIELDS.get((group, kind), {})}
    getters: list[tuple[Callable[[Obj], str], bool, str]] = []
    for f, eq, value in sel:
        getter = table.get(f)
        if getter is None:
            if crd:
                raise bad_request(f'"{f}" is not a known field selector: only "metadata.name", '
                                  f'"metadata.namespace"')
            raise bad_request(f'field label not supported: {f}')
        getters.append((getter, eq, value))

    def match(obj: Obj) -> bool:
        return all((g(obj) == v) == eq for g, eq, v in getters)
    return match
