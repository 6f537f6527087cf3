"""5.1/5.2 as one procedure (`vault-unseal-all`), end to end through the sandbox Mattermost and the
sandbox Vault's HTTP API: re-join a replica reporting Initialized=false, unseal every sealed
replica from the vault-init Secret (approved again when reached: the bot reads every share),
verify the Raft peers, then wait for cert-manager's Vault ClusterIssuer (the test plays
cert-manager). No key share in any post, log record or store row."""

from __future__ import annotations

from sandbox.platform import set_issuer_ready
from tests.approvals.conftest import wait_for
from tests.approvals.support import bot_posts, wait_reply
from tests.approvals.test_procedures_e2e import (APPROVE, approve_gate, crash, gate_post, start_procedure, step_line,
                                                 wait_status, wait_step)
from tests.approvals.test_unseal_e2e import assert_no_key_share, vault_init_secret  # noqa: F401  (fixture)

SECRET = {"unseal_from_secret": {"enabled": True}}


def sealed(sb) -> list[str]:
    return [r.name for r in sb.platform.vault.replicas if r.sealed]


async def test_a_replica_without_raft_data_is_rejoined_then_unsealed_and_verified(
        sandbox, bots, vault_init_secret, caplog):
    await bots.start(quorum_high=1, **SECRET)
    await sandbox.apply("vault-replica-not-joined")
    p = await start_procedure(sandbox, "alice", "vault-unseal-all")
    msg = p.message
    assert "(runbook 5.2)" in msg and "risk **high**" in msg
    assert "POST /v1/sys/storage/raft/join on vault-2: leader_api_addr=http://vault-0.vault-internal:8200" in msg
    assert "| vault-2 | Initialized=false | Raft peer, sealed (unsealed in step 2) |" in msg
    # Not sealed yet (Initialized=false is not "sealed"): the unseal is planned for after the join.
    assert "PUT /v1/sys/unseal on vault-2 once re-joined (step 1)" in msg
    assert "approved again when reached" in step_line(sandbox, p.id, 2)
    assert not sandbox.platform.vault.replicas[2].initialized  # a plan only

    sandbox.mattermost.react("alice", p.id, APPROVE)
    await wait_step(sandbox, p.id, 2, "⏸")  # the bot is about to read every share: asked again
    assert "vault-2 joined the Raft cluster of vault-0" in step_line(sandbox, p.id, 1)
    assert sealed(sandbox) == ["vault-2"]  # joined, sealed, not unsealed before the second approval
    await approve_gate(sandbox, p.root_id, 2)
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    assert "unsealed vault-2 (verified: sealed=false)" in step_line(sandbox, p.id, 2)
    assert "3 voters of 3 peers" in step_line(sandbox, p.id, 3)
    assert "ClusterIssuer(s) vault-issuer Ready" in step_line(sandbox, p.id, 4)
    assert sealed(sandbox) == [] and all(r.initialized for r in sandbox.platform.vault.replicas)
    await wait_reply(sandbox, p.root_id, "✅ Procedure #1")
    assert_no_key_share(sandbox, caplog)


async def test_all_sealed_unsealed_then_the_log_waits_for_cert_manager(sandbox, bots, vault_init_secret, caplog):
    await bots.start(quorum_high=1, **SECRET)
    await sandbox.apply("vault-sealed")  # the ClusterIssuer failed while Vault was sealed
    p = await start_procedure(sandbox, "alice", "vault-unseal-all")
    assert "| vault-1 | sealed | 0/3 |" in p.message
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await approve_gate(sandbox, p.root_id, 2)
    line = await wait_step(sandbox, p.id, 4, "⏳", timeout=30)
    assert step_line(sandbox, p.id, 1).startswith("1. ✅") and \
        "already done: every reachable replica reports Initialized=true" in step_line(sandbox, p.id, 1)
    assert "unsealed vault-0, vault-1, vault-2 (verified: sealed=false)" in step_line(sandbox, p.id, 2)
    assert step_line(sandbox, p.id, 3).startswith("3. ✅")
    await wait_for(lambda: "clusterissuer/vault-issuer cert-manager has not recovered" in step_line(sandbox, p.id, 4),
                   what="the live log naming the issuer still failing")
    assert "running since" in line
    # cert-manager retries and the issuer becomes Ready.
    set_issuer_ready(sandbox.platform, "vault-issuer", True, "VaultVerified", "Vault verified")
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    assert "ClusterIssuer(s) vault-issuer Ready; no CertificateRequest pending on Vault" in step_line(sandbox, p.id, 4)
    assert sealed(sandbox) == []
    assert_no_key_share(sandbox, caplog)


async def test_without_the_secret_key_source_it_is_refused_and_names_the_holders_path(sandbox, bots):
    rt = await bots.start(quorum_high=1)
    await sandbox.apply("vault-sealed")
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix vault-unseal-all")
    assert "Planning procedure" in reply["text"]
    refusal = await wait_for(lambda: next((x.message for x in bot_posts(sandbox) if "Not proposing" in x.message),
                                          None), what="the refusal")
    assert "remediation.unseal_from_secret.enabled" in refusal
    assert "`/sop fix vault-unseal source=holders`" in refusal
    await rt.bot.drain()
    assert sealed(sandbox) == ["vault-0", "vault-1", "vault-2"]


