"""URL paths of the resource API (/api/v1/..., /apis/{group}/{version}/...) to a Target."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.kube.resources import Catalog, ResourceType


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str | None  # None: cluster-scoped kind, or a namespaced kind across all namespaces
    name: str | None  # None: the collection
    subresource: str | None = None


def parse(catalog: Catalog, path: str) -> Target | None:
    """None when the path names no resource the catalog knows."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    # /namespaces/{ns}/{plural}[/{name}[/{sub}]] unless {plural} is a subresource of namespaces
    if rest[0] == "namespaces" and len(rest) >= 3:
        rt = catalog.lookup(group, version, rest[2])
        if rt is not None and rt.namespaced:
            if len(rest) > 5:
                return None
            name = rest[3] if len(rest) >= 4 else None
            sub = rest[4] if len(rest) == 5 else None
            if sub is not None and sub not in rt.subresources():
                return None
            return Target(rt, rest[1], name, sub)
    rt = catalog.lookup(group, version, rest[0])
    if rt is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and sub not in rt.subresources():
        return None
    if rt.namespaced and name is not None:
        return None  # a namespaced kind needs /namespaces/{ns}/ for a single object
    return Target(rt, None, name, sub)
