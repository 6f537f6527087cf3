"""Scenarios for runbook chapter 3: Cilium, L2 announcements, LoadBalancer IPs, Traefik, Gateway API, DNS, VXLAN.

Each breaks the healthy world the way the runbook's root cause shows in the API: the cilium-config
ConfigMap, the agents' pods and logs (Cilium's logfmt, CoreDNS's ``[ERROR] plugin/…`` lines), the
LB IPAM conditions the operator writes on pools and Services, Gateway/HTTPRoute status."""

from __future__ import annotations

from typing import Any

from sandbox.kube.store import Obj
from sandbox.platform import (APPS, CERT_MANAGER, CILIUM_ALPHA, CORE, GATEWAY, HELM, KUBEVIRT, Platform, add_log, iso, now,
                              set_condition, set_pod_waiting)
from sandbox.scenario_model import Scenario
from sandbox.world_mgmt import VM_NAMESPACE, mgmt_store

KS = "kube-system"
L2_LEASE = "cilium-l2announce-kube-system-rke2-traefik"
SATISFIED = "cilium.io/IPAMRequestSatisfied"


def _cilium_config(p: Platform, **changes: str) -> None:
    p.kube.update(CORE, "ConfigMap", "cilium-config", KS, lambda cm: cm["data"].update(changes))


def _agents(p: Platform) -> list[Obj]:
    return p.pods(KS, {"k8s-app": "cilium"})


def _crash_agent(p: Platform, pod: Obj, lines: list[str], restarts: int = 7) -> None:
    name = pod["metadata"]["name"]
    set_pod_waiting(p, KS, name, "CrashLoopBackOff",
                    f"back-off 5m0s restarting failed container=cilium-agent pod={name}_{KS}({pod['metadata']['uid']})",
                    restart_count=restarts, last_exit=(1, "Error"))
    add_log(p, KS, name, lines, previous=True)


def _logfmt(level: str, msg: str, **fields: str) -> str:
    """A Cilium agent log line (logfmt), stamped as the agent does."""
    extra = " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in fields.items())
    return f'time="{iso(now())}" level={level} msg="{msg}"' + (f" {extra}" if extra else "")


# -- 3.1 Cilium agents -----------------------------------------------------------------------------
def _cilium_config_mismatch(p: Platform) -> None:
    """k8sServiceHost points at the kubernetes Service's ClusterIP: with kube-proxy replaced by
    Cilium nothing serves that address before the agent runs, so the agents cannot start."""
    _cilium_config(p, **{"k8s-service-host": "10.43.0.1", "k8s-service-port": "443"})
    for pod in _agents(p)[3:5]:
        _crash_agent(p, pod, [
            _logfmt("info", "Establishing connection to apiserver", host="https://10.43.0.1:443", subsys="k8s-client"),
            _logfmt("fatal", "Unable to initialize Kubernetes subsystem",
                    error="unable to create k8s client: Get \\\"https://10.43.0.1:443/api/v1/namespaces/kube-system\\\": "
                          "dial tcp 10.43.0.1:443: i/o timeout", subsys="daemon"),
        ])


def _cilium_bpf_unmounted(p: Platform) -> None:
    pod = _agents(p)[4]
    _crash_agent(p, pod, [
        _logfmt("warning", "BPF filesystem is not mounted. This will lead to network disruption when Cilium pods "
                           "are restarted. Ensure that the BPF filesystem is mounted in the host.", subsys="bpf"),
        _logfmt("fatal", "Unable to mount BPF filesystem", error="mount /sys/fs/bpf: permission denied", subsys="daemon"),
    ])


