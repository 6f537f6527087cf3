"""Approvals across two ``sopbot run`` processes on one real PostgreSQL: the leader (the Lease
holder) is killed with ``kill -9`` once a fix is proposed; the approval reaction, seen by the survivor's websocket, runs
the action once there; the killed replica, restarted, does not run it again. And the websocket
dropped by Mattermost in the middle of an approval: a reaction made while both replicas are
disconnected is found by their resync, and still runs the action once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.approvals.render import APPROVE
from sandbox.runner import Sandbox
from tests.approvals.conftest import kubectl_json, wait_for
from tests.approvals.support import propose, replies, wait_state
from tests.replicas import Pair

pytestmark = pytest.mark.asyncio
RESTART = "restart kind=deployment namespace=kube-system name=rke2-traefik"


async def generation(sb: Sandbox) -> int:
    dep = await kubectl_json(sb, "-n", "kube-system", "get", "deployment", "rke2-traefik")
    return int(dep["metadata"]["generation"])


def successes(sb: Sandbox, root_id: str) -> int:
    return sum(m.startswith(":white_check_mark: Proposal #") and "**succeeded**" in m
               for m in replies(sb, root_id))


async def both_listening(sb: Sandbox, pair: Pair) -> None:
    bot_id = sb.mattermost.user("sop-bot").id
    await wait_for(lambda: sb.mattermost.hub.connected_users().count(bot_id) >= len(pair.replicas),
                   timeout=30, what="both replicas' websockets")


@pytest.fixture
async def pair(tmp_path: Path, postgres_server):
    from tests.postgres import new_database

    url = await new_database(postgres_server)
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        pair = Pair.configure(sb, url, tmp_path / "replicas",
                              remediation={"enabled": True, "approvers": ["alice"]})
        try:
            await pair.start()
            await both_listening(sb, pair)
            yield pair
        finally:
            await pair.stop()


async def leader(sb: Sandbox) -> str:
    async def holder() -> str | None:
        try:
            lease = await kubectl_json(sb, "-n", "default", "get", "lease", "sopbot-scheduler")
        except Exception:  # not created yet
            return None
        return lease["spec"].get("holderIdentity")
    return await wait_for(holder, timeout=30, what="a leader")


async def test_an_approval_through_a_leader_kill_runs_once_on_the_survivor(pair: Pair):
    sb = pair.sb
    before = await generation(sb)
    p = await propose(sb, "alice", RESTART)  # slash commands reach replica 0
    (killed,) = [r for r in pair.replicas if r.name == await leader(sb)]
    (survivor,) = [r for r in pair.replicas if r is not killed]
    killed.kill9()
    sb.mattermost.react("alice", p.id, APPROVE)
    await wait_state(sb, p.id, "succeeded")
    assert await generation(sb) == before + 1
    killed.start()  # back after the kill: its start-up recovery finds the proposal done
    await killed.ready()
    await asyncio.sleep(3)
    assert await generation(sb) == before + 1
    assert successes(sb, p.root_id) == 1, pair.logs()
    assert "Traceback" not in survivor.log.read_text(errors="replace"), pair.logs()


async def test_a_reaction_made_while_the_websockets_are_down_runs_once(pair: Pair):
    sb = pair.sb
    before = await generation(sb)
    p = await propose(sb, "alice", RESTART)
    # Mattermost drops every websocket (a restart); the approval is made before they reconnect.
    await sb.mattermost.disconnect_websockets()
    sb.mattermost.react("alice", p.id, APPROVE)
    await wait_state(sb, p.id, "succeeded")  # found by the replicas' resync after reconnecting
    await both_listening(sb, pair)
    await asyncio.sleep(2)
    assert await generation(sb) == before + 1
    assert successes(sb, p.root_id) == 1, pair.logs()
