"""Discovery documents derived from the catalog: legacy (/api, /apis, APIResourceList per group
version) and aggregated (apidiscovery.k8s.io/v2 APIGroupDiscoveryList, which kubectl >= 1.30 asks
for first and which saves it one request per group version)."""

from __future__ import annotations

import re
from typing import Any

from sandbox.kube.resources import Catalog, ResourceType

Obj = dict[str, Any]

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
GIT_VERSION = "v1.32.4+rke2r1"


def version_info(git_version: str | None = None) -> Obj:
    """/version; ``git_version`` (e.g. the control plane's kubelet version) overrides the default."""
    git_version = git_version or GIT_VERSION
    m = re.match(r"v(\d+)\.(\d+)", git_version)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "32")
    return {"major": major, "minor": minor, "gitVersion": git_version,
            "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335", "gitTreeState": "clean",
            "buildDate": "2025-04-22T16:03:05Z", "goVersion": "go1.23.8 X:boringcrypto",
            "compiler": "gc", "platform": "linux/amd64"}


def wants_aggregated(accept: str) -> bool:
    """True when the client lists the v2 APIGroupDiscoveryList among acceptable types."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in part.split(";")[1:] if "=" in p}
        if (params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2"
                and params.get("as") == "APIGroupDiscoveryList"):
            return True
    return False


_SUB_KINDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # subresource -> (group, version, kind, verbs); "" group/kind = the parent's own
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "log": ("", "", "Pod", ("get",)),
    "exec": ("", "", "PodExecOptions", ("create", "get")),
    "status": ("", "", "", ("get", "patch", "update")),
}


def _sub(rt: ResourceType, sub: str) -> tuple[str, str, str, tuple[str, ...]]:
    group, version, kind, verbs = _SUB_KINDS[sub]
    if not kind:
        return rt.group, rt.version, rt.kind, verbs
    if not group and sub in ("log", "exec"):
        return "", "v1", kind, verbs
    return group, version, kind, verbs


def _legacy_resource(rt: ResourceType) -> list[Obj]:
    main: Obj = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": list(rt.verbs)}
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    if rt.categories:
        main["categories"] = list(rt.categories)
    out = [main]
    for sub in rt.subresources():
        group, version, kind, verbs = _sub(rt, sub)
        entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                      "kind": kind, "verbs": list(verbs)}
        if (group, version) != (rt.group, rt.version):
            entry["group"], entry["version"] = group, version
        out.append(entry)
    return out


def api_versions(server_address: str) -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(catalog: Catalog, group: str) -> Obj:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in catalog.groups[group]]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def api_group_list(catalog: Catalog) -> Obj:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(catalog, g) for g in catalog.groups if g]}


def api_group(catalog: Catalog, group: str) -> Obj | None:
    if not group or group not in catalog.groups:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(catalog, group)}


def api_resource_list(catalog: Catalog, group: str, version: str) -> Obj | None:
    rts = catalog.in_group_version(group, version)
    if not rts:
        return None
    resources = [r for rt in rts for r in _legacy_resource(rt)]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _aggregated_resource(rt: ResourceType) -> Obj:
    res: Obj = {"resource": rt.plural,
                "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "scope": "Namespaced" if rt.namespaced else "Cluster",
                "singularResource": rt.singular, "verbs": list(rt.verbs)}
    if rt.short_names:
        res["shortNames"] = list(rt.short_names)
    if rt.categories:
        res["categories"] = list(rt.categories)
    subs = []
    for sub in rt.subresources():
        group, version, kind, verbs = _sub(rt, sub)
        subs.append({"subresource": sub,
                     "responseKind": {"group": group, "version": version, "kind": kind},
                     "verbs": list(verbs)})
    if subs:
        res["subresources"] = subs
    return res


def aggregated(catalog: Catalog, core: bool) -> Obj:
    """The /api (core=True) or /apis document in apidiscovery.k8s.io/v2 form."""
    items = []
    for group, versions in catalog.groups.items():
        if bool(group) == core:
            continue
        meta: Obj = {"name": group, "creationTimestamp": None} if group else {"creationTimestamp": None}
        items.append({"metadata": meta, "versions": [
            {"version": v, "resources": [_aggregated_resource(rt)
                                         for rt in catalog.in_group_version(group, v)],
             "freshness": "Current"} for v in versions]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}
