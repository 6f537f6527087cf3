"""Failure scenarios: each breaks the healthy world the way the runbook's symptom reads, through
``ObjectStore.update/add/remove`` (resourceVersions bump, watchers see it), so they compose and
also apply to a running sandbox. ``apply_scenarios(platform, ["vault-sealed", ...])``."""

from __future__ import annotations

from datetime import timedelta

from sandbox.kube.store import Obj
from sandbox.platform import (CERT_MANAGER, CILIUM_ALPHA, CNPG, CORE, GATEWAY, Platform, add_event, add_log,
                              add_taint, iso, now, set_condition,
                              set_issuer_ready, set_node_condition, set_pod_unschedulable,
                              set_pod_waiting, sync_vault_pods)
from sandbox.scenario_model import (VAULT_URL, Scenario, _first_pod, _scheduling_message, _vault_api_error,
                                    _worker)
from sandbox.scenario_sets import CHAPTER_SCENARIOS
from sandbox.scenario_sets.tls import _failing_request
from sandbox.scenario_sets.vault import restart_vault_pod
from sandbox.world import OLD_KUBELET_VERSION


# -- Vault (runbook ch. 5) ---------------------------------------------------------------------
def _vault_sealed(p: Platform) -> None:
    p.vault.seal_all()
    for name in p.vault_names():
        restart_vault_pod(p, name)
    sync_vault_pods(p)
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     "Failed to initialize Vault client: while requesting a Vault token using the Kubernetes auth: "
                     + _vault_api_error("auth/kubernetes/login", "PUT", 503, "Vault is sealed"))


def _vault_partially_sealed(p: Platform) -> None:
    p.vault.seal(1)
    p.vault.seal(2)
    restart_vault_pod(p, "vault-1")
    restart_vault_pod(p, "vault-2")
    sync_vault_pods(p)


def _vault_no_leader(p: Platform) -> None:
    p.vault.set_no_leader(True)
    sync_vault_pods(p)
    for i, pod in enumerate(p.vault_names()):
        peer = f"vault-{(i + 1) % 3}"
        add_log(p, "vault", pod, [
            '[WARN]  storage.raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=',
            f'[INFO]  storage.raft: entering candidate state: node="Node at {pod}.vault-internal:8201 [Candidate]" term={41 + i}',
            f'[ERROR] storage.raft: failed to make requestVote RPC: target="{{Voter {peer} {peer}.vault-internal:8201}}" '
            f'term={41 + i} error="dial tcp 10.42.{i + 1}.15:8201: i/o timeout"',
            "[WARN]  storage.raft: Election timeout reached, restarting election",
        ])


def _vault_replica_down(p: Platform) -> None:
    p.vault.set_reachable(2, False)
    sync_vault_pods(p)
    set_pod_waiting(p, "vault", "vault-2", "CrashLoopBackOff",
                    "back-off 2m40s restarting failed container=vault pod=vault-2_vault(0)",
                    restart_count=6, last_exit=(1, "Error"))


def _vault_replica_not_joined(p: Platform) -> None:
    p.vault.set_initialized(2, False)
    sync_vault_pods(p)


def _vault_pki_missing(p: Platform) -> None:
    p.vault.disable_mount("pki_int")
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     "Failed to initialize Vault client: "
                     + _vault_api_error("pki_int/cert/ca_chain", "GET", 404,
                                        'no handler for route "pki_int/cert/ca_chain". route entry not found.'))


def _pki_intermediate_expired(p: Platform) -> None:
    p.vault.set_intermediate_days(-3)


