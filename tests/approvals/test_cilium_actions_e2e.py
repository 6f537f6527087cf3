"""Chapter 3's Cilium actions end to end: the L2 policy and the IP pool created from the bot's
config (never invented: blocked without it), with the object previewed from a server-side dry
run; the pool expanded by the configured block (high risk); every Cilium agent pod deleted (3.1's
nuclear option, high risk). Checked with kubectl."""

from __future__ import annotations

import pytest

from tests.approvals.conftest import kubectl, kubectl_json, wait_for
from tests.approvals.support import bot_posts, propose, wait_state

pytestmark = pytest.mark.asyncio

TWO = {"approvers": ["alice", "bob"]}
L2 = {"policy": {"name": "default-l2-policy", "interfaces": ["^eth[0-9]+"]},
      "pool": {"name": "default-pool", "blocks": ["203.0.113.200/29"]}}
CHECKS = {"checks": {"l2-announcements": L2, "traefik-lb": {"expand_block": "203.0.113.208/29"}}}


async def approve(sb, p, *users: str) -> None:
    for u in users or ("alice",):
        sb.mattermost.react(u, p.id, "white_check_mark")


async def test_l2_announcements_proposes_the_configured_policy_and_it_is_created(sandbox, bots):
    await bots.start(sections=CHECKS)
    await sandbox.apply("l2-policy-missing")
    await sandbox.mattermost.run_command("bob", "sop-alerts", "/sop l2-announcements")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`create-l2-policy`" in p.message and "(from `l2-announcements`)" in p.message
    assert "POST cilium.io/v2alpha1 ciliuml2announcementpolicies default-l2-policy" in p.message
    assert "The API server accepted creating CiliumL2AnnouncementPolicy default-l2-policy (dry run)" in p.message
    assert "- ^eth[0-9]+" in p.message and "loadBalancerIPs: true" in p.message  # the object, previewed
    assert "default-l2-policy" not in await kubectl(sandbox, "get", "ciliuml2announcementpolicies", check=False)
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    made = await kubectl_json(sandbox, "get", "ciliuml2announcementpolicy", "default-l2-policy")
    assert made["spec"] == {"interfaces": ["^eth[0-9]+"], "externalIPs": True, "loadBalancerIPs": True}


async def test_creating_from_config_is_blocked_without_config(sandbox, bots):
    await bots.start(sections={"checks": {}})
    await sandbox.apply("lb-ip-pending")  # the pool is gone
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix create-lb-pool")
    refusal = await wait_for(lambda: next((x.message for x in bot_posts(sandbox)
                                           if "Not proposing `create-lb-pool" in x.message), None), what="refusal")
    assert "no CiliumLoadBalancerIPPool configured (checks.l2-announcements): the bot does not invent one" in refusal
    assert "default-pool" not in await kubectl(sandbox, "get", "ciliumloadbalancerippools", check=False)


async def test_create_lb_pool_from_config(sandbox, bots):
    await bots.start(sections=CHECKS)
    await sandbox.apply("lb-ip-pending")
    p = await propose(sandbox, "alice", "create-lb-pool")
    assert "POST cilium.io/v2alpha1 ciliumloadbalancerippools default-pool" in p.message
    assert "cidr: 203.0.113.200/29" in p.message
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    pool = await kubectl_json(sandbox, "get", "ciliumloadbalancerippool", "default-pool")
    assert pool["spec"]["blocks"] == [{"cidr": "203.0.113.200/29"}]


async def test_expand_lb_pool_is_high_risk_and_adds_the_configured_block(sandbox, bots):
    await bots.start(sections=CHECKS, **TWO)
    await sandbox.apply("lb-pool-exhausted")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop traefik-lb")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`expand-lb-pool`" in p.message and "(from `traefik-lb`)" in p.message
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    assert "blocks 203.0.113.200/29 → 203.0.113.200/29, 203.0.113.208/29; 8 → 16 addresses" in p.message
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    await approve(sandbox, p, "alice")
    pool = await kubectl_json(sandbox, "get", "ciliumloadbalancerippool", "default-pool")
    assert len(pool["spec"]["blocks"]) == 1  # one approval of two: nothing changed
    await approve(sandbox, p, "bob")
    await wait_state(sandbox, p.id, "succeeded")
    pool = await kubectl_json(sandbox, "get", "ciliumloadbalancerippool", "default-pool")
    assert pool["spec"]["blocks"] == [{"cidr": "203.0.113.200/29"}, {"cidr": "203.0.113.208/29"}]


async def test_delete_cilium_pods_is_the_high_risk_nuclear_option(sandbox, bots):
    await bots.start(**TWO)
    before = sorted(x["metadata"]["name"] for x in
                    (await kubectl_json(sandbox, "-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium"))["items"])
    assert len(before) == 6
    p = await propose(sandbox, "alice", "delete-cilium-pods")
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    for name in before:
        assert f"DELETE v1 pods kube-system/{name}" in p.message
    assert "try the DaemonSet restart first" in p.message
    await approve(sandbox, p, "alice", "bob")
    await wait_state(sandbox, p.id, "succeeded")
    assert await kubectl(sandbox, "-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium", "-o", "name") == ""


async def test_delete_pods_by_the_cilium_selector_is_as_high_risk_as_the_nuclear_option(sandbox, bots):
    await bots.start(**TWO)
    p = await propose(sandbox, "alice", "delete-pods namespace=kube-system selector=k8s-app=cilium")
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    q = await propose(sandbox, "alice", "delete-pods namespace=kube-system selector=k8s-app=kube-dns")
    assert "risk **low**" in q.message
