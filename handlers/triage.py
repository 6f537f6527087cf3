"""Evaluators for the decisions of the runbook's section-1 flowchart (``/sop triage``).

Each reads what the SOPs read (nodes' Ready condition, pods' status, Vault's seal status,
certificates' Ready condition) and answers with the branch that evidence supports, or None when
the evidence does not decide it: triage then asks a person instead of guessing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bot.sdk import Answer, HandlerContext, SourceError, check_settings, condition, decision
from handlers.networking import TraefikChecks

CM = "cert-manager.io/v1"
CNPG = "postgresql.cnpg.io/v1"


async def _nodes(ctx: HandlerContext) -> tuple[list[str] | None, str]:
    """NotReady node names, or None when the API does not answer (and why)."""
    try:
        nodes = await ctx.require_kube().list("v1", "nodes")
    except SourceError as exc:
        return None, exc.reason
    bad = [n["metadata"]["name"] for n in nodes if (condition(n, "Ready") or {}).get("status") != "True"]
    return bad, f"{len(nodes) - len(bad)} of {len(nodes)} nodes Ready"


def _waiting(pod: dict[str, Any]) -> str:
    """The pod's state as `kubectl get pods` shows it: a container's waiting reason, else its phase."""
    for status in pod.get("status", {}).get("containerStatuses", []) or []:
        reason = (status.get("state", {}).get("waiting") or {}).get("reason")
        if reason:
            return "ImagePullBackOff" if reason == "ErrImagePull" else reason
    return pod.get("status", {}).get("phase", "Unknown")


async def _broken_pods(ctx: HandlerContext) -> list[tuple[str, str, str]]:
    """(namespace, pod, state) of every pod that is neither running cleanly nor finished."""
    pods = await ctx.require_kube().list("v1", "pods")
    out = []
    for pod in pods:
        state = _waiting(pod)
        if state not in ("Running", "Succeeded"):
            out.append((pod["metadata"].get("namespace", ""), pod["metadata"]["name"], state))
    return out


async def _sealed(ctx: HandlerContext) -> tuple[list[str] | None, str]:
    pool = ctx.vault
    if pool is None:
        return None, "no Vault replicas configured"
    sealed, read = [], 0
    for addr in pool.addrs:
        try:
            status = await pool.seal_status(addr)
        except SourceError:
            continue
        read += 1
        if status.get("sealed"):
            sealed.append(pool.name_of(addr))
    if not read:
        return None, "no Vault replica answered"
    return sealed, f"{len(sealed)} of {read} Vault replicas sealed" + (f" ({', '.join(sealed)})" if sealed else "")


async def _certs_not_ready(ctx: HandlerContext) -> list[str]:
    certs = await ctx.require_kube().list(CM, "certificates")
    return [f"{c['metadata'].get('namespace')}/{c['metadata']['name']}" for c in certs
            if (condition(c, "Ready") or {}).get("status") != "True"]


async def _lb_pending(ctx: HandlerContext) -> str | None:
    """Why Traefik's LoadBalancer gives no outside access (traefik-lb's service), or None."""
    cfg = check_settings(ctx, "traefik-lb", TraefikChecks)
    try:
        svc = await ctx.require_kube().get("v1", "services", cfg.service, cfg.namespace)
    except SourceError as exc:
        return f"svc/{cfg.namespace}/{cfg.service}: {exc.reason}" if exc.status == 404 else None
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return None if ingress else f"svc/{cfg.namespace}/{cfg.service} EXTERNAL-IP <pending>"


async def _cnpg_not_ready(ctx: HandlerContext) -> list[str]:
    try:
        clusters = await ctx.require_kube().list(CNPG, "clusters")
    except SourceError as exc:
        if exc.status == 404:  # CNPG not installed
            return []
        raise
    return [f"{c['metadata'].get('namespace')}/{c['metadata']['name']}" for c in clusters
            if (condition(c, "Ready") or {}).get("status") != "True"]


async def _layers(ctx: HandlerContext) -> dict[str, str]:
    """Platform layers with a fault the sources show: flowchart branch → evidence."""
    out: dict[str, str] = {}
    sealed, vault = await _sealed(ctx)
    certs = await _certs_not_ready(ctx)
    if sealed or certs:
        out["TLS errors"] = f"{vault}; certificates not Ready: " + (", ".join(certs) or "none")
    broken = await _broken_pods(ctx)
    dns = [f"{p} ({s})" for ns, p, s in broken if ns == "kube-system" and "coredns" in p]
    if dns:
        out["DNS failures"] = "CoreDNS not running: " + ", ".join(dns)
    lb = await _lb_pending(ctx)
    if lb:
        out["No outside access"] = lb
    dbs = await _cnpg_not_ready(ctx)
    if dbs:
        out["Database errors"] = "CNPG clusters not Ready: " + ", ".join(dbs)
    return out


@decision("What is affected?")
async def what_is_affected(ctx: HandlerContext) -> Answer:
    """The quick checks of section 1, widest layer first: the cluster (nodes, API), then
    platform services (Vault, certificates), then single workloads."""
    bad_nodes, nodes = await _nodes(ctx)
    if bad_nodes is None:
        return Answer("The cluster", f"Kubernetes API: {nodes}")
    if bad_nodes:
        return Answer("The cluster", f"{nodes}; NotReady: {', '.join(bad_nodes)}")
    layers = await _layers(ctx)
    if layers:
        return Answer("Several services", f"{nodes}; " + "; ".join(layers.values()))
    _, vault = await _sealed(ctx)
    broken = await _broken_pods(ctx)
    spaces = {ns for ns, _, _ in broken}
    if len(spaces) > 1:
        return Answer("Several services", f"{nodes}; {vault}; pods not running in "
                      + ", ".join(sorted(spaces)))
    if broken:
        return Answer("One pod or service", f"{nodes}; {vault}; not running: "
                      + ", ".join(f"{ns}/{p} ({s})" for ns, p, s in broken))
    return Answer("Nothing visible", f"{nodes}; {vault}; every pod running; every certificate Ready")


@decision("Pod status?")
async def pod_status(ctx: HandlerContext) -> Answer:
    broken = await _broken_pods(ctx)
    if not broken:
        return Answer(None, "every pod is running")
    states = Counter(s for _, _, s in broken)
    listed = ", ".join(f"{ns}/{p}: {s}" for ns, p, s in broken)
    if len(states) > 1:  # several pods, several states: which one is the problem is a person's call
        return Answer(None, listed)
    return Answer(next(iter(states)), listed)


@decision("Which layer?")
async def which_layer(ctx: HandlerContext) -> Answer:
    """One layer with a fault is the branch; none, or several at once, is a person's call."""
    layers = await _layers(ctx)
    if len(layers) == 1:
        [(branch, evidence)] = layers.items()
        return Answer(branch, evidence)
    if layers:
        return Answer(None, "faults in several layers: " + "; ".join(f"{k}: {v}" for k, v in layers.items()))
    _, vault = await _sealed(ctx)
    return Answer(None, f"{vault}; every certificate Ready; CoreDNS running; Traefik has its external IP; "
                        "every CNPG cluster Ready")


@decision("Vault sealed?")
async def vault_sealed(ctx: HandlerContext) -> Answer:
    sealed, vault = await _sealed(ctx)
    if sealed is None:
        return Answer(None, vault)
    return Answer("Sealed" if sealed else "Unsealed", vault)


@decision("Nodes Ready?")
async def nodes_ready(ctx: HandlerContext) -> Answer:
    bad, nodes = await _nodes(ctx)
    if bad is None:
        return Answer("API unreachable", nodes)
    if bad:
        return Answer("Nodes NotReady", f"{nodes}; NotReady: {', '.join(bad)}")
    return Answer("All nodes Ready", nodes)