# -- nodes (ch. 2, 9.5, 11.3) ------------------------------------------------------------------
def _node_disk_pressure(p: Platform) -> None:
    node = _worker(p, "general")
    set_node_condition(p, node, "DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
    set_node_condition(p, node, "Ready", "False", "KubeletNotReady",
                       "container runtime status check may not have completed yet, PLEG is not healthy: "
                       "pleg was last seen active 3m12s ago; threshold is 3m0s")
    add_taint(p, node, "node.kubernetes.io/disk-pressure", "NoSchedule")
    add_taint(p, node, "node.kubernetes.io/not-ready", "NoSchedule")
    add_event(p, p.node(node), "EvictionThresholdMet",
              "Attempting to reclaim ephemeral-storage", component="kubelet")


def _unlabeled_nodes(p: Platform) -> None:
    for pool in ("general", "compute"):
        name = _worker(p, pool)
        p.kube.update(CORE, "Node", name, "", lambda n: n["metadata"]["labels"].pop("workload-type", None))
    # Root cause (2.6): node-labeler's image is not in Harbor yet.
    pod = _first_pod(p, "node-labeler", {"app": "node-labeler"})
    image = pod["spec"]["containers"][0]["image"]
    set_pod_waiting(p, "node-labeler", pod["metadata"]["name"], "ImagePullBackOff",
                    f'Back-off pulling image "{image}"', phase="Pending")


def _cordoned_node(p: Platform) -> None:
    node = _worker(p, "database")

    def cordon(n: Obj) -> None:
        n["spec"]["unschedulable"] = True
    p.kube.update(CORE, "Node", node, "", cordon)
    add_taint(p, node, "node.kubernetes.io/unschedulable", "NoSchedule")


def _kubelet_skew(p: Platform) -> None:
    """A rolling upgrade stuck half way (9.5): two nodes still on the old kubelet."""
    for node in ("rke2-cp-3", _worker(p, "database")):
        def old(n: Obj) -> None:
            n["status"]["nodeInfo"]["kubeletVersion"] = OLD_KUBELET_VERSION
            n["status"]["nodeInfo"]["kubeProxyVersion"] = OLD_KUBELET_VERSION
        p.kube.update(CORE, "Node", node, "", old)
        machine = f"{node}-machine"  # Rancher's Machine (management cluster) and its guest copy
        for store in (p.kube, p.mgmt):
            if store is not None and store.get("cluster.x-k8s.io/v1beta1", "Machine", machine, "fleet-default"):
                store.update("cluster.x-k8s.io/v1beta1", "Machine", machine, "fleet-default",
                             lambda m: m["status"]["nodeInfo"].update(kubeletVersion=OLD_KUBELET_VERSION))


# -- certificates (ch. 4) ----------------------------------------------------------------------
def _cert_not_ready(p: Platform) -> None:
    role = p.domain.replace(".", "-dot-")
    _failing_request(p, "harbor", "harbor", "Pending",
                     "Vault failed to sign certificate: failed to sign certificate by vault: "
                     + _vault_api_error(f"pki_int/sign/{role}", "POST", 400,
                                        f"common name harbor.{p.domain} not allowed by this role"),
                     next_key_secret=f"harbor-{p.domain.replace('.', '-')}-tls-x7k2p")


def _issuer_not_ready(p: Platform) -> None:
    """5.5: the Vault role cert-manager logs in with is gone → permission denied."""
    p.vault.k8s_roles.pop("cert-manager-issuer", None)
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     "Failed to initialize Vault client: while requesting a Vault token using the Kubernetes auth: "
                     + _vault_api_error("auth/kubernetes/login", "PUT", 403, "permission denied"))


def _cert_expiring(p: Platform) -> None:
    ns, name = "keycloak", f"keycloak-{p.domain.replace('.', '-')}-tls"
    t = now()

    def expiring(cert: Obj) -> None:
        cert["status"]["notBefore"] = iso(t - timedelta(days=20))
        cert["status"]["notAfter"] = iso(t + timedelta(days=10))
        cert["status"]["renewalTime"] = iso(t - timedelta(hours=2))
        set_condition(cert["status"]["conditions"], "Issuing", "True", "Renewing",
                      f"Renewing certificate as renewal was scheduled at {iso(t - timedelta(hours=2))}",
                      observedGeneration=1)
    p.kube.update(CERT_MANAGER, "Certificate", name, ns, expiring)


# -- pods (ch. 7, 8) ---------------------------------------------------------------------------
def _pod_crashloop(p: Platform) -> None:
    pod = _first_pod(p, "harbor", {"component": "registry"})
    name = pod["metadata"]["name"]
    set_pod_waiting(p, "harbor", name, "CrashLoopBackOff",
                    f"back-off 5m0s restarting failed container=registry pod={name}_harbor({pod['metadata']['uid']})",
                    restart_count=14, last_exit=(1, "Error"))
    add_event(p, p.kube.get(CORE, "Pod", name, "harbor") or pod, "BackOff",
              "Back-off restarting failed container registry in pod " + name, count=57)
    minio = "http://minio.minio.svc.cluster.local:9000/harbor-registry"
    add_log(p, "harbor", name, [
        'level=info msg="redis not configured" go.version=go1.23.8 instance.id=5f1c',
        'level=info msg="Starting upload purge in 24h0m0s" go.version=go1.23.8',
        f'level=panic msg="s3aws: RequestError: send request failed caused by: Get \\"{minio}/?list-type=2\\": '
        'dial tcp 10.43.87.12:9000: connect: connection refused"',
        f'panic: s3aws: RequestError: send request failed caused by: Get "{minio}/?list-type=2": '
        'dial tcp 10.43.87.12:9000: connect: connection refused',
    ], previous=True)


