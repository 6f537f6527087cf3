"""The sandbox Kubernetes API server, driven by two independent real clients: kubectl (as a
subprocess) and kubernetes-asyncio, plus the bot's own KubeClient."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.stream import WsApiClient
from kubernetes_asyncio.client.rest import ApiException

from sandbox.kube.kubectl import kubectl as run_kubectl
from sandbox.kube.kubectl import kubectl_binary
from sandbox.kube.serve import RunningKube, serve_kube
from sandbox.kube.server import write_kubeconfig
from sandbox.kube.store import ObjectStore

Obj = dict[str, Any]

NODE_INFO = {"architecture": "amd64", "bootID": "boot", "containerRuntimeVersion": "containerd://1.7.26-k3s1",
             "kernelVersion": "5.14.21", "kubeProxyVersion": "", "kubeletVersion": "v1.31.9+rke2r1",
             "machineID": "m", "operatingSystem": "linux", "osImage": "SUSE Linux Enterprise Micro 5.5",
             "systemUUID": "u"}


def node(name: str, ready: str, roles: tuple[str, ...] = (), unschedulable: bool = False) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  **{f"node-role.kubernetes.io/{r}": "true" for r in roles}}},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status",
                                       "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.10"}],
                       "nodeInfo": NODE_INFO}}


def pod(name: str, ns: str, labels: dict[str, str], node_name: str | None, phase: str,
        ready: bool, waiting: str | None = None, restarts: int = 0) -> Obj:
    state: Obj = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if phase == "Succeeded":
        state = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    spec: Obj = {"containers": [{"name": "main", "image": "registry.example/app:1"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts,
                                              "image": "registry.example/app:1", "imageID": "",
                                              "state": state}]}}


def sample_store() -> ObjectStore:
    s = ObjectStore()
    for ns in ("default", "kube-system", "kube-node-lease", "apps", "db"):
        s.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}})
    s.add(node("cp-1", "True", ("control-plane", "etcd", "master")))
    s.add(node("worker-1", "True", ("worker",)))
    s.add(node("worker-2", "False", ("worker",)))
    s.add(node("worker-3", "True", ("worker",), unschedulable=True))
    s.add(pod("web-1", "apps", {"app": "web", "tier": "frontend"}, "worker-1", "Running", True))
    s.add(pod("web-2", "apps", {"app": "web", "tier": "frontend"}, "worker-1", "Running", True))
    s.add(pod("api-1", "apps", {"app": "api"}, "worker-3", "Running", False, "CrashLoopBackOff", 12))
    s.add(pod("migrate-1", "apps", {}, "worker-1", "Succeeded", False))
    s.add(pod("pg-1", "db", {"app": "pg", "tier": "db"}, "worker-2", "Running", True))
    s.add(pod("pg-2", "db", {"app": "pg", "tier": "db"}, "worker-1", "Running", True))
    s.add(pod("pg-3", "db", {"app": "pg-restore", "tier": "db"}, None, "Pending", False, "ContainerCreating"))
    s.add({"apiVersion": "v1", "kind": "PersistentVolume",
           "metadata": {"name": "pv-pg-1", "finalizers": ["kubernetes.io/pv-protection"]},
           "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "harvester",
                    "claimRef": {"namespace": "db", "name": "data-pg-1"}},
           "status": {"phase": "Bound"}})
    s.add({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "data-pg-1", "namespace": "db", "finalizers": ["kubernetes.io/pvc-protection"]},
           "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-pg-1", "storageClassName": "harvester",
                    "resources": {"requests": {"storage": "20Gi"}}},
           "status": {"phase": "Bound", "capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"]}})
    pg1 = s.get("v1", "Pod", "pg-1", "db")
    assert pg1 is not None
    pg1["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pg-1"}}]
    s.add({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "pg", "namespace": "db", "uid": "sts-pg"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pg"}}},
           "status": {"replicas": 2, "readyReplicas": 2}})
    for name in ("pg-1", "pg-2"):
        kube_pod = s.get("v1", "Pod", name, "db")
        assert kube_pod is not None
        kube_pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "pg",
                                                    "uid": "sts-pg", "controller": True}]
    s.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "apps"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [
                                     {"name": "main", "image": "registry.example/app:1",
                                      "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                                     {"name": "sidecar", "image": "registry.example/proxy:1"}]}}},
           "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}})
    s.add({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "apps"},
           "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    s.add({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pg", "namespace": "db"},
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pg"}}}})
    s.add({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
           "metadata": {"name": "wildcard", "namespace": "apps"},
           "spec": {"secretName": "wildcard-tls", "issuerRef": {"name": "vault-issuer", "kind": "ClusterIssuer"}},
           "status": {"conditions": [{"type": "Ready", "status": "True", "message": "Certificate is up to date"}]}})
    s.add({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
           "metadata": {"name": "pg-server", "namespace": "db"},
           "spec": {"secretName": "pg-server-tls", "issuerRef": {"name": "vault-issuer", "kind": "ClusterIssuer"}},
           "status": {"conditions": [{"type": "Ready", "status": "False", "message": "Issuing certificate"}]}})
    return s


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[RunningKube]:
    async with serve_kube(sample_store(), tmp_path, token="sandbox-token") as running:
        yield running


# -- kubectl ------------------------------------------------------------------------------------

async def kubectl(kube: RunningKube, *args: str, kubeconfig: Path | None = None) -> tuple[int, str, str]:
    result = await run_kubectl(kubeconfig or kube.kubeconfig, *args)
    return result.returncode, result.stdout, result.stderr


async def kubectl_ok(kube: RunningKube, *args: str) -> str:
    rc, out, err = await kubectl(kube, *args)
    assert rc == 0, f"kubectl {' '.join(args)} failed ({rc}): {err}"
    return out


def table(out: str) -> list[dict[str, str]]:
    """kubectl's column output as dicts keyed by header (columns split on 2+ spaces)."""
    import re
    lines = [line for line in out.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()))) for line in lines[1:]]


