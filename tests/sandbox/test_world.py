"""The healthy baseline world: the invariants the runbook's daily checks (11.1) expect."""

from __future__ import annotations

import base64
import ipaddress
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509

from sandbox.platform import (APPS, CERT_MANAGER, CILIUM_ALPHA, CNPG, CORE, GATEWAY, LB_IP, POLICY,
                              TRAEFIK, Platform, pod_is_ready)
from sandbox.world import build_platform

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def world() -> Platform:
    return build_platform()


def cond(obj: Obj, type_: str) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_six_nodes_all_ready_without_pressure(world: Platform) -> None:
    nodes = world.kube.list(CORE, "Node")
    assert len(nodes) == 6
    for n in nodes:
        assert cond(n, "Ready")["status"] == "True"
        for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert cond(n, pressure)["status"] == "False"
        assert not n["spec"].get("unschedulable")
    assert len({n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes}) == 1


def test_control_plane_nodes_carry_roles_and_taints(world: Platform) -> None:
    cps = [n for n in world.kube.list(CORE, "Node")
           if n["metadata"]["labels"].get("node-role.kubernetes.io/control-plane") == "true"]
    assert len(cps) == 3
    for n in cps:
        assert n["metadata"]["labels"]["node-role.kubernetes.io/etcd"] == "true"
        assert {t["key"] for t in n["spec"]["taints"]} == {"node-role.kubernetes.io/control-plane",
                                                         "node-role.kubernetes.io/etcd"}


def test_workers_are_labeled_by_their_hostname_pool(world: Platform) -> None:
    workers = world.workers()
    assert sorted(w["metadata"]["labels"]["workload-type"] for w in workers) == ["compute", "database", "general"]
    for w in workers:
        assert f"-{w['metadata']['labels']['workload-type']}-" in w["metadata"]["name"]


def test_every_pod_runs_ready_on_an_existing_node(world: Platform) -> None:
    nodes = {n["metadata"]["name"]: n for n in world.kube.list(CORE, "Node")}
    pods = world.kube.list(CORE, "Pod")
    assert len(pods) > 80
    for p in pods:
        assert p["status"]["phase"] == "Running", p["metadata"]["name"]
        assert pod_is_ready(p)
        assert all(cs["ready"] and "running" in cs["state"] for cs in p["status"]["containerStatuses"])
        node = nodes[p["spec"]["nodeName"]]
        for key, value in p["spec"].get("nodeSelector", {}).items():
            assert node["metadata"]["labels"].get(key) == value, p["metadata"]["name"]


def test_owner_references_resolve_with_matching_uids(world: Platform) -> None:
    api_of = {"ReplicaSet": APPS, "StatefulSet": APPS, "DaemonSet": APPS, "Deployment": APPS,
              "Cluster": CNPG, "Node": CORE}
    for p in world.kube.list(CORE, "Pod"):
        ref = p["metadata"]["ownerReferences"][0]
        ns = "" if ref["kind"] == "Node" else p["metadata"]["namespace"]
        owner = world.kube.get(api_of[ref["kind"]], ref["kind"], ref["name"], ns)
        assert owner is not None and owner["metadata"]["uid"] == ref["uid"], p["metadata"]["name"]


def test_workload_status_counts_match_their_pods(world: Platform) -> None:
    pods_by_owner = Counter((p["metadata"]["namespace"], ref["name"])
                            for p in world.kube.list(CORE, "Pod") for ref in p["metadata"]["ownerReferences"])
    for d in world.kube.list(APPS, "Deployment"):
        assert d["status"]["readyReplicas"] == d["spec"]["replicas"]
        assert cond(d, "Available")["status"] == "True"
    for rs in world.kube.list(APPS, "ReplicaSet"):
        assert pods_by_owner[(rs["metadata"]["namespace"], rs["metadata"]["name"])] == rs["spec"]["replicas"]
    for ds in world.kube.list(APPS, "DaemonSet"):
        assert ds["status"]["numberReady"] == ds["status"]["desiredNumberScheduled"] == 6
        assert pods_by_owner[(ds["metadata"]["namespace"], ds["metadata"]["name"])] == 6


def test_traefik_has_its_lb_ip_from_the_cilium_pool(world: Platform) -> None:
    svc = world.kube.get(CORE, "Service", "rke2-traefik", "kube-system")
    assert svc is not None and svc["spec"]["type"] == "LoadBalancer"
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == LB_IP == "203.0.113.202"
    pool = world.kube.get(CILIUM_ALPHA, "CiliumLoadBalancerIPPool", "default-pool")
    assert pool is not None
    assert ipaddress.ip_address(LB_IP) in ipaddress.ip_network(pool["spec"]["blocks"][0]["cidr"])
    assert world.kube.get(CILIUM_ALPHA, "CiliumL2AnnouncementPolicy", "default-l2-policy") is not None
    dns = world.pods("kube-system", {"app.kubernetes.io/name": "rke2-coredns"})
    assert len(dns) == 2 and all(pod_is_ready(p) for p in dns)