async def test_nothing_sealed_nothing_to_propose(sandbox, bots):
    rt = await bots.start(quorum_high=1, **SECRET)
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix vault-unseal-all")
    refusal = await wait_for(lambda: next((x.message for x in bot_posts(sandbox) if "Not proposing" in x.message),
                                          None), what="the refusal")
    assert "every reachable replica is initialized and unsealed" in refusal
    await rt.bot.drain()
    assert not [x for x in bot_posts(sandbox) if "**Procedure #" in x.message]


async def test_no_leader_blocks_the_join_and_resume_goes_on_once_a_majority_is_unsealed(
        sandbox, bots, vault_init_secret, caplog):
    await bots.start(quorum_high=1, **SECRET)
    await sandbox.apply("vault-sealed")
    sandbox.platform.vault.set_initialized(2, False)  # and vault-2 lost its Raft data
    p = await start_procedure(sandbox, "alice", "vault-unseal-all")
    assert "blocked now: vault-2: no replica is the active node" in p.message  # said up front
    sandbox.mattermost.react("alice", p.id, APPROVE)
    line = await wait_step(sandbox, p.id, 1, "❌")
    assert "sealed: vault-0, vault-1: unseal them first" in line
    failure = await wait_reply(sandbox, p.root_id, "stopped at step 1")
    assert "**Next (runbook)**: 5.2 step 2" in failure and "/sop fix resume 1" in failure
    assert step_line(sandbox, p.id, 2).startswith("2. ◻️")  # nothing after the failing step ran
    assert not sandbox.platform.vault.replicas[2].initialized
    for i in (0, 1):  # the operator unseals a majority by hand (kubectl exec … vault operator unseal)
        sandbox.platform.vault.unseal(i)
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix resume 1")
    assert "resumes at step 1" in reply["text"]
    await wait_step(sandbox, p.id, 2, "⏸")
    assert "vault-2 joined the Raft cluster of vault-0" in step_line(sandbox, p.id, 1)
    await approve_gate(sandbox, p.root_id, 2)
    await wait_step(sandbox, p.id, 4, "⏳", timeout=30)
    assert "unsealed vault-2 (verified: sealed=false)" in step_line(sandbox, p.id, 2)
    set_issuer_ready(sandbox.platform, "vault-issuer", True, "VaultVerified", "Vault verified")
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    assert sealed(sandbox) == []
    assert_no_key_share(sandbox, caplog)


async def test_a_restart_while_waiting_for_cert_manager_submits_no_share_again(sandbox, bots, vault_init_secret):
    rt = await bots.start(quorum_high=1, **SECRET)
    await sandbox.apply("vault-sealed")
    p = await start_procedure(sandbox, "alice", "vault-unseal-all")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await approve_gate(sandbox, p.root_id, 2)
    await wait_step(sandbox, p.id, 4, "⏳", timeout=30)
    before = [step_line(sandbox, p.id, n) for n in (1, 2, 3)]
    await crash(bots, rt)  # the bot dies while cert-manager has not recovered
    rt2 = await bots.start(quorum_high=1, **SECRET)
    await wait_for(lambda: "re-run after a restart" in step_line(sandbox, p.id, 4), what="step 4 resumed", timeout=30)
    set_issuer_ready(sandbox.platform, "vault-issuer", True, "VaultVerified", "Vault verified")
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    assert [step_line(sandbox, p.id, n) for n in (1, 2, 3)] == before  # steps 1–3 untouched
    started = [e["detail"]["step"] for e in await rt2.approvals.repo.audit(100) if e["event"] == "step-started"]
    assert started.count(2) == 1  # the shares were submitted once, before the restart
    assert started.count(4) == 2 and 1 not in started  # step 1 had nothing to do


async def test_declining_the_unseal_gate_leaves_the_joined_replica_sealed(sandbox, bots, vault_init_secret):
    rt = await bots.start(quorum_high=1, **SECRET)
    await sandbox.apply("vault-replica-not-joined")
    p = await start_procedure(sandbox, "alice", "vault-unseal-all")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    g = await wait_for(lambda: gate_post(sandbox, p.root_id, 2), what="the unseal step's approval request")
    await wait_for(lambda: "x" in {r.emoji_name for r in sandbox.mattermost.reactions_on(g.id)},
                   what="the gate's reactions")
    sandbox.mattermost.react("alice", g.id, "x")
    await wait_reply(sandbox, p.root_id, "Step 2 (Unseal each sealed replica")
    await wait_status(sandbox, p.id, "**stopped** at step 2")
    await rt.bot.drain()
    assert sealed(sandbox) == ["vault-2"] and sandbox.platform.vault.replicas[2].initialized
