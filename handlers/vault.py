"""Runbook chapter 5: Vault."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from bot.clients.errors import SourceError
from bot.context import HandlerContext
from bot.models import Finding, Severity, Status, SuggestedAction
from bot.registry import K8sName, SOPParams, sop

UNSEAL_STEP = ("5.2 step 3: unseal each sealed replica with 3 of the 5 keys from vault-init.json "
               "(then 5.2 step 5: check cert-manager recovers)")
JOIN_STEP = "5.2 step 2: a replica reports Initialized=false: join it to the Raft cluster"
LEADER_STEP = ("5.3: wait 30 s for Raft to elect a leader; if still none, check the pods reach "
               "each other on port 8201 and read the raft/leader lines of the Vault logs")
DOWN_STEP = "5.1: check the Vault pod of the unreachable replica (kubectl get pod -n vault)"


class VaultStatusParams(SOPParams):
    replica: K8sName | None = Field(None, description="vault-N, one replica only")


@sop("vault-status", title="Vault seal and Raft leader status", section="5.1",
     severity=Severity.P1, alerts=("VaultSealed", "VaultLeaderLost", "VaultDown"))
async def vault_status(ctx: HandlerContext, params: VaultStatusParams) -> list[Finding]:
    """Seal state, unseal progress, HA mode and leader of every Vault replica (runbook 5.1–5.3)."""
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault",
                        summary="no Vault replica addresses configured (vault.addrs)")]
    addrs = [a for a in pool.addrs if params.replica in (None, pool.name_of(a))]
    if not addrs:
        return [Finding(status=Status.unknown, target=params.replica or "vault",
                        summary=f"no replica named {params.replica}; known: {', '.join(pool.names)}")]
    states = await asyncio.gather(*(_replica(pool, a) for a in addrs))
    findings = [f for f, _ in states]
    seen = [s for _, s in states if s is not None]

    unsealed = [s for s in seen if not s["sealed"]]
    leaders = sorted({s["leader"] for s in unsealed if s.get("leader")})
    problems = len(addrs) - len(unsealed)
    if params.replica is None:
        if problems:
            findings.append(Finding(status=Status.crit, target="cluster",
                                    summary=f"{len(unsealed)} of {len(addrs)} replicas unsealed and reachable",
                                    next_step=UNSEAL_STEP if any(s["sealed"] for s in seen) else DOWN_STEP,
                                    # Propose 5.2 step 3 (needs approval; key source from config).
                                    actions=[SuggestedAction(action="vault-unseal")]
                                    if any(s["sealed"] for s in seen) else []))
        if unsealed and not leaders:
            findings.append(Finding(status=Status.warn, target="raft",
                                    summary="no replica reports a Raft leader", next_step=LEADER_STEP))
        elif leaders:
            findings.append(Finding(status=Status.ok, target="raft", summary=f"leader {leaders[0]}"))
        if pool.has_token and leaders:
            # Only the active node answers raft/configuration; standbys forward or fail.
            leader_addr = next(a for a in addrs if pool.name_of(a) == leaders[0]) \
                if leaders[0] in pool.names else addrs[0]
            findings.append(await _raft_peers(pool, [leader_addr]))
    return findings


async def _replica(pool: Any, addr: str) -> tuple[Finding, dict[str, Any] | None]:
    name = pool.name_of(addr)
    try:
        seal = await pool.seal_status(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name, summary=f"unreachable: {exc.reason}",
                       next_step=DOWN_STEP), None
    version = seal.get("version", "?")
    if not seal.get("initialized", False):
        return Finding(status=Status.crit, target=name, summary=f"not initialized (v{version})",
                       next_step=JOIN_STEP), {"sealed": True}
    if seal.get("sealed", True):
        progress = f"{seal.get('progress', 0)}/{seal.get('t', '?')}"
        return Finding(status=Status.crit, target=name,
                       summary=f"sealed, unseal progress {progress} (v{version})",
                       next_step=UNSEAL_STEP), {"sealed": True}
    state: dict[str, Any] = {"sealed": False}
    try:
        leader = await pool.leader(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name,
                       summary=f"unsealed, leader status unknown: {exc.reason}"), state
    if leader.get("is_self"):
        mode = "active (leader)"
        state["leader"] = name
    else:
        mode = "standby"
        address = leader.get("leader_address") or ""
        if address:
            state["leader"] = _leader_name(pool, address)
    return Finding(status=Status.ok, target=name, summary=f"unsealed, {mode} (v{version})"), state


def _leader_name(pool: Any, address: str) -> str:
    for addr, name in zip(pool.addrs, pool.names):
        if address.rstrip("/") == addr.rstrip("/") or name in address:
            return name
    return address


async def _raft_peers(pool: Any, addrs: list[str]) -> Finding:
    try:
        data = await pool.raft_configuration(addrs[0])
    except SourceError as exc:
        return Finding(status=Status.unknown, target="raft peers", summary=exc.reason)
    servers = (((data or {}).get("data") or {}).get("config") or {}).get("servers") or []
    voters = [s for s in servers if s.get("voter")]
    desc = ", ".join(f"{s.get('node_id')}{' (leader)' if s.get('leader') else ''}" for s in servers)
    status = Status.ok if len(voters) >= len(pool.addrs) else Status.warn
    return Finding(status=status, target="raft peers",
                   summary=f"{len(voters)} voters of {len(servers)} peers: {desc}",
                   next_step="" if status is Status.ok else JOIN_STEP)