def _pod_pending(p: Platform) -> None:
    pod = _first_pod(p, "mattermost", {"app": "mattermost"})
    message = _scheduling_message(p, "Insufficient memory")
    pod = set_pod_unschedulable(p, "mattermost", pod["metadata"]["name"], message)
    add_event(p, pod, "FailedScheduling", message, component="default-scheduler")


def _image_pull_backoff(p: Platform) -> None:
    pod = _first_pod(p, "kasm", {"app.kubernetes.io/component": "agent"})
    image = pod["spec"]["containers"][0]["image"]
    set_pod_waiting(p, "kasm", pod["metadata"]["name"], "ImagePullBackOff", f'Back-off pulling image "{image}"',
                    phase="Pending")
    add_event(p, pod, "Failed", f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull '
              f'and unpack image "{image}": not found')


def _pvc_pending(p: Platform) -> None:
    """8.1: Harvester's storage is full; the claim never binds, its pod waits for it."""
    ns, claim_name = "uptime-kuma", "uptime-kuma"
    claim = p.kube.get(CORE, "PersistentVolumeClaim", claim_name, ns)
    if claim is None:
        raise LookupError("pvc uptime-kuma/uptime-kuma not found")
    volume = claim["spec"].get("volumeName")
    if volume:
        p.kube.remove(CORE, "PersistentVolume", volume)

    def pending(c: Obj) -> None:
        c["spec"].pop("volumeName", None)
        for key in ("pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller"):
            c["metadata"].get("annotations", {}).pop(key, None)
        c["status"] = {"phase": "Pending"}
    claim = p.kube.update(CORE, "PersistentVolumeClaim", claim_name, ns, pending)
    add_event(p, claim, "ProvisioningFailed",
              'failed to provision volume with StorageClass "harvester": rpc error: code = ResourceExhausted '
              "desc = not enough storage available on Harvester", component="driver.harvesterhci.io")
    pod = _first_pod(p, ns, {"app": "uptime-kuma"})
    message = _scheduling_message(p, "pod has unbound immediate PersistentVolumeClaims").replace(
        "No preemption victims found for incoming pod", "Preemption is not helpful for scheduling")
    set_pod_unschedulable(p, ns, pod["metadata"]["name"], message)


# -- networking (ch. 3) ------------------------------------------------------------------------
def _lb_ip_pending(p: Platform) -> None:
    """3.3: no CiliumLoadBalancerIPPool, so Traefik's LoadBalancer gets no address."""
    p.kube.remove(CILIUM_ALPHA, "CiliumLoadBalancerIPPool", "default-pool")
    svc = p.kube.update(CORE, "Service", "rke2-traefik", "kube-system",
                        lambda s: s.update(status={"loadBalancer": {}}))
    for gw in p.kube.list(GATEWAY, "Gateway"):
        p.kube.update(GATEWAY, "Gateway", gw["metadata"]["name"], gw["metadata"]["namespace"],
                      lambda g: g["status"].pop("addresses", None))
    add_event(p, svc, "IPAllocationFailed", "No pool found for service", component="cilium-operator")


def _coredns_down(p: Platform) -> None:
    for pod in p.pods("kube-system", {"app.kubernetes.io/name": "rke2-coredns"}):
        name = pod["metadata"]["name"]
        set_pod_waiting(p, "kube-system", name, "CrashLoopBackOff",
                        f"back-off 5m0s restarting failed container=coredns pod={name}_kube-system({pod['metadata']['uid']})",
                        restart_count=9, last_exit=(1, "Error"))
        add_log(p, "kube-system", name, [
            ".:53", "[INFO] plugin/reload: Running configuration SHA512 = 3b1ec5e9f6a2",
            "CoreDNS-1.12.3", "linux/amd64, go1.24.6, 1b4f2a4",
            '[FATAL] plugin/loop: Loop (127.0.0.1:53 -> :53) detected for zone ".", see '
            'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO 4547991504243258144.3688648895315093531."',
        ], previous=True)