async def test_kubectl_get_nodes_shows_status_roles_and_version(kube: RunningKube) -> None:
    rows = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "nodes"))}
    assert {n: r["STATUS"] for n, r in rows.items()} == {
        "cp-1": "Ready", "worker-1": "Ready", "worker-2": "NotReady",
        "worker-3": "Ready,SchedulingDisabled"}
    assert rows["cp-1"]["ROLES"] == "control-plane,etcd,master"
    assert rows["worker-1"]["VERSION"] == "v1.31.9+rke2r1"


async def test_kubectl_get_pods_all_namespaces(kube: RunningKube) -> None:
    rows = {(r["NAMESPACE"], r["NAME"]): r for r in table(await kubectl_ok(kube, "get", "pods", "-A"))}
    assert set(rows) == {("apps", "web-1"), ("apps", "web-2"), ("apps", "api-1"), ("apps", "migrate-1"),
                         ("db", "pg-1"), ("db", "pg-2"), ("db", "pg-3")}
    assert rows[("apps", "api-1")]["STATUS"] == "CrashLoopBackOff"
    assert rows[("apps", "api-1")]["READY"] == "0/1"
    assert rows[("apps", "api-1")]["RESTARTS"] == "12"
    assert rows[("apps", "web-1")]["STATUS"] == "Running"
    assert rows[("apps", "web-1")]["READY"] == "1/1"
    assert rows[("apps", "migrate-1")]["STATUS"] == "Completed"
    assert rows[("db", "pg-3")]["STATUS"] == "ContainerCreating"


async def test_kubectl_get_certificates_json(kube: RunningKube) -> None:
    doc = json.loads(await kubectl_ok(kube, "get", "certificates", "-A", "-o", "json"))
    by_name = {i["metadata"]["name"]: i for i in doc["items"]}
    assert set(by_name) == {"wildcard", "pg-server"}
    assert by_name["wildcard"]["kind"] == "Certificate"
    assert by_name["wildcard"]["spec"]["secretName"] == "wildcard-tls"


async def test_kubectl_certificate_columns_follow_the_crd(kube: RunningKube) -> None:
    rows = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "certificates", "-A"))}
    assert rows["wildcard"]["READY"] == "True" and rows["wildcard"]["SECRET"] == "wildcard-tls"
    assert rows["pg-server"]["READY"] == "False"
    wide = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "cert", "-n", "db", "-o", "wide"))}
    assert wide["pg-server"]["ISSUER"] == "vault-issuer"
    assert wide["pg-server"]["STATUS"] == "Issuing certificate"


async def test_kubectl_describe_node(kube: RunningKube) -> None:
    out = await kubectl_ok(kube, "describe", "node", "worker-1")
    assert "Name:               worker-1" in out
    assert "Roles:              worker" in out
    assert "Unschedulable:      false" in out
    # the pods scheduled on the node, found through a spec.nodeName field selector
    assert "web-1" in out and "pg-2" in out and "pg-1" not in out


async def test_kubectl_rollout_restart_changes_the_template(kube: RunningKube) -> None:
    out = await kubectl_ok(kube, "rollout", "restart", "deployment/web", "-n", "apps")
    assert "deployment.apps/web restarted" in out
    dep = kube.store.get("apps/v1", "Deployment", "web", "apps")
    assert dep is not None
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    assert dep["metadata"]["generation"] == 2


async def test_kubectl_cordon_and_uncordon(kube: RunningKube) -> None:
    assert "node/worker-1 cordoned" in await kubectl_ok(kube, "cordon", "worker-1")
    assert kube.store.get("v1", "Node", "worker-1")["spec"]["unschedulable"] is True  # type: ignore[index]
    rows = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "nodes"))}
    assert rows["worker-1"]["STATUS"] == "Ready,SchedulingDisabled"
    assert "node/worker-1 uncordoned" in await kubectl_ok(kube, "uncordon", "worker-1")
    assert not kube.store.get("v1", "Node", "worker-1")["spec"].get("unschedulable")  # type: ignore[index]
    rows = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "nodes"))}
    assert rows["worker-1"]["STATUS"] == "Ready"


async def test_kubectl_scale_deployment(kube: RunningKube) -> None:
    assert "deployment.apps/web scaled" in await kubectl_ok(
        kube, "scale", "deployment/web", "-n", "apps", "--replicas=3")
    assert kube.store.get("apps/v1", "Deployment", "web", "apps")["spec"]["replicas"] == 3  # type: ignore[index]
    rows = table(await kubectl_ok(kube, "get", "deployments", "-n", "apps"))
    assert rows[0]["NAME"] == "web" and rows[0]["READY"] == "3/3"


async def test_kubectl_rollout_status_after_restart(kube: RunningKube) -> None:
    await kubectl_ok(kube, "rollout", "restart", "deployment/web", "-n", "apps")
    out = await kubectl_ok(kube, "rollout", "status", "deployment/web", "-n", "apps", "--timeout=20s")
    assert 'deployment "web" successfully rolled out' in out


