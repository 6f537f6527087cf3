"""Two replicas on one store (a SQLite file both open, and a real PostgreSQL server): every replica consumes the websocket's reactions, the store's
compare-and-set makes an approval single-use, and a procedure run is advanced by the one
replica holding its claim, at start as after its replica died."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from bot.approvals import ActionParams, Outcome
from bot.approvals.procedure_repo import RunState
from bot.approvals.procedures import PROCEDURES, Gate, Procedure, Step, StepRun, procedure
from bot.approvals.render import APPROVE
from bot.claims import Claims
from bot.approvals.service import utcnow
from tests.approvals.conftest import kubectl_json, wait_for
from tests.approvals.support import propose, replies, wait_state
from tests.approvals.test_procedures_e2e import start_procedure, step_line, wait_status

RESTART = "restart kind=deployment namespace=kube-system name=rke2-traefik"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, sandbox) -> dict[str, Any]:
    """The store both replicas share: the sandbox's SQLite file, or a database on a real
    PostgreSQL server (tests/conftest.py)."""
    if request.param == "sqlite":
        return {}
    from tests.postgres import new_database

    url = await new_database(request.getfixturevalue("postgres_server"))
    return {"store": {"url": url, "sslmode": "disable"}}


def second(sandbox, store: dict[str, Any]) -> dict[str, Any]:
    """The other replica's own listener (the sandbox's Mattermost calls the first for slash commands)."""
    return {**store, "server": {**sandbox.bot_config()["server"], "port": 0}}


async def test_two_replicas_given_the_same_reaction_run_the_action_once(sandbox, bots, store):
    a = await bots.start(sections=store)
    b = await bots.start(sections=second(sandbox, store))
    seen: dict[str, int] = {"a": 0, "b": 0}
    for name, rt in (("a", a), ("b", b)):
        async def count(event, name=name):
            seen[name] += event.emoji_name == APPROVE
        rt.on_reaction.insert(0, count)
    dep = await kubectl_json(sandbox, "-n", "kube-system", "get", "deployment", "rke2-traefik")
    p = await propose(sandbox, "alice", RESTART)
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    await wait_for(lambda: seen == {"a": 1, "b": 1}, what="both replicas to receive the reaction")
    await a.bot.drain()
    await b.bot.drain()
    after = await kubectl_json(sandbox, "-n", "kube-system", "get", "deployment", "rke2-traefik")
    assert after["metadata"]["generation"] == dep["metadata"]["generation"] + 1  # restarted once
    assert sum("**succeeded**" in m and m.startswith(":white_check_mark: Proposal #")
               for m in replies(sandbox, p.root_id)) == 1


class Hold(ActionParams):
    name: str = "hold"


class Steps:
    def __init__(self) -> None:
        self.runs = {"one": 0, "two": 0}
        self.hang = True
        self.release = asyncio.Event()
        self.reached = asyncio.Event()


@pytest.fixture
def steps():
    st = Steps()

    def counting(key: str):
        async def run(r: StepRun) -> Outcome:
            st.runs[key] += 1
            if key == "two" and st.hang:
                st.reached.set()
                await st.release.wait()
            return Outcome(ok=True, summary=f"{key} ran")
        return run

    async def not_done(r: StepRun) -> Gate:
        return Gate.ready()

    @procedure
    class TwoSteps(Procedure[Hold]):
        name = "test-two-steps"
        title = "Two steps"
        params = Hold
        steps = (Step("one", "Step one", run=counting("one"), precondition=not_done),
                 Step("two", "Step two", run=counting("two"), precondition=not_done))

    yield st
    st.release.set()
    del PROCEDURES["test-two-steps"]


async def crash(bots, rt) -> None:
    for task in list(rt.bot._tasks):
        task.cancel()
    await asyncio.gather(*list(rt.bot._tasks), return_exceptions=True)
    await bots.stop(rt)


async def start_mid_step_two(sandbox, bots, steps, store):
    rt = await bots.start(quorum_high=1, sections=store)
    p = await start_procedure(sandbox, "alice", "test-two-steps")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await asyncio.wait_for(steps.reached.wait(), 10)
    steps.reached.clear()
    return rt, p


async def test_two_replicas_starting_together_resume_a_run_once(sandbox, bots, steps, store):
    rt, p = await start_mid_step_two(sandbox, bots, steps, store)
    await crash(bots, rt)  # the run is "running", step two "running"
    a, b = await asyncio.gather(bots.start(quorum_high=1, sections=store), bots.start(quorum_high=1, sections=second(sandbox, store)))
    await asyncio.wait_for(steps.reached.wait(), 10)  # one of them re-runs step two…
    tasks = [t for rt in (a, b) for t in rt.approvals.procedures._tasks.values()]
    assert len(tasks) == 2  # …both tried…
    done, _ = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1  # …the other found the run claimed and left it
    assert steps.runs == {"one": 1, "two": 2}
    steps.release.set()
    await wait_status(sandbox, p.id, "**succeeded**")
    assert steps.runs == {"one": 1, "two": 2}
    assert step_line(sandbox, p.id, 2).startswith("2. ✅")


async def test_a_run_whose_replica_died_goes_on_once_its_claim_lapses(sandbox, bots, steps, store):
    dead, p = await start_mid_step_two(sandbox, bots, steps, store)
    survivor = await bots.start(quorum_high=1, sections=second(sandbox, store))
    (task,) = survivor.approvals.procedures._tasks.values()
    await asyncio.wait_for(task, 10)  # its resume at start left the run to its live owner
    assert steps.runs == {"one": 1, "two": 1}
    owner = dead.approvals.identity
    await crash(bots, dead)
    # kill -9 runs no cleanup: the dead replica's claim stays in the store until it lapses
    (run,) = await survivor.approvals.procedures.repo.in_states(RunState.running)
    await Claims(survivor.store, owner).claim("procedure", run.id, utcnow())
    steps.hang = False
    await survivor.approvals.sweep()
    await survivor.bot.drain()
    assert steps.runs == {"one": 1, "two": 1}  # its claim still holds: left alone
    survivor.approvals.clock = lambda: utcnow() + timedelta(seconds=61)  # the claim's lease passes
    await survivor.approvals.sweep()
    await wait_status(sandbox, p.id, "**succeeded**")
    assert steps.runs == {"one": 1, "two": 2}


async def test_a_share_dialog_opened_by_one_replica_is_accepted_by_the_other(sandbox, bots, store):
    """Mattermost posts the dialog submission to the Service: any replica may get it."""
    a = await bots.start(sections=store)
    b = await bots.start(sections=second(sandbox, store))
    alice = sandbox.mattermost.user("alice").id
    state = a.approvals._sign(7, alice)
    assert b.approvals._verify(state, alice) == 7
    assert b.approvals._verify(state, sandbox.mattermost.user("bob").id) is None  # still bound to its user
    assert b.approvals._verify(state[:-1] + ("0" if state[-1] != "0" else "1"), alice) is None
