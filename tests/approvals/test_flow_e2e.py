"""The approval flow end to end: a person asks for a fix in Mattermost, approvers react, the bot
changes the sandbox platform once (checked with kubectl), the proposal post shows the outcome."""

from __future__ import annotations

import pytest

from tests.approvals.conftest import kubectl, kubectl_json, wait_for
from tests.approvals.support import (bot_posts, post, propose, proposals, replies, wait_reply,
                                     wait_state)

COREDNS = ("kube-system", "rke2-coredns-rke2-coredns")


async def replicas(sb) -> int:
    return (await kubectl_json(sb, "-n", COREDNS[0], "get", "deployment", COREDNS[1]))["spec"]["replicas"]


async def test_approved_scale_runs_once_and_changes_the_platform(sandbox, bots):
    rt = await bots.start()
    assert await replicas(sandbox) == 2
    p = await propose(sandbox, "alice", f"scale namespace={COREDNS[0]} name={COREDNS[1]} replicas=3")
    text = p.message
    assert f"PATCH apps/v1 deployments/scale {COREDNS[0]}/{COREDNS[1]}: spec.replicas 2 → 3" in text
    assert "dryRun=All" in text and "accepted the scale: spec.replicas 2 → 3" in text
    assert "Approvers: @alice. Needs 1 distinct approval." in text and "Expires" in text
    assert f"kubectl -n {COREDNS[0]} scale deployment {COREDNS[1]} --replicas=3" in text
    assert await replicas(sandbox) == 2  # the dry run changed nothing

    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    final = await wait_state(sandbox, p.id, "succeeded")
    assert await replicas(sandbox) == 3
    assert "approved by @alice" in final
    result = await wait_reply(sandbox, p.root_id, "`scale` **succeeded**")
    assert "scaled to 3" in result

    # Removing and re-adding the reaction, or a second approval, never runs it again.
    await kubectl(sandbox, "-n", COREDNS[0], "scale", "deployment", COREDNS[1], "--replicas=2")
    sandbox.mattermost.unreact("alice", p.id, "white_check_mark")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await rt.events.wait_connected()
    await rt.approvals.resync()
    await rt.bot.drain()
    assert await replicas(sandbox) == 2
    assert sum("`scale` **succeeded**" in m for m in replies(sandbox, p.root_id)) == 1


async def test_restart_and_cordon_end_to_end(sandbox, bots):
    await bots.start()
    before = await kubectl_json(sandbox, "-n", "kube-system", "get", "daemonset", "cilium")
    p = await propose(sandbox, "alice", "restart kind=daemonset namespace=kube-system name=cilium")
    assert "kubectl.kubernetes.io/restartedAt" in p.message and "dryRun=All" in p.message
    assert "kubectl -n kube-system rollout restart daemonset cilium" in p.message
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    after = await kubectl_json(sandbox, "-n", "kube-system", "get", "daemonset", "cilium")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert "kubectl.kubernetes.io/restartedAt" in after["spec"]["template"]["metadata"]["annotations"]

    c = await propose(sandbox, "alice", "cordon node=rke2-general-1")
    assert "PATCH v1 nodes rke2-general-1: spec.unschedulable False → True" in c.message
    assert "SchedulingDisabled" not in await kubectl(sandbox, "get", "node", "rke2-general-1")
    sandbox.mattermost.react("alice", c.id, "white_check_mark")
    await wait_state(sandbox, c.id, "succeeded")
    assert "SchedulingDisabled" in await kubectl(sandbox, "get", "node", "rke2-general-1")

    u = await propose(sandbox, "alice", "uncordon node=rke2-general-1")
    sandbox.mattermost.react("alice", u.id, "white_check_mark")
    await wait_state(sandbox, u.id, "succeeded")
    assert "SchedulingDisabled" not in await kubectl(sandbox, "get", "node", "rke2-general-1")


async def test_audit_shows_every_step_with_who_and_what(sandbox, bots):
    rt = await bots.start(approvers=["alice", "bob"])
    text = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop audit"))["text"]
    assert text == "The remediation audit log is empty."
    p = await propose(sandbox, "bob", f"scale namespace={COREDNS[0]} name={COREDNS[1]} replicas=3")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    text = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop audit 4"))["text"]
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert [r.split(" | ")[2] for r in rows] == ["succeeded", "running", "approved", "approval"]
    assert "| #1 | succeeded | @sop-bot | scale | result: deployment kube-system/rke2-coredns-rke2-coredns scaled to 3" in text
    assert "| approved | @alice | scale | approvers: alice |" in text
    full = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop audit"))["text"]
    assert "| #1 | proposed | @bob | scale | params: namespace=kube-system name=rke2-coredns-rke2-coredns replicas=3" in full
    bad = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop audit lots"))["text"]
    assert "with N from 1 to 100" in bad
    # The store keeps the preview and timestamps for each step.
    [entry] = [e for e in await rt.approvals.repo.audit(10) if e["event"] == "proposed"]
    assert "spec.replicas 2 → 3" in entry["detail"]["preview"] and entry["at"].startswith("20")


@pytest.mark.parametrize("kind,ns,name", [("deployment", "kube-system", "rke2-traefik"),
                                          ("statefulset", "vault", "vault")])
async def test_rollout_restart_of_each_workload_kind(sandbox, bots, kind, ns, name):
    await bots.start()
    before = await kubectl_json(sandbox, "-n", ns, "get", kind, name)
    p = await propose(sandbox, "alice", f"restart kind={kind} namespace={ns} name={name}")
    assert f"PATCH apps/v1 {kind}s {ns}/{name}" in p.message
    after_dry = await kubectl_json(sandbox, "-n", ns, "get", kind, name)
    assert after_dry["metadata"]["generation"] == before["metadata"]["generation"]
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    after = await kubectl_json(sandbox, "-n", ns, "get", kind, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert "kubectl.kubernetes.io/restartedAt" in after["spec"]["template"]["metadata"]["annotations"]