async def test_kubectl_rollout_status_waits_on_a_held_rollout(kube: RunningKube) -> None:
    kube.store.update("apps/v1", "Deployment", "web", "apps", lambda d: d["metadata"].setdefault(
        "annotations", {}).update({"sandbox.sop-bot.dev/hold-rollout": "true"}))
    await kubectl_ok(kube, "set", "image", "deployment/web", "-n", "apps", "main=registry.example/app:2")
    dep = kube.store.get("apps/v1", "Deployment", "web", "apps")
    assert dep is not None and dep["status"]["observedGeneration"] == 2
    kube.store.update("apps/v1", "Deployment", "web", "apps",
                      lambda d: d["status"].update(updatedReplicas=1))
    rc, out, err = await kubectl(kube, "rollout", "status", "deployment/web", "-n", "apps", "--watch=false")
    assert rc == 0
    assert "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated" in out


async def test_kubectl_apply_creates_then_patches(kube: RunningKube, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: apps\n"
                        "data:\n  a: '1'\n")
    assert "configmap/settings created" in await kubectl_ok(kube, "apply", "-f", str(manifest))
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: apps\n"
                        "data:\n  b: '2'\n")
    assert "configmap/settings configured" in await kubectl_ok(kube, "apply", "-f", str(manifest))
    assert kube.store.get("v1", "ConfigMap", "settings", "apps")["data"] == {"b": "2"}  # type: ignore[index]
    pool = tmp_path / "pool.yaml"
    pool.write_text("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata:\n"
                    "  name: default-pool\nspec:\n  blocks:\n    - cidr: 203.0.113.200/29\n")
    assert "created" in await kubectl_ok(kube, "apply", "-f", str(pool))
    assert "unchanged" in await kubectl_ok(kube, "apply", "-f", str(pool))
    stored = kube.store.get("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", "default-pool")
    assert stored is not None and stored["spec"]["blocks"] == [{"cidr": "203.0.113.200/29"}]


async def test_kubectl_create_commands_sending_protobuf(kube: RunningKube) -> None:
    assert "namespace/tools created" in await kubectl_ok(kube, "create", "namespace", "tools")
    assert kube.store.get("v1", "Namespace", "tools") is not None
    await kubectl_ok(kube, "create", "secret", "generic", "creds", "-n", "tools", "--from-literal=user=admin")
    secret = kube.store.get("v1", "Secret", "creds", "tools")
    assert secret is not None and secret["data"] == {"user": "YWRtaW4="} and secret["type"] == "Opaque"
    await kubectl_ok(kube, "create", "deployment", "echo", "-n", "tools", "--image=registry.example/echo:1",
                     "--replicas=0", "--port=8080")
    dep = kube.store.get("apps/v1", "Deployment", "echo", "tools")
    assert dep is not None and dep["spec"]["replicas"] == 0
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "echo"}}
    assert dep["spec"]["template"]["spec"]["containers"] == [
        {"name": "echo", "image": "registry.example/echo:1", "ports": [{"containerPort": 8080}], "resources": {}}]
    token = (await kubectl_ok(kube, "create", "token", "default", "-n", "tools")).strip()
    # A signed JWT for that ServiceAccount, with the API server's audience (kubectl sent none).
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "system:serviceaccount:tools:default"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]


async def test_kubectl_logs_and_top_read_what_scenarios_wrote(kube: RunningKube) -> None:
    kube.store.pod_logs[("apps", "api-1")] = "starting\npanic: cannot reach vault\n"
    assert await kubectl_ok(kube, "logs", "api-1", "-n", "apps", "--tail=1") == "panic: cannot reach vault\n"
    rc, _, err = await kubectl(kube, "top", "nodes")
    assert rc != 0 and "metrics not available yet" in err
    kube.store.add({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics", "metadata": {"name": "cp-1"},
                    "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
                    "usage": {"cpu": "2", "memory": "16Gi"}})
    rows = {r["NAME"]: list(r.values()) for r in table(await kubectl_ok(kube, "top", "nodes"))}
    # NAME, CPU(cores), CPU% (of the node's 8 allocatable CPUs), MEMORY(bytes), MEMORY%
    assert rows["cp-1"][1:] == ["2000m", "25%", "16384Mi", "50%"]


def vault_like(container: str, command: list[str]) -> tuple[str, str, int]:
    if command == ["vault", "status"]:
        return "Sealed          true\n", "", 2
    return f"{container}: {' '.join(command)}\n", "", 0


async def test_kubectl_exec_answers_from_the_scenario_handler(kube: RunningKube) -> None:
    kube.store.pod_exec[("apps", "web-1")] = vault_like
    assert await kubectl_ok(kube, "exec", "web-1", "-n", "apps", "--", "echo", "hi") == "main: echo hi\n"
    rc, out, err = await kubectl(kube, "exec", "web-1", "-n", "apps", "--", "vault", "status")
    assert rc == 2 and out == "Sealed          true\n" and "command terminated with exit code 2" in err
    rc, _, err = await kubectl(kube, "exec", "migrate-1", "-n", "apps", "--", "ls")
    assert rc != 0 and "cannot exec into a container in a completed pod; current phase is Succeeded" in err


async def test_kubectl_get_watch_prints_changes(kube: RunningKube) -> None:
    cfg = kube.kubeconfig
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(cfg.parent), KUBECONFIG=str(cfg))
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(cfg), "get", "pods", "-n", "db", "-l", "app=pg", "-w",
        "--output-watch-events", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            header = (await proc.stdout.readline()).decode()
            assert header.split()[:3] == ["EVENT", "NAME", "READY"]
            first = {(await proc.stdout.readline()).decode().split()[1] for _ in range(2)}
            assert first == {"pg-1", "pg-2"}
            kube.store.remove("v1", "Pod", "pg-1", "db")
            line = (await proc.stdout.readline()).decode().split()
            assert line[:2] == ["DELETED", "pg-1"]
    finally:
        proc.terminate()
        await proc.wait()


