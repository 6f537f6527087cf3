"""Runbook chapter 3: networking — Traefik's LoadBalancer IP (3.3), Gateways, HTTPRoutes and
IngressRoutes (3.4)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, NoParams, Severity, SourceError, Status,
                     check_settings, condition, find_condition, sop)

GATEWAY = "gateway.networking.k8s.io/v1"
TRAEFIK = "traefik.io/v1alpha1"
CILIUM_ALPHA = "cilium.io/v2alpha1"
LB_STEP = ("3.3: kubectl get svc -n kube-system rke2-traefik; is there a CiliumLoadBalancerIPPool "
           "covering the IP (kubectl get ciliumloadbalancerippool), is it exhausted; cilium-operator logs")
LB_POOL_STEP = ("3.3: create the CiliumLoadBalancerIPPool (default-pool) covering the Traefik IP "
                "(kubectl get ciliumloadbalancerippool)")
LB_EXHAUSTED_STEP = "3.3 step 2: expand the pool: kubectl edit CiliumLoadBalancerIPPool default-pool (add CIDR blocks)"
LB_WRONG_STEP = "3.3 step 1: the Traefik service's loadBalancerIP must match the pool and DNS (HelmChartConfig rke2-traefik)"
GATEWAY_STEP = ("3.4 step 1: listeners must use Traefik's entrypoint ports 8000/8443, not 80/443 "
                "(kubectl describe gateway -n {ns} {name})")
ROUTE_STEP = "3.4 step 2: check the HTTPRoute's parentRefs (Gateway name, sectionName) and the Gateway's listeners"
INGRESSROUTE_STEP = ("3.4: only the Traefik dashboard and Kasm use IngressRoutes; move others to a "
                     "Gateway + HTTPRoute (or add them to checks.ingressroute-health.expected)")


class TraefikChecks(BaseModel):
    """``checks.traefik-lb`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    service: str = "rke2-traefik"
    expected_ip: str | None = Field("203.0.113.202", description="null: any external IP will do")


class IngressRouteChecks(BaseModel):
    """``checks.ingressroute-health`` in the config: the IngressRoutes that should exist."""

    model_config = ConfigDict(extra="forbid")
    expected: list[str] = Field(default_factory=lambda: ["kube-system/traefik-dashboard", "kasm/kasm"],
                                description="namespace/name of the IngressRoutes there should be")


@sop("traefik-lb", title="Traefik LoadBalancer external IP", section="3.3", severity=Severity.P2,
     alerts=("TraefikLoadBalancerPending",),
     causes=("no CiliumLoadBalancerIPPool", "IP pool exhausted", "loadBalancerIP outside every pool"))
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
        return [Finding(status=Status.crit, target=target, summary=f"type {kind}, not LoadBalancer",
                        next_step="3.3 step 3: check the HelmChartConfig rke2-traefik (service type)")]
    if not ips:
        cause, step = await _lb_cause(ctx, svc)
        return [Finding(status=Status.crit, target=target, summary=f"EXTERNAL-IP <pending>: {cause}",
                        next_step=step)]
    if cfg.expected_ip and cfg.expected_ip not in ips:
        return [Finding(status=Status.warn, target=target,
                        summary=f"external IP {', '.join(map(str, ips))}, expected {cfg.expected_ip}",
                        next_step=LB_WRONG_STEP)]
    return [Finding(status=Status.ok, target=target, summary=f"external IP {', '.join(map(str, ips))}")]


async def _lb_cause(ctx: HandlerContext, svc: dict) -> tuple[str, str]:
    """3.3's root causes, from the IP pools and the service: no pool, pool exhausted, or the
    requested loadBalancerIP outside every pool; the service's newest warning event as evidence."""
    kube = ctx.require_kube()
    meta = svc["metadata"]
    events, failed = await ctx.attempt(ctx.events(meta.get("namespace"), kind="Service", name=meta["name"],
                                                  warnings_only=True), "events")
    said = f' (event {events[0].reason}: "{events[0].message}")' if events else ""
    try:
        pools = [p for p in await kube.list(CILIUM_ALPHA, "ciliumloadbalancerippools")
                 if not (p.get("spec") or {}).get("disabled")]
    except SourceError as exc:
        return f"no address assigned; IP pools not readable ({exc.reason}){said}", LB_STEP
    if not pools:
        return f"no CiliumLoadBalancerIPPool defined{said}", LB_POOL_STEP
    exhausted = [p["metadata"]["name"] for p in pools
                 if (find_condition((p.get("status") or {}).get("conditions"), "cilium.io/IPsExhausted") or {})
                 .get("status") == "True"]
    if exhausted and len(exhausted) == len(pools):
        return f"IP pool exhausted: {', '.join(exhausted)}{said}", LB_EXHAUSTED_STEP
    wanted = (svc.get("spec") or {}).get("loadBalancerIP")
    if wanted and not any(_in_pool(wanted, p) for p in pools):
        return (f"loadBalancerIP {wanted} is outside every pool ({', '.join(p['metadata']['name'] for p in pools)})"
                f"{said}", LB_WRONG_STEP)
    return f"no address assigned{said}" + (f"; {failed.summary}" if failed else ""), LB_STEP


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