def _cilium_cni_conflict(p: Platform) -> None:
    """Canal left behind by an old install runs beside Cilium (both write /etc/cni/net.d)."""
    stamp = iso(now())
    labels = {"k8s-app": "canal"}
    count = len(p.kube.list(CORE, "Node"))
    p.kube.add({"apiVersion": APPS, "kind": "DaemonSet",
                "metadata": {"name": "rke2-canal", "namespace": KS, "labels": dict(labels), "creationTimestamp": stamp,
                             "generation": 1},
                "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                    "hostNetwork": True, "containers": [{"name": "calico-node", "image": "rancher/hardened-calico:v3.30.2"},
                                                        {"name": "kube-flannel", "image": "rancher/hardened-flannel:v0.27.1"}]}},
                         "updateStrategy": {"type": "RollingUpdate"}},
                "status": {"currentNumberScheduled": count, "desiredNumberScheduled": count, "numberReady": count,
                           "numberAvailable": count, "numberMisscheduled": 0, "updatedNumberScheduled": count,
                           "observedGeneration": 1}})


# -- 3.2 L2 announcements --------------------------------------------------------------------------
def _drop_lease(p: Platform) -> None:
    p.kube.remove("coordination.k8s.io/v1", "Lease", L2_LEASE, KS)


def _l2_disabled(p: Platform) -> None:
    _cilium_config(p, **{"enable-l2-announcements": "false"})
    _drop_lease(p)


def _l2_policy_missing(p: Platform) -> None:
    p.kube.remove(CILIUM_ALPHA, "CiliumL2AnnouncementPolicy", "default-l2-policy")
    _drop_lease(p)


def _l2_policy(p: Platform, **spec: Any) -> None:
    if p.kube.get(CILIUM_ALPHA, "CiliumL2AnnouncementPolicy", "default-l2-policy") is not None:
        # (composed after l2-policy-missing there is no policy left to get wrong)
        p.kube.update(CILIUM_ALPHA, "CiliumL2AnnouncementPolicy", "default-l2-policy", "",
                      lambda pol: pol["spec"].update(spec))
    _drop_lease(p)


# -- 3.3 LoadBalancer IP ---------------------------------------------------------------------------
def _traefik_pending(p: Platform, reason: str, message: str, **spec: Any) -> Obj:
    """Traefik's Service without an address, with LB IPAM's condition saying why."""
    def fn(s: Obj) -> None:
        s["spec"].update(spec)
        s["status"] = {"loadBalancer": {}, "conditions": [{
            "type": SATISFIED, "status": "False", "reason": reason, "message": message,
            "lastTransitionTime": iso(now()), "observedGeneration": 0}]}
    svc = p.kube.update(CORE, "Service", "rke2-traefik", KS, fn)
    for gw in p.kube.list(GATEWAY, "Gateway"):
        p.kube.update(GATEWAY, "Gateway", gw["metadata"]["name"], gw["metadata"]["namespace"],
                      lambda g: g["status"].pop("addresses", None))
    _drop_lease(p)
    return svc


def _pool_counts(p: Platform, total: int, used: int) -> None:
    def fn(pool: Obj) -> None:
        for cond in pool["status"]["conditions"]:
            value = {"cilium.io/IPsTotal": total, "cilium.io/IPsAvailable": total - used,
                     "cilium.io/IPsUsed": used}.get(cond["type"])
            if value is not None:
                cond["message"] = str(value)
    if p.kube.get(CILIUM_ALPHA, "CiliumLoadBalancerIPPool", "default-pool") is not None:  # lb-ip-pending removes it
        p.kube.update(CILIUM_ALPHA, "CiliumLoadBalancerIPPool", "default-pool", "", fn)


def _lb_pool_exhausted(p: Platform) -> None:
    """Eight Kasm session proxies took every address of the /29; Traefik's Service was recreated
    without a fixed loadBalancerIP and finds none left."""
    for i in range(8):
        p.kube.add({"apiVersion": CORE, "kind": "Service",
                    "metadata": {"name": f"kasm-proxy-{i}", "namespace": "kasm", "labels": {"app": "kasm-proxy"},
                                 "creationTimestamp": iso(now())},
                    "spec": {"type": "LoadBalancer", "selector": {"app": "kasm-proxy"}, "clusterIP": f"10.43.200.{10 + i}",
                             "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": f"203.0.113.{200 + i}", "ipMode": "VIP"}]}}})
    _pool_counts(p, 8, 8)
    _traefik_pending(p, "out_of_ips", "All enabled CiliumLoadBalancerIPPools that match this service ran out "
                                      "of allocatable IPs")
    p.kube.update(CORE, "Service", "rke2-traefik", KS, lambda s: s["spec"].pop("loadBalancerIP", None))


