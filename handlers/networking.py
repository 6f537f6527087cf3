"""Runbook chapter 3: networking — the Cilium agents (3.1), L2 announcements (3.2), Traefik's
LoadBalancer IP (3.3), Gateways, HTTPRoutes, backends and IngressRoutes (3.4), cert-manager's
Gateway certificates (3.5), DNS (3.6), dual-NIC routing (3.7, guidance) and the VXLAN overlay (3.8).

What the runbook runs with ``kubectl exec … cilium status`` is read here from the API instead:
the agents' pods and logs, the cilium-config ConfigMap, CiliumNodes, the L2 announcement leases
and the LB IPAM conditions the operator writes on Services and pools."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, LogPattern, NoParams, Severity, SourceError, Status,
                     SuggestedAction, check_settings, condition, find_condition, sop)

GATEWAY = "gateway.networking.k8s.io/v1"
TRAEFIK = "traefik.io/v1alpha1"
CILIUM_ALPHA = "cilium.io/v2alpha1"
CILIUM = "cilium.io/v2"
CM = "cert-manager.io/v1"
HELM = "helm.cattle.io/v1"
COORDINATION = "coordination.k8s.io/v1"
DISCOVERY = "discovery.k8s.io/v1"
KS = "kube-system"
SATISFIED = "cilium.io/IPAMRequestSatisfied"  # the condition LB IPAM sets on each LoadBalancer Service

LB_STEP = ("3.3: kubectl get svc -n kube-system rke2-traefik; is there a CiliumLoadBalancerIPPool "
           "covering the IP (kubectl get ciliumloadbalancerippool), is it exhausted; cilium-operator logs")
LB_POOL_STEP = ("3.3: create the CiliumLoadBalancerIPPool (default-pool) covering the Traefik IP "
                "(kubectl get ciliumloadbalancerippool)")
LB_EXHAUSTED_STEP = "3.3 step 2: expand the pool: kubectl edit CiliumLoadBalancerIPPool default-pool (add CIDR blocks)"
LB_WRONG_STEP = "3.3 step 1: the Traefik service's loadBalancerIP must match the pool and DNS (HelmChartConfig rke2-traefik)"
LB_TYPE_STEP = ("3.3 step 3: the service type comes from the HelmChartConfig rke2-traefik "
                "(kubectl get helmchartconfig -n kube-system rke2-traefik -o yaml): set service.type LoadBalancer")
GATEWAY_STEP = ("3.4 step 1: listeners must use Traefik's entrypoint ports 8000/8443, not 80/443 "
                "(kubectl describe gateway -n {ns} {name})")
ROUTE_STEP = "3.4 step 2: check the HTTPRoute's parentRefs (Gateway name, sectionName) and the Gateway's listeners"
INGRESSROUTE_STEP = ("3.4: only the Traefik dashboard and Kasm use IngressRoutes; move others to a "
                     "Gateway + HTTPRoute (or add them to checks.ingressroute-health.expected)")
CILIUM_CONFIG_STEP = ("3.1 step 1: the Cilium chart_values in cluster.tf are the source of truth "
                      "(kubeProxyReplacement=true, k8sServiceHost=127.0.0.1, k8sServicePort=6443): fix them "
                      "there, then restart the DaemonSet")
CILIUM_RESTART_STEP = "3.1 step 2: kubectl -n kube-system rollout restart daemonset cilium"
BPF_STEP = ("3.1 step 3 (guidance: needs SSH to the node, the bot cannot): mount | grep bpf must show "
            "'bpf on /sys/fs/bpf type bpf'; mount it, then restart the agent")
CNI_STEP = ("3.1: only Cilium may be the CNI: remove the other CNI's DaemonSet/config (RKE2: cni: cilium "
            "in the server config), then restart the Cilium DaemonSet")
ESCALATE_CILIUM = "3.1 Escalation: if Cilium keeps failing after a restart, collect cilium sysdump and escalate to networking"
L2_FLAG_STEP = ("3.2: L2 announcements are enabled in the Cilium chart_values of cluster.tf "
                "(l2announcements.enabled=true); cilium-config must show enable-l2-announcements: true")
L2_POLICY_STEP = "3.2 step 1: create the CiliumL2AnnouncementPolicy (interfaces ^eth[0-9]+, loadBalancerIPs: true)"
L2_POOL_STEP = "3.2 step 2: create the CiliumLoadBalancerIPPool for the LB range"
ARP_GUIDANCE = ("3.2 step 3 (guidance: needs a host on the LB network, the bot cannot): arping -I <interface> "
                "{ip}; ARP answered but no traffic: escalate to networking (VLAN/switch)")
DNS_RESTART_STEP = "3.6 step 1: kubectl -n kube-system rollout restart deployment rke2-coredns-rke2-coredns"
DNS_SCALE_STEP = "3.6 step 2: kubectl -n kube-system scale deployment rke2-coredns-rke2-coredns --replicas=3"
DNS_PROXY_STEP = ("3.6 step 3: the Cilium DNS proxy fails (cilium status | grep DNS on the agent); if it persists "
                  "after a CoreDNS restart escalate to networking")
DNS_IP_STEP = ("3.6: kube-dns's ClusterIP must stay what the kubelets hand to pods (clusterDNS): recreate the "
               "Service with that ClusterIP (RKE2: the rke2-coredns chart's service.clusterIP)")
VXLAN_PORT_STEP = ("3.8 step 1 (guidance: SSH, the bot cannot): from node A, nc -zvu <node-B-ip> 8472; "
                   "open UDP 8472 between all nodes")
VXLAN_MTU_STEP = "3.8 step 3: set mtu: 1450 under the rke2-cilium chart_values in cluster.tf, then restart Cilium"
DUAL_NIC_GUIDANCE = ("3.7 (guidance: SSH to the node, the bot cannot): ip rule show; ip route show table all; "
                     "sudo iptables -t mangle -L -n; re-apply the rules from the cloud-init user_data "
                     "(cluster/examples/cloud-init-cp.yaml) and persist them (iptables-save > /etc/sysconfig/iptables)")


# -- shared reads ---------------------------------------------------------------------------------
async def cilium_config(ctx: HandlerContext) -> dict[str, str] | None:
    """The cilium-config ConfigMap's data (the agents' flags), or None when it does not exist."""
    kube = ctx.require_kube()
    try:
        cm = await kube.get("v1", "configmaps", "cilium-config", "kube-system")
    except SourceError as exc:
        if exc.status == 404:
            return None
        raise
    return {k: str(v) for k, v in (cm.get("data") or {}).items()}


def pod_state(pod: dict[str, Any]) -> tuple[bool, str, int, str]:
    """(Ready, state as kubectl shows it, restarts, last termination 'exit 1 Error')."""
    st = pod.get("status") or {}
    ready = (find_condition(st.get("conditions"), "Ready") or {}).get("status") == "True"
    state, last, restarts = st.get("phase", "Unknown"), "", 0
    for i, cs in enumerate([*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]):
        restarts += int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and state in ("Running", "Pending", "Unknown"):
            state = ("Init:" if i < len(st.get("initContainerStatuses") or []) else "") + waiting["reason"]
        term = (cs.get("lastState") or {}).get("terminated") or {}
        if term.get("reason"):
            last = f"exit {term.get('exitCode', '?')} {term['reason']}"
    if state == "Running" and not ready:
        state = "Running, not Ready"
    return ready, state, restarts, last


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions); no selector selects everything."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return m.get("namespace", ""), m.get("name", "")


async def _log_evidence(ctx: HandlerContext, pods: list[dict[str, Any]], patterns: tuple[LogPattern, ...],
                        *, limit: int = 3, tail: int = 200) -> list[tuple[str, str, str]]:
    """(pod, cause, quoted line) of the first matching pattern in each pod's log (the previous
    instance's when it restarted and is not running now), for at most ``limit`` pods."""
    async def one(pod: dict[str, Any]) -> tuple[str, str, str] | None:
        ns, name = _meta(pod)
        ready, state, restarts, _ = pod_state(pod)
        previous = restarts > 0 and not ready
        hits, failed = await ctx.attempt(ctx.log_hits(ns, name, patterns, previous=previous, tail=tail, quote=1),
                                         f"pod/{ns}/{name} log")
        if failed is not None or not hits:
            return None
        return name, hits[0].pattern.cause, hits[0].lines[-1]
    found = await asyncio.gather(*(one(p) for p in pods[:limit]))
    return [f for f in found if f is not None]


