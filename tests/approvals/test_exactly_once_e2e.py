"""At most once: duplicate and concurrent reaction events, reactions made while the bot was
disconnected or down, and restarts before approval, after approval and during the run."""

from __future__ import annotations

import asyncio

import pytest

from bot.approvals import ACTIONS, Action, ActionParams, Outcome, Plan, remediation_action
from bot.chat.models import ReactionEvent
from tests.approvals.conftest import kubectl_json, wait_for
from tests.approvals.support import post, propose, replies, wait_reply, wait_state

RESTART = "restart kind=deployment namespace=kube-system name=rke2-traefik"


async def generation(sb) -> int:
    return (await kubectl_json(sb, "-n", "kube-system", "get", "deployment", "rke2-traefik"))["metadata"]["generation"]


def succeeded_replies(sb, root_id: str) -> int:
    return sum("**succeeded**" in m and m.startswith(":white_check_mark: Proposal #") for m in replies(sb, root_id))


async def test_duplicate_and_concurrent_approvals_run_once(sandbox, bots):
    rt = await bots.start(approvers=["alice", "bob"])
    gen = await generation(sandbox)
    p = await propose(sandbox, "alice", RESTART)
    alice = sandbox.mattermost.user("alice").id
    bob = sandbox.mattermost.user("bob").id
    events = [ReactionEvent(user_id=uid, username=name, post_id=p.id, emoji_name="white_check_mark", added=True)
              for uid, name in ((alice, "alice"), (bob, "bob"))]
    # The same events many times over, at the same instant, plus a REST resync racing them.
    await asyncio.gather(*(rt._reaction(e) for e in events * 5), rt.approvals.resync())
    await wait_state(sandbox, p.id, "succeeded")
    await asyncio.gather(*(rt._reaction(e) for e in events * 3), rt.approvals.resync())
    await rt.bot.drain()
    assert await generation(sandbox) == gen + 1
    assert succeeded_replies(sandbox, p.root_id) == 1


async def test_reactions_made_while_disconnected_are_found_on_reconnect(sandbox, bots):
    rt = await bots.start()
    gen = await generation(sandbox)
    p = await propose(sandbox, "alice", RESTART)
    reconnects = rt.events.reconnects
    await sandbox.mattermost.disconnect_websockets()
    sandbox.mattermost.react("alice", p.id, "white_check_mark")  # no websocket to deliver it
    await wait_for(lambda: rt.events.reconnects > reconnects, what="the websocket to reconnect")
    await wait_state(sandbox, p.id, "succeeded")
    assert await generation(sandbox) == gen + 1


async def test_restart_between_proposal_and_approval(sandbox, bots):
    rt = await bots.start()
    gen = await generation(sandbox)
    p = await propose(sandbox, "alice", RESTART)
    await bots.stop(rt)
    sandbox.mattermost.react("alice", p.id, "white_check_mark")  # while the bot is down
    await bots.start()  # finds it at start
    await wait_state(sandbox, p.id, "succeeded")
    assert await generation(sandbox) == gen + 1

    q = await propose(sandbox, "alice", "scale namespace=kube-system name=rke2-coredns-rke2-coredns replicas=3")
    rt2 = bots.running[-1]
    await bots.stop(rt2)
    await bots.start()  # restarted with nothing pending: approval still works afterwards
    sandbox.mattermost.react("alice", q.id, "white_check_mark")
    await wait_state(sandbox, q.id, "succeeded")
    dep = await kubectl_json(sandbox, "-n", "kube-system", "get", "deployment", "rke2-coredns-rke2-coredns")
    assert dep["spec"]["replicas"] == 3


class HoldParams(ActionParams):
    name: str = "probe"


class Gate:
    def __init__(self) -> None:
        self.plans = 0
        self.runs = 0
        self.block_plan_at: int | None = None
        self.block_run = False
        self.reached = asyncio.Event()


@pytest.fixture
def gate():
    g = Gate()

    @remediation_action
    class Hold(Action[HoldParams]):
        """A probe: counts runs and can hang in the re-check or in the run (a crash point)."""

        name = "test-hold"
        title = "Probe"
        params = HoldParams

        async def plan(self, env, p) -> Plan:
            g.plans += 1
            if g.block_plan_at == g.plans:
                g.reached.set()
                await asyncio.Event().wait()
            return Plan(operations=["nothing"], state="s")

        async def run(self, env, p) -> Outcome:
            g.runs += 1
            if g.block_run:
                g.reached.set()
                await asyncio.Event().wait()
            return Outcome(ok=True, summary="ran")

    yield g
    del ACTIONS["test-hold"]


async def crash(bots, rt) -> None:
    """The process dies mid-action: its tasks stop where they are, then shutdown."""
    for task in list(rt.bot._tasks):
        task.cancel()
    await asyncio.gather(*list(rt.bot._tasks), return_exceptions=True)
    await bots.stop(rt)


@pytest.mark.parametrize("where", ["approved", "running"])
async def test_restart_after_approval_is_reported_not_rerun(sandbox, bots, gate, where):
    rt = await bots.start()
    p = await propose(sandbox, "alice", "test-hold")
    if where == "approved":
        gate.block_plan_at = 2  # the re-check right after approval hangs
    else:
        gate.block_run = True
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await asyncio.wait_for(gate.reached.wait(), 10)
    await crash(bots, rt)
    runs = gate.runs
    gate.block_plan_at, gate.block_run = None, False
    rt2 = await bots.start()
    msg = await wait_reply(sandbox, p.root_id, "**not** re-run")
    assert f"while {where}" in msg and "**not** re-run" in msg
    assert "**interrupted**" in post(sandbox, p.id).message
    sandbox.mattermost.unreact("alice", p.id, "white_check_mark")
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await rt2.approvals.resync()
    await rt2.bot.drain()
    assert gate.runs == runs == (0 if where == "approved" else 1)
    assert sum("**not** re-run" in m for m in replies(sandbox, p.root_id)) == 1