def _lb_ip_outside_pool(p: Platform) -> None:
    ip = "203.0.113.250"
    _traefik_pending(p, "no_pool", f"No pool exists with a CIDR containing '{ip}'", loadBalancerIP=ip)
    p.kube.update(HELM, "HelmChartConfig", "rke2-traefik", KS, lambda h: h["spec"].update(
        valuesContent=h["spec"]["valuesContent"].replace("203.0.113.202", ip)))


def _lb_wrong_service_type(p: Platform) -> None:
    p.kube.update(HELM, "HelmChartConfig", "rke2-traefik", KS, lambda h: h["spec"].update(
        valuesContent=h["spec"]["valuesContent"].replace("service:\n", "service:\n  type: ClusterIP\n", 1)))

    def fn(s: Obj) -> None:
        s["spec"]["type"] = "ClusterIP"
        for port in s["spec"]["ports"]:
            port.pop("nodePort", None)
        for key in ("loadBalancerIP", "externalTrafficPolicy", "allocateLoadBalancerNodePorts"):
            s["spec"].pop(key, None)
        s["status"] = {"loadBalancer": {}}
    p.kube.update(CORE, "Service", "rke2-traefik", KS, fn)
    _drop_lease(p)


# -- 3.4 Traefik routing ---------------------------------------------------------------------------
def _route_parent_missing(p: Platform) -> None:
    """The harbor HTTPRoute names a Gateway that does not exist: no controller takes it."""
    def fn(r: Obj) -> None:
        r["metadata"]["generation"] = r["metadata"].get("generation", 1) + 1
        for ref in r["spec"]["parentRefs"]:
            ref["name"] = "harbor-gw"
        r["status"] = {"parents": []}
    p.kube.update(GATEWAY, "HTTPRoute", "harbor", "harbor", fn)


def _backend_port_https(p: Platform) -> None:
    def fn(s: Obj) -> None:
        for port in s["spec"]["ports"]:
            if port["port"] == 3000:
                port["name"] = "https"
    p.kube.update(CORE, "Service", "grafana", "monitoring", fn)


def _gateway_tls_secret_missing(p: Platform) -> None:
    ns, gw = "keycloak", "keycloak-gateway"
    secret = f"keycloak-{p.domain.replace('.', '-')}-tls"
    p.kube.remove(CORE, "Secret", secret, ns)

    def fn(g: Obj) -> None:
        for st in g["status"]["listeners"]:
            if st["name"] == "https":
                set_condition(st["conditions"], "ResolvedRefs", "False", "InvalidCertificateRef",
                              f"Error while retrieving certificate: secret {ns}/{secret} does not exist",
                              observedGeneration=1)
                set_condition(st["conditions"], "Programmed", "False", "Invalid",
                              "Listener is invalid, see the ResolvedRefs condition", observedGeneration=1)
    p.kube.update(GATEWAY, "Gateway", gw, ns, fn)


def _traefik_routes_stale(p: Platform) -> None:
    """The mattermost route was edited (a second path); Traefik never picked the change up."""
    def fn(r: Obj) -> None:
        r["metadata"]["generation"] = r["metadata"].get("generation", 1) + 1
        r["spec"]["rules"][0]["matches"].append({"path": {"type": "PathPrefix", "value": "/api/v4/websocket"}})
    p.kube.update(GATEWAY, "HTTPRoute", "mattermost", "mattermost", fn)


