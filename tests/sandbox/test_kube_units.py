"""The sandbox API server's pure parts: selectors, patches, printers, budgets, routing."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.kube.errors import ApiError
from sandbox.kube.eviction import budget
from sandbox.kube.patching import PatchError, json_patch, merge_patch, strategic_merge
from sandbox.kube.paths import parse
from sandbox.kube.resources import CATALOG
from sandbox.kube.selectors import (
    compile_field_selector, labels_match, parse_field_selector, parse_label_selector,
)
from sandbox.kube.store import ObjectStore
from sandbox.kube.tables import human_duration, jsonpath, node_status, pod_status_and_counts

Obj = dict[str, Any]


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),  # != also matches objects without the label
    ("app in (web, db),tier", {"app": "db", "tier": "x"}, True),
    ("app notin (web,db)", {"app": "db"}, False),
    ("!canary", {"canary": "true"}, False),
    ("!canary,app", {"app": "x"}, True),
    ("app.kubernetes.io/name=harbor", {"app.kubernetes.io/name": "harbor"}, True),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), {"metadata": {"labels": labels}}) is expected


def test_bad_label_selector_is_a_400() -> None:
    with pytest.raises(ApiError) as exc:
        parse_label_selector("app in web")
    assert exc.value.code == 400


def test_field_selectors_know_each_kinds_fields() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "w1"},
           "status": {"phase": "Running"}}
    match = compile_field_selector(parse_field_selector("spec.nodeName=w1,status.phase!=Failed"),
                                   "", "Pod", crd=False)
    assert match is not None and match(pod)
    node = compile_field_selector(parse_field_selector("spec.unschedulable=false"), "", "Node", crd=False)
    assert node is not None and node({"metadata": {"name": "x"}, "spec": {}})
    with pytest.raises(ApiError) as exc:
        compile_field_selector(parse_field_selector("spec.nodeName=w1"), "", "ConfigMap", crd=False)
    assert exc.value.message == "field label not supported: spec.nodeName"


def test_merge_patch_removes_nulls_and_replaces_lists() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2]}


def test_strategic_merge_lists_by_key() -> None:
    doc = {"status": {"conditions": [{"type": "Ready", "status": "True"},
                                     {"type": "MemoryPressure", "status": "False"}]},
           "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}],
                    "tolerations": [{"key": "x"}]},
           "metadata": {"finalizers": ["one"]}}
    out = strategic_merge(doc, {
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 443, "name": "https"}]},
                                {"name": "b", "image": "x"}],
                 "tolerations": [{"key": "y"}]},
        "metadata": {"finalizers": ["two"]}})
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "False"},
                                           {"type": "MemoryPressure", "status": "False"}]
    assert [c["name"] for c in out["spec"]["containers"]] == ["a", "b"]
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "http"},
                                                     {"containerPort": 443, "name": "https"}]
    assert out["spec"]["tolerations"] == [{"key": "y"}]  # no merge key: replaced
    assert out["metadata"]["finalizers"] == ["one", "two"]


def test_strategic_merge_replace_directive() -> None:
    out = strategic_merge({"data": {"a": "1", "b": "2"}}, {"data": {"$patch": "replace", "c": "3"}})
    assert out == {"data": {"c": "3"}}


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c~d": 1, "e/f": 2}}
    out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                           {"op": "add", "path": "/a/0", "value": 0},
                           {"op": "remove", "path": "/b/c~0d"},
                           {"op": "replace", "path": "/b/e~1f", "value": 20},
                           {"op": "copy", "from": "/a/1", "path": "/x"},
                           {"op": "move", "from": "/x", "path": "/y"},
                           {"op": "test", "path": "/y", "value": 1}])
    assert out == {"a": [0, 1, 2, 3], "b": {"e/f": 20}, "y": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/a/5", "value": 1}])


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 5 * 60, "3h5m"),
    (30 * 3600, "30h"), (3 * 86400 + 4 * 3600, "3d4h"), (40 * 86400, "40d"),
    (3 * 365 * 86400 + 86400, "3y1d"), (-5, "<invalid>"),
])
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def pod(**status: Any) -> Obj:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                                "initContainers": [{"name": "i"}]},
            "status": status}


def test_pod_status_cells() -> None:
    running = {"running": {}}
    assert pod_status_and_counts(pod(phase="Running", containerStatuses=[
        {"name": "a", "ready": True, "state": running, "restartCount": 1},
        {"name": "b", "ready": False, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]))[:3] == (
        "ImagePullBackOff", 1, 2)
    assert pod_status_and_counts(pod(phase="Pending", initContainerStatuses=[
        {"name": "i", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 4}]))[0] == (
        "Init:CrashLoopBackOff")
    assert pod_status_and_counts(pod(phase="Pending", initContainerStatuses=[
        {"name": "i", "state": {"running": {}}}]))[0] == "Init:0/1"
    assert pod_status_and_counts(pod(phase="Failed", reason="Evicted"))[0] == "Evicted"
    terminating = pod(phase="Running", containerStatuses=[{"name": "a", "ready": True, "state": running}])
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_status_and_counts(terminating)[0] == "Terminating"
    oom = pod(phase="Running", containerStatuses=[
        {"name": "a", "ready": False, "restartCount": 3,
         "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
         "lastState": {"terminated": {"finishedAt": "2020-01-01T00:00:00Z"}}}])
    status, _, _, restarts = pod_status_and_counts(oom)
    assert status == "OOMKilled" and restarts.startswith("3 (") and restarts.endswith(" ago)")


def test_node_status_cell() -> None:
    assert node_status({"status": {}}) == "Unknown"
    assert node_status({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
                        "spec": {"unschedulable": True}}) == "NotReady,SchedulingDisabled"


def test_printer_jsonpath_filters() -> None:
    obj = {"status": {"conditions": [{"type": "Ready", "status": "False", "message": "m"}],
                      "addresses": [{"value": "10.0.0.1"}, {"value": "10.0.0.2"}]}}
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].message') == ["m"]
    assert jsonpath(obj, ".status.addresses[*].value") == ["10.0.0.1", "10.0.0.2"]
    assert jsonpath(obj, ".status.addresses[1].value") == ["10.0.0.2"]
    assert jsonpath(obj, ".spec.missing") == []


def test_pdb_budget_with_percentages() -> None:
    store = ObjectStore()
    for i in range(4):
        store.add({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "n",
                                                                   "labels": {"app": "x"}},
                   "status": {"phase": "Running",
                              "conditions": [{"type": "Ready", "status": "True" if i else "False"}]}})
    pdb = {"metadata": {"name": "b", "namespace": "n"},
           "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "x"}}}}
    b = budget(store, pdb)
    assert (b.expected, b.current_healthy, b.desired_healthy, b.disruptions_allowed) == (4, 3, 3, 0)
    pdb["spec"] = {"minAvailable": "50%", "selector": {"matchLabels": {"app": "x"}}}
    assert budget(store, pdb).disruptions_allowed == 1


def test_paths_route_to_resources() -> None:
    t = parse(CATALOG, "/api/v1/namespaces/apps/pods/web-1/eviction")
    assert t is not None and (t.rt.kind, t.namespace, t.name, t.subresource) == ("Pod", "apps", "web-1", "eviction")
    t = parse(CATALOG, "/api/v1/namespaces/apps")
    assert t is not None and (t.rt.kind, t.name) == ("Namespace", "apps")
    t = parse(CATALOG, "/apis/apps/v1/deployments")
    assert t is not None and (t.rt.kind, t.namespace, t.name) == ("Deployment", None, None)
    assert parse(CATALOG, "/apis/apps/v1/deployments/web") is None  # namespaced needs a namespace
    assert parse(CATALOG, "/apis/apps/v1/namespaces/a/deployments/web/eviction") is None
    t = parse(CATALOG, "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/default-pool")
    assert t is not None and t.rt.kind == "CiliumLoadBalancerIPPool"


def test_table_rows_for_builtin_kinds() -> None:
    from sandbox.kube.tables import rows
    sc_rt = CATALOG.for_kind("storage.k8s.io/v1", "StorageClass")
    assert sc_rt is not None
    sc = {"metadata": {"name": "harvester", "creationTimestamp": "2026-01-01T00:00:00Z",
                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": "driver.harvesterhci.io", "reclaimPolicy": "Delete",
          "volumeBindingMode": "Immediate", "allowVolumeExpansion": True}
    cells = rows(sc_rt, [sc])[0]["cells"]
    assert cells[:5] == ["harvester (default)", "driver.harvesterhci.io", "Delete", "Immediate", True]
    svc_rt = CATALOG.for_kind("v1", "Service")
    assert svc_rt is not None
    svc = {"metadata": {"name": "traefik"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.10",
                                                     "ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}]},
           "status": {"loadBalancer": {}}}
    assert rows(svc_rt, [svc])[0]["cells"][:5] == ["traefik", "LoadBalancer", "10.43.0.10", "<pending>", "443:30443/TCP"]
