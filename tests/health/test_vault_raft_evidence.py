"""vault-status's 5.3 evidence read the way an SRE reads it: a NetworkPolicy that admits Raft's
8201 between the Vault pods is not blamed; one that does not, is; the report names HA mode per
replica; nothing is read about policies while a leader is elected."""

from __future__ import annotations

from bot.engine import run_sop
from bot.registry import load_handlers
from bot.runtime import build_context

REGISTRY = {s.id: s for s in load_handlers()}


async def vault_status(sandbox) -> list[tuple[str, str, str]]:
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["vault-status"], ctx)
    finally:
        await ctx.close()
    return [(f.status.value, f.target, f.summary) for f in report.findings]


def add_policy(sandbox, name: str, ingress: list[dict]) -> None:
    sandbox.platform.kube.add({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "vault"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vault"}},
                 "policyTypes": ["Ingress"], "ingress": ingress}})


async def test_a_policy_that_admits_8201_from_the_vault_pods_is_not_blamed(sandbox):
    add_policy(sandbox, "vault-allow-api", [{"ports": [{"protocol": "TCP", "port": 8200}]}])
    add_policy(sandbox, "vault-allow-raft", [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "vault"}}}], "ports": [{"protocol": "TCP", "port": 8201}]}])
    await sandbox.apply("vault-no-leader")
    rows = await vault_status(sandbox)
    assert ("ok", "networkpolicy/vault", "no policy blocks 8201 (vault-allow-api, vault-allow-raft read)") in rows
    assert ("crit", "raft", "no Raft leader: every unsealed replica is standby (vault-0, vault-1, vault-2)") in rows
    assert ("ok", "vault-1", "unsealed, HA mode standby, no leader (v1.15.6)") in rows
    assert ("ok", "endpoints/vault/vault-internal", "lists vault-0, vault-1, vault-2") in rows


async def test_a_policy_admitting_8201_only_from_elsewhere_still_blocks_raft(sandbox):
    add_policy(sandbox, "vault-from-monitoring", [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}, "podSelector": {"matchLabels": {"app": "prometheus"}}}],
        "ports": [{"protocol": "TCP", "port": 8201}]}])
    await sandbox.apply("vault-no-leader")
    rows = await vault_status(sandbox)
    assert ("crit", "networkpolicy/vault", "NetworkPolicy vault/vault-from-monitoring (ingress) blocks Raft port "
            "8201 between the Vault pods (network partition)") in rows


async def test_with_a_leader_no_policy_or_endpoint_is_read_and_ha_modes_are_listed(sandbox):
    add_policy(sandbox, "vault-allow-api", [{"ports": [{"protocol": "TCP", "port": 8200}]}])
    rows = await vault_status(sandbox)
    assert all(status == "ok" for status, _, _ in rows), rows
    assert ("ok", "vault-0", "unsealed, HA mode active (leader) (v1.15.6)") in rows
    assert ("ok", "vault-2", "unsealed, HA mode standby, leader vault-0 (v1.15.6)") in rows
    assert not any(t.startswith(("networkpolicy", "endpoints")) for _, t, _ in rows)


async def test_an_unreachable_replica_is_shown_with_its_pods_state(sandbox):
    await sandbox.apply("vault-replica-down")
    rows = await vault_status(sandbox)
    assert any(st == "unknown" and t == "vault-2" and s.startswith("unreachable") for st, t, s in rows), rows
    assert ("crit", "pod/vault/vault-2", "Running, vault CrashLoopBackOff: back-off 2m40s restarting failed "
            "container=vault pod=vault-2_vault(0), 6 restarts, last exit 1 Error") in rows, rows