async def test_kubectl_delete_pod(kube: RunningKube) -> None:
    out = await kubectl_ok(kube, "delete", "pod", "web-2", "-n", "apps")
    assert 'pod "web-2" deleted' in out
    assert kube.store.get("v1", "Pod", "web-2", "apps") is None


async def test_pvc_in_use_stays_terminating_until_its_pod_goes(kube: RunningKube) -> None:
    await kubectl_ok(kube, "delete", "pvc", "data-pg-1", "-n", "db", "--wait=false")
    rows = table(await kubectl_ok(kube, "get", "pvc", "-n", "db"))
    assert [(r["NAME"], r["STATUS"]) for r in rows] == [("data-pg-1", "Terminating")]
    pvc = kube.store.get("v1", "PersistentVolumeClaim", "data-pg-1", "db")
    assert pvc is not None and pvc["metadata"]["deletionTimestamp"]
    await kubectl_ok(kube, "delete", "pod", "pg-1", "-n", "db")
    assert kube.store.get("v1", "PersistentVolumeClaim", "data-pg-1", "db") is None
    # the volume only loses its protection; deleting it now completes at once
    await kubectl_ok(kube, "delete", "pv", "pv-pg-1")
    assert kube.store.get("v1", "PersistentVolume", "pv-pg-1") is None


async def test_namespace_stuck_on_a_finalizer_until_it_is_patched_away(kube: RunningKube) -> None:
    await kubectl_ok(kube, "create", "namespace", "doomed")
    kube.store.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": {"name": "vm-1", "namespace": "doomed",
                                 "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"]},
                    "spec": {"running": True}})
    await kubectl_ok(kube, "delete", "namespace", "doomed", "--wait=false")
    rows = {r["NAME"]: r for r in table(await kubectl_ok(kube, "get", "ns"))}
    assert rows["doomed"]["STATUS"] == "Terminating"
    assert kube.store.get("v1", "ConfigMap", "kube-root-ca.crt", "doomed") is None
    rc, _, err = await kubectl(kube, "create", "configmap", "late", "-n", "doomed")
    assert rc != 0 and "because it is being terminated" in err
    await kubectl_ok(kube, "patch", "virtualmachine", "vm-1", "-n", "doomed", "--type=merge",
                     "-p", '{"metadata":{"finalizers":null}}')
    assert kube.store.get("kubevirt.io/v1", "VirtualMachine", "vm-1", "doomed") is None
    assert kube.store.get("v1", "Namespace", "doomed") is None


async def test_kubectl_get_missing_pod_fails_with_not_found(kube: RunningKube) -> None:
    rc, _, err = await kubectl(kube, "get", "pod", "missing", "-n", "apps")
    assert rc != 0
    assert 'Error from server (NotFound): pods "missing" not found' in err


async def test_kubectl_label_selectors(kube: RunningKube) -> None:
    def names(out: str) -> set[str]:
        return {r["NAME"] for r in table(out)} if out.strip() else set()
    assert names(await kubectl_ok(kube, "get", "pods", "-A", "-l", "app=web")) == {"web-1", "web-2"}
    assert names(await kubectl_ok(kube, "get", "pods", "-A", "-l", "app in (api,pg),tier!=db")) == {"api-1"}
    assert names(await kubectl_ok(kube, "get", "pods", "-n", "apps", "-l", "!app")) == {"migrate-1"}
    assert names(await kubectl_ok(kube, "get", "pods", "-A", "-l", "tier")) == {
        "web-1", "web-2", "pg-1", "pg-2", "pg-3"}
    assert names(await kubectl_ok(kube, "get", "pods", "-A", "-l", "app notin (web,pg)")) == {
        "api-1", "migrate-1", "pg-3"}


async def test_kubectl_field_selectors(kube: RunningKube) -> None:
    rows = table(await kubectl_ok(kube, "get", "pods", "-A", "--field-selector", "spec.nodeName=worker-1"))
    assert {r["NAME"] for r in rows} == {"web-1", "web-2", "migrate-1", "pg-2"}
    rows = table(await kubectl_ok(kube, "get", "pods", "-A", "--field-selector",
                                  "status.phase!=Running,metadata.namespace=db"))
    assert {r["NAME"] for r in rows} == {"pg-3"}
    rows = table(await kubectl_ok(kube, "get", "nodes", "--field-selector", "spec.unschedulable=true"))
    assert {r["NAME"] for r in rows} == {"worker-3"}


async def test_kubectl_drain_evicts_within_budget(kube: RunningKube) -> None:
    # worker-2 holds pg-1 only; the pg budget allows one disruption
    out = await kubectl_ok(kube, "drain", "worker-2", "--ignore-daemonsets", "--timeout=20s")
    assert "pod/pg-1 evicted" in out
    assert kube.store.get("v1", "Pod", "pg-1", "db") is None
    assert kube.store.get("v1", "Node", "worker-2")["spec"]["unschedulable"] is True  # type: ignore[index]


