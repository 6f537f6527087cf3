"""Runbook 5.2 step 2 and 5.3 step 6 as single actions, end to end through the sandbox
Mattermost and the sandbox Vault's HTTP API: re-join a replica that lost its Raft data (then
unseal it), and step down a stuck leader. Checked against the Vault cluster's own state."""

from __future__ import annotations

from tests.approvals.conftest import wait_for
from tests.approvals.support import bot_posts, post, propose, replies, wait_reply, wait_state

TWO = {"approvers": ["alice", "bob"]}


def report(sb, sop: str) -> str:
    return next((p.message for p in bot_posts(sb) if f"`{sop}` — " in p.message and "Next steps" in p.message), "")


async def test_a_replica_without_raft_data_is_told_to_rejoin_and_the_join_proposal_rejoins_it(sandbox, bots):
    rt = await bots.start(**TWO)
    await sandbox.apply("vault-replica-not-joined")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-status")
    text = await wait_for(lambda: report(sandbox, "vault-status"), what="the vault-status report")
    assert "| :red_circle: | vault-2 | not initialized (Initialized=false, v1.15.6): must re-join Raft, unseal does not apply |" in text
    assert "5.2 step 2" in text
    # Initialized=false is not counted as sealed: the cluster row names it, no unseal is proposed.
    assert "2 of 3 replicas unsealed and reachable; not initialized: vault-2" in text
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`vault-raft-join replica=vault-2`" in p.message and "(from `vault-status`)" in p.message
    assert "risk **low**" in p.message
    assert "POST /v1/sys/storage/raft/join on vault-2: leader_api_addr=http://vault-0.vault-internal:8200" in p.message
    assert "| vault-2 | Initialized=false | Raft peer of vault-0, sealed |" in p.message
    assert not any("`vault-unseal" in x.message for x in bot_posts(sandbox))
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    msg = await wait_reply(sandbox, p.root_id, "joined the Raft cluster of vault-0")
    assert "next: vault-unseal (5.2 step 3)" in msg
    r2 = sandbox.platform.vault.replicas[2]
    assert r2.initialized and r2.sealed  # joined, waiting for the keys

    # 5.2 step 3 follows: the unseal proposal now sees vault-2 as sealed.
    q = await propose(sandbox, "alice", "vault-unseal source=holders")
    assert "| vault-2 | sealed | 0/3 |" in q.message
    # A second join is nothing to do.
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix vault-raft-join replica=vault-2")
    await rt.bot.drain()
    assert any("Not proposing `vault-raft-join" in x.message and "Initialized=true" in x.message
               for x in bot_posts(sandbox))


async def test_step_down_of_a_stuck_leader_needs_two_approvals_and_elects_another(sandbox, bots):
    await bots.start(**TWO)
    await sandbox.apply("vault-stuck-leader")
    vault = sandbox.platform.vault
    assert vault.leader == 0
    p = await propose(sandbox, "alice", "vault-step-down")
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    assert "PUT /v1/sys/step-down on vault-0 (the active node)" in p.message
    assert "| vault-1 | standby, leader none |" in p.message and "| vault-0 | active |" in p.message
    assert vault.leader == 0  # planning changed nothing
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    await wait_reply(sandbox, p.root_id, "vault-0 stepped down; leader now vault-1 (verified)")
    assert vault.leader == 1 and not vault.lost_followers


async def test_step_down_is_not_proposed_when_no_replica_leads(sandbox, bots):
    rt = await bots.start(**TWO)
    await sandbox.apply("vault-no-leader")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix vault-step-down")
    await rt.bot.drain()
    refusal = next(x.message for x in bot_posts(sandbox) if "Not proposing `vault-step-down" in x.message)
    assert "no replica is active: step-down needs a leader to step down" in refusal


async def test_after_unsealing_the_outcome_says_whether_cert_manager_recovered(sandbox, bots):
    await bots.start(approvers=["alice", "bob"], unseal_from_secret={"enabled": True})
    await sandbox.apply("vault-sealed")  # the ClusterIssuer failed while Vault was sealed
    p = await propose(sandbox, "alice", "vault-unseal source=secret")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    final = await wait_state(sandbox, p.id, "succeeded")
    assert "unsealed vault-0, vault-1, vault-2 (verified: sealed=false)" in final
    # cert-manager has not retried yet: the outcome names the issuer still failing (5.2 step 5).
    assert "5.2 step 5: clusterissuer/vault-issuer cert-manager has not recovered: Ready=False: " \
           "Failed to initialize Vault client" in final
    assert "run /sop vault-status again" in final


async def test_after_unsealing_a_healthy_cert_manager_is_confirmed(sandbox, bots):
    await bots.start(approvers=["alice", "bob"], unseal_from_secret={"enabled": True})
    await sandbox.apply("vault-partially-sealed")
    p = await propose(sandbox, "alice", "vault-unseal source=secret")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    final = await wait_state(sandbox, p.id, "succeeded")
    assert "unsealed vault-1, vault-2 (verified: sealed=false). cert-manager: ClusterIssuer(s) vault-issuer " \
           "Ready; no CertificateRequest pending on Vault" in final