def test_issuer_and_certificates_are_ready_with_real_secrets(world: Platform) -> None:
    issuer = world.kube.get(CERT_MANAGER, "ClusterIssuer", "vault-issuer")
    assert issuer is not None and cond(issuer, "Ready")["status"] == "True"
    assert issuer["spec"]["vault"]["path"] == "pki_int/sign/example-dot-com"
    certs = world.kube.list(CERT_MANAGER, "Certificate")
    assert {"harbor-example-com-tls", "keycloak-example-com-tls", "kasm-example-com-tls"} <= {
        c["metadata"]["name"] for c in certs}
    soon = datetime.now(timezone.utc) + timedelta(days=14)
    for c in certs:
        assert cond(c, "Ready")["status"] == "True"
        not_after = ts(c["status"]["notAfter"])
        assert not_after > soon
        secret = world.kube.get(CORE, "Secret", c["spec"]["secretName"], c["metadata"]["namespace"])
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        assert leaf.not_valid_after_utc == not_after
        assert "Intermediate" in leaf.issuer.rfc4514_string()


def test_gateways_accepted_on_entrypoint_ports_and_routes_attached(world: Platform) -> None:
    gateways = {(g["metadata"]["namespace"], g["metadata"]["name"]): g for g in world.kube.list(GATEWAY, "Gateway")}
    assert len(gateways) >= 8
    for g in gateways.values():
        assert cond(g, "Accepted")["status"] == cond(g, "Programmed")["status"] == "True"
        assert {lst["port"] for lst in g["spec"]["listeners"]} == {8000, 8443}
        assert g["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "vault-issuer"
    for r in world.kube.list(GATEWAY, "HTTPRoute"):
        parent = r["status"]["parents"][0]
        assert (r["metadata"]["namespace"], parent["parentRef"]["name"]) in gateways
        assert all(c["status"] == "True" for c in parent["conditions"])
    routes = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in world.kube.list(TRAEFIK, "IngressRoute")}
    assert routes == {("kube-system", "traefik-dashboard"), ("kasm", "kasm")}


def test_cnpg_clusters_are_healthy_with_a_labeled_primary(world: Platform) -> None:
    clusters = world.kube.list(CNPG, "Cluster", "database")
    assert {c["metadata"]["name"] for c in clusters} == {"harbor-pg", "keycloak-pg", "mattermost-pg", "kasm-pg"}
    for c in clusters:
        name = c["metadata"]["name"]
        assert c["status"]["phase"] == "Cluster in healthy state"
        assert c["status"]["readyInstances"] == c["spec"]["instances"] == 3
        assert c["status"]["currentPrimary"] == c["status"]["targetPrimary"]
        primary = world.pods("database", {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"})
        assert [p["metadata"]["name"] for p in primary] == [c["status"]["currentPrimary"]]
        assert world.kube.get(CNPG, "ScheduledBackup", f"{name}-daily", "database") is not None


def test_pvcs_are_bound_to_volumes_that_point_back(world: Platform) -> None:
    claims = world.kube.list(CORE, "PersistentVolumeClaim")
    assert len(claims) >= 20
    for claim in claims:
        assert claim["status"]["phase"] == "Bound"
        pv = world.kube.get(CORE, "PersistentVolume", claim["spec"]["volumeName"])
        assert pv is not None and pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]


def test_vault_pods_spread_and_follow_the_vault_state(world: Platform) -> None:
    pods = [world.kube.get(CORE, "Pod", f"vault-{i}", "vault") for i in range(3)]
    assert all(p is not None and pod_is_ready(p) for p in pods)
    assert len({p["spec"]["nodeName"] for p in pods if p}) == 3
    assert [p["metadata"]["labels"]["vault-active"] for p in pods if p] == ["true", "false", "false"]
    pdb = world.kube.get(POLICY, "PodDisruptionBudget", "vault", "vault")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    assert world.vault.leader == 0 and not any(r.sealed for r in world.vault.replicas)


def test_same_seed_same_world() -> None:
    names = [sorted(p["metadata"]["name"] for p in build_platform(seed=7).kube.list(CORE, "Pod")) for _ in range(2)]
    assert names[0] == names[1]


def test_explicit_knobs_set_exact_totals() -> None:
    p = build_platform(nodes=40, pods=1500, certificates=120, pvcs=60)
    assert p.kube.count(CORE, "Node") == 40
    assert p.kube.count(CORE, "Pod") == 1500
    assert p.kube.count(CERT_MANAGER, "Certificate") == 120
    assert p.kube.count(CORE, "PersistentVolumeClaim") == 60
    pools = Counter(n["metadata"]["labels"].get("workload-type", "cp") for n in p.kube.list(CORE, "Node"))
    assert pools["cp"] == 3 and pools["general"] > pools["compute"] > 0 and pools["database"] > 0
    assert all(pod_is_ready(x) for x in p.kube.list(CORE, "Pod"))


def test_size_scales_nodes() -> None:
    assert build_platform(size=3).kube.count(CORE, "Node") == 18
    with pytest.raises(ValueError):
        build_platform(size=0)