# -- 3.1 Cilium agents ------------------------------------------------------------------------------
class CiliumChecks(BaseModel):
    """``checks.cilium-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    daemonset: str = "cilium"
    operator: str = "cilium-operator"
    # cilium-config keys for the runbook's chart values kubeProxyReplacement, k8sServiceHost, k8sServicePort.
    expected_config: dict[str, str] = Field(
        default_factory=lambda: {"kube-proxy-replacement": "true", "k8s-service-host": "127.0.0.1",
                                 "k8s-service-port": "6443"},
        description="cilium-config keys and the values cluster.tf's chart_values give them")
    restart_warn: int = Field(5, ge=1, description="this many restarts of a Ready agent/operator pod is a warning")
    other_cnis: list[str] = Field(default_factory=lambda: ["rke2-canal", "rke2-calico", "calico-node",
                                                           "kube-flannel-ds", "rke2-flannel"],
                                  description="DaemonSets of other CNIs that must not run beside Cilium")


HELM_NAMES = {"kube-proxy-replacement": "kubeProxyReplacement", "k8s-service-host": "k8sServiceHost",
              "k8s-service-port": "k8sServicePort"}
CILIUM_PATTERNS = (
    LogPattern(regex=r"bpf ?(file ?system|fs)|/sys/fs/bpf", cause="BPF filesystem not mounted (3.1 step 3)"),
    LogPattern(regex=r"unable to (contact k8s api-server|create k8s client)|Unable to initialize Kubernetes subsystem",
               cause="agent cannot reach the API server (k8sServiceHost/k8sServicePort)"),
    LogPattern(regex=r"kube-?proxy-?replacement", cause="kube-proxy replacement misconfigured"),
    LogPattern(regex=r"level=(fatal|error)|\bFATAL\b", cause="agent error"),
)
OPERATOR_PATTERNS = (LogPattern(regex=r"level=(fatal|error)", cause="operator error"),)


def cilium_actions(cfg: CiliumChecks) -> list[SuggestedAction]:
    return [SuggestedAction(action="restart", params={"kind": "daemonset", "namespace": cfg.namespace,
                                                      "name": cfg.daemonset}),
            SuggestedAction(action="delete-cilium-pods")]


async def cilium_agents(ctx: HandlerContext, cfg: CiliumChecks) -> tuple[list[dict], list[tuple[str, str, dict | None]]]:
    """The agent pods and, per node without a Ready agent, (node, state, pod or None)."""
    kube = ctx.require_kube()
    nodes = await kube.list("v1", "nodes")
    pods = await kube.list("v1", "pods", cfg.namespace, label_selector="k8s-app=cilium")
    by_node = {(p.get("spec") or {}).get("nodeName"): p for p in pods}
    bad = []
    for node in nodes:
        name = node["metadata"]["name"]
        pod = by_node.get(name)
        if pod is None:
            bad.append((name, "no Cilium agent pod", None))
            continue
        ready, state, restarts, last = pod_state(pod)
        if not ready:
            bad.append((name, f"{pod['metadata']['name']} {state}" + (f", {restarts} restarts" if restarts else "")
                        + (f", last {last}" if last else ""), pod))
    return pods, bad


@sop("cilium-health", title="Cilium agents on every node, operator, cilium-config", section="3.1",
     severity=Severity.P1,
     causes=("Cilium configuration mismatch", "BPF filesystem not mounted", "CNI conflict"))
async def cilium_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """A Ready Cilium agent on every node, agent and operator restarts and log errors, the
    cilium-config keys the runbook names, and no second CNI beside Cilium (runbook 3.1)."""
    cfg = check_settings(ctx, "cilium-health", CiliumChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    actions = cilium_actions(cfg)
    # The configuration the runbook's step 1 checks.
    config = await cilium_config(ctx)
    if config is None:
        findings.append(Finding(status=Status.crit, target="configmap/kube-system/cilium-config",
                                summary="Cilium configuration mismatch: cilium-config ConfigMap not found",
                                next_step=CILIUM_CONFIG_STEP))
    else:
        wrong = [f"{k}={config.get(k, '(unset)')} ({HELM_NAMES.get(k, k)}, expected {v})"
                 for k, v in cfg.expected_config.items() if config.get(k) != v]
        if wrong:
            findings.append(Finding(status=Status.crit, target="configmap/kube-system/cilium-config",
                                    summary="Cilium configuration mismatch: " + "; ".join(wrong),
                                    next_step=CILIUM_CONFIG_STEP, actions=actions[:1]))
        else:
            findings.append(Finding(status=Status.ok, target="configmap/kube-system/cilium-config",
                                    summary=", ".join(f"{k}={config[k]}" for k in cfg.expected_config)))
    # A second CNI fighting over the pod network (3.1's "CNI conflict").
    daemonsets = await kube.list("apps/v1", "daemonsets", cfg.namespace)
    others = [d["metadata"]["name"] for d in daemonsets if d["metadata"]["name"] in cfg.other_cnis]
    if others:
        findings.append(Finding(status=Status.crit, target=f"daemonset/{cfg.namespace}/{others[0]}",
                                summary=f"CNI conflict: {', '.join(others)} runs beside Cilium", next_step=CNI_STEP))
    # DaemonSet coverage: every node needs a Ready agent.
    pods, bad = await cilium_agents(ctx, cfg)
    if bad:
        findings.append(Finding(
            status=Status.crit, target=f"daemonset/{cfg.namespace}/{cfg.daemonset}",
            summary=f"{len(bad)} node(s) without a Ready Cilium agent: " + ", ".join(n for n, _, _ in bad[:5]),
            details="\n".join(f"{n}: {s}" for n, s, _ in bad), next_step=CILIUM_RESTART_STEP, actions=actions))
        for pod, cause, line in await _log_evidence(ctx, [p for _, _, p in bad if p is not None], CILIUM_PATTERNS):
            step = BPF_STEP if cause.startswith("BPF") else CILIUM_CONFIG_STEP if "API server" in cause or \
                "kube-proxy" in cause else ESCALATE_CILIUM
            findings.append(Finding(status=Status.crit, target=f"pod/{cfg.namespace}/{pod} log",
                                    summary=f"{cause}: {line}", next_step=step))
    else:
        findings.append(Finding(status=Status.ok, target=f"daemonset/{cfg.namespace}/{cfg.daemonset}",
                                summary=f"a Ready Cilium agent on each of {len(pods)} nodes"))
    # Restarts of agents that are Ready now, and the operator.
    operator = await kube.list("v1", "pods", cfg.namespace, label_selector=f"name={cfg.operator}")
    for pod in [*pods, *operator]:
        ready, _, restarts, last = pod_state(pod)
        if ready and restarts >= cfg.restart_warn:
            findings.append(Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{pod['metadata']['name']}",
                                    summary=f"restarted {restarts} times" + (f" (last {last})" if last else ""),
                                    next_step=ESCALATE_CILIUM))
    ready_ops = [p for p in operator if pod_state(p)[0]]
    if not ready_ops:
        findings.append(Finding(status=Status.crit, target=f"deployment/{cfg.namespace}/{cfg.operator}",
                                summary=f"no Ready operator pod of {len(operator)}", next_step=ESCALATE_CILIUM))
    for pod, cause, line in await _log_evidence(ctx, operator, OPERATOR_PATTERNS, limit=2):
        findings.append(Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{pod} log",
                                summary=f"{cause}: {line}", next_step=ESCALATE_CILIUM))
    return findings


# -- 3.2 L2 announcements ----------------------------------------------------------------------------
class L2PolicyValues(BaseModel):
    """The CiliumL2AnnouncementPolicy the bot may create (3.2 step 1), as the team wrote it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    interfaces: list[str] = Field(min_length=1, description="interface regexes, e.g. ^eth[0-9]+")
    node_selector: dict[str, str] = Field(default_factory=dict, description="matchLabels; empty: every node")
    external_ips: bool = True
    load_balancer_ips: bool = True


