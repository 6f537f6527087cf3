"""Approval rules end to end: who may approve, quorum, four-eyes, rejection, expiry, staleness,
read-only mode. Every check is on what people see in Mattermost and on the platform (kubectl)."""

from __future__ import annotations

from tests.approvals.conftest import FakeClock, kubectl, kubectl_json, wait_for
from tests.approvals.support import (bot_posts, post, propose, proposals, replies, wait_reply,
                                     wait_state)

NS, DEP = "kube-system", "rke2-coredns-rke2-coredns"
SCALE = f"scale namespace={NS} name={DEP} replicas=3"
RESTART = "restart kind=deployment namespace=kube-system name=rke2-traefik"


async def replicas(sb) -> int:
    return (await kubectl_json(sb, "-n", NS, "get", "deployment", DEP))["spec"]["replicas"]


async def generation(sb) -> int:
    return (await kubectl_json(sb, "-n", "kube-system", "get", "deployment", "rke2-traefik"))["metadata"]["generation"]


async def settle(rt) -> None:
    """Let the bot handle what the websocket delivered so far and finish background work."""
    await rt.approvals.resync()
    await rt.bot.drain()


async def test_unauthorised_reaction_is_answered_once_and_does_not_count(sandbox, bots):
    rt = await bots.start()
    p = await propose(sandbox, "alice", SCALE)
    for _ in range(2):
        sandbox.mattermost.react("bob", p.id, "white_check_mark")
        await wait_reply(sandbox, p.root_id, "@bob is not an approver for scale")
        sandbox.mattermost.unreact("bob", p.id, "white_check_mark")
    sandbox.mattermost.react("bob", p.id, "x")
    await settle(rt)
    notices = [m for m in replies(sandbox, p.root_id) if "@bob is not an approver" in m]
    assert len(notices) == 1
    assert "approvers: @alice" in notices[0]
    assert "waiting for approval (0/1" in post(sandbox, p.id).message
    assert await replicas(sandbox) == 2


async def test_high_risk_needs_two_distinct_approvers_one_from_a_group(sandbox, bots):
    rt = await bots.start(groups={"sre": ["bob"]}, approver_groups=["sre"])
    p = await propose(sandbox, "alice", f"scale namespace={NS} name={DEP} replicas=0")  # high risk
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    assert "group sre (@bob)" in p.message
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_for(lambda: "(1/2: @alice)" in post(sandbox, p.id).message, what="1/2")
    # The same person again (reaction removed and re-added) is still one approval.
    sandbox.mattermost.unreact("alice", p.id, "white_check_mark")
    await wait_for(lambda: "(0/2" in post(sandbox, p.id).message, what="withdrawn")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_for(lambda: "(1/2: @alice)" in post(sandbox, p.id).message, what="1/2 again")
    await settle(rt)
    assert await replicas(sandbox) == 2
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    final = await wait_state(sandbox, p.id, "succeeded")
    assert "approved by @alice, @bob" in final
    assert await replicas(sandbox) == 0


async def test_four_eyes_requester_cannot_approve(sandbox, bots):
    rt = await bots.start(approvers=["alice", "bob"], four_eyes=True)
    p = await propose(sandbox, "alice", RESTART)
    gen = await generation(sandbox)
    assert "@alice requested it and cannot approve it (four-eyes)" in p.message
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_reply(sandbox, p.root_id, "cannot approve it (four-eyes)")
    await settle(rt)
    assert await generation(sandbox) == gen
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    assert await generation(sandbox) == gen + 1


async def test_x_by_an_approver_rejects(sandbox, bots):
    rt = await bots.start()
    p = await propose(sandbox, "alice", SCALE)
    sandbox.mattermost.react("alice", p.id, "x")
    await wait_reply(sandbox, p.root_id, "rejected by @alice; nothing was changed")
    assert "rejected by @alice" in post(sandbox, p.id).message
    sandbox.mattermost.react("alice", p.id, "white_check_mark")  # too late
    await settle(rt)
    assert await replicas(sandbox) == 2
    assert "rejected by @alice" in post(sandbox, p.id).message


async def test_expiry_on_a_late_reaction_and_by_the_sweep(sandbox, bots):
    clock = FakeClock()
    rt = await bots.start(clock=clock)
    p = await propose(sandbox, "alice", SCALE)
    clock.advance(15 * 60 - 1)
    q = await propose(sandbox, "alice", RESTART, n=1)
    gen = await generation(sandbox)
    clock.advance(2)  # p is past its 15 minutes, q is not
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_reply(sandbox, p.root_id, f"expired at")
    assert "expired at" in post(sandbox, p.id).message
    assert await replicas(sandbox) == 2
    await rt.approvals.sweep()
    assert "waiting for approval" in post(sandbox, q.id).message  # not yet
    clock.advance(15 * 60)
    await rt.approvals.sweep()
    await wait_reply(sandbox, q.root_id, "expired at")
    sandbox.mattermost.react("alice", q.id, "white_check_mark")
    await settle(rt)
    assert await generation(sandbox) == gen


async def test_stale_target_is_reported_and_not_changed(sandbox, bots):
    await bots.start()
    p = await propose(sandbox, "alice", SCALE)
    await kubectl(sandbox, "-n", NS, "scale", "deployment", DEP, "--replicas=4")  # someone else
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    msg = await wait_reply(sandbox, p.root_id, "is stale and was **not run**")
    assert "made for 2 replicas; now 4 replicas" in msg
    await wait_state(sandbox, p.id, "stale")
    assert await replicas(sandbox) == 4


async def test_read_only_shows_the_plan_and_runbook_without_reactions(sandbox, bots):
    rt = await bots.start(enabled=False)
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", f"/sop fix {SCALE}")
    assert "read-only" in reply["text"]
    await rt.bot.drain()
    msg = next(p for p in bot_posts(sandbox) if "Remediation is disabled (read-only)" in p.message)
    assert "spec.replicas 2 → 3" in msg.message and "--replicas=3" in msg.message
    assert sandbox.mattermost.reactions_on(msg.id) == []
    sandbox.mattermost.react("alice", msg.id, "white_check_mark")
    await settle(rt)
    assert await replicas(sandbox) == 2
    assert proposals(sandbox) == []


async def test_bad_arguments_and_unknown_actions_are_refused_at_once(sandbox, bots):
    rt = await bots.start()
    text = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix scale namespace=kube-system "
                                                 "name=../x replicas=999"))["text"]
    assert "name: must be a Kubernetes name" in text and "replicas: Input should be less than or equal to 50" in text
    text = (await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix reboot-everything"))["text"]
    assert "No remediation action `reboot-everything`" in text and "`drain node=<node name>`" in text
    await rt.bot.drain()
    assert bot_posts(sandbox) == []