# -- 3.5 Gateway certificates ----------------------------------------------------------------------
def _drop_certificate(p: Platform, ns: str, host: str) -> None:
    name = f"{host}-{p.domain.replace('.', '-')}-tls"
    p.kube.remove(CERT_MANAGER, "Certificate", name, ns)
    if p.kube.get(CORE, "Secret", name, ns) is not None:
        p.kube.remove(CORE, "Secret", name, ns)


def _certmanager_gateway_api_off(p: Platform) -> None:
    """cert-manager was reinstalled without config.enableGatewayAPI: the rollouts Gateway, added
    since, never got its Certificate."""
    def fn(d: Obj) -> None:
        c = d["spec"]["template"]["spec"]["containers"][0]
        c["args"] = [a for a in c.get("args", []) if a != "--enable-gateway-api"]
    p.kube.update(APPS, "Deployment", "cert-manager", "cert-manager", fn)
    _drop_certificate(p, "argo-rollouts", "rollouts")


def _gateway_issuer_annotation_missing(p: Platform) -> None:
    p.kube.update(GATEWAY, "Gateway", "grafana-gateway", "monitoring",
                  lambda g: g["metadata"].get("annotations", {}).pop("cert-manager.io/cluster-issuer", None))
    _drop_certificate(p, "monitoring", "grafana")


def _gateway_tls_passthrough(p: Platform) -> None:
    def fn(g: Obj) -> None:
        for ls in g["spec"]["listeners"]:
            if ls.get("tls"):
                ls["protocol"] = "TLS"
                ls["tls"] = {"mode": "Passthrough"}
    p.kube.update(GATEWAY, "Gateway", "argocd-gateway", "argocd", fn)
    _drop_certificate(p, "argocd", "argocd")


# -- 3.6 DNS ---------------------------------------------------------------------------------------
def _kube_dns_ip_changed(p: Platform) -> None:
    """kube-dns was deleted and recreated: it came back on another ClusterIP, while the kubelets
    still hand 10.43.0.10 to every pod."""
    p.kube.update(CORE, "Service", "kube-dns", KS, lambda s: s["spec"].update(
        clusterIP="10.43.0.99", clusterIPs=["10.43.0.99"]))


def _cilium_dns_proxy_errors(p: Platform) -> None:
    for pod in _agents(p)[2:5]:
        add_log(p, KS, pod["metadata"]["name"], [
            _logfmt("error", "Timeout waiting for response to forwarded proxied DNS lookup",
                    dnsName="kubernetes.default.svc.cluster.local.", ipAddr="10.42.3.14:53", subsys="fqdn/dnsproxy"),
            _logfmt("warning", "Cannot forward proxied DNS lookup", error="read udp 10.42.3.1:40211->10.42.3.14:53: "
                                                                         "i/o timeout", subsys="fqdn/dnsproxy"),
        ])


def _coredns_overloaded(p: Platform) -> None:
    """A job floods DNS: the forward plugin hits max_concurrent, a third of answers SERVFAIL."""
    for pod in ("rke2-coredns-rke2-coredns-0", "rke2-coredns-rke2-coredns-1"):
        labels = {"namespace": KS, "pod": pod, "server": "dns://:53", "zone": ".", "view": "", "plugins": ""}
        p.metrics.set("coredns_dns_responses_total", {**labels, "rcode": "SERVFAIL"}, lambda n: 3.0 + 300.0 * n)
        p.metrics.set("coredns_forward_max_concurrent_rejects_total", {"namespace": KS, "pod": pod},
                      lambda n: 40.0 * n)


# -- 3.7 dual-NIC --------------------------------------------------------------------------------
def _dual_nic_rules_missing(p: Platform) -> None:
    """rke2-general-1's VM got a second NIC on the storage VLAN, but its cloud-init still has no
    policy routing rules: replies to traffic on that NIC leave by the default route."""
    def fn(vm: Obj) -> None:
        spec = vm["spec"]["template"]["spec"]
        spec["domain"]["devices"]["interfaces"].append({"name": "nic-1", "bridge": {}, "model": "virtio"})
        spec["networks"].append({"name": "nic-1", "multus": {"networkName": "default/storage-network"}})
    mgmt_store(p).update(KUBEVIRT, "VirtualMachine", "rke2-general-1", VM_NAMESPACE, fn)