class PoolValues(BaseModel):
    """The CiliumLoadBalancerIPPool the bot may create (3.2 step 2)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    blocks: list[str] = Field(min_length=1, description="CIDRs, e.g. 203.0.113.200/29")


class L2Checks(BaseModel):
    """``checks.l2-announcements`` in the config."""

    model_config = ConfigDict(extra="forbid")
    # What the nodes' NICs are called (Harvester VMs: eth0, eth1): the API does not list them.
    node_interfaces: list[str] = Field(default_factory=lambda: ["eth0"],
                                       description="the nodes' interface names the policy must match")
    policy: L2PolicyValues | None = Field(None, description="the policy create-l2-policy applies; null: not offered")
    pool: PoolValues | None = Field(None, description="the pool create-lb-pool applies; null: not offered")


def lease_name(namespace: str, service: str) -> str:
    """The Lease the agents race for to announce one Service (holder: the announcing node)."""
    return f"cilium-l2announce-{namespace}-{service}"


async def l2_lease_holder(ctx: HandlerContext, namespace: str, service: str) -> str | None:
    """The node announcing ``namespace/service`` (its lease's holder); None: no lease or no holder."""
    try:
        lease = await ctx.require_kube().get(COORDINATION, "leases", lease_name(namespace, service), KS)
    except SourceError as exc:
        if exc.status != 404:
            raise
        return None
    return (lease.get("spec") or {}).get("holderIdentity")


@sop("l2-announcements", title="Cilium L2 announcements: flag, policy matching real nodes, IP pool, lease",
     section="3.2", severity=Severity.P1,
     causes=("L2 announcements disabled", "no CiliumL2AnnouncementPolicy", "policy selects no node",
             "policy interfaces match no node interface", "no CiliumLoadBalancerIPPool"))
async def l2_announcements(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """enable-l2-announcements in cilium-config, a CiliumL2AnnouncementPolicy whose node selector
    and interfaces match real nodes, a CiliumLoadBalancerIPPool, and the lease showing which node
    answers ARP for Traefik's address (runbook 3.2)."""
    cfg = check_settings(ctx, "l2-announcements", L2Checks)
    lb = check_settings(ctx, "traefik-lb", TraefikChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    config = await cilium_config(ctx) or {}
    flag = config.get("enable-l2-announcements", "(unset)")
    if flag != "true":
        findings.append(Finding(status=Status.crit, target="configmap/kube-system/cilium-config",
                                summary=f"L2 announcements disabled: enable-l2-announcements={flag}",
                                next_step=L2_FLAG_STEP))
    nodes = await kube.list("v1", "nodes")
    policies = await kube.list(CILIUM_ALPHA, "ciliuml2announcementpolicies")
    create_policy = [SuggestedAction(action="create-l2-policy")] if cfg.policy else []
    if not policies:
        findings.append(Finding(status=Status.crit, target="ciliuml2announcementpolicies",
                                summary="no CiliumL2AnnouncementPolicy: no node answers ARP for LoadBalancer IPs",
                                next_step=L2_POLICY_STEP + ("" if cfg.policy else
                                                            " (checks.l2-announcements.policy is not configured)"),
                                actions=create_policy))
    working = 0
    for pol in policies:
        name, spec = pol["metadata"]["name"], pol.get("spec") or {}
        selected = [n["metadata"]["name"] for n in nodes
                    if selector_matches(spec.get("nodeSelector"), n["metadata"].get("labels") or {})]
        problems = []
        if not selected:
            problems.append(f"policy selects no node (nodeSelector {spec.get('nodeSelector')})")
        regexes = spec.get("interfaces") or []
        if regexes and not any(_matches(rx, nic) for rx in regexes for nic in cfg.node_interfaces):
            problems.append(f"policy interfaces {', '.join(regexes)} match no node interface "
                            f"({', '.join(cfg.node_interfaces)})")
        if not spec.get("loadBalancerIPs") and not spec.get("externalIPs"):
            problems.append("policy announces neither loadBalancerIPs nor externalIPs")
        if problems:
            findings.append(Finding(status=Status.crit, target=f"ciliuml2announcementpolicy/{name}",
                                    summary="; ".join(problems), next_step=L2_POLICY_STEP))
        else:
            working += 1
            findings.append(Finding(status=Status.ok, target=f"ciliuml2announcementpolicy/{name}",
                                    summary=f"selects {len(selected)} node(s), interfaces {', '.join(regexes) or 'all'}"))
    pools = await kube.list(CILIUM_ALPHA, "ciliumloadbalancerippools")
    if not pools:
        findings.append(Finding(status=Status.crit, target="ciliumloadbalancerippools",
                                summary="no CiliumLoadBalancerIPPool: LB IPAM has no addresses to hand out",
                                next_step=L2_POOL_STEP + ("" if cfg.pool else
                                                          " (checks.l2-announcements.pool is not configured)"),
                                actions=[SuggestedAction(action="create-lb-pool")] if cfg.pool else []))
    # Which node answers ARP for Traefik's address: the holder of its announcement lease.
    if flag == "true" and working and pools:
        holder = await l2_lease_holder(ctx, lb.namespace, lb.service)
        ip = lb.expected_ip or "<traefik-lb-ip>"
        if holder:
            findings.append(Finding(status=Status.ok, target=f"lease/{KS}/{lease_name(lb.namespace, lb.service)}",
                                    summary=f"{ip} announced by {holder}", details=ARP_GUIDANCE.format(ip=ip)))
        else:
            findings.append(Finding(status=Status.warn, target=f"lease/{KS}/{lease_name(lb.namespace, lb.service)}",
                                    summary=f"no node holds the L2 announcement lease for {lb.namespace}/{lb.service}",
                                    next_step=ARP_GUIDANCE.format(ip=ip)))
    return findings


def _matches(regex: str, nic: str) -> bool:
    try:
        return re.search(regex, nic) is not None
    except re.error:
        return False


# -- 3.3 LoadBalancer IP ------------------------------------------------------------------------------
class TraefikChecks(BaseModel):
    """``checks.traefik-lb`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    service: str = "rke2-traefik"
    expected_ip: str | None = Field("203.0.113.202", description="null: any external IP will do")
    pool: str = Field("default-pool", description="the pool expand-lb-pool adds a block to")
    expand_block: str | None = Field(None, description="the CIDR expand-lb-pool adds (e.g. 203.0.113.208/29); "
                                                       "null: the action is not offered")


@sop("traefik-lb", title="Traefik LoadBalancer external IP", section="3.3", severity=Severity.P2,
     alerts=("TraefikLoadBalancerPending",),
     causes=("no CiliumLoadBalancerIPPool", "IP pool exhausted", "loadBalancerIP outside every pool",
             "wrong Service type"))
async def traefik_lb(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The rke2-traefik LoadBalancer has its external IP, 203.0.113.202 by default (runbook 11.1, 3.3)."""
    cfg = check_settings(ctx, "traefik-lb", TraefikChecks)
    kube = ctx.require_kube()
    target = f"svc/{cfg.namespace}/{cfg.service}"
    try:
        svc = await kube.get("v1", "services", cfg.service, cfg.namespace)
    except SourceError as exc:
        if exc.status == 404:
            return [Finding(status=Status.crit, target=target, summary="service not found", next_step=LB_STEP)]
        raise
    ips = [i.get("ip") or i.get("hostname") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    kind = (svc.get("spec") or {}).get("type")
    if kind != "LoadBalancer":
        values = await _helm_service_type(ctx, cfg)
        return [Finding(status=Status.crit, target=target,
                        summary=f"wrong Service type: type {kind}, not LoadBalancer" + (f" ({values})" if values else ""),
                        next_step=LB_TYPE_STEP)]
    if not ips:
        cause, step, actions = await _lb_cause(ctx, svc, cfg)
        return [Finding(status=Status.crit, target=target, summary=f"EXTERNAL-IP <pending>: {cause}",
                        next_step=step, actions=actions)]
    if cfg.expected_ip and cfg.expected_ip not in ips:
        return [Finding(status=Status.warn, target=target,
                        summary=f"external IP {', '.join(map(str, ips))}, expected {cfg.expected_ip}",
                        next_step=LB_WRONG_STEP)]
    return [Finding(status=Status.ok, target=target, summary=f"external IP {', '.join(map(str, ips))}")]


async def _helm_service_type(ctx: HandlerContext, cfg: TraefikChecks) -> str:
    """What the HelmChartConfig rke2-traefik says about the service type (3.3 step 3)."""
    kube = ctx.require_kube()
    try:
        hcc = await kube.get(HELM, "helmchartconfigs", "rke2-traefik", "kube-system")
    except SourceError as exc:
        return "no HelmChartConfig rke2-traefik" if exc.status == 404 else f"HelmChartConfig not readable ({exc.reason})"
    try:
        values = yaml.safe_load((hcc.get("spec") or {}).get("valuesContent") or "") or {}
    except yaml.YAMLError:
        return "HelmChartConfig rke2-traefik valuesContent is not valid YAML"
    service = values.get("service") if isinstance(values, dict) else None
    wanted = service.get("type") if isinstance(service, dict) else None
    return (f"HelmChartConfig rke2-traefik sets service.type: {wanted}" if wanted
            else "HelmChartConfig rke2-traefik does not set service.type")


def pool_size(pool: dict[str, Any]) -> int:
    """Addresses in a pool's blocks (CIDRs and start/stop ranges)."""
    total = 0
    for block in (pool.get("spec") or {}).get("blocks") or []:
        try:
            if block.get("cidr"):
                total += ipaddress.ip_network(block["cidr"], strict=False).num_addresses
            elif block.get("start"):
                start = ipaddress.ip_address(block["start"])
                total += int(ipaddress.ip_address(block.get("stop") or block["start"])) - int(start) + 1
        except ValueError:
            continue
    return total


def _count(pool: dict[str, Any], type_: str) -> int | None:
    """LB IPAM's counts live in condition messages (cilium.io/IPsTotal, IPsAvailable, IPsUsed)."""
    msg = (condition(pool, type_) or {}).get("message")
    return int(msg) if isinstance(msg, str) and msg.isdigit() else None


async def _lb_cause(ctx: HandlerContext, svc: dict, cfg: TraefikChecks) -> tuple[str, str, list[SuggestedAction]]:
    """3.3's root causes, from the IP pools and the service: no pool, pool exhausted, or the
    requested loadBalancerIP outside every pool; LB IPAM's condition on the Service and the newest
    warning event as the operator's evidence."""
    kube = ctx.require_kube()
    meta = svc["metadata"]
    events, failed = await ctx.attempt(ctx.events(meta.get("namespace"), kind="Service", name=meta["name"],
                                                  warnings_only=True), "events")
    said = f' (event {events[0].reason}: "{events[0].message}")' if events else ""
    ipam = condition(svc, SATISFIED)
    if ipam and ipam.get("status") == "False":
        said += f' (LB IPAM {ipam.get("reason")}: "{ipam.get("message")}")'
    try:
        pools = [p for p in await kube.list(CILIUM_ALPHA, "ciliumloadbalancerippools")
                 if not (p.get("spec") or {}).get("disabled")]
    except SourceError as exc:
        return f"no address assigned; IP pools not readable ({exc.reason}){said}", LB_STEP, []
    if not pools:
        return f"no CiliumLoadBalancerIPPool defined{said}", LB_POOL_STEP, []
    wanted = (svc.get("spec") or {}).get("loadBalancerIP")
    if wanted and not any(_in_pool(wanted, p) for p in pools):
        return (f"loadBalancerIP {wanted} is outside every pool "
                f"({', '.join(p['metadata']['name'] + ' ' + _blocks(p) for p in pools)}){said}", LB_WRONG_STEP, [])
    full = []
    for p in pools:
        size = _count(p, "cilium.io/IPsTotal") or pool_size(p)
        available = _count(p, "cilium.io/IPsAvailable")
        used = _count(p, "cilium.io/IPsUsed")
        legacy = (condition(p, "cilium.io/IPsExhausted") or {}).get("status") == "True"
        if available == 0 or legacy or (used is not None and used >= size):
            full.append(f"{p['metadata']['name']} {used if used is not None else size} of {size} used")
    if full and len(full) == len(pools):
        expand = [SuggestedAction(action="expand-lb-pool")] if cfg.expand_block else []
        return f"IP pool exhausted: {', '.join(full)}{said}", LB_EXHAUSTED_STEP, expand
    return f"no address assigned{said}" + (f"; {failed.summary}" if failed else ""), LB_STEP, []


def _blocks(pool: dict[str, Any]) -> str:
    return ",".join(b.get("cidr") or f"{b.get('start')}-{b.get('stop') or b.get('start')}"
                    for b in (pool.get("spec") or {}).get("blocks") or [])


def _in_pool(ip: str, pool: dict) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        for block in (pool.get("spec") or {}).get("blocks") or []:
            if block.get("cidr") and addr in ipaddress.ip_network(block["cidr"], strict=False):
                return True
            if block.get("start") and ipaddress.ip_address(block["start"]) <= addr <= ipaddress.ip_address(
                    block.get("stop") or block["start"]):
                return True
    except ValueError:
        return False
    return False


# -- 3.4 Traefik routing --------------------------------------------------------------------------------
class IngressRouteChecks(BaseModel):
    """``checks.ingressroute-health`` in the config: the IngressRoutes that should exist."""

    model_config = ConfigDict(extra="forbid")
    expected: list[str] = Field(default_factory=lambda: ["kube-system/traefik-dashboard", "kasm/kasm"],
                                description="namespace/name of the IngressRoutes there should be")


class RoutingChecks(BaseModel):
    """``checks.traefik-routing`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    deployment: str = "rke2-traefik"
    entrypoint_ports: list[int] = Field(default_factory=lambda: [8000, 8443],
                                        description="Traefik's entrypoint ports Gateway listeners must use")


TRAEFIK_PATTERNS = (
    LogPattern(regex=r"secret.*(not found|does not exist)|retriev\w* certificate", cause="TLS secret missing"),
    LogPattern(regex=r"service .*not found|service port not found|no endpoints? found",
               cause="backend Service or port not found"),
    LogPattern(regex=r"\bERR\b|level=error", cause="Traefik error"),
)


@sop("gateway-health", title="Gateways Accepted and Programmed", section="3.4", severity=Severity.P1)
async def gateway_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every Gateway Accepted (and Programmed), with each listener's problem named (runbook 11.1, 3.4)."""
    kube = ctx.require_kube()
    gateways = await kube.list(GATEWAY, "gateways")
    findings = []
    for gw in gateways:
        ns, name = gw["metadata"].get("namespace", ""), gw["metadata"]["name"]
        bad = [c for c in (condition(gw, "Accepted"), condition(gw, "Programmed"))
               if c is None or c.get("status") != "True"]
        if not bad:
            continue
        listeners = []
        for ls in (gw.get("status") or {}).get("listeners") or []:
            c = find_condition(ls.get("conditions"), "Accepted")
            if c is not None and c.get("status") != "True":
                listeners.append(f"listener {ls.get('name')}: {c.get('reason')} — {c.get('message', '')}")
        accepted = condition(gw, "Accepted")
        summary = (f"Accepted={(accepted or {}).get('status', 'missing')} "
                   f"({(accepted or {}).get('reason', '')}: {(accepted or {}).get('message', '')})")
        findings.append(Finding(status=Status.crit, target=f"gateway/{ns}/{name}", summary=summary,
                                details="\n".join(listeners), next_step=GATEWAY_STEP.format(ns=ns, name=name)))
    ok = len(gateways) - len(findings)
    findings.insert(0, Finding(status=Status.ok, target="gateways", summary=f"{ok}/{len(gateways)} Gateways Accepted"))
    return findings


@sop("httproute-health", title="HTTPRoutes accepted by their parents", section="3.4", severity=Severity.P2)
async def httproute_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every HTTPRoute Accepted by each Gateway it names (runbook 11.1, 3.4)."""
    kube = ctx.require_kube()
    routes = await kube.list(GATEWAY, "httproutes")
    findings = []
    for route in routes:
        ns, name = route["metadata"].get("namespace", ""), route["metadata"]["name"]
        wanted = (route.get("spec") or {}).get("parentRefs") or []
        parents = (route.get("status") or {}).get("parents") or []
        problems = []
        for parent in parents:
            ref = parent.get("parentRef") or {}
            acc = find_condition(parent.get("conditions"), "Accepted")
            if acc is None or acc.get("status") != "True":
                problems.append(f"{ref.get('name')}/{ref.get('sectionName', '*')}: "
                                f"{(acc or {}).get('reason', 'no Accepted condition')} — {(acc or {}).get('message', '')}")
        if wanted and not parents:
            problems.append("no parent has taken the route (status.parents empty)")
        if problems:
            findings.append(Finding(status=Status.warn, target=f"httproute/{ns}/{name}",
                                    summary="not accepted: " + "; ".join(problems)[:300], next_step=ROUTE_STEP))
    ok = len(routes) - len(findings)
    findings.insert(0, Finding(status=Status.ok, target="httproutes",
                               summary=f"{ok}/{len(routes)} HTTPRoutes accepted by their parents"))
    return findings


@sop("ingressroute-health", title="IngressRoutes only where expected", section="3.4", severity=Severity.P4)
async def ingressroute_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """IngressRoutes exist only where expected: the Traefik dashboard and Kasm (runbook 11.1, 3.4)."""
    cfg = check_settings(ctx, "ingressroute-health", IngressRouteChecks)
    kube = ctx.require_kube()
    routes = await kube.list(TRAEFIK, "ingressroutes")
    have = {f"{r['metadata'].get('namespace', '')}/{r['metadata']['name']}" for r in routes}
    expected = set(cfg.expected)
    findings = [Finding(status=Status.warn, target=f"ingressroute/{ref}", summary="unexpected IngressRoute",
                        next_step=INGRESSROUTE_STEP) for ref in sorted(have - expected)]
    findings += [Finding(status=Status.warn, target=f"ingressroute/{ref}", summary="expected IngressRoute missing",
                         next_step="3.4: kubectl get ingressroutes -A; redeploy the service's IngressRoute")
                 for ref in sorted(expected - have)]
    findings.insert(0, Finding(status=Status.ok, target="ingressroutes",
                               summary=f"{len(have)} IngressRoutes: {', '.join(sorted(have)) or 'none'}"))
    return findings


@sop("traefik-routing", title="Traefik routing: listener ports, parentRefs, backend ports, TLS secrets, stale routes",
     section="3.4", severity=Severity.P1,
     causes=("listener on 80/443 instead of an entrypoint port", "HTTPRoute not attached to a Gateway",
             "backend service port name mismatch", "TLS secret missing", "routes stale"))
async def traefik_routing(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Traefik's pods and log errors; each Gateway listener on an entrypoint port with its TLS
    secret resolved; each HTTPRoute's parentRefs resolving to a listener; backend Services and
    ports (named http for plain backends); routes Traefik has not caught up with (runbook 3.4)."""
    cfg = check_settings(ctx, "traefik-routing", RoutingChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    pods = await kube.list("v1", "pods", cfg.namespace, label_selector="app.kubernetes.io/name=rke2-traefik")
    ready = [p for p in pods if pod_state(p)[0]]
    if not ready:
        findings.append(Finding(status=Status.crit, target=f"deployment/{cfg.namespace}/{cfg.deployment}",
                                summary=f"no Ready Traefik pod of {len(pods)}",
                                next_step="3.4: kubectl get pods -n kube-system -l app.kubernetes.io/name=rke2-traefik"))
    log_causes = await _log_evidence(ctx, pods, TRAEFIK_PATTERNS, limit=2)
    for pod, cause, line in log_causes:
        findings.append(Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{pod} log",
                                summary=f"{cause}: {line}", next_step=ROUTE_STEP))
    gateways = await kube.list(GATEWAY, "gateways")
    listeners: dict[tuple[str, str], dict[str, dict]] = {}
    bad = 0
    for gw in gateways:
        ns, name = _meta(gw)
        status_of = {ls.get("name"): ls for ls in (gw.get("status") or {}).get("listeners") or []}
        listeners[(ns, name)] = {}
        for ls in (gw.get("spec") or {}).get("listeners") or []:
            lname, st = ls.get("name", ""), status_of.get(ls.get("name")) or {}
            listeners[(ns, name)][lname] = st
            if ls.get("port") not in cfg.entrypoint_ports:
                bad += 1
                findings.append(Finding(
                    status=Status.crit, target=f"gateway/{ns}/{name}",
                    summary=f"listener {lname} on port {ls.get('port')} instead of an entrypoint port "
                            f"({'/'.join(map(str, cfg.entrypoint_ports))})",
                    next_step=GATEWAY_STEP.format(ns=ns, name=name)))
            refs = find_condition(st.get("conditions"), "ResolvedRefs")
            if refs is not None and refs.get("status") == "False":
                bad += 1
                missing = ", ".join(r.get("name", "?") for r in (ls.get("tls") or {}).get("certificateRefs") or [])
                findings.append(Finding(
                    status=Status.crit, target=f"gateway/{ns}/{name}",
                    summary=f"TLS secret missing: listener {lname} ({missing}): {refs.get('reason')} — "
                            f"{refs.get('message', '')}",
                    next_step="3.4/3.5: the listener's certificateRefs Secret must exist (cert-manager writes it: "
                              f"kubectl get certificate -n {ns}); see 3.5 and 4.1"))
    routes = await kube.list(GATEWAY, "httproutes")
    services: dict[str, dict[str, dict]] = {}
    stale = []
    for route in routes:
        ns, name = _meta(route)
        gen = (route.get("metadata") or {}).get("generation")
        for ref in (route.get("spec") or {}).get("parentRefs") or []:
            gw_ns = ref.get("namespace") or ns
            have = listeners.get((gw_ns, ref.get("name", "")))
            section = ref.get("sectionName")
            if have is None:
                bad += 1
                findings.append(Finding(status=Status.crit, target=f"httproute/{ns}/{name}",
                                        summary=f"HTTPRoute not attached to a Gateway: parentRef {ref.get('name')} "
                                                f"is no Gateway in {gw_ns}", next_step=ROUTE_STEP))
            elif section and section not in have:
                bad += 1
                findings.append(Finding(status=Status.crit, target=f"httproute/{ns}/{name}",
                                        summary=f"HTTPRoute not attached to a Gateway: {ref.get('name')} has no "
                                                f"listener {section} ({', '.join(have) or 'none'})", next_step=ROUTE_STEP))
        for parent in (route.get("status") or {}).get("parents") or []:
            seen = [c.get("observedGeneration") for c in parent.get("conditions") or []
                    if c.get("observedGeneration") is not None]
            if gen is not None and seen and max(seen) < gen:
                stale.append(f"httproute/{ns}/{name} (generation {gen}, Traefik saw {max(seen)})")
        for rule in (route.get("spec") or {}).get("rules") or []:
            for backend in rule.get("backendRefs") or []:
                if (backend.get("kind") or "Service") != "Service" or backend.get("group"):
                    continue
                problem = await _backend_problem(kube, services, backend.get("namespace") or ns, backend)
                if problem:
                    bad += 1
                    status, text = problem
                    findings.append(Finding(status=status, target=f"httproute/{ns}/{name}", summary=text,
                                            next_step="3.4 step 3: kubectl get svc <backend> -n <ns> -o yaml: "
                                                      "ports name http (not https) when TLS ends at Traefik"))
    if stale and not bad:
        findings.append(Finding(
            status=Status.warn, target=f"deployment/{cfg.namespace}/{cfg.deployment}",
            summary=f"routes stale: configuration is right but Traefik has not applied {len(stale)} route(s)",
            details="\n".join(stale),
            next_step="3.4 step 4: kubectl -n kube-system rollout restart deployment rke2-traefik",
            actions=[SuggestedAction(action="restart", params={"kind": "deployment", "namespace": cfg.namespace,
                                                               "name": cfg.deployment})]))
    if not findings:
        findings.append(Finding(status=Status.ok, target="traefik routing",
                                summary=f"{len(ready)} Traefik pod(s) Ready; {len(gateways)} Gateways on entrypoint "
                                        f"ports with TLS secrets resolved; {len(routes)} HTTPRoutes attached, "
                                        "backends and ports present"))
    return findings


async def _backend_problem(kube: Any, cache: dict[str, dict[str, dict]], ns: str,
                           backend: dict[str, Any]) -> tuple[Status, str] | None:
    if ns not in cache:
        cache[ns] = {s["metadata"]["name"]: s for s in await kube.list("v1", "services", ns)}
    name, port = backend.get("name", ""), backend.get("port")
    svc = cache[ns].get(name)
    if svc is None:
        return Status.crit, f"backend service port name mismatch: Service {ns}/{name} not found"
    ports = (svc.get("spec") or {}).get("ports") or []
    match = next((p for p in ports if p.get("port") == port), None)
    if match is None:
        return Status.crit, (f"backend service port name mismatch: Service {ns}/{name} has no port {port} "
                             f"({', '.join(str(p.get('port')) for p in ports)})")
    if (match.get("name") or "").lower() == "https" or (match.get("appProtocol") or "").lower() == "https":
        return Status.warn, (f"backend service port name mismatch: {ns}/{name} port {port} is named https: "
                             "Traefik speaks TLS to a plain backend (502); name it http")
    return None


# -- 3.5 Gateway certificates ---------------------------------------------------------------------------
class GatewayCertChecks(BaseModel):
    """``checks.gateway-certs`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "cert-manager"
    deployment: str = "cert-manager"


ISSUER_ANNOTATIONS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")


async def gateway_api_enabled(ctx: HandlerContext, cfg: GatewayCertChecks) -> tuple[bool | None, str]:
    """Whether cert-manager's controller runs with Gateway API support: its --enable-gateway-api
    flag (or the older feature gate), or enableGatewayAPI in its config file (Helm's
    config.enableGatewayAPI=true renders the ConfigMap ``cert-manager``)."""
    kube = ctx.require_kube()
    try:
        dep = await kube.get("apps/v1", "deployments", cfg.deployment, cfg.namespace)
    except SourceError as exc:
        if exc.status == 404:
            return None, f"deployment {cfg.namespace}/{cfg.deployment} not found"
        raise
    args = [a for c in (dep["spec"]["template"]["spec"].get("containers") or []) for a in c.get("args") or []]
    for arg in args:
        if arg in ("--enable-gateway-api", "--enable-gateway-api=true") or "ExperimentalGatewayAPISupport=true" in arg:
            return True, f"controller arg {arg}"
    if any(a.startswith("--config") for a in args):
        try:
            cm = await kube.get("v1", "configmaps", "cert-manager", "cert-manager")
            conf = yaml.safe_load((cm.get("data") or {}).get("config.yaml") or "") or {}
        except (SourceError, yaml.YAMLError) as exc:
            return None, f"config file not readable ({exc})"
        if isinstance(conf, dict) and conf.get("enableGatewayAPI") is True:
            return True, "enableGatewayAPI: true in its config file"
    return False, "no --enable-gateway-api in the controller's args" + (
        " and no enableGatewayAPI: true in its config" if any(a.startswith("--config") for a in args) else "")


@sop("gateway-certs", title="Gateway certificates: cert-manager Gateway API support, issuer annotation, TLS Terminate",
     section="3.5", severity=Severity.P2,
     causes=("cert-manager runs without Gateway API support", "Gateway missing cert-manager.io/cluster-issuer",
             "listener tls.mode not Terminate"))
async def gateway_certs(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """cert-manager's Gateway API support, each HTTPS Gateway's cert-manager.io/cluster-issuer
    annotation, its listeners' tls.mode Terminate with a certificateRef, and the Certificate
    cert-manager should have created for it; one that exists but is not Ready is 4.1's (runbook 3.5)."""
    cfg = check_settings(ctx, "gateway-certs", GatewayCertChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    enabled, how = await gateway_api_enabled(ctx, cfg)
    if enabled is not True:
        findings.append(Finding(status=Status.crit if enabled is False else Status.unknown,
                                target=f"deployment/{cfg.namespace}/{cfg.deployment}",
                                summary=f"cert-manager runs without Gateway API support: {how}",
                                next_step="3.5 step 1: install cert-manager with --set config.enableGatewayAPI=true "
                                          "(deploy-cluster.sh), then restart it"))
    certs = {(_meta(c)): c for c in await kube.list(CM, "certificates")}
    checked = 0
    for gw in await kube.list(GATEWAY, "gateways"):
        ns, name = _meta(gw)
        tls = [ls for ls in (gw.get("spec") or {}).get("listeners") or [] if ls.get("protocol") in ("HTTPS", "TLS")]
        if not tls:
            continue
        checked += 1
        notes = (gw.get("metadata") or {}).get("annotations") or {}
        problems: list[str] = []
        if not any(notes.get(a) for a in ISSUER_ANNOTATIONS):
            problems.append("Gateway missing cert-manager.io/cluster-issuer annotation")
        for ls in tls:
            mode = (ls.get("tls") or {}).get("mode") or "Terminate"  # Gateway API's default
            if mode != "Terminate":
                problems.append(f"listener {ls.get('name')} tls.mode {mode}, not Terminate")
            elif not (ls.get("tls") or {}).get("certificateRefs"):
                problems.append(f"listener {ls.get('name')} has no tls.certificateRefs")
        if problems:
            findings.append(Finding(status=Status.crit, target=f"gateway/{ns}/{name}", summary="; ".join(problems),
                                    next_step="3.5 steps 2-3: annotate cert-manager.io/cluster-issuer: vault-issuer; "
                                              "listeners tls.mode: Terminate with certificateRefs"))
            continue
        for ls in tls:
            for ref in (ls.get("tls") or {}).get("certificateRefs") or []:
                cert = certs.get((ref.get("namespace") or ns, ref.get("name", "")))
                if cert is None:
                    findings.append(Finding(status=Status.crit, target=f"gateway/{ns}/{name}",
                                            summary=f"cert-manager created no Certificate {ref.get('name')} for listener "
                                                    f"{ls.get('name')}",
                                            next_step="3.5: kubectl -n cert-manager logs deployment/cert-manager | grep -i gateway"))
                elif (condition(cert, "Ready") or {}).get("status") != "True":
                    ready = condition(cert, "Ready") or {}
                    findings.append(Finding(status=Status.warn, target=f"certificate/{ns}/{ref.get('name')}",
                                            summary=f"Certificate exists but not Ready ({ready.get('reason', '?')}: "
                                                    f"{ready.get('message', '')})",
                                            next_step="3.5 step 4: the Certificate is there but not Ready: section 4.1"))
    if not findings:
        findings.append(Finding(status=Status.ok, target="gateway certificates",
                                summary=f"cert-manager Gateway API support on ({how}); {checked} HTTPS Gateways "
                                        "annotated, TLS Terminate, Certificates Ready"))
    return findings


# -- 3.6 DNS --------------------------------------------------------------------------------------------
class DnsChecks(BaseModel):
    """``checks.dns-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    deployment: str = "rke2-coredns-rke2-coredns"
    service: str = "kube-dns"
    cluster_ip: str | None = Field("10.43.0.10", description="the kubelets' clusterDNS; null: not checked")
    scale_to: int = Field(3, ge=1, le=10, description="replicas the runbook scales CoreDNS to under load")
    agent_logs: int = Field(6, ge=0, le=50, description="Cilium agents whose log is read for DNS proxy errors")
    servfail_ratio: float = Field(0.03, gt=0, lt=1, description="SERVFAIL share of answers (5m) that is an error, "
                                                                "as CoreDNSErrorsHigh fires")


SERVFAIL_PROMQL = ('sum(rate(coredns_dns_responses_total{rcode="SERVFAIL"}[5m])) '
                   '/ sum(rate(coredns_dns_responses_total[5m]))')
REJECTS_PROMQL = "sum(rate(coredns_forward_max_concurrent_rejects_total[5m]))"

DNS_PATTERNS = (
    LogPattern(regex=r"plugin/loop: Loop .* detected", cause="CoreDNS forwarding loop (3.6)"),
    LogPattern(regex=r"plugin/kubernetes: .*(Failed to (watch|list)|connection refused|i/o timeout)",
               cause="CoreDNS cannot reach the API server"),
    LogPattern(regex=r"plugin/errors: \d+ .*(i/o timeout|connection refused)", cause="upstream DNS not answering"),
    LogPattern(regex=r"\[(ERROR|FATAL)\]|panic", cause="CoreDNS error"),
)
DNS_PROXY_PATTERNS = (
    LogPattern(regex=r"(fqdn|dnsproxy|DNS proxy).*(level=(error|warning))|level=(error|warning).*(fqdn|dnsproxy|DNS proxy)",
               cause="Cilium DNS proxy errors"),
)


@sop("dns-health", title="DNS: CoreDNS pods and logs, kube-dns Service and endpoints, Cilium DNS proxy",
     section="3.6", severity=Severity.P1,
     alerts=("CoreDNSErrorsHigh",),
     causes=("CoreDNS pods crashed", "kube-dns service ClusterIP changed", "Cilium DNS proxy errors",
             "CoreDNS overloaded"))
async def dns_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """CoreDNS pods Ready with their restarts and log errors, the kube-dns Service on its ClusterIP
    with ready endpoints (EndpointSlices), CoreDNS's own metrics in Prometheus when there is one (the
    SERVFAIL share CoreDNSErrorsHigh alerts on, forward rejections under load), and the Cilium
    agents' DNS proxy errors (runbook 3.6)."""
    cfg = check_settings(ctx, "dns-health", DnsChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    restart = SuggestedAction(action="restart", params={"kind": "deployment", "namespace": cfg.namespace,
                                                        "name": cfg.deployment})
    pods = await kube.list("v1", "pods", cfg.namespace, label_selector="app.kubernetes.io/name=rke2-coredns")
    states = [(p, *pod_state(p)) for p in pods]
    down = [(p, s, r, last) for p, ok, s, r, last in states if not ok]
    evidence = await _log_evidence(ctx, pods, DNS_PATTERNS, limit=3)
    if not pods or down:
        findings.append(Finding(
            status=Status.crit, target=f"deployment/{cfg.namespace}/{cfg.deployment}",
            summary=f"CoreDNS pods crashed: {len(pods) - len(down)} of {len(pods)} Ready"
                    + (": " + ", ".join(f"{p['metadata']['name']} ({s}, {r} restarts)" for p, s, r, _ in down[:3])
                       if down else ""),
            next_step=DNS_RESTART_STEP, actions=[restart]))
    else:
        findings.append(Finding(status=Status.ok, target=f"deployment/{cfg.namespace}/{cfg.deployment}",
                                summary=f"{len(pods)} CoreDNS pods Ready"))
    for pod, cause, line in evidence:
        scale = cause.startswith("upstream") and len(pods) < cfg.scale_to
        findings.append(Finding(
            status=Status.crit if down else Status.warn, target=f"pod/{cfg.namespace}/{pod} log",
            summary=f"{cause}: {line}", next_step=DNS_SCALE_STEP if scale else DNS_RESTART_STEP,
            actions=[SuggestedAction(action="scale", params={"namespace": cfg.namespace, "name": cfg.deployment,
                                                             "replicas": str(cfg.scale_to)})] if scale else [restart]))
    # The Service pods' resolv.conf points at, and what answers behind it.
    try:
        svc = await kube.get("v1", "services", cfg.service, cfg.namespace)
    except SourceError as exc:
        if exc.status != 404:
            raise
        svc = None
        findings.append(Finding(status=Status.crit, target=f"svc/{cfg.namespace}/{cfg.service}",
                                summary="kube-dns service not found", next_step=DNS_IP_STEP))
    if svc is not None:
        ip = (svc.get("spec") or {}).get("clusterIP")
        if cfg.cluster_ip and ip != cfg.cluster_ip:
            findings.append(Finding(status=Status.crit, target=f"svc/{cfg.namespace}/{cfg.service}",
                                    summary=f"kube-dns service ClusterIP changed: {ip}, pods resolve through "
                                            f"{cfg.cluster_ip}", next_step=DNS_IP_STEP))
        slices = await kube.list(DISCOVERY, "endpointslices", cfg.namespace,
                                 label_selector=f"kubernetes.io/service-name={cfg.service}")
        ready = sum(1 for s in slices for e in s.get("endpoints") or []
                    if (e.get("conditions") or {}).get("ready") is not False)
        if not ready:
            findings.append(Finding(status=Status.crit, target=f"svc/{cfg.namespace}/{cfg.service}",
                                    summary=f"kube-dns has no ready endpoints ({len(slices)} EndpointSlices)",
                                    next_step=DNS_RESTART_STEP, actions=[restart]))
        else:
            findings.append(Finding(status=Status.ok, target=f"svc/{cfg.namespace}/{cfg.service}",
                                    summary=f"ClusterIP {ip}, {ready} ready endpoint(s)"))
    if ctx.prometheus is not None:
        findings += await _coredns_metrics(ctx, cfg, len(pods))
    # The Cilium agents' DNS proxy (3.6 step 3), where the runbook runs cilium status | grep DNS.
    if cfg.agent_logs:
        agents = await kube.list("v1", "pods", KS, label_selector="k8s-app=cilium")
        hits = await _log_evidence(ctx, agents, DNS_PROXY_PATTERNS, limit=cfg.agent_logs)
        if hits:
            pod, cause, line = hits[0]
            findings.append(Finding(status=Status.crit, target=f"pod/{KS}/{pod} log",
                                    summary=f"{cause} on {len(hits)} agent(s): {line}",
                                    details="\n".join(f"{p}: {ln}" for p, _, ln in hits), next_step=DNS_PROXY_STEP))
    return findings


async def _coredns_metrics(ctx: HandlerContext, cfg: DnsChecks, replicas: int) -> list[Finding]:
    """CoreDNS's exporter metrics (the runbook's Prometheus scrape job 7): the SERVFAIL share of
    answers over 5 minutes and the forward plugin's max_concurrent rejections (load)."""
    prom = ctx.prometheus
    assert prom is not None
    ratio, failed = await ctx.attempt(prom.query(SERVFAIL_PROMQL), "prometheus coredns")
    if failed is not None:
        return [failed]
    rejects, failed = await ctx.attempt(prom.query(REJECTS_PROMQL), "prometheus coredns")
    if failed is not None:
        return [failed]
    share = ratio[0].value if ratio else None
    rejected = rejects[0].value if rejects else 0.0
    if share is None or share != share:  # no series yet (or 0/0: no queries at all)
        return [Finding(status=Status.ok, target="coredns metrics",
                        summary="no CoreDNS answers in Prometheus over the last 5 minutes (scrape job not set up?)")]
    target = f"deployment/{cfg.namespace}/{cfg.deployment} metrics"
    if rejected > 0:
        return [Finding(status=Status.crit if share >= cfg.servfail_ratio else Status.warn, target=target,
                        summary=f"CoreDNS overloaded: the forward plugin rejects {rejected:.1f} queries/s "
                                f"(max_concurrent reached); {share:.0%} of answers SERVFAIL (5m)",
                        next_step=DNS_SCALE_STEP,
                        actions=[SuggestedAction(action="scale", params={
                            "namespace": cfg.namespace, "name": cfg.deployment, "replicas": str(cfg.scale_to)})]
                        if replicas < cfg.scale_to else [])]
    if share >= cfg.servfail_ratio:
        return [Finding(status=Status.warn, target=target,
                        summary=f"CoreDNSErrorsHigh: {share:.1%} of answers SERVFAIL over 5 minutes "
                                f"(threshold {cfg.servfail_ratio:.0%})",
                        next_step="3.6: the CoreDNS logs name the failing zone or upstream; " + DNS_RESTART_STEP)]
    return [Finding(status=Status.ok, target=target, summary=f"{share:.2%} of answers SERVFAIL (5m), no forward rejections")]


# -- 3.7 dual-NIC policy routing (guidance) -------------------------------------------------------------
KUBEVIRT = "kubevirt.io/v1"
# What the cloud-init of a dual-NIC node must run for replies to leave by the NIC they came in on.
POLICY_ROUTING = re.compile(r"\bip (-\d )?rule add\b|iptables[^\n]*-t mangle|CONNMARK|--set-mark|ip route add [^\n]*table",
                            re.IGNORECASE)


class DualNicChecks(BaseModel):
    """``checks.dual-nic-routing`` in the config."""

    model_config = ConfigDict(extra="forbid")
    vm_namespace: str | None = Field(None, description="namespace of the nodes' VMs in Harvester; null: every namespace")


def _vm_nics_and_rules(vm: dict[str, Any]) -> tuple[int, bool | None]:
    """(NICs of the VM, whether its inline cloud-init writes policy routing rules; None when the
    user data lives in a Secret, which the bot does not read)."""
    spec = ((vm.get("spec") or {}).get("template") or {}).get("spec") or {}
    nics = len(((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or [])
    for vol in spec.get("volumes") or []:
        cloud = vol.get("cloudInitNoCloud") or vol.get("cloudInitConfigDrive")
        if cloud is None:
            continue
        if cloud.get("userData") is not None:  # searched, never quoted: user data can hold join tokens
            return nics, bool(POLICY_ROUTING.search(cloud["userData"]))
        return nics, None
    return nics, None


@sop("dual-nic-routing", title="Dual-NIC policy routing: node addresses, VM NICs and their cloud-init rules",
     section="3.7", severity=Severity.P3, causes=("cloud-init has no policy routing rules",))
async def dual_nic_routing(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The addresses each node reports; from Harvester, how many NICs its VM has and whether the
    cloud-init that should write the policy routing rules has any. Whether the rules are applied
    now (ip rule, iptables mangle) is on the node and needs SSH: guidance (runbook 3.7)."""
    cfg = check_settings(ctx, "dual-nic-routing", DualNicChecks)
    kube = ctx.require_kube()
    nodes = await kube.list("v1", "nodes")
    vms: dict[str, dict] = {}
    mgmt = ctx.kube_mgmt
    if mgmt is not None:
        got, failed = await ctx.attempt(mgmt.list(KUBEVIRT, "virtualmachines", cfg.vm_namespace), "harvester VMs")
        vms = {v["metadata"]["name"]: v for v in got or []}
    rows, multi, missing = [], [], []
    for node in nodes:
        name = node["metadata"]["name"]
        addrs = [f"{a.get('type')} {a.get('address')}" for a in (node.get("status") or {}).get("addresses") or []
                 if a.get("type") != "Hostname"]
        row = f"{name}: {', '.join(addrs) or 'no address'}"
        vm = vms.get(name)
        if vm is not None:
            nics, rules = _vm_nics_and_rules(vm)
            row += f"; VM {nics} NIC(s)" + ("" if nics < 2 else ", cloud-init policy routing: "
                                             + {True: "yes", False: "none", None: "in a Secret (not read)"}[rules])
            if nics >= 2:
                multi.append(name)
                if rules is False:
                    missing.append(f"{name} ({nics} NICs)")
        elif len(addrs) > 1:
            multi.append(name)
        rows.append(row)
    findings = [Finding(status=Status.ok, target="nodes",
                        summary=f"{len(nodes)} nodes, {len(multi)} with more than one NIC or address"
                                + (f" ({', '.join(multi)})" if multi else "")
                                + ("" if mgmt is not None else "; Harvester not configured: VM NICs not read"),
                        details="\n".join(rows))]
    if missing:
        findings.append(Finding(status=Status.warn, target="cloud-init",
                                summary="cloud-init has no policy routing rules (ip rule / iptables mangle) for "
                                        + ", ".join(missing) + ": replies leave by the default route",
                                next_step="3.7 steps 2-3: add the rules from cluster/examples/cloud-init-cp.yaml to the "
                                          "pool's user_data in cluster.tf (terraform apply rolls the nodes); until then "
                                          + DUAL_NIC_GUIDANCE))
    elif multi:
        findings.append(Finding(status=Status.unknown, target="policy routing rules",
                                summary="whether the rules are applied now is on the node (ip rule, iptables mangle): "
                                        "not readable through the API", next_step=DUAL_NIC_GUIDANCE))
    return findings


# -- 3.8 VXLAN overlay ----------------------------------------------------------------------------------
class VxlanChecks(BaseModel):
    """``checks.vxlan-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    routing_mode: str = Field("tunnel", description="tunnel or native")
    tunnel_protocol: str = Field("vxlan", description="the protocol the firewall allows (vxlan: UDP 8472)")
    max_mtu: int = Field(1450, ge=576, description="underlay MTU minus VXLAN's 50 bytes")
    agent_logs: int = Field(6, ge=0, le=50, description="agents whose log is read for tunnel errors")


TUNNEL_PATTERNS = (
    LogPattern(regex=r"(vxlan|tunnel|8472|health).*(unreachable|timed? ?out|refused|no route)",
               cause="nodes unreachable over the VXLAN tunnel (UDP 8472)"),
    LogPattern(regex=r"mtu.*(mismatch|too (big|large)|exceed)|(message|packet) too (long|big)",
               cause="MTU mismatch"),
)


@sop("vxlan-health", title="VXLAN overlay: tunnel mode and MTU, CiliumNodes, agent tunnel errors",
     section="3.8", severity=Severity.P2,
     causes=("VXLAN port (8472) blocked between nodes", "MTU mismatch", "Cilium tunnel configuration issue"))
async def vxlan_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The tunnel mode, protocol and MTU in cilium-config, a CiliumNode per node whose address is
    the node's own, and the agents' log errors about the tunnel (runbook 3.8)."""
    cfg = check_settings(ctx, "vxlan-health", VxlanChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    config = await cilium_config(ctx) or {}
    mode = config.get("routing-mode") or ("tunnel" if config.get("tunnel", "vxlan") != "disabled" else "native")
    proto = config.get("tunnel-protocol") or config.get("tunnel") or "vxlan"
    if mode != cfg.routing_mode or (mode == "tunnel" and proto != cfg.tunnel_protocol):
        findings.append(Finding(status=Status.crit, target="configmap/kube-system/cilium-config",
                                summary=f"Cilium tunnel configuration issue: routing-mode={mode}, tunnel-protocol={proto} "
                                        f"(expected {cfg.routing_mode}/{cfg.tunnel_protocol}, the port the firewall opens)",
                                next_step="3.8: the tunnel settings come from the rke2-cilium chart_values in cluster.tf"))
    mtu = config.get("mtu")
    if mtu and mtu.isdigit() and int(mtu) > cfg.max_mtu:  # 0 / unset: Cilium derives it from the device
        findings.append(Finding(status=Status.crit, target="configmap/kube-system/cilium-config",
                                summary=f"MTU mismatch: mtu={mtu} leaves no room for VXLAN's 50-byte header "
                                        f"(at most {cfg.max_mtu})", next_step=VXLAN_MTU_STEP))
    nodes = {n["metadata"]["name"]: n for n in await kube.list("v1", "nodes")}
    cnodes = {c["metadata"]["name"]: c for c in await kube.list(CILIUM, "ciliumnodes")}
    for name, node in nodes.items():
        internal = {a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP"}
        cn = cnodes.get(name)
        if cn is None:
            findings.append(Finding(status=Status.crit, target=f"ciliumnode/{name}",
                                    summary="no CiliumNode: its agent never registered, no tunnel reaches it",
                                    next_step=CILIUM_RESTART_STEP))
            continue
        seen = {a.get("ip") for a in (cn.get("spec") or {}).get("addresses") or [] if a.get("type") == "InternalIP"}
        if internal and seen and not internal & seen:
            findings.append(Finding(status=Status.warn, target=f"ciliumnode/{name}",
                                    summary=f"tunnel endpoint {', '.join(sorted(seen))} is not the node's InternalIP "
                                            f"{', '.join(sorted(internal))} (3.7 dual NIC?)", next_step=VXLAN_PORT_STEP))
    if cfg.agent_logs:
        agents = await kube.list("v1", "pods", KS, label_selector="k8s-app=cilium")
        hits = await _log_evidence(ctx, agents, TUNNEL_PATTERNS, limit=cfg.agent_logs)
        for cause in dict.fromkeys(c for _, c, _ in hits):
            mine = [(p, ln) for p, c, ln in hits if c == cause]
            findings.append(Finding(status=Status.crit, target=f"pod/{KS}/{mine[0][0]} log",
                                    summary=f"{cause} on {len(mine)} agent(s): {mine[0][1]}",
                                    details="\n".join(f"{p}: {ln}" for p, ln in mine),
                                    next_step=VXLAN_MTU_STEP if cause == "MTU mismatch" else VXLAN_PORT_STEP))
    if not findings:
        findings.append(Finding(status=Status.ok, target="overlay",
                                summary=f"routing-mode {mode}/{proto}, mtu {mtu or 'auto'}; a CiliumNode for each of "
                                        f"{len(nodes)} nodes; no tunnel errors in the agents' logs",
                                details=VXLAN_PORT_STEP))
    return findings
