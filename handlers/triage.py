"""Evaluators for the decisions of the runbook's section-1 flowchart (``/sop triage``).

Each reads what the SOPs read (nodes' Ready condition, pods' status, Vault's seal status,
certificates' Ready condition) and answers with the branch that evidence supports, or None when
the evidence does not decide it: triage then asks a person instead of guessing.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from bot.sdk import Answer, HandlerContext, SourceError, check_settings, condition, decision, redact
from handlers.networking import TraefikChecks

CM = "cert-manager.io/v1"
CNPG = "postgresql.cnpg.io/v1"


async def _nodes(ctx: HandlerContext) -> tuple[list[str] | None, str]:
    """NotReady node names, or None when the API does not answer (and why)."""
    try:
        nodes = await ctx.require_kube().list("v1", "nodes")
    except SourceError as exc:
        if exc.status in (401, 403):  # it answered: the bot's credentials are the problem, not the API
            raise
        return None, f"the bot cannot reach the API server: {exc.reason}"
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
    return [(ns, name, state) for ns, name, state, _ in await _broken(ctx)]


async def _broken(ctx: HandlerContext) -> list[tuple[str, str, str, dict[str, Any]]]:
    pods = await ctx.require_kube().list("v1", "pods")
    out = []
    for pod in pods:
        state = _waiting(pod)
        if state not in ("Running", "Succeeded"):
            out.append((pod["metadata"].get("namespace", ""), pod["metadata"]["name"], state, pod))
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


# The team's runbook words the same decisions and branches differently from the sandbox's; each
# evaluator answers both (``Answer.also``), registered under both labels.
SCOPE_POD, SCOPE_SEVERAL, SCOPE_CLUSTER = (("One pod or service", "Single pod/service"),
                                           ("Several services", "Multiple services"),
                                           ("The cluster", "All services down"))
LAYER_WORDS = {"TLS errors": ("TLS errors on multiple services",), "No outside access": ("No external access",),
               "DNS failures": (), "Database errors": ("DB errors across services",)}


def _answer(branch: tuple[str, ...] | str | None, evidence: str) -> Answer:
    if isinstance(branch, tuple):
        return Answer(branch[0], evidence, also=branch[1:])
    return Answer(branch, evidence, also=LAYER_WORDS.get(branch or "", ()))


@decision("What is affected?")
async def what_is_affected(ctx: HandlerContext) -> Answer:
    """The quick checks of section 1, widest layer first: the cluster (nodes, API), then
    platform services (Vault, certificates), then single workloads."""
    bad_nodes, nodes = await _nodes(ctx)
    if bad_nodes is None:
        return _answer(SCOPE_CLUSTER, nodes)
    if bad_nodes:
        return _answer(SCOPE_CLUSTER, f"{nodes}; NotReady: {', '.join(bad_nodes)}")
    layers = await _layers(ctx)
    if layers:
        return _answer(SCOPE_SEVERAL, f"{nodes}; " + "; ".join(layers.values()))
    _, vault = await _sealed(ctx)
    broken = await _broken_pods(ctx)
    spaces = {ns for ns, _, _ in broken}
    if len(spaces) > 1:
        return _answer(SCOPE_SEVERAL, f"{nodes}; {vault}; pods not running in " + ", ".join(sorted(spaces)))
    if broken:
        return _answer(SCOPE_POD, f"{nodes}; {vault}; not running: "
                       + ", ".join(f"{ns}/{p} ({s})" for ns, p, s in broken))
    return Answer("Nothing visible", f"{nodes}; {vault}; every pod running; every certificate Ready")


@decision("Pod status?")
@decision("kubectl get pod status?")
async def pod_status(ctx: HandlerContext) -> Answer:
    broken = await _broken_pods(ctx)
    if not broken:
        return Answer(None, "every pod is running")
    states = Counter(s for _, _, s in broken)
    listed = ", ".join(f"{ns}/{p}: {s}" for ns, p, s in broken)
    if len(states) > 1:  # several pods, several states: which one is the problem is a person's call
        return Answer(None, listed)
    return Answer(next(iter(states)), listed)


# -- Pending: why the scheduler cannot place it (its PodScheduled message and FailedScheduling events)
PENDING_CPU_MEM = ("Insufficient CPU or memory", "Insufficient CPU/Mem")
_INSUFFICIENT = re.compile(r"\bInsufficient (cpu|memory)\b")
_NO_MATCH = re.compile(r"didn't match (Pod's node affinity/selector|node selector)|didn't match pod affinity")
_UNBOUND = re.compile(r"unbound immediate PersistentVolumeClaims|persistentvolumeclaim \"[^\"]+\" not found"
                      r"|pod has unbound")


async def _scheduling_messages(ctx: HandlerContext, ns: str, pod: dict[str, Any]) -> list[str]:
    """What `kubectl describe pod` shows under Conditions and Events for scheduling."""
    out = [c.get("message", "") for c in (pod.get("status") or {}).get("conditions") or []
           if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message")]
    events, _ = await ctx.attempt(ctx.events(ns, kind="Pod", name=pod["metadata"]["name"]), "events")
    out += [e.message for e in events or [] if e.reason == "FailedScheduling"]
    return out


async def _pending_pvcs(ctx: HandlerContext, ns: str, pod: dict[str, Any]) -> list[str]:
    claims = [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
              if v.get("persistentVolumeClaim")]
    out = []
    for claim in claims:
        try:
            pvc = await ctx.require_kube().get("v1", "persistentvolumeclaims", claim, ns)
        except SourceError as exc:
            if exc.status == 404:
                out.append(f"pvc/{ns}/{claim} does not exist")
            continue
        phase = (pvc.get("status") or {}).get("phase", "Pending")
        if phase != "Bound":
            out.append(f"pvc/{ns}/{claim} {phase}")
    return out


async def _pending_reason(ctx: HandlerContext, ns: str, pod: dict[str, Any]) -> tuple[Any, str]:
    claims = await _pending_pvcs(ctx, ns, pod)
    messages = await _scheduling_messages(ctx, ns, pod)
    said = messages[0][:300] if messages else ""
    if claims or any(_UNBOUND.search(m) for m in messages):
        return "PVC Pending", ", ".join(claims) or said
    fits = {"cpu": any(_INSUFFICIENT.search(m) for m in messages),
            "node": any(_NO_MATCH.search(m) for m in messages)}
    if fits["cpu"] and not fits["node"]:
        return PENDING_CPU_MEM, f"FailedScheduling: {said}"
    if fits["node"] and not fits["cpu"]:
        return "No matching node", f"FailedScheduling: {said}"
    return None, f"FailedScheduling: {said}" if said else "no scheduling message or event"


@decision("Why is it Pending?")
@decision("Describe pod events")
async def why_pending(ctx: HandlerContext) -> Answer:
    pending = [(ns, p, pod) for ns, p, s, pod in await _broken(ctx) if s == "Pending"]
    if not pending:
        return Answer(None, "no pod is Pending")
    reasons: dict[str, Any] = {}
    evidence: list[str] = []
    for ns, name, pod in pending[:5]:
        branch, why = await _pending_reason(ctx, ns, pod)
        reasons[f"{ns}/{name}"] = branch
        evidence.append(f"{ns}/{name}: {why}")
    kinds = set(map(str, reasons.values()))
    first = next(iter(reasons.values()))
    return _answer(first if len(kinds) == 1 else None, "; ".join(evidence))


# -- CrashLoopBackOff: the last termination, then the previous container's log
_REFUSED = re.compile(r"connection refused|ECONNREFUSED", re.I)
_DENIED = re.compile(r"permission denied|operation not permitted|EACCES|\bis forbidden\b", re.I)


def _crashing_container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if (c.get("state", {}).get("waiting") or {}).get("reason")
                 == "CrashLoopBackOff"), statuses[0] if statuses else {})


async def _crash_reason(ctx: HandlerContext, ns: str, pod: dict[str, Any]) -> tuple[str | None, str]:
    name = pod["metadata"]["name"]
    cs = _crashing_container(pod)
    last = (cs.get("lastState") or {}).get("terminated") or {}
    if last.get("reason") == "OOMKilled":
        return "OOMKilled", f"last termination OOMKilled (exit code {last.get('exitCode', '?')})"
    try:
        log = await ctx.logs(ns, name, cs.get("name"), previous=True, tail=100)
    except SourceError as exc:
        return None, f"last exit {last.get('reason', '?')} ({last.get('exitCode', '?')}); previous log: {exc.reason}"
    lines = [ln for ln in log.splitlines() if ln.strip()]
    for pattern, branch in ((_REFUSED, "Connection refused"), (_DENIED, "Permission denied")):
        hit = next((ln for ln in reversed(lines) if pattern.search(ln)), None)
        if hit:
            return branch, f"previous log: {redact(hit.strip())[:240]}"
    tail = redact(lines[-1].strip())[:240] if lines else "empty"
    return None, f"last exit {last.get('reason', '?')} ({last.get('exitCode', '?')}); previous log ends: {tail}"


@decision("Why did it crash?")
@decision("Check logs: kubectl logs -n NS POD --previous")
async def why_crashed(ctx: HandlerContext) -> Answer:
    crashing = [(ns, p, pod) for ns, p, s, pod in await _broken(ctx) if s == "CrashLoopBackOff"]
    if not crashing:
        return Answer(None, "no pod is in CrashLoopBackOff")
    reasons: dict[str, str | None] = {}
    evidence = []
    for ns, name, pod in crashing[:3]:  # a few log reads at most
        branch, why = await _crash_reason(ctx, ns, pod)
        reasons[f"{ns}/{name}"] = branch
        evidence.append(f"{ns}/{name}: {why}")
    kinds = set(reasons.values())
    return Answer(next(iter(kinds)) if len(kinds) == 1 else None, "; ".join(evidence))


@decision("Which layer?")
async def which_layer(ctx: HandlerContext) -> Answer:
    """One layer with a fault is the branch; none, or several at once, is a person's call."""
    layers = await _layers(ctx)
    if len(layers) == 1:
        [(branch, evidence)] = layers.items()
        return _answer(branch, evidence)
    if layers:
        return Answer(None, "faults in several layers: " + "; ".join(f"{k}: {v}" for k, v in layers.items()))
    _, vault = await _sealed(ctx)
    return Answer(None, f"{vault}; every certificate Ready; CoreDNS running; Traefik has its external IP; "
                        "every CNPG cluster Ready")


@decision("Vault sealed?")
@decision("Check Vault seal status")
async def vault_sealed(ctx: HandlerContext) -> Answer:
    sealed, vault = await _sealed(ctx)
    if sealed is None:
        return Answer(None, vault)
    return Answer("Sealed" if sealed else "Unsealed", vault)


@decision("Nodes Ready?")
@decision("kubectl get nodes")
async def nodes_ready(ctx: HandlerContext) -> Answer:
    bad, nodes = await _nodes(ctx)
    if bad is None:
        return Answer("API unreachable", nodes)
    if bad:
        return Answer("Nodes NotReady", f"{nodes}; NotReady: {', '.join(bad)}")
    return Answer("All nodes Ready", nodes)
