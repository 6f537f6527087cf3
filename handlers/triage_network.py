"""Evaluators for the decisions of chapter 3's networking flowchart (``/sop triage dns``,
``/sop triage no external access``): the issue type, Traefik's EXTERNAL-IP, whether its address
is announced, the Cilium agents, the CoreDNS pods. Each reads what chapter 3's SOPs read and
answers with the branch that evidence supports, or None (a person decides) when it does not.

The decisions are registered by the labels both the sandbox runbook and the team's runbook use
(the kubectl commands drawn as decisions), so either flowchart walks."""

from __future__ import annotations

from bot.sdk import Answer, HandlerContext, SourceError, check_settings, condition, decision
from handlers.networking import (KS, SATISFIED, CiliumChecks, TraefikChecks, cilium_agents, cilium_config,
                                 l2_lease_holder, lease_name, pod_state)
from handlers.triage import _certs_not_ready, _sealed

CILIUM_ALPHA = "cilium.io/v2alpha1"


async def _external_ip(ctx: HandlerContext) -> tuple[bool | None, str]:
    """Whether Traefik's LoadBalancer has its address (None: no such Service), and the evidence."""
    cfg = check_settings(ctx, "traefik-lb", TraefikChecks)
    kube = ctx.require_kube()
    try:
        svc = await kube.get("v1", "services", cfg.service, cfg.namespace)
    except SourceError as exc:
        if exc.status == 404:
            return None, f"svc/{cfg.namespace}/{cfg.service} not found"
        raise
    target = f"svc/{cfg.namespace}/{cfg.service}"
    ips = [i.get("ip") or i.get("hostname") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    if ips:
        return True, f"{target} EXTERNAL-IP {', '.join(map(str, ips))}"
    kind = (svc.get("spec") or {}).get("type")
    ipam = condition(svc, SATISFIED) or {}
    why = f" (type {kind})" if kind != "LoadBalancer" else (
        f" (LB IPAM {ipam.get('reason')}: {ipam.get('message')})" if ipam.get("status") == "False" else "")
    return False, f"{target} EXTERNAL-IP <pending>{why}"


async def _announced(ctx: HandlerContext) -> tuple[bool, str]:
    """Whether a node answers ARP for Traefik's address: L2 announcements on, a policy, a holder
    of the announcement lease."""
    cfg = check_settings(ctx, "traefik-lb", TraefikChecks)
    kube = ctx.require_kube()
    flag = (await cilium_config(ctx) or {}).get("enable-l2-announcements", "(unset)")
    if flag != "true":
        return False, f"cilium-config enable-l2-announcements={flag}"
    policies = await kube.list(CILIUM_ALPHA, "ciliuml2announcementpolicies")
    if not policies:
        return False, "no CiliumL2AnnouncementPolicy"
    holder = await l2_lease_holder(ctx, cfg.namespace, cfg.service)
    if not holder:
        return False, f"{len(policies)} L2 policy(ies) but no node holds lease {lease_name(cfg.namespace, cfg.service)}"
    return True, f"announced by {holder} (lease {lease_name(cfg.namespace, cfg.service)})"


async def _agents_down(ctx: HandlerContext) -> tuple[list[str], int]:
    cfg = check_settings(ctx, "cilium-health", CiliumChecks)
    pods, bad = await cilium_agents(ctx, cfg)
    return [f"{node}: {state}" for node, state, _ in bad], len(pods)


async def _coredns(ctx: HandlerContext) -> tuple[list[str], int]:
    """CoreDNS pods that are not Running and Ready, and how many there are."""
    kube = ctx.require_kube()
    pods = await kube.list("v1", "pods", KS, label_selector="app.kubernetes.io/name=rke2-coredns")
    down = []
    for pod in pods:
        ready, state, restarts, _ = pod_state(pod)
        if not ready:
            down.append(f"{pod['metadata']['name']} ({state}" + (f", {restarts} restarts)" if restarts else ")"))
    return down, len(pods)


@decision("Issue type?")
async def issue_type(ctx: HandlerContext) -> Answer:
    """The one kind of network fault the sources show; none or several is a person's call."""
    faults: dict[str, str] = {}
    has_ip, lb = await _external_ip(ctx)
    if has_ip is False:
        faults["No external access"] = lb
    elif has_ip:
        announced, l2 = await _announced(ctx)
        if not announced:
            faults["No external access"] = f"{lb}, not announced: {l2}"
    down, agents = await _agents_down(ctx)
    if down:
        faults["Pod-to-pod failure"] = f"{len(down)} node(s) without a Ready Cilium agent: " + "; ".join(down[:3])
    dns, total = await _coredns(ctx)
    if dns or not total:
        faults["DNS failure"] = f"CoreDNS not running: {', '.join(dns) or 'no pod'}"
    sealed, vault = await _sealed(ctx)
    certs = await _certs_not_ready(ctx)
    if sealed or certs:
        faults["TLS errors"] = f"{vault}; certificates not Ready: {', '.join(certs[:5]) or 'none'}"
    if len(faults) == 1:
        [(branch, evidence)] = faults.items()
        return Answer(branch, evidence)
    if faults:
        return Answer(None, "faults of several kinds: " + "; ".join(f"{k}: {v}" for k, v in faults.items()))
    return Answer(None, f"{lb}; Cilium agents Ready on {agents} nodes; {total} CoreDNS pods running; {vault}; "
                        "every certificate Ready")


@decision("kubectl get svc -n kube-system rke2-traefik")
async def traefik_external_ip(ctx: HandlerContext) -> Answer:
    has_ip, evidence = await _external_ip(ctx)
    if has_ip is None:
        return Answer(None, evidence)
    return Answer("EXTERNAL-IP assigned" if has_ip else "EXTERNAL-IP pending", evidence)


@decision("Is the LB IP announced?")
async def lb_ip_announced(ctx: HandlerContext) -> Answer:
    announced, evidence = await _announced(ctx)
    return Answer("Announced" if announced else "Not announced", evidence)


@decision("kubectl get pods -n kube-system -l k8s-app=cilium")
async def cilium_pods(ctx: HandlerContext) -> Answer:
    down, total = await _agents_down(ctx)
    if down:
        return Answer("Not Ready", f"{len(down)} of the nodes without a Ready Cilium agent: " + "; ".join(down[:5]))
    return Answer("All Ready", f"a Ready Cilium agent on each of {total} nodes")


@decision("kubectl get pods -n kube-system -l app.kubernetes.io/name=rke2-coredns")
async def coredns_pods(ctx: HandlerContext) -> Answer:
    down, total = await _coredns(ctx)
    if down or not total:
        return Answer("Not Running", f"{total - len(down)} of {total} CoreDNS pods Running and Ready"
                      + (f"; not: {', '.join(down)}" if down else ""))
    return Answer("Running", f"{total} of {total} CoreDNS pods Running and Ready")