async def test_kubectl_with_wrong_token_is_refused(kube: RunningKube, tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "kubeconfig"
    write_kubeconfig(bad, kube.url, "wrong-token", ca_file=kube.ca_file)
    rc, _, err = await kubectl(kube, "get", "nodes", kubeconfig=bad)
    assert rc != 0
    assert "Unauthorized" in err or "provide credentials" in err


async def test_kubectl_sees_objects_written_to_the_store_later(kube: RunningKube) -> None:
    kube.store.add(pod("late-1", "apps", {"app": "late"}, "worker-1", "Running", True))
    rows = table(await kubectl_ok(kube, "get", "pods", "-n", "apps", "-l", "app=late"))
    assert [r["NAME"] for r in rows] == ["late-1"]


# -- kubernetes-asyncio -------------------------------------------------------------------------

async def api_client(kube: RunningKube, kubeconfig: Path | None = None) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig or kube.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture
async def api(kube: RunningKube) -> AsyncIterator[client.ApiClient]:
    c = await api_client(kube)
    yield c
    await c.close()


def add_many_pods(store: ObjectStore, n: int) -> None:
    for i in range(n):
        store.add(pod(f"bulk-{i:04d}", "apps" if i % 2 else "db", {"app": "bulk", "shard": str(i % 3)},
                      "worker-1", "Running", True))


async def test_list_pods_paginates_without_duplicates(kube: RunningKube, api: client.ApiClient) -> None:
    add_many_pods(kube.store, 250)
    v1 = client.CoreV1Api(api)
    names: list[tuple[str, str]] = []
    cont: str | None = None
    pages = 0
    while True:
        kw: dict[str, Any] = {"limit": 40}
        if cont:
            kw["_continue"] = cont
        page = await v1.list_pod_for_all_namespaces(**kw)
        pages += 1
        assert len(page.items) <= 40
        names += [(p.metadata.namespace, p.metadata.name) for p in page.items]
        cont = page.metadata._continue
        if not cont:
            break
        assert page.metadata.remaining_item_count == 257 - len(names)
    assert len(names) == 257 and len(set(names)) == 257
    assert pages == 7


async def test_list_with_selectors_and_limit(kube: RunningKube, api: client.ApiClient) -> None:
    add_many_pods(kube.store, 90)
    v1 = client.CoreV1Api(api)
    seen: list[str] = []
    cont = None
    while True:
        page = await v1.list_namespaced_pod("apps", label_selector="app=bulk,shard in (0,1)",
                                            field_selector="status.phase=Running", limit=10,
                                            **({"_continue": cont} if cont else {}))
        seen += [p.metadata.name for p in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    expected = {f"bulk-{i:04d}" for i in range(90) if i % 2 and i % 3 in (0, 1)}
    assert sorted(seen) == sorted(expected)


async def test_list_nodes_pages(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    first = await v1.list_node(limit=3)
    kube.store.update("v1", "Node", "cp-1", "", lambda n: n["metadata"]["labels"].update(x="y"))
    second = await v1.list_node(limit=3, _continue=first.metadata._continue)
    names = [n.metadata.name for n in first.items + second.items]
    assert names == ["cp-1", "worker-1", "worker-2", "worker-3"]
    assert second.metadata._continue is None
    assert int(first.metadata.resource_version) > 0
    # every page of one list reports the resourceVersion of its first page
    assert second.metadata.resource_version == first.metadata.resource_version


async def test_bad_continue_token_is_a_400(kube: RunningKube, api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        await client.CoreV1Api(api).list_node(limit=1, _continue="not-a-token!")
    assert exc.value.status == 400


async def test_expired_continue_token_is_410_with_a_fresh_token(tmp_path: Path) -> None:
    async with serve_kube(sample_store(), tmp_path, token="t", continue_ttl_s=-1) as running:
        c = await api_client(running)
        try:
            v1 = client.CoreV1Api(c)
            first = await v1.list_node(limit=2)
            with pytest.raises(ApiException) as exc:
                await v1.list_node(limit=2, _continue=first.metadata._continue)
            body = json.loads(exc.value.body)
            assert exc.value.status == 410 and body["reason"] == "Expired"
            assert body["message"].startswith("The provided continue parameter is too old")
            assert body["metadata"]["continue"]
        finally:
            await c.close()


async def test_read_missing_pod_is_404_not_found(kube: RunningKube, api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        await client.CoreV1Api(api).read_namespaced_pod("nope", "apps")
    assert exc.value.status == 404
    body = json.loads(exc.value.body)
    assert body["reason"] == "NotFound" and body["message"] == 'pods "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "pods"}


async def test_read_missing_deployment_names_the_group(kube: RunningKube, api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        await client.AppsV1Api(api).read_namespaced_deployment("nope", "apps")
    assert json.loads(exc.value.body)["message"] == 'deployments.apps "nope" not found'


async def test_create_conflict_invalid_and_missing_namespace(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    with pytest.raises(ApiException) as exc:
        await v1.create_namespaced_pod("apps", pod("web-1", "apps", {}, None, "Pending", False))
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        await v1.create_namespaced_pod("apps", pod("Bad_Name", "apps", {}, None, "Pending", False))
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 subdomain")
    with pytest.raises(ApiException) as exc:
        await v1.create_namespaced_pod("ghost", pod("p", "ghost", {}, None, "Pending", False))
    assert exc.value.status == 404 and json.loads(exc.value.body)["message"] == 'namespaces "ghost" not found'
    created = await v1.create_namespaced_pod("apps", pod("new-1", "apps", {"app": "new"}, None, "Pending", False))
    assert created.metadata.uid and created.metadata.resource_version
    assert kube.store.get("v1", "Pod", "new-1", "apps") is not None


async def test_update_with_stale_resource_version_conflicts(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
    created = await v1.create_namespaced_config_map("apps", cm)
    stale = created.metadata.resource_version
    fresh = await v1.replace_namespaced_config_map("cfg", "apps", {
        **cm, "metadata": {"name": "cfg", "resourceVersion": stale}, "data": {"a": "2"}})
    assert fresh.data == {"a": "2"}
    with pytest.raises(ApiException) as exc:
        await v1.replace_namespaced_config_map("cfg", "apps", {
            **cm, "metadata": {"name": "cfg", "resourceVersion": stale}, "data": {"a": "3"}})
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "Conflict"
    assert kube.store.get("v1", "ConfigMap", "cfg", "apps")["data"] == {"a": "2"}  # type: ignore[index]


async def test_patch_node_merge(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    node_obj = await v1.patch_node("worker-1", {"spec": {"unschedulable": True},
                                                "metadata": {"labels": {"maintenance": "yes"}}})
    assert node_obj.spec.unschedulable is True
    stored = kube.store.get("v1", "Node", "worker-1")
    assert stored["spec"]["unschedulable"] is True  # type: ignore[index]
    assert stored["metadata"]["labels"]["maintenance"] == "yes"  # type: ignore[index]
    assert stored["metadata"]["labels"]["kubernetes.io/hostname"] == "worker-1"  # type: ignore[index]


async def test_patch_deployment_strategic_merges_containers_by_name(kube: RunningKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    dep = await apps.patch_namespaced_deployment("web", "apps", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.example/app:2", "env": [{"name": "B", "value": "20"},
                                                                  {"name": "C", "value": "3"}]}]}}}})
    containers = {c.name: c for c in dep.spec.template.spec.containers}
    assert set(containers) == {"main", "sidecar"}
    assert containers["main"].image == "registry.example/app:2"
    assert [(e.name, e.value) for e in containers["main"].env] == [("A", "1"), ("B", "20"), ("C", "3")]
    assert dep.metadata.generation == 2
    # $patch: delete removes one element of a merged list
    dep = await apps.patch_namespaced_deployment("web", "apps", {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"}]}}}})
    assert [c.name for c in dep.spec.template.spec.containers] == ["main"]


async def test_json_patch_and_failed_test_op(kube: RunningKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    dep = await apps.patch_namespaced_deployment("web", "apps", [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels", "value": {"team": "platform"}}])
    assert dep.spec.replicas == 4 and dep.metadata.labels == {"team": "platform"}
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("web", "apps", [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 9}])
    assert exc.value.status == 422
    assert kube.store.get("apps/v1", "Deployment", "web", "apps")["spec"]["replicas"] == 4  # type: ignore[index]


async def test_dry_run_changes_nothing(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    rv = kube.store.resource_version
    made = await v1.create_namespaced_pod("apps", pod("dry-1", "apps", {}, None, "Pending", False), dry_run="All")
    assert made.metadata.name == "dry-1"
    patched = await v1.patch_node("worker-1", {"spec": {"unschedulable": True}}, dry_run="All")
    assert patched.spec.unschedulable is True
    await v1.delete_namespaced_pod("web-1", "apps", dry_run="All")
    await client.AppsV1Api(api).patch_namespaced_deployment_scale(
        "web", "apps", {"spec": {"replicas": 7}}, dry_run="All")
    assert kube.store.get("v1", "Pod", "dry-1", "apps") is None
    assert not kube.store.get("v1", "Node", "worker-1")["spec"].get("unschedulable")  # type: ignore[index]
    assert kube.store.get("v1", "Pod", "web-1", "apps") is not None
    assert kube.store.get("apps/v1", "Deployment", "web", "apps")["spec"]["replicas"] == 2  # type: ignore[index]
    assert kube.store.resource_version == rv


async def test_eviction_blocked_by_pdb_then_allowed(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1", "namespace": "apps"}}
    with pytest.raises(ApiException) as exc:
        await v1.create_namespaced_pod_eviction("web-1", "apps", eviction)
    assert exc.value.status == 429
    body = json.loads(exc.value.body)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0] == {
        "reason": "DisruptionBudget", "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}
    assert kube.store.get("v1", "Pod", "web-1", "apps") is not None
    # pg allows one unavailable pod of the StatefulSet's two: one eviction passes, the next one is
    # refused (the controller has not replaced the first pod yet)
    await v1.create_namespaced_pod_eviction("pg-1", "db", {**eviction, "metadata": {"name": "pg-1", "namespace": "db"}})
    assert kube.store.get("v1", "Pod", "pg-1", "db") is None
    with pytest.raises(ApiException) as exc:
        await v1.create_namespaced_pod_eviction("pg-2", "db", {**eviction, "metadata": {"name": "pg-2", "namespace": "db"}})
    assert exc.value.status == 429
    # a pod not covered by any budget is evicted straight away
    await v1.create_namespaced_pod_eviction("api-1", "apps", {**eviction, "metadata": {"name": "api-1", "namespace": "apps"}})
    assert kube.store.get("v1", "Pod", "api-1", "apps") is None


async def test_status_subresource_is_separate_from_spec(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    await v1.patch_namespaced_pod("web-1", "apps", {"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}})
    stored = kube.store.get("v1", "Pod", "web-1", "apps")
    assert stored["status"]["phase"] == "Running" and stored["metadata"]["labels"]["x"] == "y"  # type: ignore[index]
    got = await v1.patch_namespaced_pod_status("web-1", "apps", {"status": {"phase": "Failed"}})
    assert got.status.phase == "Failed"
    assert (await v1.read_namespaced_pod_status("web-1", "apps")).status.phase == "Failed"


async def test_scale_subresource(kube: RunningKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    scale = await apps.read_namespaced_deployment_scale("web", "apps")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
    scale = await apps.patch_namespaced_deployment_scale("web", "apps", {"spec": {"replicas": 5}})
    assert scale.spec.replicas == 5
    dep = kube.store.get("apps/v1", "Deployment", "web", "apps")
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 2  # type: ignore[index]


async def test_custom_objects(kube: RunningKube, api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    certs = await co.list_cluster_custom_object("cert-manager.io", "v1", "certificates")
    assert {c["metadata"]["name"] for c in certs["items"]} == {"wildcard", "pg-server"}
    assert all(c["kind"] == "Certificate" for c in certs["items"])
    ns_certs = await co.list_namespaced_custom_object("cert-manager.io", "v1", "db", "certificates")
    assert [c["metadata"]["name"] for c in ns_certs["items"]] == ["pg-server"]
    patched = await co.patch_namespaced_custom_object(
        "cert-manager.io", "v1", "apps", "certificates", "wildcard", {"spec": {"renewBefore": "720h"}},
        _content_type="application/merge-patch+json")
    assert patched["spec"]["renewBefore"] == "720h"
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "default-pool"}, "spec": {"blocks": [{"cidr": "203.0.113.200/29"}]}}
    await co.create_cluster_custom_object("cilium.io", "v2alpha1", "ciliumloadbalancerippools", pool)
    assert kube.store.get("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", "default-pool") is not None


async def test_wrong_token_is_401(kube: RunningKube, tmp_path: Path) -> None:
    bad = tmp_path / "bad-kubeconfig"
    write_kubeconfig(bad, kube.url, "nope", ca_file=kube.ca_file)
    c = await api_client(kube, bad)
    try:
        with pytest.raises(ApiException) as exc:
            await client.CoreV1Api(c).list_node()
        assert exc.value.status == 401
        assert json.loads(exc.value.body)["reason"] == "Unauthorized"
    finally:
        await c.close()


async def test_discovery_documents(kube: RunningKube, api: client.ApiClient) -> None:
    groups = await client.ApisApi(api).get_api_versions()
    names = {g.name: g for g in groups.groups}
    assert {"apps", "policy", "cert-manager.io", "postgresql.cnpg.io", "cilium.io"} <= set(names)
    assert names["cilium.io"].preferred_version.version == "v2"
    raw = await client.CoreV1Api(api).get_api_resources()
    by_name = {r.name: r for r in raw.resources}
    assert by_name["pods"].short_names == ["po"] and by_name["pods/eviction"].kind == "Eviction"
    version = await client.VersionApi(api).get_code()
    assert version.git_version == "v1.31.9+rke2r1"  # the control plane nodes' kubelet version
    assert (version.major, version.minor) == ("1", "31")


async def test_watch_streams_changes(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    kube.store.add(pod("watched-1", "apps", {"app": "watched"}, "worker-1", "Running", True))
    w = watch.Watch()
    events: list[tuple[str, str, str]] = []
    async with asyncio.timeout(10):
        async for event in w.stream(v1.list_namespaced_pod, "apps", label_selector="app=watched",
                                    timeout_seconds=10):
            obj = event["object"]
            events.append((event["type"], obj.metadata.name, obj.status.phase))
            if len(events) == 1:
                # the initial ADDED proves the watch is subscribed: now change things
                kube.store.add(pod("other-1", "apps", {"app": "other"}, "worker-1", "Running", True))
                kube.store.update("v1", "Pod", "watched-1", "apps",
                                  lambda o: o["status"].update(phase="Failed"))
                kube.store.remove("v1", "Pod", "watched-1", "apps")
            if len(events) == 3:
                w.stop()
    assert events == [("ADDED", "watched-1", "Running"), ("MODIFIED", "watched-1", "Failed"),
                      ("DELETED", "watched-1", "Failed")]


async def test_bot_kube_client_against_the_sandbox(kube: RunningKube) -> None:
    from bot.clients.errors import SourceError
    from bot.clients.kube import KubeClient

    add_many_pods(kube.store, 120)
    kc = await KubeClient.connect(kube.kubeconfig)
    try:
        pages = [page async for page in kc.pages("v1", "pods", label_selector="app=bulk", limit=50)]
        assert [len(p) for p in pages] == [50, 50, 20]
        certs = await kc.list("cert-manager.io/v1", "certificates", "db")
        assert [c["metadata"]["name"] for c in certs] == ["pg-server"]
        node_obj = await kc.patch("v1", "nodes", "worker-1", {"spec": {"unschedulable": True}})
        assert node_obj["spec"]["unschedulable"] is True
        with pytest.raises(SourceError) as exc:
            await kc.get("v1", "pods", "nope", "apps")
        assert exc.value.status == 404 and exc.value.reason == 'pods "nope" not found'
        with pytest.raises(SourceError) as exc:
            await kc.create("v1", "pods", {"apiVersion": "policy/v1", "kind": "Eviction",
                                           "metadata": {"name": "web-1", "namespace": "apps"}},
                            "apps", subresource_of="web-1", subresource="eviction")
        assert exc.value.status == 429
    finally:
        await kc.close()


async def test_watch_from_a_list_version_replays_what_happened_since(kube: RunningKube,
                                                                    api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    listing = await v1.list_namespaced_pod("apps", label_selector="app=web")
    # written between the list and the watch: a real server's watch cache replays these
    kube.store.update("v1", "Pod", "web-1", "apps", lambda o: o["metadata"]["labels"].update(seen="yes"))
    kube.store.remove("v1", "Pod", "web-2", "apps")
    w = watch.Watch()
    events: list[tuple[str, str]] = []
    async with asyncio.timeout(10):
        async for event in w.stream(v1.list_namespaced_pod, "apps", label_selector="app=web",
                                    resource_version=listing.metadata.resource_version,
                                    timeout_seconds=10):
            events.append((event["type"], event["object"].metadata.name))
            if len(events) == 2:
                w.stop()
    assert events == [("MODIFIED", "web-1"), ("DELETED", "web-2")]


async def test_watch_from_a_compacted_version_is_410(kube: RunningKube, api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    listing = await v1.list_namespaced_pod("apps")
    kube.store.track_history("v1", "Pod", maxlen=2)  # a tiny watch cache, soon compacted
    for i in range(3):
        kube.store.add(pod(f"churn-{i}", "apps", {}, None, "Pending", False))
    resp = await v1.list_namespaced_pod("apps", watch=True, resource_version=listing.metadata.resource_version,
                                        timeout_seconds=5, _preload_content=False)
    line = json.loads(await resp.content.readline())
    resp.release()
    assert line["type"] == "ERROR"
    assert line["object"]["code"] == 410 and line["object"]["reason"] == "Expired"
    assert line["object"]["message"].startswith(f"too old resource version: {listing.metadata.resource_version}")


async def test_unsupported_verbs_are_405(kube: RunningKube, api: client.ApiClient) -> None:
    for method, path in (("POST", "/api/v1/namespaces/apps/pods/web-1"),
                         ("DELETE", "/apis/metrics.k8s.io/v1beta1/nodes/cp-1"),
                         ("PUT", "/api/v1/namespaces/apps/pods")):
        with pytest.raises(ApiException) as exc:
            await api.call_api(path, method, header_params={"Content-Type": "application/json"},
                               body={}, auth_settings=["BearerToken"], response_types_map={})
        assert exc.value.status == 405, (method, path)
        body = json.loads(exc.value.body)
        assert body["reason"] == "MethodNotAllowed"
        assert body["message"] == "the server does not allow this method on the requested resource"


async def test_unknown_paths_are_404_status(kube: RunningKube, api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        await api.call_api("/apis/example.com/v1/widgets", "GET", auth_settings=["BearerToken"],
                           response_types_map={})
    assert exc.value.status == 404
    assert json.loads(exc.value.body)["message"] == "the server could not find the requested resource"


async def test_exec_through_kubernetes_asyncio_stream(kube: RunningKube) -> None:
    kube.store.pod_exec[("apps", "web-1")] = vault_like
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=cfg)
    async with WsApiClient(configuration=cfg) as ws:
        out = await client.CoreV1Api(api_client=ws).connect_get_namespaced_pod_exec(
            "web-1", "apps", command=["cat", "/etc/hostname"], stderr=True, stdout=True,
            stdin=False, tty=False)
    assert out == "main: cat /etc/hostname\n"


async def test_open_watches_end_when_the_server_stops(tmp_path: Path) -> None:
    async with serve_kube(sample_store(), tmp_path, token="t") as running:
        c = await api_client(running)
        resp = await client.CoreV1Api(c).list_namespaced_pod(
            "db", watch=True, label_selector="app=pg", _preload_content=False)
        first = json.loads(await resp.content.readline())
        assert first["type"] == "ADDED"
    # the server shut down with the stream open: the client reads the rest and then EOF
    rest = await resp.content.read()
    assert [json.loads(line)["type"] for line in rest.splitlines()] == ["ADDED"]
    resp.release()
    await c.close()


async def test_pdb_status_follows_pod_readiness(kube: RunningKube, api: client.ApiClient) -> None:
    policy = client.PolicyV1Api(api)
    pdb = await policy.read_namespaced_pod_disruption_budget("pg", "db")
    assert (pdb.status.expected_pods, pdb.status.current_healthy, pdb.status.desired_healthy,
            pdb.status.disruptions_allowed) == (2, 2, 1, 1)
    kube.store.update("v1", "Pod", "pg-2", "db",
                      lambda o: o["status"]["conditions"][0].update(status="False"))
    pdbs = await policy.list_namespaced_pod_disruption_budget("db")
    assert [(b.metadata.name, b.status.disruptions_allowed) for b in pdbs.items] == [("pg", 0)]
    allowed = {c.type: c.status for c in pdbs.items[0].status.conditions}["DisruptionAllowed"]
    assert allowed == "False"
    rows = table(await kubectl_ok(kube, "get", "pdb", "-n", "db"))
    assert rows[0]["ALLOWED DISRUPTIONS"] == "0"


async def test_kubectl_uses_aggregated_discovery(kube: RunningKube) -> None:
    rc, _, err = await kubectl(kube, "get", "certificates", "-A", "-v=6")
    assert rc == 0
    requested = [line.split(" GET ", 1)[1].split("?")[0] for line in err.splitlines() if " GET " in line]
    assert any(r.endswith("/apis") for r in requested)
    # one aggregated document instead of a request per group version
    assert not any(r.endswith("/apis/cert-manager.io/v1") for r in requested), requested


async def test_dynamic_client_over_legacy_discovery(kube: RunningKube, api: client.ApiClient) -> None:
    import kubernetes_asyncio
    # bot.clients.k8s_import defers the package __init__; loading it before the dynamic module
    # avoids the import cycle utils.create_from_yaml <-> dynamic.client under that deferral
    assert kubernetes_asyncio.__version__
    from kubernetes_asyncio.dynamic import DynamicClient
    dyn = await DynamicClient(api)
    certs = await dyn.resources.get(api_version="cert-manager.io/v1", kind="Certificate")
    got = await certs.get(namespace="db")
    assert [c.metadata.name for c in got.items] == ["pg-server"]
    pools = await dyn.resources.get(api_version="cilium.io/v2alpha1", kind="CiliumLoadBalancerIPPool")
    assert pools.namespaced is False


async def test_kubectl_auth_reviews(kube: RunningKube) -> None:
    assert (await kubectl_ok(kube, "auth", "can-i", "create", "pods/eviction", "-n", "apps")).strip() == "yes"
    rc, out, _ = await kubectl(kube, "auth", "can-i", "delete", "pods", "-n", "apps",
                               "--as", "system:serviceaccount:sop-bot:sop-bot")
    assert rc != 0 and out.startswith("no - the sandbox does not evaluate RBAC for impersonated users")
    assert "sandbox-admin" in await kubectl_ok(kube, "auth", "whoami")
    assert kube.store.types() == sample_store().types()  # reviews are never stored
