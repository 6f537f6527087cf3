"""Each scenario shows the symptom the runbook describes, seen through the real clients: hvac
against the Vault listeners, kubernetes-asyncio and kubectl against the sandbox API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from sandbox.kube.kubectl import kubectl as run_kubectl
from sandbox.kube.serve import RunningKube, serve_kube
from sandbox.platform import CORE, Platform
from sandbox.scenarios import SCENARIOS, apply_scenarios
from sandbox.vault import ReplicaServer, serve_cluster
from sandbox.world import build_platform

T = TypeVar("T")
CM = ("cert-manager.io", "v1")
CNPG = ("postgresql.cnpg.io", "v1")
GW = ("gateway.networking.k8s.io", "v1")


@dataclass
class Live:
    platform: Platform
    kube: RunningKube
    api: client.ApiClient
    vault: list[ReplicaServer]

    def hvac(self, i: int, token: bool = False) -> hvac.Client:
        return hvac.Client(url=self.vault[i].url, token=self.platform.vault.root_token if token else None, timeout=5)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


@asynccontextmanager
async def live(tmp_path: Path, *scenarios: str) -> AsyncIterator[Live]:
    """A fresh world with ``scenarios`` applied after the servers are up (as on a running sandbox)."""
    platform = build_platform()
    servers = await serve_cluster(platform.vault)
    async with serve_kube(platform.kube, tmp_path) as kube:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        try:
            apply_scenarios(platform, list(scenarios))
            for s in servers:
                await s.sync()
            yield Live(platform, kube, api, servers)
        finally:
            await api.close()
            for s in servers:
                await s.stop()


async def call(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def cond(conditions: list[Any], type_: str) -> Any:
    """A condition from a typed model list or a plain dict list."""
    for c in conditions:
        if (c["type"] if isinstance(c, dict) else c.type) == type_:
            return c
    raise AssertionError(f"no {type_} condition")


def pod_ready(pod: client.V1Pod) -> bool:
    return cond(pod.status.conditions or [], "Ready").status == "True"


async def kubectl(kube: RunningKube, *args: str) -> str:
    return (await run_kubectl(kube.kubeconfig, *args)).ok()


# -- the catalogue -----------------------------------------------------------------------------
def test_unknown_names_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        apply_scenarios(build_platform(), ["healthy", "vault-melted"])
    assert "vault-melted" in str(err.value) and "vault-sealed" in str(err.value)


def test_catalogue_has_the_required_scenarios_with_one_line_descriptions() -> None:
    required = {"healthy", "vault-sealed", "vault-partially-sealed", "vault-no-leader", "vault-replica-down",
                "node-disk-pressure", "unlabeled-nodes", "cert-not-ready", "issuer-not-ready", "cert-expiring",
                "pod-crashloop", "pod-pending", "image-pull-backoff", "pvc-pending", "lb-ip-pending",
                "cnpg-failover", "coredns-down", "gateway-not-accepted", "cordoned-node", "kubelet-skew"}
    assert required <= set(SCENARIOS)
    for name, s in SCENARIOS.items():
        assert s.name == name and s.description and "\n" not in s.description


def test_healthy_changes_nothing() -> None:
    p = build_platform()
    before = p.kube.resource_version
    apply_scenarios(p, ["healthy"])
    assert p.kube.resource_version == before


def test_all_scenarios_compose_on_one_world() -> None:
    p = build_platform()
    apply_scenarios(p, list(SCENARIOS))
    assert all(r.sealed for r in p.vault.replicas)
    assert p.kube.get(CORE, "Pod", "keycloak-pg-1", "database") is None


async def test_scenarios_reach_watchers_of_a_running_world() -> None:
    p = build_platform()
    queue = p.kube.subscribe(CORE, "Node")
    apply_scenarios(p, ["node-disk-pressure"])
    event = queue.get_nowait()
    assert event.type == "MODIFIED" and event.object["metadata"]["name"] == "rke2-general-1"
    assert int(event.object["metadata"]["resourceVersion"]) > 1000


# -- Vault (runbook ch. 5) ---------------------------------------------------------------------
async def test_vault_sealed_every_replica_health_503_and_pods_unready(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-sealed") as w:
        for i in range(3):
            health = await call(lambda: w.hvac(i).sys.read_health_status(method="GET"))
            assert health.status_code == 503 and health.json()["sealed"] is True
        pods = (await w.core.list_namespaced_pod("vault", label_selector="app.kubernetes.io/name=vault")).items
        assert len(pods) == 3 and not any(pod_ready(p) for p in pods)
        assert {p.metadata.labels["vault-sealed"] for p in pods} == {"true"}
        issuer = await w.custom.get_cluster_custom_object(*CM, "clusterissuers", "vault-issuer")
        ready = cond(issuer["status"]["conditions"], "Ready")
        assert ready["status"] == "False" and "Vault is sealed" in ready["message"]


async def test_vault_partially_sealed_two_sealed_and_no_quorum(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-partially-sealed") as w:
        sealed = [(await call(w.hvac(i).sys.read_seal_status))["sealed"] for i in range(3)]
        assert sealed == [False, True, True]
        lead = await call(w.hvac(0).sys.read_leader_status)
        assert lead["is_self"] is False and lead["leader_address"] == ""
        pods = {p.metadata.name: pod_ready(p) for p in
                (await w.core.list_namespaced_pod("vault", label_selector="component=server")).items}
        assert pods == {"vault-0": True, "vault-1": False, "vault-2": False}


async def test_vault_no_leader_all_unsealed_all_standby(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-no-leader") as w:
        for i in range(3):
            assert (await call(w.hvac(i).sys.read_seal_status))["sealed"] is False
            lead = await call(w.hvac(i).sys.read_leader_status)
            assert lead["is_self"] is False and lead["leader_address"] == ""
            health = await call(lambda: w.hvac(i).sys.read_health_status(method="GET"))
            assert health.status_code == 429
        with pytest.raises(hvac.exceptions.InternalServerError):
            await call(w.hvac(1, token=True).sys.read_raft_config)


async def test_vault_replica_down_refuses_connections(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-replica-down") as w:
        with pytest.raises(requests.ConnectionError):
            await call(w.hvac(2).sys.read_seal_status)
        assert (await call(w.hvac(0).sys.read_leader_status))["is_self"] is True  # 2 of 3 keep quorum
        pod = await w.core.read_namespaced_pod("vault-2", "vault")
        status = pod.status.container_statuses[0]
        assert status.state.waiting.reason == "CrashLoopBackOff" and not pod_ready(pod)


async def test_vault_replica_not_joined_reports_uninitialized(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-replica-not-joined") as w:
        status = await call(w.hvac(2).sys.read_seal_status)
        assert status["initialized"] is False
        health = await call(lambda: w.hvac(2).sys.read_health_status(method="GET"))
        assert health.status_code == 501
        peers = (await call(w.hvac(0, token=True).sys.read_raft_config))["data"]["config"]["servers"]
        assert [p["node_id"] for p in peers] == ["vault-0", "vault-1"]


async def test_vault_pki_missing_has_no_route(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-pki-missing") as w:
        with pytest.raises(hvac.exceptions.InvalidPath) as err:
            await call(lambda: w.hvac(0, token=True).adapter.get("/v1/pki_int/cert/ca_chain"))
        assert "no handler for route" in err.value.errors[0]
        mounts = await call(w.hvac(0, token=True).sys.list_mounted_secrets_engines)
        assert "pki_int/" not in mounts["data"]


async def test_pki_intermediate_expired_serves_an_expired_ca(tmp_path: Path) -> None:
    async with live(tmp_path, "pki-intermediate-expired") as w:
        ca = await call(lambda: w.hvac(1).read("pki_int/cert/ca"))
        cert = x509.load_pem_x509_certificate(ca["data"]["certificate"].encode())
        assert cert.not_valid_after_utc < datetime.now(timezone.utc)


async def test_issuer_not_ready_permission_denied_and_role_missing(tmp_path: Path) -> None:
    async with live(tmp_path, "issuer-not-ready") as w:
        issuer = await w.custom.get_cluster_custom_object(*CM, "clusterissuers", "vault-issuer")
        ready = cond(issuer["status"]["conditions"], "Ready")
        assert ready["status"] == "False" and "permission denied" in ready["message"]
        assert await call(lambda: w.hvac(0, token=True).read("auth/kubernetes/role/cert-manager-issuer")) is None


# -- nodes (ch. 2, 9.5, 11.3) ------------------------------------------------------------------
async def test_node_disk_pressure_not_ready_with_disk_pressure(tmp_path: Path) -> None:
    async with live(tmp_path, "node-disk-pressure") as w:
        node = await w.core.read_node("rke2-general-1")
        assert cond(node.status.conditions, "Ready").status == "False"
        assert cond(node.status.conditions, "DiskPressure").status == "True"
        assert "node.kubernetes.io/disk-pressure" in {t.key for t in node.spec.taints}
        out = await kubectl(w.kube, "get", "nodes", "--no-headers")
        states = {line.split()[0]: line.split()[1] for line in out.splitlines()}
        assert states["rke2-general-1"] == "NotReady" and list(states.values()).count("Ready") == 5


async def test_unlabeled_nodes_two_workers_without_workload_type(tmp_path: Path) -> None:
    async with live(tmp_path, "unlabeled-nodes") as w:
        nodes = await w.core.list_node(label_selector="node-role.kubernetes.io/worker=true,!workload-type")
        assert sorted(n.metadata.name for n in nodes.items) == ["rke2-compute-1", "rke2-general-1"]
        labeler = (await w.core.list_namespaced_pod("node-labeler")).items[0]
        assert labeler.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"


async def test_cordoned_node_is_unschedulable(tmp_path: Path) -> None:
    async with live(tmp_path, "cordoned-node") as w:
        node = await w.core.read_node("rke2-database-1")
        assert node.spec.unschedulable is True
        out = await kubectl(w.kube, "get", "node", "rke2-database-1", "--no-headers")
        assert "SchedulingDisabled" in out


async def test_kubelet_skew_shows_two_versions(tmp_path: Path) -> None:
    async with live(tmp_path, "kubelet-skew") as w:
        versions = {n.metadata.name: n.status.node_info.kubelet_version for n in (await w.core.list_node()).items}
        assert set(versions.values()) == {"v1.34.2+rke2r1", "v1.33.4+rke2r1"}
        assert versions["rke2-cp-3"] == "v1.33.4+rke2r1"


# -- certificates (ch. 4) ----------------------------------------------------------------------
async def test_cert_not_ready_reason_and_missing_secret(tmp_path: Path) -> None:
    async with live(tmp_path, "cert-not-ready") as w:
        cert = await w.custom.get_namespaced_custom_object(*CM, "harbor", "certificates", "harbor-example-com-tls")
        ready = cond(cert["status"]["conditions"], "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DoesNotExist")
        with pytest.raises(ApiException) as err:
            await w.core.read_namespaced_secret("harbor-example-com-tls", "harbor")
        assert err.value.status == 404
        requests_ = await w.custom.list_namespaced_custom_object(*CM, "harbor", "certificaterequests")
        pending = [r for r in requests_["items"] if cond(r["status"]["conditions"], "Ready")["status"] == "False"]
        assert len(pending) == 1 and "not allowed by this role" in cond(pending[0]["status"]["conditions"], "Ready")["message"]


async def test_cert_expiring_in_ten_days(tmp_path: Path) -> None:
    async with live(tmp_path, "cert-expiring") as w:
        cert = await w.custom.get_namespaced_custom_object(*CM, "keycloak", "certificates", "keycloak-example-com-tls")
        not_after = datetime.strptime(cert["status"]["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        left = not_after - datetime.now(timezone.utc)
        assert timedelta(days=9) < left <= timedelta(days=10)


# -- pods and storage --------------------------------------------------------------------------
async def test_pod_crashloop_backoff_with_restarts_and_error_exit(tmp_path: Path) -> None:
    async with live(tmp_path, "pod-crashloop") as w:
        pod = (await w.core.list_namespaced_pod("harbor", label_selector="component=registry")).items[0]
        cs = pod.status.container_statuses[0]
        assert cs.state.waiting.reason == "CrashLoopBackOff" and cs.restart_count > 5
        assert cs.last_state.terminated.reason == "Error" and cs.last_state.terminated.exit_code == 1
        dep = await client.AppsV1Api(w.api).read_namespaced_deployment("harbor-registry", "harbor")
        assert not dep.status.available_replicas and dep.status.unavailable_replicas == 1
        out = await kubectl(w.kube, "get", "pods", "-n", "harbor", "-l", "component=registry", "--no-headers")
        assert "CrashLoopBackOff" in out and "0/1" in out


async def test_pod_pending_unschedulable(tmp_path: Path) -> None:
    async with live(tmp_path, "pod-pending") as w:
        pods = await w.core.list_pod_for_all_namespaces(field_selector="status.phase=Pending")
        assert [(p.metadata.namespace, p.metadata.labels["app"]) for p in pods.items] == [("mattermost", "mattermost")]
        scheduled = cond(pods.items[0].status.conditions, "PodScheduled")
        assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
        assert scheduled.message.startswith("0/6 nodes are available")


async def test_image_pull_backoff(tmp_path: Path) -> None:
    async with live(tmp_path, "image-pull-backoff") as w:
        pod = (await w.core.list_namespaced_pod("kasm", label_selector="app.kubernetes.io/component=agent")).items[0]
        waiting = pod.status.container_statuses[0].state.waiting
        assert waiting.reason == "ImagePullBackOff" and "harbor.example.com" in waiting.message


async def test_pvc_pending_and_its_pod_waits(tmp_path: Path) -> None:
    async with live(tmp_path, "pvc-pending") as w:
        claim = await w.core.read_namespaced_persistent_volume_claim("uptime-kuma", "uptime-kuma")
        assert claim.status.phase == "Pending" and not claim.spec.volume_name
        pod = (await w.core.list_namespaced_pod("uptime-kuma")).items[0]
        assert pod.status.phase == "Pending"
        assert "unbound immediate PersistentVolumeClaims" in cond(pod.status.conditions, "PodScheduled").message


# -- networking and database -------------------------------------------------------------------
async def test_lb_ip_pending_without_a_pool(tmp_path: Path) -> None:
    async with live(tmp_path, "lb-ip-pending") as w:
        svc = await w.core.read_namespaced_service("rke2-traefik", "kube-system")
        assert not (svc.status.load_balancer.ingress or [])
        pools = await w.custom.list_cluster_custom_object("cilium.io", "v2alpha1", "ciliumloadbalancerippools")
        assert pools["items"] == []
        out = await kubectl(w.kube, "get", "svc", "-n", "kube-system", "rke2-traefik", "--no-headers")
        assert "<pending>" in out


async def test_coredns_down_zero_available(tmp_path: Path) -> None:
    async with live(tmp_path, "coredns-down") as w:
        pods = (await w.core.list_namespaced_pod("kube-system", label_selector="app.kubernetes.io/name=rke2-coredns")).items
        assert len(pods) == 2 and not any(pod_ready(p) for p in pods)
        dep = await client.AppsV1Api(w.api).read_namespaced_deployment("rke2-coredns-rke2-coredns", "kube-system")
        assert not dep.status.available_replicas
        assert cond(dep.status.conditions, "Available").status == "False"


async def test_gateway_not_accepted_and_route_detached(tmp_path: Path) -> None:
    async with live(tmp_path, "gateway-not-accepted") as w:
        gw = await w.custom.get_namespaced_custom_object(*GW, "keycloak", "gateways", "keycloak-gateway")
        assert cond(gw["status"]["conditions"], "Accepted")["status"] == "False"
        assert 443 in {lst["port"] for lst in gw["spec"]["listeners"]}
        route = await w.custom.get_namespaced_custom_object(*GW, "keycloak", "httproutes", "keycloak")
        assert cond(route["status"]["parents"][0]["conditions"], "Accepted")["status"] == "False"


async def test_cnpg_failover_primary_gone_and_failing_over(tmp_path: Path) -> None:
    async with live(tmp_path, "cnpg-failover") as w:
        cluster = await w.custom.get_namespaced_custom_object(*CNPG, "database", "clusters", "keycloak-pg")
        st = cluster["status"]
        assert st["phase"] == "Failing over" and st["currentPrimary"] != st["targetPrimary"]
        assert st["readyInstances"] == 2
        with pytest.raises(ApiException) as err:
            await w.core.read_namespaced_pod(st["currentPrimary"], "database")
        assert err.value.status == 404


async def test_unsealing_through_the_api_makes_the_vault_pods_ready_again(tmp_path: Path) -> None:
    async with live(tmp_path, "vault-sealed") as w:
        keys = w.platform.vault.unseal_keys_hex
        for i in range(3):
            await call(lambda: w.hvac(i).sys.submit_unseal_keys(keys[:3]))
        pods = (await w.core.list_namespaced_pod("vault", label_selector="component=server")).items
        assert all(pod_ready(p) for p in pods)
        assert sorted(p.metadata.labels["vault-active"] for p in pods) == ["false", "false", "true"]
