"""Runbook chapter 5: Vault."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bot.sdk import (Answer, Finding, HandlerContext, K8sName, LogPattern, NoParams, Severity, SOPParams,
                     SourceError, Status, SuggestedAction, check_settings, condition, decision, parse_time, sop)

UNSEAL_STEP = ("5.2 step 3: unseal each sealed replica with 3 of the 5 keys from vault-init.json "
               "(then 5.2 step 5: check cert-manager recovers)")
JOIN_STEP = ("5.2 step 2: the replica reports Initialized=false (its Raft data is gone): join it to the "
             "Raft cluster (vault operator raft join http://<leader>.vault-internal:8200), then unseal it")
LEADER_STEP = ("5.3: wait 30 s for Raft to elect a leader; if still none, check the pods reach "
               "each other on port 8201 and read the raft/leader lines of the Vault logs")
NETPOL_STEP = ("5.3 step 5: a NetworkPolicy blocks Raft: allow ingress and egress on 8201 between the Vault "
               "pods (kubectl get networkpolicy,ciliumnetworkpolicy -n vault)")
ENDPOINTS_STEP = ("5.3 step 4: the headless Service vault-internal must list every Vault pod "
                  "(publishNotReadyAddresses): check its selector and the pods' labels")
RESTART_STEP = "5.3 step 1: all replicas restarted together: wait 30 s for Raft to elect, then check again"
STEP_DOWN_STEP = ("5.3 step 6 (nuclear option): step down the stuck leader to force a new election "
                  "(vault operator step-down)")
DOWN_STEP = "5.1: check the Vault pod of the unreachable replica (kubectl get pod -n vault)"
CERT_MANAGER_STEP = ("5.2 step 5: cert-manager has not recovered although Vault is healthy: run vault-k8s-auth "
                     "(5.5) and cert-health (4.2)")
CM = "cert-manager.io/v1"
VAULT_NAMESPACE = "vault"
# How cert-manager quotes an unavailable Vault (sealed, no active node, not listening).
VAULT_DOWN_WORDS = re.compile(r"Vault is sealed|active cluster node not found|connection refused|Code: 503")
RAFT_PORT = 8201


class VaultStatusParams(SOPParams):
    replica: K8sName | None = Field(None, description="vault-N, one replica only")

    @field_validator("replica")
    @classmethod
    def _configured(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Checked against the configured replicas when the bot validates a command: a name that
        # is not one of them is the caller's mistake, answered at once, not an UNKNOWN thread.
        pool = getattr((info.context or {}).get("ctx"), "vault", None)
        if v is not None and pool is not None and pool.names and v not in pool.names:
            raise ValueError(f"no replica {v}; the replicas are {', '.join(pool.names)}")
        return v


class VaultStatusChecks(BaseModel):
    """``checks.vault-status`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field(VAULT_NAMESPACE, description="namespace of the Vault pods")
    headless_service: str = Field("vault-internal", description="the Raft peers' headless Service")
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"app.kubernetes.io/name": "vault",
                                                                "component": "server"},
                                       description="labels of the Vault server pods")
    restart_window_s: float = Field(300, gt=0, description="pods all started within this: 'restarted together'")


@sop("vault-status", title="Vault seal and Raft leader status", sections=("5.1", "5.2", "5.3"),
     severity=Severity.P1, alerts=("VaultSealed", "VaultLeaderLost", "VaultDown"),
     causes=("replica sealed after a restart", "replica not initialized (must rejoin Raft)",
             "replica unreachable", "no Raft leader elected",
             "Raft peers cannot reach each other on port 8201 (network partition)",
             "a NetworkPolicy blocks Raft port 8201", "headless Service vault-internal lacks a peer",
             "all replicas restarted simultaneously (Raft still electing)", "stuck leader",
             "cert-manager has not recovered after unseal"))
async def vault_status(ctx: HandlerContext, params: VaultStatusParams) -> list[Finding]:
    """Seal state, unseal progress, HA mode and leader of every Vault replica; when no leader:
    the NetworkPolicies, the headless Service's endpoints, restarts and the Raft log lines; the
    Raft peers; and whether cert-manager's Vault issuers recovered (runbook 5.1–5.3)."""
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault",
                        summary="no Vault replica addresses configured (vault.addrs)")]
    cfg = check_settings(ctx, "vault-status", VaultStatusChecks)
    addrs = [a for a in pool.addrs if params.replica in (None, pool.name_of(a))]
    if not addrs:
        return [Finding(status=Status.unknown, target=params.replica or "vault",
                        summary=f"no replica named {params.replica}; known: {', '.join(pool.names)}")]
    states = await asyncio.gather(*(_replica(pool, a) for a in addrs))
    findings = [f for f, _ in states]
    seen = [s for _, s in states if s is not None]

    unsealed = [s for s in seen if not s["sealed"] and not s.get("uninitialized")]
    sealed = [s for s in seen if s["sealed"]]
    uninitialized = [s for s in seen if s.get("uninitialized")]
    leaders = sorted({s["leader"] for s in unsealed if s.get("leader")})
    problems = len(addrs) - len(unsealed)
    if sealed and ctx.kube is not None:
        findings = await _sealed_since(ctx, cfg, findings, {s["name"] for s in sealed})
    if params.replica is not None:
        return findings
    if problems:
        if sealed:
            step, actions = UNSEAL_STEP, [SuggestedAction(action="vault-unseal")]
        elif uninitialized:
            step, actions = JOIN_STEP, []
        else:
            step, actions = DOWN_STEP, []
        findings.append(Finding(status=Status.crit, target="cluster",
                                summary=f"{len(unsealed)} of {len(addrs)} replicas unsealed and reachable"
                                        + (f"; not initialized: {', '.join(s['name'] for s in uninitialized)}"
                                           if uninitialized else ""),
                                next_step=step, actions=actions))
    if unsealed and not leaders and len(unsealed) <= len(addrs) // 2:
        # Not 5.3: Raft cannot elect without a majority; the sealed/unreachable ones are the cause.
        findings.append(Finding(status=Status.crit, target="raft",
                                summary=f"no Raft leader: {len(unsealed)} of {len(addrs)} replicas can vote, no quorum "
                                        "until the others are back", next_step=UNSEAL_STEP if sealed else DOWN_STEP))
    elif unsealed and not leaders:
        # 5.3 is P1: no leader means no Vault (every request fails with "active node not found").
        findings.append(Finding(status=Status.crit, target="raft",
                                summary="no Raft leader: every unsealed replica is standby "
                                        f"({', '.join(s['name'] for s in unsealed)})", next_step=LEADER_STEP))
        findings.extend(await _no_leader_evidence(ctx, cfg, [pool.name_of(a) for a in addrs]))
    elif leaders:
        findings.extend(_leader_agreement(unsealed, leaders))
    if pool.has_token and leaders:
        # Only the active node answers raft/configuration; standbys forward or fail.
        leader_addr = next(a for a in addrs if pool.name_of(a) == leaders[0]) \
            if leaders[0] in pool.names else addrs[0]
        findings.append(await _raft_peers(pool, [leader_addr]))
    if ctx.kube is not None:
        unreachable = [pool.name_of(a) for a, (_, st) in zip(addrs, states) if st is None]
        if unreachable:
            findings.extend(await _down_pods(ctx, cfg, unreachable))
        vault_ok = not problems and bool(leaders)
        findings.extend(await _cert_manager_recovery(ctx, vault_ok))
    return findings


async def _sealed_since(ctx: HandlerContext, cfg: VaultStatusChecks, findings: list[Finding],
                        names: set[str]) -> list[Finding]:
    """5.1's root cause is a restart: each sealed replica's container start and restart count
    say whether that is what happened (a long-running container was sealed some other way)."""
    pods, failed = await ctx.attempt(ctx.require_kube().list("v1", "pods", cfg.namespace), f"pods/{cfg.namespace}")
    if failed is not None:
        return findings
    now = datetime.now(timezone.utc)
    facts: dict[str, str] = {}
    for pod in pods or []:
        name = pod["metadata"]["name"]
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if name not in names or not statuses:
            continue
        cs = statuses[0]
        started = parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        if started is None:
            continue
        age = _age((now - started).total_seconds())
        if (now - started).total_seconds() < 86400:
            facts[name] = f"sealed after a restart: container started {age} ago (restart {cs.get('restartCount', 0)})"
        else:
            facts[name] = f"container running for {age}, not restarted: sealed some other way (vault operator seal?)"
    return [f.model_copy(update={"summary": f"{f.summary}; {facts[f.target]}"})
            if f.target in facts and f.summary.startswith("sealed") else f for f in findings]


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


async def _down_pods(ctx: HandlerContext, cfg: VaultStatusChecks, names: list[str]) -> list[Finding]:
    """5.1's `kubectl get pod -n vault` for a replica that does not answer: the pod's phase, a
    waiting container's reason and message, restarts and last exit."""
    out: list[Finding] = []
    for name in names:
        target = f"pod/{cfg.namespace}/{name}"
        try:
            pod = await ctx.require_kube().get("v1", "pods", name, cfg.namespace)
        except SourceError as exc:
            out.append(Finding(status=Status.crit if exc.status == 404 else Status.unknown, target=target,
                               summary="pod missing" if exc.status == 404 else exc.reason, next_step=DOWN_STEP))
            continue
        status = pod.get("status") or {}
        parts = [str(status.get("phase", "?"))]
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                parts.append(f"{cs.get('name')} {waiting.get('reason', 'waiting')}: {waiting.get('message', '')}".rstrip(": "))
            last = (cs.get("lastState") or {}).get("terminated")
            if cs.get("restartCount"):
                parts.append(f"{cs['restartCount']} restarts")
            if last:
                parts.append(f"last exit {last.get('exitCode')} {last.get('reason', '')}".rstrip())
        out.append(Finding(status=Status.crit, target=target, summary=", ".join(parts), next_step=DOWN_STEP))
    return out


async def cert_manager_summary(ctx: HandlerContext) -> str:
    """One line for an action's outcome after Vault came back (5.2 step 5)."""
    if ctx.kube is None:
        return ""
    found = await _cert_manager_recovery(ctx, True)
    bad = [f for f in found if f.status is not Status.ok]
    if not bad:
        return "; ".join(f"cert-manager: {f.summary}" for f in found)
    return ("5.2 step 5: " + "; ".join(f"{f.target} {f.summary}" for f in bad)
            + " (cert-manager retries within about 30 s: run /sop vault-status again)")


def _leader_agreement(unsealed: list[dict[str, Any]], leaders: list[str]) -> list[Finding]:
    """One leader that every unsealed replica follows; a standby following nobody (or another
    node) while one is active means a stuck leader (5.3 step 6)."""
    active = [s["name"] for s in unsealed if s.get("active")]
    lost = [s["name"] for s in unsealed if not s.get("active") and s.get("leader") not in active]
    if active and lost:
        return [Finding(status=Status.crit, target="raft",
                        summary=f"stuck leader: {active[0]} is active but {', '.join(lost)} follow(s) no leader "
                                "(standby, no leader address)", next_step=STEP_DOWN_STEP,
                        actions=[SuggestedAction(action="vault-step-down")])]
    return [Finding(status=Status.ok, target="raft", summary=f"leader {leaders[0]}")]


# 5.3: "read the raft/leader lines of the Vault logs"; the first match names the cause.
RAFT_PATTERNS = (
    LogPattern(regex=r"storage\.raft: failed to make requestVote RPC.*:8201.*(i/o timeout|connection refused|no route)",
               cause="Raft peers cannot reach each other on port 8201"),
    LogPattern(regex=r"storage\.raft: .*(Election timeout|heartbeat timeout)", cause="Raft elections keep timing out"),
)


async def _no_leader_evidence(ctx: HandlerContext, cfg: VaultStatusChecks, pods: list[str]) -> list[Finding]:
    """What 5.3's steps 3–5 look at, read only when no leader is elected: NetworkPolicies that
    could block 8201, the headless Service's endpoints, whether the pods restarted together, and
    the Raft log lines. A source that cannot be read is an unknown finding, not a failed SOP."""
    if ctx.kube is None:
        return []
    results = await asyncio.gather(_network_policies(ctx, cfg), _headless_endpoints(ctx, cfg, pods),
                                   _restarted_together(ctx, cfg, pods), _raft_log_evidence(ctx, cfg, pods))
    return [f for group in results for f in group]


async def _raft_log_evidence(ctx: HandlerContext, cfg: VaultStatusChecks, pods: list[str]) -> list[Finding]:
    ns = cfg.namespace
    for pod in pods:
        hits, failed = await ctx.attempt(ctx.log_hits(ns, pod, RAFT_PATTERNS, tail=200, quote=1),
                                         f"pod/{ns}/{pod} log")
        if failed is not None:
            return [failed]
        if hits:
            return [Finding(status=Status.warn, target=f"pod/{ns}/{pod} log",
                            summary=f"{hits[0].pattern.cause}: {hits[0].lines[-1]}", next_step=LEADER_STEP)]
    return []


def _match_labels(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels/matchExpressions; Cilium's "k8s:" key prefix dropped);
    an empty selector matches every pod."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k.removeprefix("k8s:")) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = str(expr.get("key", "")).removeprefix("k8s:"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _k8s_rule_allows(rule: dict[str, Any], peers_key: str, vault_labels: dict[str, str]) -> bool:
    """A networking.k8s.io ingress/egress rule lets a Vault pod's 8201 traffic through."""
    ports = rule.get("ports") or []
    port_ok = not ports or any(p.get("port") in (None, RAFT_PORT, str(RAFT_PORT), "https-internal")
                               or (isinstance(p.get("port"), int) and p.get("endPort")
                                   and p["port"] <= RAFT_PORT <= p["endPort"]) for p in ports)
    peers = rule.get(peers_key) or []
    peer_ok = not peers or any("ipBlock" not in peer and _match_labels(peer.get("podSelector"), vault_labels)
                               for peer in peers)
    return port_ok and peer_ok


def _cilium_rule_allows(rule: dict[str, Any], peers_key: str, vault_labels: dict[str, str]) -> bool:
    to_ports = rule.get("toPorts") or []
    port_ok = not to_ports or any(str(p.get("port")) in ("0", str(RAFT_PORT)) for tp in to_ports
                                  for p in tp.get("ports") or [])
    peers = rule.get(peers_key)
    peer_ok = peers is None or any(_match_labels(e, vault_labels) for e in peers)
    return port_ok and peer_ok


async def _network_policies(ctx: HandlerContext, cfg: VaultStatusChecks) -> list[Finding]:
    """5.3 step 5 (kubectl get networkpolicy -n vault), by reading the policies: once any policy
    selects the Vault pods for a direction, traffic there is denied unless a rule allows 8201
    between Vault pods. Cilium's own policies (cilium.io/v2) are read the same way."""
    kube = ctx.require_kube()
    ns = cfg.namespace
    k8s, failed = await ctx.attempt(kube.list("networking.k8s.io/v1", "networkpolicies", ns),
                                    f"networkpolicies/{ns}")
    if failed is not None:
        return [failed]
    try:
        cilium = await kube.list("cilium.io/v2", "ciliumnetworkpolicies", ns)
    except SourceError as exc:
        cilium = [] if exc.status == 404 else None  # Cilium's CRD absent: none to read
        if cilium is None:
            return [Finding(status=Status.unknown, target=f"ciliumnetworkpolicies/{ns}", summary=exc.reason)]
    labels = cfg.pod_labels
    blocking: list[str] = []
    for direction, key, peers in (("ingress", "ingress", "from"), ("egress", "egress", "to")):
        selecting = [p for p in k8s or [] if _match_labels((p.get("spec") or {}).get("podSelector"), labels)
                     and direction.capitalize() in ((p.get("spec") or {}).get("policyTypes")
                                                    or (["Ingress", "Egress"] if (p.get("spec") or {}).get("egress")
                                                        else ["Ingress"]))]
        if selecting and not any(_k8s_rule_allows(r, peers, labels) for p in selecting
                                 for r in (p.get("spec") or {}).get(key) or []):
            blocking += [f"NetworkPolicy {ns}/{p['metadata']['name']} ({direction})" for p in selecting]
        c_peers = "fromEndpoints" if direction == "ingress" else "toEndpoints"
        c_selecting = [p for p in cilium or [] if _match_labels((p.get("spec") or {}).get("endpointSelector"), labels)
                       and (p.get("spec") or {}).get(key) is not None]
        if c_selecting and not any(_cilium_rule_allows(r, c_peers, labels) for p in c_selecting
                                   for r in (p.get("spec") or {}).get(key) or []):
            blocking += [f"CiliumNetworkPolicy {ns}/{p['metadata']['name']} ({direction})" for p in c_selecting]
    names = sorted({*(p["metadata"]["name"] for p in k8s or []), *(p["metadata"]["name"] for p in cilium or [])})
    if blocking:
        return [Finding(status=Status.crit, target=f"networkpolicy/{ns}",
                        summary=f"{', '.join(blocking)} blocks Raft port {RAFT_PORT} between the Vault pods "
                                "(network partition)", next_step=NETPOL_STEP)]
    return [Finding(status=Status.ok, target=f"networkpolicy/{ns}",
                    summary=f"no policy blocks {RAFT_PORT}" + (f" ({', '.join(names)} read)" if names else
                                                              " (no NetworkPolicy in the namespace)"))]


async def _headless_endpoints(ctx: HandlerContext, cfg: VaultStatusChecks, pods: list[str]) -> list[Finding]:
    """5.3 step 4 (nslookup vault-internal): the names peers dial are the headless Service's
    endpoints; a pod missing there does not resolve as <pod>.vault-internal."""
    ns, svc = cfg.namespace, cfg.headless_service
    try:
        ep = await ctx.require_kube().get("v1", "endpoints", svc, ns)
    except SourceError as exc:
        if exc.status == 404:
            return [Finding(status=Status.crit, target=f"endpoints/{ns}/{svc}",
                            summary=f"headless Service {svc} has no Endpoints: no peer name resolves",
                            next_step=ENDPOINTS_STEP)]
        return [Finding(status=Status.unknown, target=f"endpoints/{ns}/{svc}", summary=exc.reason)]
    listed = {a.get("hostname") or ((a.get("targetRef") or {}).get("name")) for sub in ep.get("subsets") or []
              for a in [*(sub.get("addresses") or []), *(sub.get("notReadyAddresses") or [])]}
    missing = [p for p in pods if p not in listed]
    if missing:
        return [Finding(status=Status.crit, target=f"endpoints/{ns}/{svc}",
                        summary=f"headless Service {svc} lacks {', '.join(missing)}: "
                                f"{missing[0]}.{svc} does not resolve for its peers", next_step=ENDPOINTS_STEP)]
    return [Finding(status=Status.ok, target=f"endpoints/{ns}/{svc}", summary=f"lists {', '.join(pods)}")]


async def _restarted_together(ctx: HandlerContext, cfg: VaultStatusChecks, pods: list[str]) -> list[Finding]:
    """5.3's second root cause: all pods restarted at once, so Raft needs time to elect."""
    ns = cfg.namespace
    objs, failed = await ctx.attempt(ctx.require_kube().list("v1", "pods", ns), f"pods/{ns}")
    if failed is not None:
        return [failed]
    starts = []
    for pod in objs or []:
        if pod["metadata"]["name"] not in pods:
            continue
        running = [((cs.get("state") or {}).get("running") or {}).get("startedAt")
                   for cs in (pod.get("status") or {}).get("containerStatuses") or []]
        stamp = parse_time(next((r for r in running if r), None))
        if stamp is not None:
            starts.append(stamp)
    if len(starts) < len(pods) or not starts:
        return []
    now = datetime.now(timezone.utc)
    newest_age = (now - min(starts)).total_seconds()
    if newest_age <= cfg.restart_window_s:
        spread = (max(starts) - min(starts)).total_seconds()
        return [Finding(status=Status.warn, target=f"pods/{ns}",
                        summary=f"all replicas restarted simultaneously (within {spread:.0f} s, "
                                f"{newest_age:.0f} s ago): Raft may still be electing", next_step=RESTART_STEP)]
    return []


async def _replica(pool: Any, addr: str) -> tuple[Finding, dict[str, Any] | None]:
    name = pool.name_of(addr)
    try:
        seal = await pool.seal_status(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name, summary=f"unreachable: {exc.reason}",
                       next_step=DOWN_STEP), None
    version = seal.get("version", "?")
    if not seal.get("initialized", False):
        # Its own cause (5.2 step 2), not a seal problem: unseal keys do not apply until it rejoins.
        return Finding(status=Status.crit, target=name,
                       summary=f"not initialized (Initialized=false, v{version}): must re-join Raft, "
                               "unseal does not apply", next_step=JOIN_STEP,
                       actions=[SuggestedAction(action="vault-raft-join", params={"replica": name})]), \
            {"name": name, "sealed": False, "uninitialized": True}
    if seal.get("sealed", True):
        progress = f"{seal.get('progress', 0)}/{seal.get('t', '?')}"
        return Finding(status=Status.crit, target=name,
                       summary=f"sealed, unseal progress {progress} (v{version})",
                       next_step=UNSEAL_STEP), {"name": name, "sealed": True}
    state: dict[str, Any] = {"name": name, "sealed": False}
    try:
        leader = await pool.leader(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name,
                       summary=f"unsealed, leader status unknown: {exc.reason}"), state
    if leader.get("is_self"):
        mode = "HA mode active (leader)"
        state["leader"] = name
        state["active"] = True
    else:
        address = leader.get("leader_address") or ""
        if address:
            state["leader"] = _leader_name(pool, address)
            mode = f"HA mode standby, leader {state['leader']}"
        else:
            mode = "HA mode standby, no leader"
    return Finding(status=Status.ok, target=name, summary=f"unsealed, {mode} (v{version})"), state


def _leader_name(pool: Any, address: str) -> str:
    for addr, name in zip(pool.addrs, pool.names):
        if address.rstrip("/") == addr.rstrip("/") or name in address:
            return name
    return address


async def _raft_peers(pool: Any, addrs: list[str]) -> Finding:
    """5.2 step 4 (raft list-peers): every configured replica is a voter."""
    try:
        data = await pool.raft_configuration(addrs[0])
    except SourceError as exc:
        return Finding(status=Status.unknown, target="raft peers", summary=exc.reason)
    servers = (((data or {}).get("data") or {}).get("config") or {}).get("servers") or []
    voters = [s for s in servers if s.get("voter")]
    desc = ", ".join(f"{s.get('node_id')}{' (leader)' if s.get('leader') else ''}" for s in servers)
    missing = [n for n in pool.names if n not in {s.get("node_id") for s in servers}]
    status = Status.ok if len(voters) >= len(pool.addrs) else Status.warn
    summary = f"{len(voters)} voters of {len(servers)} peers: {desc}" + (f"; missing: {', '.join(missing)}"
                                                                          if missing else "")
    # Autopilot's view: which peers the leader hears from, and how many failures Raft tolerates.
    try:
        pilot = await pool.autopilot_state(addrs[0])
    except SourceError:
        pilot = {}  # older Vault or a token without read on it: the peer list stands alone
    unhealthy = sorted(f"{name} (last contact {srv.get('last_contact', '?')})"
                       for name, srv in (pilot.get("servers") or {}).items() if not srv.get("healthy"))
    if pilot:
        summary += f"; failure tolerance {pilot.get('failure_tolerance', '?')}"
    if unhealthy:
        status = Status.warn
        summary += f"; autopilot: unhealthy {', '.join(unhealthy)}"
    return Finding(status=status, target="raft peers", summary=summary,
                   next_step="" if status is Status.ok else (JOIN_STEP if missing else UNSEAL_STEP))


async def _cert_manager_recovery(ctx: HandlerContext, vault_ok: bool) -> list[Finding]:
    """5.1 step 4 / 5.2 step 5: cert-manager's Vault ClusterIssuers Ready and no
    CertificateRequest of theirs left pending. While Vault itself is down they are expected to
    fail; once it is healthy, a failing issuer is the next problem (5.5, 4.2)."""
    kube = ctx.require_kube()
    try:
        issuers, requests = await asyncio.gather(kube.list(CM, "clusterissuers"), kube.list(CM, "certificaterequests"))
    except SourceError as exc:
        if exc.status == 404:  # cert-manager not installed
            return []
        return [Finding(status=Status.unknown, target="cert-manager", summary=exc.reason)]
    # Only failures that quote Vault being unavailable belong here: others (a role that refuses
    # a name, a login denied) are cert-health's and vault-k8s-auth's causes, not 5.2 step 5.
    def down(message: str) -> bool:
        return bool(VAULT_DOWN_WORDS.search(message or ""))

    vault_issuers = [i for i in issuers if (i.get("spec") or {}).get("vault")]
    if not vault_issuers:
        return []
    names = {i["metadata"]["name"] for i in vault_issuers}
    out: list[Finding] = []
    status = Status.warn
    step = CERT_MANAGER_STEP if vault_ok else UNSEAL_STEP
    for issuer in vault_issuers:
        cond = condition(issuer, "Ready") or {}
        if cond.get("status") != "True" and down(str(cond.get("message") or "")):
            why = str(cond.get("message") or cond.get("reason") or "no Ready condition").splitlines()[0][:200]
            out.append(Finding(status=status, target=f"clusterissuer/{issuer['metadata']['name']}",
                               summary=("cert-manager has not recovered: " if vault_ok else "waits for Vault: ")
                                       + f"Ready={cond.get('status', 'missing')}: {why}", next_step=step))
    pending = [r for r in requests if ((r.get("spec") or {}).get("issuerRef") or {}).get("name") in names
               and (condition(r, "Ready") or {}).get("reason") == "Pending"
               and down(str((condition(r, "Ready") or {}).get("message") or ""))]
    if pending:
        first = pending[0]
        msg = str((condition(first, "Ready") or {}).get("message", "")).splitlines()[0][:200]
        out.append(Finding(status=status, target="certificaterequests",
                           summary=f"{len(pending)} CertificateRequest(s) pending on {', '.join(sorted(names))}, "
                                   f"e.g. {first['metadata'].get('namespace')}/{first['metadata']['name']}: {msg}",
                           next_step=step))
    if not out:
        other = sorted(i["metadata"]["name"] for i in vault_issuers
                       if (condition(i, "Ready") or {}).get("status") != "True")
        out.append(Finding(status=Status.ok, target="cert-manager",
                           summary=(f"ClusterIssuer(s) {', '.join(sorted(names))} Ready; no CertificateRequest "
                                    "pending on Vault" if not other else
                                    f"ClusterIssuer(s) {', '.join(other)} not Ready for a reason other than Vault's "
                                    "availability (cert-health, vault-k8s-auth name it)")))
    return out


# -- 5.4 PKI engine, 4.3 intermediate CA ------------------------------------------------------
PKI_MOUNT_STEP = ("5.4 step 1: re-enable the engine (vault secrets enable -path=pki_int pki), then "
                  "re-import the intermediate (5.4 step 2) and recreate the signing role (5.4 step 3)")
PKI_IMPORT_STEP = "5.4 step 2: re-import the intermediate CA (needs the Root CA key; deploy-cluster.sh phase 2)"
PKI_ROLE_STEP = ("5.4 step 3: recreate the signing role (vault write pki_int/roles/<DOMAIN_DOT> "
                 "allowed_domains=<DOMAIN> allow_subdomains=true max_ttl=720h)")
INTERMEDIATE_STEP = ("4.3: rotate the intermediate (11.7 procedure: new CSR in Vault, sign offline with the "
                     "Root CA, set-signed), then delete the TLS secrets so certificates reissue")


class PkiChecks(BaseModel):
    """``checks.vault-pki`` in the config: the mounts to check, and the signing role as 5.4 step 3
    writes it (what ``vault-pki-role`` recreates)."""

    model_config = ConfigDict(extra="forbid")
    mounts: list[str] = Field(default_factory=lambda: ["pki_int"], description="PKI mounts cert-manager signs with")
    # The runbook's prevention: "Set calendar reminder at year 9" of a 10-year intermediate.
    warn_days: float = Field(365, gt=0, description="a CA closer than this to notAfter: warn")
    domain: str = Field("example.com", description="<DOMAIN>: the role's allowed_domains")
    role: str = Field("", description="<DOMAIN_DOT> role name; empty: the domain with '.' as '-dot-'")
    role_mount: str = Field("pki_int", description="the mount the signing role lives in")
    allow_subdomains: bool = True
    max_ttl: str = Field("720h", description="the role's max_ttl")

    @property
    def role_name(self) -> str:
        return self.role or self.domain.replace(".", "-dot-")

    def role_body(self) -> dict[str, Any]:
        """5.4 step 3's `vault write pki_int/roles/<DOMAIN_DOT> …`, field by field."""
        return {"allowed_domains": [self.domain], "allow_subdomains": self.allow_subdomains,
                "max_ttl": self.max_ttl, "generate_lease": True, "require_cn": False}


@sop("vault-pki", title="Vault PKI: engine mounted, CA chain valid, signing role allows the domain",
     sections=("5.4", "4.3"),
     severity=Severity.P1, causes=("PKI engine not mounted", "intermediate CA not imported", "intermediate CA expired",
                                   "no signing role", "signing role does not allow the configured domain"))
async def vault_pki(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each PKI mount cert-manager uses is mounted, has its intermediate CA imported and unexpired
    (notAfter of every CA in ``ca_chain``) and at least one signing role (runbook 5.4, 4.3)."""
    cfg = check_settings(ctx, "vault-pki", PkiChecks)
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault replica addresses configured")]
    mounts: dict[str, str] | None = None
    if pool.has_token:
        try:
            mounts = await pool.secret_mounts()
        except SourceError as exc:
            return [Finding(status=Status.unknown, target="vault secrets engines", summary=exc.reason)]
    findings = await asyncio.gather(*(_pki_mount(pool, m.strip("/"), mounts, cfg) for m in cfg.mounts))
    return [f for group in findings for f in group]


async def _pki_mount(pool: Any, mount: str, mounts: dict[str, str] | None, cfg: PkiChecks) -> list[Finding]:
    target = f"pki/{mount}"
    if mounts is not None and mounts.get(mount + "/") != "pki":
        return [Finding(status=Status.crit, target=target,
                        summary=f"PKI engine {mount} is not mounted (disabled or deleted); "
                                f"mounted: {', '.join(sorted(p.rstrip('/') for p in mounts)) or 'none'}",
                        next_step=PKI_MOUNT_STEP)]
    try:
        ca, chain, roles = await asyncio.gather(pool.pki_ca(mount), pool.pki_ca_chain(mount), pool.pki_roles(mount))
    except SourceError as exc:
        if exc.status == 404:
            return [Finding(status=Status.crit, target=target, summary=f"PKI engine {mount} not responding: {exc.reason}",
                            next_step=PKI_MOUNT_STEP)]
        if "no default issuer" in exc.reason:  # Vault ≥ 1.11: the mount has no CA at all
            return [Finding(status=Status.crit, target=target,
                            summary=f"intermediate CA not imported in {mount}: reading its CA answers "
                                    f"{exc.reason}", next_step=PKI_IMPORT_STEP)]
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    findings: list[Finding] = []
    if not ca.strip():
        findings.append(Finding(status=Status.crit, target=target,
                                summary=f"no CA certificate in {mount}: intermediate CA not imported",
                                next_step=PKI_IMPORT_STEP))
    findings.extend(_chain_findings(target, chain or ca, cfg))
    recreate = [SuggestedAction(action="vault-pki-role")]
    if not roles:
        findings.append(Finding(status=Status.crit, target=f"{target} roles",
                                summary=f"no signing role in {mount}: cert-manager cannot sign",
                                next_step=PKI_ROLE_STEP, actions=recreate if mount == cfg.role_mount else []))
    elif mount == cfg.role_mount:
        findings.extend(await _pki_role(pool, mount, roles, cfg, recreate))
    if not any(f.status is not Status.ok for f in findings):
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"mounted, CA chain valid, role(s): {', '.join(roles)}"))
    return findings


async def _pki_role(pool: Any, mount: str, roles: list[str], cfg: PkiChecks,
                    recreate: list[SuggestedAction]) -> list[Finding]:
    """5.4 diagnostic step 3 (vault read pki_int/roles/<DOMAIN_DOT>): the configured role exists
    and allows the configured domain and its subdomains."""
    name, target = cfg.role_name, f"pki/{mount}/roles/{cfg.role_name}"
    if name not in roles:
        return [Finding(status=Status.crit, target=target,
                        summary=f"no signing role {name} in {mount} (roles: {', '.join(roles)}): requests for "
                                f"*.{cfg.domain} are refused", next_step=PKI_ROLE_STEP, actions=recreate)]
    try:
        role = await pool.read_data(f"{mount}/roles/{name}") or {}
    except SourceError as exc:
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    allowed = [str(d) for d in role.get("allowed_domains") or []]
    problems = []
    if cfg.domain not in allowed and not role.get("allow_any_name"):
        problems.append(f"allowed_domains {allowed} lacks {cfg.domain}")
    if cfg.allow_subdomains and not role.get("allow_subdomains") and not role.get("allow_any_name"):
        problems.append("allow_subdomains=false")
    if problems:
        return [Finding(status=Status.crit, target=target,
                        summary=f"signing role {name} does not allow the configured domain: {'; '.join(problems)}",
                        next_step=PKI_ROLE_STEP, actions=recreate)]
    return []


def _chain_findings(target: str, pem: str, cfg: PkiChecks) -> list[Finding]:
    """notAfter of each CA in the chain: expired → crit (4.3), inside warn_days → warn."""
    # cryptography's x509 costs ~8 MB of RSS: loaded when a chain is checked, not by the idle bot.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certs = x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []
    except ValueError:
        return [Finding(status=Status.unknown, target=target, summary="CA chain is not valid PEM")]
    now = datetime.now(timezone.utc)
    out: list[Finding] = []
    for cert in certs:
        cn = ", ".join(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) or cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        when = f"notAfter {cert.not_valid_after_utc:%Y-%m-%d}"
        if days < 0:
            out.append(Finding(status=Status.crit, target=f"{target} CA",
                               summary=f"intermediate CA expired: {cn!r} expired {-days:.0f} days ago ({when}); "
                                       "new certificate requests fail", next_step=INTERMEDIATE_STEP))
        elif days < cfg.warn_days:
            out.append(Finding(status=Status.warn, target=f"{target} CA",
                               summary=f"{cn!r} expires in {days:.0f} days ({when})", next_step=INTERMEDIATE_STEP))
    return out


# -- 5.5 Kubernetes auth (and 4.2's "Kubernetes auth not configured in Vault") ----------------
K8S_AUTH_ENABLE_STEP = "5.5 step 1: enable and configure the auth method (vault auth enable kubernetes; vault write auth/kubernetes/config …)"
K8S_AUTH_CONFIG_STEP = ("5.5 step 1: refresh the Kubernetes auth config (kubernetes_host = the kubernetes "
                        "service's ClusterIP, kubernetes_ca_cert = the cluster CA, issuer)")
K8S_AUTH_ROLE_STEP = ("5.5 step 2: recreate the role (vault write auth/kubernetes/role/{role} "
                      "bound_service_account_names={sa} bound_service_account_namespaces={ns} policies=cert-manager)")
K8S_SA_STEP = "4.2: the ServiceAccount {sa} is missing in {ns}: re-apply cert-manager's Vault issuer manifests"
K8S_LOGIN_STEP = ("5.5: the login fails although config and role match the cluster: check the token reviewer "
                  "(token_reviewer_jwt expired? the runbook's 1-year SA token) and Vault's logs")
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class K8sAuthChecks(BaseModel):
    """``checks.vault-k8s-auth`` in the config: the login cert-manager's ClusterIssuer uses, and
    the role the ``vault-k8s-auth-role`` action recreates."""

    model_config = ConfigDict(extra="forbid")
    mount: str = "kubernetes"
    role: str = "cert-manager-issuer"
    service_account: str = "vault-issuer"
    namespace: str = "cert-manager"
    policies: list[str] = Field(default_factory=lambda: ["cert-manager"], description="the role's policies")
    ttl: str = Field("1h", description="the role's token ttl")
    ca_namespace: str = Field(VAULT_NAMESPACE, description="namespace whose kube-root-ca.crt is the cluster CA")
    login_test: bool = Field(True, description="log in with a fresh 10-minute TokenRequest token of the "
                                               "ServiceAccount (chart: vaultLoginTest)")


class ClusterAuthFacts(BaseModel):
    """What Vault's Kubernetes auth config should say, read from the cluster (5.5 step 1)."""

    host: str | None = None
    ca_pem: str | None = None
    problems: list[str] = Field(default_factory=list)


async def cluster_auth_facts(kube: Any, cfg: K8sAuthChecks) -> ClusterAuthFacts:
    """The kubernetes Service's ClusterIP (as https://IP:443) and the kube-root-ca.crt CA,
    exactly as the runbook's refresh commands take them."""
    facts = ClusterAuthFacts()
    try:
        svc = await kube.get("v1", "services", "kubernetes", "default")
        ip = (svc.get("spec") or {}).get("clusterIP")
        facts.host = f"https://{ip}:443" if ip else None
    except SourceError as exc:
        facts.problems.append(f"service default/kubernetes: {exc.reason}")
    try:
        cm = await kube.get("v1", "configmaps", "kube-root-ca.crt", cfg.ca_namespace)
        facts.ca_pem = str((cm.get("data") or {}).get("ca.crt") or "") or None
    except SourceError as exc:
        facts.problems.append(f"configmap {cfg.ca_namespace}/kube-root-ca.crt: {exc.reason}")
    return facts


def _host(value: str) -> str:
    value = value.rstrip("/")
    return value if value.count(":") >= 2 else value + ":443"


def ca_label(pem: str) -> str:
    """A CA as people compare it: subject CN and the start of its SHA-256 fingerprint."""
    from cryptography import x509  # at first use: see _chain_findings
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return "not a PEM certificate"
    from cryptography.hazmat.primitives import hashes

    cn = ", ".join(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) or "?"
    return f"{cn} (sha256 {cert.fingerprint(hashes.SHA256()).hex()[:16]})"


def _jwt_issuer(jwt: str) -> str | None:
    """The ``iss`` claim of a token the API server just issued (its ServiceAccount issuer)."""
    import base64
    import json

    try:
        payload = jwt.split(".")[1]
        return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("iss") or "") or None
    except (IndexError, ValueError):
        return None


@sop("vault-k8s-auth", title="Vault Kubernetes auth for cert-manager: method, config vs cluster, role, login",
     sections=("5.5", "4.2"), severity=Severity.P2,
     causes=("Kubernetes auth not configured in Vault", "stale API server URL in the auth config",
             "stale CA certificate in the auth config", "issuer mismatch", "role missing or binding mismatch",
             "ServiceAccount vault-issuer missing", "login refused (token reviewer or ServiceAccount token)"))
async def vault_k8s_auth(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The Kubernetes auth method is enabled; its config's host, CA and issuer are the cluster's
    (the kubernetes Service, kube-root-ca.crt, the issuer of a token the cluster issues);
    cert-manager's role binds its ServiceAccount; and a real login with a fresh TokenRequest token
    succeeds (runbook 5.5, 4.2). Neither token is kept or shown."""
    cfg = check_settings(ctx, "vault-k8s-auth", K8sAuthChecks)
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault replica addresses configured")]
    if not pool.has_token:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault token configured (vault.token): "
                                                                       "auth config and roles need one")]
    mount = cfg.mount.strip("/")
    target = f"auth/{mount}"
    try:
        methods = await pool.auth_mounts()
        if methods.get(mount + "/") != "kubernetes":
            return [Finding(status=Status.crit, target=target,
                            summary=f"Kubernetes auth not configured in Vault: no kubernetes auth method at {mount}/",
                            next_step=K8S_AUTH_ENABLE_STEP)]
        config, role = await asyncio.gather(pool.read_data(f"auth/{mount}/config"),
                                            pool.read_data(f"auth/{mount}/role/{cfg.role}"))
    except SourceError as exc:
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    findings: list[Finding] = []
    config = config or {}
    refresh = [SuggestedAction(action="vault-k8s-auth-config")]
    if not config.get("kubernetes_host"):
        findings.append(Finding(status=Status.crit, target=f"{target}/config",
                                summary="Kubernetes auth has no kubernetes_host configured",
                                next_step=K8S_AUTH_CONFIG_STEP, actions=refresh))
    jwt_issuer: str | None = None
    login: Finding | None = None
    sa_ok = True
    if ctx.kube is not None:
        facts = await cluster_auth_facts(ctx.kube, cfg)
        findings += [Finding(status=Status.unknown, target="cluster", summary=p) for p in facts.problems]
        host = str(config.get("kubernetes_host") or "")
        if host and facts.host and _host(host) != _host(facts.host):
            findings.append(Finding(status=Status.crit, target=f"{target}/config",
                                    summary=f"stale API server URL: kubernetes_host {host} is not the cluster's "
                                            f"API ({facts.host}, the kubernetes Service)",
                                    next_step=K8S_AUTH_CONFIG_STEP, actions=refresh))
        ca = str(config.get("kubernetes_ca_cert") or "").strip()
        if ca and facts.ca_pem and ca != facts.ca_pem.strip():
            findings.append(Finding(status=Status.crit, target=f"{target}/config",
                                    summary=f"stale CA certificate: kubernetes_ca_cert is {ca_label(ca)}, the cluster "
                                            f"CA (kube-root-ca.crt) is {ca_label(facts.ca_pem)}",
                                    next_step=K8S_AUTH_CONFIG_STEP, actions=refresh))
        try:
            await ctx.kube.get("v1", "serviceaccounts", cfg.service_account, cfg.namespace)
        except SourceError as exc:
            sa_ok = False
            if exc.status == 404:
                findings.append(Finding(status=Status.crit, target=f"serviceaccount/{cfg.namespace}/{cfg.service_account}",
                                        summary="ServiceAccount missing: cert-manager has no token to log in with",
                                        next_step=K8S_SA_STEP.format(sa=cfg.service_account, ns=cfg.namespace)))
            else:
                findings.append(Finding(status=Status.unknown, target=f"serviceaccount/{cfg.namespace}/"
                                        f"{cfg.service_account}", summary=exc.reason))
        if cfg.login_test and sa_ok:
            login, jwt_issuer = await _login(ctx, pool, cfg, mount)
    step = K8S_AUTH_ROLE_STEP.format(role=cfg.role, sa=cfg.service_account, ns=cfg.namespace)
    recreate = [SuggestedAction(action="vault-k8s-auth-role")]
    if role is None:
        findings.append(Finding(status=Status.crit, target=f"{target}/role/{cfg.role}",
                                summary=f"Vault Kubernetes auth role {cfg.role} does not exist: cert-manager's "
                                        "login is denied (permission denied)", next_step=step, actions=recreate))
    else:
        names, spaces = role.get("bound_service_account_names") or [], role.get("bound_service_account_namespaces") or []
        if not ({cfg.service_account, "*"} & set(names) and {cfg.namespace, "*"} & set(spaces)):
            findings.append(Finding(status=Status.crit, target=f"{target}/role/{cfg.role}",
                                    summary=f"role binding mismatch: binds {names} in {spaces}, not "
                                            f"{cfg.namespace}/{cfg.service_account}", next_step=step, actions=recreate))
    issuer = str(config.get("issuer") or "")
    if jwt_issuer and issuer and issuer != jwt_issuer:
        if config.get("disable_iss_validation"):
            findings.append(Finding(status=Status.ok, target=f"{target}/config",
                                    summary=f"issuer {issuer} differs from the cluster's ({jwt_issuer}); not "
                                            "checked (disable_iss_validation=true)"))
        else:
            findings.append(Finding(status=Status.crit, target=f"{target}/config",
                                    summary=f"issuer mismatch: the config expects {issuer}, the cluster issues "
                                            f"tokens as {jwt_issuer} (issuer validation on)",
                                    next_step=K8S_AUTH_CONFIG_STEP, actions=refresh))
    if login is not None:
        if login.status is not Status.ok and not any(f.status is Status.crit for f in findings):
            # Nothing above explains it: the reviewer side (runbook: the SA token expired).
            login = login.model_copy(update={
                "summary": login.summary + "; host, CA and role match the cluster, so the token reviewer is "
                                           "refusing it (the runbook's expired ServiceAccount token?)",
                "next_step": K8S_LOGIN_STEP})
        findings.append(login)
    if not any(f.status is not Status.ok for f in findings):
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"configured ({config.get('kubernetes_host')}, cluster CA); role {cfg.role} "
                                        f"binds {cfg.namespace}/{cfg.service_account}"))
    return findings


async def _login(ctx: HandlerContext, pool: Any, cfg: K8sAuthChecks, mount: str) -> tuple[Finding, str | None]:
    """5.5's "test auth manually": a 10-minute TokenRequest token for the ServiceAccount, then
    Vault's login with it. Returns the finding and the token's issuer; the token itself stays
    in this function's locals."""
    kube = ctx.require_kube()
    where = f"auth/{mount}/login"
    who = f"{cfg.namespace}/{cfg.service_account}"
    try:
        answer = await kube.create("v1", "serviceaccounts", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600}}, cfg.namespace, subresource_of=cfg.service_account,
            subresource="token")
    except SourceError as exc:
        why = ("not permitted (chart: vaultLoginTest.enabled grants create serviceaccounts/token on "
               f"{who})") if exc.status == 403 else exc.reason
        return Finding(status=Status.unknown, target=where, summary=f"login not tested: TokenRequest {why}"), None
    jwt = str((answer.get("status") or {}).get("token") or "")
    del answer
    issuer = _jwt_issuer(jwt)
    try:
        auth = await pool.kubernetes_login(cfg.role, jwt, mount=mount)
    except SourceError as exc:
        return Finding(status=Status.crit, target=where,
                       summary=f"login refused: role {cfg.role} as {who} with a fresh token: {exc.reason}",
                       next_step=K8S_AUTH_CONFIG_STEP), issuer
    finally:
        jwt = ""
    return Finding(status=Status.ok, target=where,
                   summary=f"login as {who} (role {cfg.role}) with a fresh token succeeded, policies "
                           f"{', '.join(auth.get('policies') or []) or 'none'}"), issuer


# -- 10.4 Vault DR readiness; the Vault row of 11.4/11.5 -----------------------------------------
DR_GUIDANCE = ("10.4 restore is guidance: Option A needs the snapshot file in vault-0 (kubectl cp), a new "
               "`vault operator init` and `raft snapshot restore -force` in a shell, then the OLD unseal keys; "
               "Option B rebuilds the PKI (deploy-cluster.sh --from 2). The bot cannot copy files or exec "
               "into pods; it checks that a recent snapshot exists and unseals afterwards (vault-unseal)")
SNAPSHOT_STEP = ("11.4: take a snapshot now (vault operator raft snapshot save, kubectl cp it off the pod) and "
                 "fix the snapshot job; 11.5 wants one weekly, kept 4 weeks")


class DrChecks(BaseModel):
    """``checks.vault-dr`` in the config: where Raft snapshots are taken, if anywhere."""

    model_config = ConfigDict(extra="forbid")
    snapshot_cronjob: str | None = Field(
        None, description="namespace/name of the CronJob running `vault operator raft snapshot save`; "
                          "unset: snapshots are taken by hand (11.4) and the bot cannot see them")
    max_age_days: float = Field(8, gt=0, description="11.5: weekly, plus a day's grace")

    def cronjob(self) -> tuple[str, str] | None:
        if not self.snapshot_cronjob:
            return None
        ns, _, name = self.snapshot_cronjob.partition("/")
        return (ns, name) if name else (VAULT_NAMESPACE, ns)


@sop("vault-dr", title="Vault DR readiness: a recent Raft snapshot (10.4, 11.5)", sections=("10.4", "11.4", "11.5"),
     severity=Severity.P2,
     causes=("no recent Raft snapshot", "the snapshot job failed", "snapshot job suspended or missing"))
async def vault_dr(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Whether a restore under 10.4 Option A is possible: the configured snapshot CronJob
    (``checks.vault-dr.snapshot_cronjob``) last succeeded within 11.5's weekly schedule and its
    newest Job did not fail. What it reads is the job's record, not the file: where the job
    writes the snapshot (a PVC, an object store) is outside the bot's reach, and the report says so."""
    cfg = check_settings(ctx, "vault-dr", DrChecks)
    where = cfg.cronjob()
    if where is None:
        return [Finding(status=Status.ok, target="vault snapshots",
                        summary="no snapshot location configured (checks.vault-dr.snapshot_cronjob): the runbook "
                                "takes Raft snapshots by hand (11.4), which the bot cannot see",
                        details=DR_GUIDANCE)]
    ns, name = where
    target = f"cronjob/{ns}/{name}"
    kube = ctx.require_kube()
    try:
        cron = await kube.get("batch/v1", "cronjobs", name, ns)
    except SourceError as exc:
        if exc.status == 404:
            return [Finding(status=Status.warn, target=target,
                            summary=f"snapshot job missing: no CronJob {ns}/{name} (checks.vault-dr.snapshot_cronjob)",
                            next_step=SNAPSHOT_STEP, details=DR_GUIDANCE)]
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    findings: list[Finding] = []
    spec, status = cron.get("spec") or {}, cron.get("status") or {}
    schedule = spec.get("schedule", "?")
    if spec.get("suspend"):
        findings.append(Finding(status=Status.warn, target=target,
                                summary=f"snapshot job suspended (spec.suspend=true, schedule {schedule})",
                                next_step=SNAPSHOT_STEP))
    last = parse_time(status.get("lastSuccessfulTime"))
    now = datetime.now(timezone.utc)
    if last is None:
        findings.append(Finding(status=Status.warn, target=target,
                                summary=f"no recent Raft snapshot: the CronJob never succeeded (schedule {schedule})",
                                next_step=SNAPSHOT_STEP))
    else:
        days = (now - last).total_seconds() / 86400
        if days > cfg.max_age_days:
            findings.append(Finding(status=Status.warn, target=target,
                                    summary=f"no recent Raft snapshot: the last successful one is {days:.0f} days old "
                                            f"({last:%Y-%m-%d}; 11.5: weekly)", next_step=SNAPSHOT_STEP))
    failed = await _last_job_failure(kube, ns, name)
    if failed:
        findings.append(Finding(status=Status.warn, target=target, summary=f"the snapshot job failed: {failed}",
                                next_step=SNAPSHOT_STEP))
    if not findings and last is not None:
        age = (now - last).total_seconds() / 3600
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"last successful Raft snapshot {age / 24:.1f} days ago (schedule {schedule}); "
                                        "the file itself is not listed (the bot cannot read where the job writes it)",
                                details=DR_GUIDANCE))
    else:
        findings[0] = findings[0].model_copy(update={"details": DR_GUIDANCE})
    return findings


async def _last_job_failure(kube: Any, ns: str, cronjob: str) -> str:
    """The newest Job the CronJob created, if it failed: its Failed condition's reason and message."""
    try:
        jobs = await kube.list("batch/v1", "jobs", ns)
    except SourceError:
        return ""
    owned = [j for j in jobs if any(r.get("kind") == "CronJob" and r.get("name") == cronjob
                                    for r in (j.get("metadata") or {}).get("ownerReferences") or [])]
    if not owned:
        return ""
    newest = max(owned, key=lambda j: (j.get("metadata") or {}).get("creationTimestamp") or "")
    cond = condition(newest, "Failed")
    if cond and cond.get("status") == "True":
        return f"Job {newest['metadata']['name']}: {cond.get('reason', '')}: {cond.get('message', '')}".rstrip(": ")
    return ""


# -- the chapter's flowchart (/sop triage vault): each decision answered from the same evidence --
def _worst(findings: list[Finding]) -> Status:
    return max((f.status for f in findings), key=lambda s: s.rank, default=Status.ok)


def _first_bad(findings: list[Finding]) -> str:
    bad = [f for f in findings if f.status in (Status.crit, Status.warn)]
    return f"{bad[0].target}: {bad[0].summary}" if bad else ""


@decision("vault status on all 3 pods")
@decision("Seal status of every replica?")
async def vault_seal_branch(ctx: HandlerContext) -> Answer:
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return Answer(None, "no Vault replica addresses configured")
    states = await asyncio.gather(*(_replica(pool, a) for a in pool.addrs))
    seen = [s for _, s in states if s is not None]
    down = [s["name"] for s in seen if s["sealed"] or s.get("uninitialized")]
    evidence = "; ".join(f"{f.target}: {f.summary}" for f, _ in states)
    if not seen:
        return Answer(None, evidence)
    if len(down) == len(pool.addrs):
        return Answer("All sealed", evidence)
    return Answer("1-2 sealed" if down else "All unsealed", evidence)


@decision("Check Vault health")
@decision("Is a Raft leader elected?")
async def vault_leader_branch(ctx: HandlerContext) -> Answer:
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return Answer(None, "no Vault replica addresses configured")
    states = [s for _, s in await asyncio.gather(*(_replica(pool, a) for a in pool.addrs)) if s is not None]
    leaders = sorted({s["leader"] for s in states if s.get("leader")})
    if leaders:
        return Answer("Leader elected", f"leader {leaders[0]}")
    return Answer("No leader", f"no replica reports a leader ({len(states)} answered)")


@decision("Check Raft peers")
@decision("Are all Raft peers present?")
async def vault_peers_branch(ctx: HandlerContext) -> Answer:
    """Without a leader raft/configuration has nobody to answer: a peer is missing when it
    reports Initialized=false or the headless Service does not list it."""
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return Answer(None, "no Vault replica addresses configured")
    cfg = check_settings(ctx, "vault-status", VaultStatusChecks)
    states = await asyncio.gather(*(_replica(pool, a) for a in pool.addrs))
    missing = [f.target for f, s in states if s is not None and s.get("uninitialized")]
    evidence = [f"{', '.join(missing)} Initialized=false"] if missing else []
    if ctx.kube is not None:
        for f in await _headless_endpoints(ctx, cfg, list(pool.names)):
            if f.status is not Status.ok:
                missing.append(f.target)
            evidence.append(f.summary)
    if missing:
        return Answer("Peers missing", "; ".join(evidence))
    return Answer("All peers present", "; ".join(evidence) or "every replica initialized")


@decision("PKI responding?")
async def vault_pki_branch(ctx: HandlerContext) -> Answer:
    try:
        found = await vault_pki(ctx, NoParams())
    except SourceError as exc:
        return Answer(None, exc.reason)
    worst = _worst(found)
    if worst is Status.unknown:
        return Answer(None, "; ".join(f.summary for f in found if f.status is Status.unknown))
    if worst is Status.crit:
        return Answer("No", _first_bad(found))
    return Answer("Yes", "; ".join(f"{f.target}: {f.summary}" for f in found))


@decision("K8s auth working?")
async def vault_auth_branch(ctx: HandlerContext) -> Answer:
    try:
        found = await vault_k8s_auth(ctx, NoParams())
    except SourceError as exc:
        return Answer(None, exc.reason)
    if any(f.status is Status.crit for f in found):
        return Answer("No", _first_bad(found))
    if any(f.status is Status.unknown for f in found):
        return Answer(None, "; ".join(f.summary for f in found if f.status is Status.unknown))
    login = next((f.summary for f in found if f.target.endswith("/login")), "")
    return Answer("Yes", login or "; ".join(f.summary for f in found))