# -- 3.8 VXLAN -------------------------------------------------------------------------------------
def _vxlan_port_blocked(p: Platform) -> None:
    """A firewall change drops UDP 8472 between the database nodes and the rest."""
    agents = _agents(p)
    for pod in agents[:3]:
        add_log(p, KS, pod["metadata"]["name"], [
            _logfmt("warning", "Probe to node failed", node="rke2-database-1", ipAddr="10.0.1.15",
                    subsys="health-server", error="connect: connection timed out"),
        ])


SCENARIOS: tuple[Scenario, ...] = (
    # 3.1
    Scenario("cilium-config-mismatch", "cilium-config k8s-service-host=10.43.0.1:443 (not 127.0.0.1:6443): two "
             "agents crash-loop unable to reach the API server (3.1)", _cilium_config_mismatch,
             section="3.1", status="crit", cause="Cilium configuration mismatch: k8s-service-host=10.43.0.1"),
    Scenario("cilium-bpf-unmounted", "one Cilium agent crash-loops: the BPF filesystem is not mounted on its node (3.1)",
             _cilium_bpf_unmounted,
             section="3.1", status="crit", cause="BPF filesystem not mounted"),
    Scenario("cilium-cni-conflict", "a leftover rke2-canal DaemonSet runs beside Cilium (3.1)", _cilium_cni_conflict,
             section="3.1", status="crit", cause="CNI conflict: rke2-canal runs beside Cilium"),
    # 3.2
    Scenario("l2-announcements-disabled", "cilium-config enable-l2-announcements=false: nobody answers ARP for "
             "203.0.113.202 (3.2)", _l2_disabled,
             section="3.2", status="crit", cause="L2 announcements disabled: enable-l2-announcements=false"),
    Scenario("l2-policy-missing", "no CiliumL2AnnouncementPolicy (3.2)", _l2_policy_missing,
             section="3.2", status="crit", cause="no CiliumL2AnnouncementPolicy"),
    Scenario("l2-policy-wrong-interfaces", "the L2 policy's interfaces ^ens[0-9]+ match no NIC of the nodes (eth0) (3.2)",
             lambda p: _l2_policy(p, interfaces=["^ens[0-9]+"]),
             section="3.2", status="crit", cause="policy interfaces ^ens[0-9]+ match no node interface"),
    Scenario("l2-policy-no-nodes", "the L2 policy's nodeSelector matches no node (3.2)",
             lambda p: _l2_policy(p, nodeSelector={"matchLabels": {"node-role.kubernetes.io/lb": "true"}}),
             section="3.2", status="crit", cause="policy selects no node"),
    # 3.3
    Scenario("lb-pool-exhausted", "default-pool's 8 addresses all taken by other LoadBalancer Services; "
             "rke2-traefik <pending> (3.3)", _lb_pool_exhausted,
             section="3.3", status="crit", cause="IP pool exhausted: default-pool 8 of 8 used"),
    Scenario("lb-ip-outside-pool", "rke2-traefik requests 203.0.113.250, outside default-pool 203.0.113.200/29 (3.3)",
             _lb_ip_outside_pool,
             section="3.3", status="crit", cause="loadBalancerIP 203.0.113.250 is outside every pool"),
    Scenario("lb-wrong-service-type", "the HelmChartConfig sets service.type ClusterIP: rke2-traefik has no external IP (3.3)",
             _lb_wrong_service_type,
             section="3.3", status="crit",
             cause="wrong Service type: type ClusterIP, not LoadBalancer (HelmChartConfig rke2-traefik sets service.type: ClusterIP)"),
    # 3.4
    Scenario("route-parent-missing", "the harbor HTTPRoute's parentRef names Gateway harbor-gw, which does not exist (3.4)",
             _route_parent_missing,
             section="3.4", status="crit", cause="HTTPRoute not attached to a Gateway: parentRef harbor-gw"),
    Scenario("backend-port-https", "grafana's Service port 3000 is named https: Traefik speaks TLS to it, 502 (3.4)",
             _backend_port_https,
             section="3.4", status="warn", cause="monitoring/grafana port 3000 is named https"),
    Scenario("gateway-tls-secret-missing", "the keycloak Gateway's TLS secret is gone: listener ResolvedRefs=False (3.4)",
             _gateway_tls_secret_missing,
             section="3.4", status="crit", cause="TLS secret missing: listener https"),
    Scenario("traefik-routes-stale", "the mattermost HTTPRoute changed (generation 2) but Traefik still serves "
             "generation 1 (3.4)", _traefik_routes_stale,
             section="3.4", status="warn", cause="routes stale: configuration is right"),
    # 3.5
    Scenario("certmanager-gateway-api-off", "cert-manager runs without --enable-gateway-api: the rollouts Gateway "
             "got no Certificate (3.5)", _certmanager_gateway_api_off,
             section="3.5", status="crit", cause="cert-manager runs without Gateway API support"),
    Scenario("gateway-issuer-annotation-missing", "the grafana Gateway lost its cert-manager.io/cluster-issuer "
             "annotation, no Certificate (3.5)", _gateway_issuer_annotation_missing,
             section="3.5", status="crit", cause="Gateway missing cert-manager.io/cluster-issuer annotation"),
    Scenario("gateway-tls-passthrough", "the argocd Gateway's listener uses tls.mode Passthrough (3.5)",
             _gateway_tls_passthrough,
             section="3.5", status="crit", cause="tls.mode Passthrough, not Terminate"),
    # 3.6
    Scenario("kube-dns-ip-changed", "kube-dns recreated on ClusterIP 10.43.0.99; pods still resolve through 10.43.0.10 (3.6)",
             _kube_dns_ip_changed,
             section="3.6", status="crit", cause="kube-dns service ClusterIP changed: 10.43.0.99"),
    Scenario("cilium-dns-proxy-errors", "three Cilium agents' DNS proxies time out forwarding lookups (3.6)",
             _cilium_dns_proxy_errors,
             section="3.6", status="crit", cause="Cilium DNS proxy errors on 3 agent(s)"),
    Scenario("coredns-overloaded", "CoreDNS under load: forward max_concurrent rejections, a third of answers "
             "SERVFAIL (3.6 step 2)", _coredns_overloaded,
             section="3.6", status="crit", cause="CoreDNS overloaded: the forward plugin rejects"),
    # 3.7
    Scenario("dual-nic-rules-missing", "rke2-general-1's VM has a second NIC but its cloud-init writes no policy "
             "routing rules (3.7)", _dual_nic_rules_missing,
             section="3.7", status="warn", cause="cloud-init has no policy routing rules (ip rule / iptables mangle) "
                                                 "for rke2-general-1 (2 NICs)"),
    # 3.8
    Scenario("vxlan-mtu-mismatch", "cilium-config mtu=1500 on a 1500-byte underlay: VXLAN packets do not fit (3.8)",
             lambda p: _cilium_config(p, mtu="1500"),
             section="3.8", status="crit", cause="MTU mismatch: mtu=1500"),
    Scenario("vxlan-port-blocked", "UDP 8472 blocked to rke2-database-1: the agents' health probes time out (3.8)",
             _vxlan_port_blocked,
             section="3.8", status="crit", cause="nodes unreachable over the VXLAN tunnel (UDP 8472) on 3 agent(s)"),
    Scenario("vxlan-tunnel-protocol", "cilium-config tunnel-protocol=geneve while the firewall opens VXLAN's 8472 (3.8)",
             lambda p: _cilium_config(p, **{"tunnel-protocol": "geneve"}),
             section="3.8", status="crit", cause="Cilium tunnel configuration issue: routing-mode=tunnel, tunnel-protocol=geneve"),
)