def _gateway_not_accepted(p: Platform) -> None:
    """3.4: the keycloak Gateway listens on 443 instead of Traefik's entrypoint 8443."""
    ns, name = "keycloak", "keycloak-gateway"
    stamp = iso(now())

    def broken(g: Obj) -> None:
        g["metadata"]["generation"] = g["metadata"].get("generation", 1) + 1
        gen = g["metadata"]["generation"]
        for listener in g["spec"]["listeners"]:
            if listener["name"] == "https":
                listener["port"] = 443
        g["status"]["conditions"] = [
            {"type": "Accepted", "status": "False", "reason": "ListenersNotValid",
             "message": "Gateway has no valid listener", "lastTransitionTime": stamp, "observedGeneration": gen},
            {"type": "Programmed", "status": "False", "reason": "Invalid",
             "message": "Gateway has no valid listener", "lastTransitionTime": stamp, "observedGeneration": gen}]
        for ls in g["status"]["listeners"]:
            if ls["name"] == "https":
                ls["attachedRoutes"] = 0
                ls["conditions"] = [
                    {"type": "Accepted", "status": "False", "reason": "PortUnavailable",
                     "message": 'Cannot find entryPoint for Gateway: no matching entryPoint for port 443 and protocol "HTTPS"',
                     "lastTransitionTime": stamp, "observedGeneration": gen},
                    {"type": "Programmed", "status": "False", "reason": "Invalid",
                     "message": "Listener is not valid", "lastTransitionTime": stamp, "observedGeneration": gen}]
    p.kube.update(GATEWAY, "Gateway", name, ns, broken)

    def detached(r: Obj) -> None:
        for parent in r["status"]["parents"]:
            set_condition(parent["conditions"], "Accepted", "False", "NotAllowedByListeners",
                          "No listeners included by this parent ref allowed this attachment.")
    p.kube.update(GATEWAY, "HTTPRoute", "keycloak", ns, detached)


# -- database (ch. 6) --------------------------------------------------------------------------
def _cnpg_failover(p: Platform) -> None:
    """6.1: keycloak-pg's primary pod is gone; CNPG is promoting keycloak-pg-2."""
    ns, cluster = "database", "keycloak-pg"
    old, new = f"{cluster}-1", f"{cluster}-2"
    p.kube.remove(CORE, "Pod", old, ns)
    stamp = iso(now())

    def failing_over(c: Obj) -> None:
        st = c["status"]
        st.update(phase="Failing over", phaseReason=f"Failing over from {old} to {new}",
                  currentPrimary=old, targetPrimary=new, targetPrimaryTimestamp=stamp,
                  readyInstances=st["instances"] - 1,
                  instancesStatus={"healthy": [n for n in st["instanceNames"] if n != old], "failed": [old]})
        set_condition(st["conditions"], "Ready", "False", "ClusterIsNotReady", "Cluster Is Not Ready")
    c = p.kube.update(CNPG, "Cluster", cluster, ns, failing_over)
    add_event(p, c, "FailingOver", f"Current primary isn't healthy, initiating a failover to {new}",
              component="cloudnative-pg")


