"""A proposal made for an alert that resolves before anyone approves it is withdrawn, not left
approvable (issue 12): the post says so and an approval afterwards changes nothing."""

from __future__ import annotations

import pytest

from tests.alerts.test_alertmanager_e2e import World, wait_until, world  # noqa: F401 (fixture)

pytestmark = pytest.mark.asyncio


async def test_a_proposal_whose_alert_resolved_is_withdrawn_and_cannot_be_approved(world: World):
    bot = await world.start_bot()
    await world.am.fire("VaultSealed", group="vault", namespace="vault")
    [root] = await wait_until("the alert thread", lambda: world.roots())
    [proposal] = await wait_until("the unseal proposal", lambda: world.proposals(root.id))
    assert "waiting for approval" in proposal.message

    await world.am.fire("VaultSealed", resolved=True, group="vault", namespace="vault")
    await wait_until("the root edited to RESOLVED", lambda: "RESOLVED" in world.sb.mattermost.posts[root.id].message)
    world.sb.mattermost.react("alice", proposal.id, "white_check_mark")  # too late: the alert is gone
    text = await wait_until("the proposal withdrawn",
                            lambda: "withdrawn: the alert resolved at" in world.sb.mattermost.posts[proposal.id].message
                            and world.sb.mattermost.posts[proposal.id].message)
    assert "**Status**: withdrawn: the alert resolved at " in text and "UTC" in text
    await wait_until("the withdrawal reply", lambda: [p for p in world.replies(root.id)
                                                      if "withdrawn: the alert resolved at" in p.message])
    assert bot.approvals is not None
    pid = int(proposal.message.split("**Proposal #", 1)[1].split(":", 1)[0])
    p = await bot.approvals.repo.get(pid)
    assert p is not None and p.state.value == "withdrawn"
    assert all(r.sealed for r in world.sb.platform.vault.replicas)  # nothing was unsealed