_LISTED: tuple[Scenario, ...] = (
    Scenario("healthy", "nothing broken: the runbook's healthy baseline", lambda p: None),
    Scenario("vault-sealed", "all three Vault replicas sealed, pods 0/1 Ready, ClusterIssuer failing (5.1)", _vault_sealed,
             section="5.1", status="crit",
             cause="sealed, unseal progress 0/3 (v1.15.6); sealed after a restart: container started "),
    Scenario("vault-partially-sealed", "vault-1 and vault-2 sealed (0/1 Ready); vault-0 alone has no Raft quorum (5.2)",
             _vault_partially_sealed,
             section="5.2", status="crit", cause="1 of 3 replicas unsealed and reachable"),
    Scenario("vault-no-leader", "all replicas unsealed but Raft elects no leader: every node standby (5.3)", _vault_no_leader,
             section="5.3", status="crit", cause="Raft peers cannot reach each other on port 8201"),
    Scenario("vault-replica-down", "vault-2 unreachable (connection refused), its pod in CrashLoopBackOff (5.1)",
             _vault_replica_down,
             section="5.1", status="crit", cause="vault-2 | unreachable"),
    Scenario("vault-replica-not-joined", "vault-2 lost its Raft data: Initialized=false, must rejoin (5.2 step 2)",
             _vault_replica_not_joined,
             section="5.2", status="crit", cause="vault-2 | not initialized"),
    Scenario("vault-pki-missing", "the pki_int secrets engine is gone: reads answer 'no handler for route' (5.4)",
             _vault_pki_missing,
             section="5.4", status="crit", cause="PKI engine pki_int is not mounted (disabled or deleted)"),
    Scenario("pki-intermediate-expired", "the pki_int intermediate CA expired 3 days ago (4.3)", _pki_intermediate_expired,
             section="4.3", status="crit", cause="intermediate CA expired: 'Example Org Intermediate CA' expired 3 days ago"),
    Scenario("node-disk-pressure", "rke2-general-1 NotReady with DiskPressure=True (2.2)", _node_disk_pressure,
             section="2.2", status="crit", cause="pressure | DiskPressure"),
    Scenario("unlabeled-nodes", "two workers lost workload-type; node-labeler stuck in ImagePullBackOff (2.6)",
             _unlabeled_nodes,
             section="2.6", status="warn", cause="2 worker(s) without workload-type"),
    Scenario("cordoned-node", "rke2-database-1 cordoned (SchedulingDisabled) (11.3)", _cordoned_node,
             section="11.3", status="warn", cause="SchedulingDisabled (cordoned)"),
    Scenario("kubelet-skew", "rolling upgrade stuck: rke2-cp-3 and a database node still on v1.33.4 (9.5)", _kubelet_skew,
             section="9.5", status="warn", cause="2 on v1.33.4+rke2r1: rke2-cp-3, rke2-database-1"),
    Scenario("cert-not-ready", "harbor's certificate Ready=False, secret missing, request denied by the PKI role (4.1)",
             _cert_not_ready,
             section="4.1", status="warn", cause="common name harbor.example.com not allowed by this role"),
    Scenario("issuer-not-ready", "ClusterIssuer vault-issuer Ready=False: Kubernetes auth permission denied (4.2, 5.5)",
             _issuer_not_ready,
             section="4.2", status="crit", cause="Vault Kubernetes auth role cert-manager-issuer does not exist"),
    Scenario("cert-expiring", "keycloak's certificate expires in 10 days, renewal overdue (11.7)", _cert_expiring,
             section="11.7", status="warn", cause="expires in 10 days"),
    Scenario("pod-crashloop", "harbor-registry in CrashLoopBackOff, 14 restarts, last exit Error (7.1)", _pod_crashloop,
             section="7.1", status="warn", cause="MinIO backend unavailable (7.1): panic: s3aws"),
    Scenario("pod-pending", "the mattermost pod Pending: Unschedulable, insufficient memory", _pod_pending,
             section="2.5", status="warn", cause="Pending (Insufficient memory)"),
    Scenario("image-pull-backoff", "kasm-agent cannot pull its image from Harbor (ImagePullBackOff) (7.6)",
             _image_pull_backoff,
             section="7.6", status="warn", cause="ImagePullBackOff"),
    Scenario("pvc-pending", "uptime-kuma's PVC Pending (Harvester storage full), its pod unschedulable (8.1)", _pvc_pending,
             section="8.1", status="warn", cause="not enough storage available on Harvester"),
    Scenario("lb-ip-pending", "rke2-traefik EXTERNAL-IP <pending>: no CiliumLoadBalancerIPPool (3.3)", _lb_ip_pending,
             section="3.3", status="crit", cause="no CiliumLoadBalancerIPPool"),
    Scenario("cnpg-failover", "keycloak-pg primary pod gone, cluster 'Failing over' to keycloak-pg-2 (6.1)", _cnpg_failover,
             section="6.1", status="warn", cause="Failing over from keycloak-pg-1 to keycloak-pg-2"),
    Scenario("coredns-down", "both CoreDNS pods in CrashLoopBackOff, 0 available (3.6)", _coredns_down,
             section="3.6", status="crit", cause="CoreDNS forwarding loop (3.6)"),
    Scenario("gateway-not-accepted", "keycloak Gateway listens on 443, not 8443: Accepted=False, route detached (3.4)",
             _gateway_not_accepted,
             section="3.4", status="crit", cause="no matching entryPoint for port 443"),
    *CHAPTER_SCENARIOS,
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _LISTED}


if len(SCENARIOS) != len(_LISTED):
    raise ValueError("duplicate scenario name across sandbox.scenarios and sandbox.scenario_sets")


def apply_scenarios(platform: Platform, names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; valid: {', '.join(SCENARIOS)}")
    for name in names:
        SCENARIOS[name].apply(platform)

