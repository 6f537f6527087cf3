"""Procedures end to end through the sandbox Mattermost: one approval for an ordered list of steps,
the proposal post as a live step log, stop at a failing step, ``/sop fix resume``/``abort``,
rejection by :x:, and exactly once per step across duplicate events and restarts (a probe
procedure counts its steps' runs and can hang mid-step: the crash point)."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.approvals.procedures import PROCEDURES, Gate, Procedure, Step, StepRun, procedure
from bot.approvals import ActionParams, Outcome, Plan
from bot.chat.models import ReactionEvent
from sandbox.platform import set_pod_ready
from tests.approvals.conftest import kubectl, kubectl_json, wait_for
from tests.approvals.support import bot_posts, post, replies, wait_reply

APPROVE = "white_check_mark"


def procedure_posts(sb) -> list:
    return [p for p in bot_posts(sb) if re.search(r"\*\*Procedure #\d+", p.message)]


async def start_procedure(sb, user: str, words: str):
    """``/sop fix <procedure> …`` as ``user``: the proposal post once it has the bot's reactions."""
    before = len(procedure_posts(sb))
    reply = await sb.mattermost.run_command(user, "sop-alerts", f"/sop fix {words}")
    assert "Planning procedure" in reply.get("text", ""), reply
    p = await wait_for(lambda: len(procedure_posts(sb)) > before and procedure_posts(sb)[before],
                       what=f"procedure proposal for {words}")
    await wait_for(lambda: {APPROVE, "x"} <= {r.emoji_name for r in sb.mattermost.reactions_on(p.id)},
                   what="the bot's reactions")
    return p


def step_line(sb, post_id: str, n: int) -> str:
    """The live log's line for step ``n`` (1-based)."""
    msg = post(sb, post_id).message
    return next(line for line in msg.splitlines() if line.startswith(f"{n}. "))


async def wait_step(sb, post_id: str, n: int, icon: str, timeout: float = 20.0) -> str:
    return await wait_for(lambda: step_line(sb, post_id, n).startswith(f"{n}. {icon}") and step_line(sb, post_id, n),
                          timeout=timeout, what=f"step {n} to show {icon}")


async def wait_status(sb, post_id: str, needle: str, timeout: float = 20.0) -> str:
    return await wait_for(lambda: needle in post(sb, post_id).message and post(sb, post_id).message,
                          timeout=timeout, what=f"procedure post to show {needle!r}")


def gate_post(sb, root_id: str, step: int):
    return next((p for p in sb.mattermost.thread(root_id)[1:]
                 if f", step {step}: **" in p.message and "waits for approval" in p.message), None)


async def approve_gate(sb, root_id: str, step: int, user: str = "alice"):
    g = await wait_for(lambda: gate_post(sb, root_id, step), what=f"the approval request of step {step}")
    await wait_for(lambda: APPROVE in {r.emoji_name for r in sb.mattermost.reactions_on(g.id)},
                   what="the gate's reactions")
    sb.mattermost.react(user, g.id, APPROVE)
    return g


async def node(sb, name: str):
    return await kubectl_json(sb, "get", "node", name)


async def pods_on(sb, name: str) -> list[str]:
    """The pods a drain evicts from the node (not DaemonSet pods)."""
    data = await kubectl_json(sb, "get", "pods", "-A", "--field-selector", f"spec.nodeName={name}")
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in data["items"]
            if "DaemonSet" not in [o["kind"] for o in p["metadata"].get("ownerReferences") or []]]


# -- 11.3 node maintenance on the sandbox -----------------------------------------------------------
NODE = "rke2-compute-1"  # holds vault-2; vault-0 and vault-1 are unsealed in the healthy world


async def test_node_maintenance_runs_in_order_stops_on_a_blocked_drain_and_resumes(sandbox, bots):
    await bots.start(quorum_high=1)
    before = await pods_on(sandbox, NODE)
    assert "vault/vault-2" in before and len(before) >= 2
    # vault-0 not Ready: Vault's PodDisruptionBudget (maxUnavailable 1) refuses evicting vault-2.
    set_pod_ready(sandbox.platform, "vault", "vault-0", False)
    p = await start_procedure(sandbox, "alice", f"node-maintenance node={NODE}")
    msg = p.message
    assert "Procedure #1: `node-maintenance node=rke2-compute-1`" in msg and "(runbook 11.3)" in msg
    # One plan: every step listed in order, dry runs where a step has one, nothing changed yet.
    titles = ["Special considerations", "CNPG primaries", "Cordon", "Drain", "Wait", "Uncordon", "The node is Ready"]
    for i, title in enumerate(titles, 1):
        assert step_line(sandbox, p.id, i).split("**")[1].startswith(title), step_line(sandbox, p.id, i)
    assert "Vault replica vault-2 here, the others unsealed" in msg
    assert "POST v1 pods/eviction vault/vault-2" in msg and "dryRun=All" in msg
    assert "blocked by PodDisruptionBudget vault/vault" in msg  # the drain's dry run says so now
    assert "Needs 1 distinct approval" in msg
    assert not (await node(sandbox, NODE))["spec"].get("unschedulable")

    sandbox.mattermost.react("alice", p.id, APPROVE)
    # Steps 1–3 run, then the high-risk drain asks for its own approval (⏸).
    await wait_step(sandbox, p.id, 4, "⏸")
    for n in (1, 2, 3):
        assert step_line(sandbox, p.id, n).startswith(f"{n}. ✅")
    assert "no CNPG primary on rke2-compute-1" in step_line(sandbox, p.id, 2)
    assert (await node(sandbox, NODE))["spec"]["unschedulable"] is True
    await approve_gate(sandbox, p.root_id, 4)
    line = await wait_step(sandbox, p.id, 4, "❌")
    assert "blocked — the node is not empty" in line
    assert "Next (runbook): 11.3" in post(sandbox, p.id).message
    failure = await wait_reply(sandbox, p.root_id, "stopped at step 4")
    assert "/sop fix resume 1" in failure and "**Next (runbook)**" in failure
    for n in (5, 6, 7):  # nothing after the failing step ran
        assert step_line(sandbox, p.id, n).startswith(f"{n}. ◻️")
    assert await pods_on(sandbox, NODE) == ["vault/vault-2"]  # the others were evicted

    set_pod_ready(sandbox.platform, "vault", "vault-0", True)
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix resume 1")
    assert "resumes at step 4" in reply["text"]
    await wait_step(sandbox, p.id, 5, "✅")
    assert await pods_on(sandbox, NODE) == []
    await wait_step(sandbox, p.id, 6, "⏸")  # maintenance: uncordon waits for a person
    assert "do the maintenance now" in step_line(sandbox, p.id, 6)
    assert (await node(sandbox, NODE))["spec"]["unschedulable"] is True
    await approve_gate(sandbox, p.root_id, 6)
    await wait_status(sandbox, p.id, "**succeeded**")
    assert step_line(sandbox, p.id, 7).startswith("7. ✅") and "Ready and schedulable" in step_line(sandbox, p.id, 7)
    assert not (await node(sandbox, NODE))["spec"].get("unschedulable")
    await wait_reply(sandbox, p.root_id, "✅ Procedure #1")
    assert sum(m.startswith("✅ Procedure #1") for m in replies(sandbox, p.root_id)) == 1


async def test_node_maintenance_rejected_by_x_changes_nothing(sandbox, bots):
    await bots.start(quorum_high=1)
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix node-maintenance node=nope")
    assert "Planning procedure" in reply["text"]
    await wait_for(lambda: any("Not proposing `node-maintenance node=nope`: no node nope" in m.message
                               for m in bot_posts(sandbox)), what="the refusal")
    p = await start_procedure(sandbox, "alice", f"node-maintenance node={NODE}")
    sandbox.mattermost.react("alice", p.id, "x")
    await wait_status(sandbox, p.id, "**rejected** by @alice")
    await wait_reply(sandbox, p.root_id, "rejected by @alice; no step was run")
    sandbox.mattermost.react("alice", p.id, APPROVE)  # too late: decided
    await bots.running[-1].bot.drain()
    assert not (await node(sandbox, NODE))["spec"].get("unschedulable")
    assert all(step_line(sandbox, p.id, n).startswith(f"{n}. ") and "✅" not in step_line(sandbox, p.id, n)
               for n in range(1, 8))


async def test_a_cnpg_primary_without_a_replica_elsewhere_blocks_the_maintenance(sandbox, bots):
    await bots.start(quorum_high=1)
    other = "rke2-database-1"  # every CNPG instance runs here in the small sandbox
    p = await start_procedure(sandbox, "alice", f"node-maintenance node={other}")
    assert "no ready replica on another node" in p.message  # the dry run says so up front
    sandbox.mattermost.react("alice", p.id, APPROVE)
    line = await wait_step(sandbox, p.id, 1, "❌")
    assert "draining would stop the database" in line
    assert not (await node(sandbox, other))["spec"].get("unschedulable")


async def test_one_control_plane_node_at_a_time(sandbox, bots):
    await bots.start(quorum_high=1)
    await kubectl(sandbox, "cordon", "rke2-cp-2")
    p = await start_procedure(sandbox, "alice", "node-maintenance node=rke2-cp-1")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    line = await wait_step(sandbox, p.id, 1, "❌")
    assert "rke2-cp-2 already cordoned or NotReady: drain one control-plane node at a time" in line
    assert "Next (runbook): 11.3 Special Considerations" in post(sandbox, p.id).message
    assert not (await node(sandbox, "rke2-cp-1"))["spec"].get("unschedulable")


# -- 10.2 single node replacement ------------------------------------------------------------------
async def test_replace_node_deletes_node_and_machine_and_waits_for_the_new_one(sandbox, bots):
    await bots.start(quorum_high=1)
    old = await node(sandbox, NODE)
    p = await start_procedure(sandbox, "alice", f"replace-node node={NODE}")
    assert "DELETE v1 nodes rke2-compute-1" in p.message
    assert "DELETE cluster.x-k8s.io/v1beta1 machines fleet-default/rke2-compute-1-machine" in p.message
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await approve_gate(sandbox, p.root_id, 2)  # the drain
    await wait_step(sandbox, p.id, 5, "⏳")  # waiting for the replacement to join
    assert "rke2-compute-1-machine" in step_line(sandbox, p.id, 1)
    names = [n["metadata"]["name"] for n in (await kubectl_json(sandbox, "get", "nodes"))["items"]]
    assert NODE not in names
    machines = sandbox.platform.mgmt.list("cluster.x-k8s.io/v1beta1", "Machine", "fleet-default")
    names = [m["metadata"]["name"] for m in machines]
    assert "rke2-compute-1-machine" not in names and "rke2-general-1-machine" in names
    # Rancher's machine pool brings up the replacement (node-labeler labels it).
    new = {k: v for k, v in old.items() if k != "status"}
    new["metadata"] = {"name": "rke2-compute-2", "labels": {**old["metadata"]["labels"],
                                                              "kubernetes.io/hostname": "rke2-compute-2"},
                       "annotations": {"cluster.x-k8s.io/machine": "rke2-compute-2-machine"}}
    new["spec"] = {k: v for k, v in old["spec"].items() if k != "unschedulable"}
    new["status"] = old["status"]
    sandbox.platform.kube.add(new)
    await wait_status(sandbox, p.id, "**succeeded**", timeout=40)
    assert "rke2-compute-2 joined and is Ready" in step_line(sandbox, p.id, 5)
    assert "workload-type=compute" in step_line(sandbox, p.id, 6)
    assert "all 3 Vault replicas unsealed" in step_line(sandbox, p.id, 7)


# -- the engine: exactly once per step, restarts, duplicates, abort -----------------------------------
class ProbeParams(ActionParams):
    name: str = "probe"


class Probe:
    def __init__(self) -> None:
        self.runs = {"one": 0, "two": 0, "three": 0}
        self.applied: set[str] = set()  # what the steps' effects would leave in the world
        self.hang_two = False
        self.two_applies_before_hang = False
        self.reached = asyncio.Event()


@pytest.fixture
def probe():
    pr = Probe()

    def counting(key: str):
        async def run(r: StepRun) -> Outcome:
            pr.runs[key] += 1
            if key == "two" and pr.hang_two:
                if pr.two_applies_before_hang:
                    pr.applied.add(key)
                pr.reached.set()
                await asyncio.Event().wait()  # the bot dies here
            pr.applied.add(key)
            r.memo[key] = pr.runs[key]
            return Outcome(ok=True, summary=f"{key} ran")
        return run

    def applied(key: str):
        async def pre(r: StepRun) -> Gate:
            return Gate.done(f"{key} is in place") if key in pr.applied else Gate.ready()
        return pre

    async def plan(r: StepRun) -> Plan:
        return Plan(operations=["PATCH nothing"], preview="would do one", dry_run=True)

    @procedure
    class TestProbe(Procedure[ProbeParams]):
        name = "test-probe"
        title = "Probe procedure"
        params = ProbeParams
        steps = (Step("one", "Step one", run=counting("one"), precondition=applied("one"), dry_run=plan),
                 Step("two", "Step two", run=counting("two"), precondition=applied("two")),
                 Step("three", "Step three", kind="check", run=counting("three")))

    yield pr
    del PROCEDURES["test-probe"]


async def crash(bots, rt) -> None:
    """The process dies: everything stops where it is, the periodic sweep first (left running,
    it could resume the run in a task of its own that outlives this "crash")."""
    if rt.approvals is not None and rt.approvals._sweeper is not None:
        rt.approvals._sweeper.cancel()
        await asyncio.gather(rt.approvals._sweeper, return_exceptions=True)
    for task in list(rt.bot._tasks):
        task.cancel()
    await asyncio.gather(*list(rt.bot._tasks), return_exceptions=True)
    await bots.stop(rt)


async def test_duplicate_and_concurrent_approvals_run_each_step_once(sandbox, bots, probe):
    rt = await bots.start(approvers=["alice", "bob"], quorum_high=2)
    p = await start_procedure(sandbox, "alice", "test-probe")
    assert "would do one" in p.message and "no dry run: checked when it runs" in p.message
    ids = {u: sandbox.mattermost.user(u).id for u in ("alice", "bob")}
    events = [ReactionEvent(user_id=uid, username=u, post_id=p.id, emoji_name=APPROVE, added=True)
              for u, uid in ids.items()]
    await asyncio.gather(*(rt._reaction(e) for e in events * 5), rt.approvals.resync())
    await wait_status(sandbox, p.id, "**succeeded**")
    await asyncio.gather(*(rt._reaction(e) for e in events * 3), rt.approvals.resync())
    await rt.bot.drain()
    assert probe.runs == {"one": 1, "two": 1, "three": 1}
    assert sum(m.startswith("✅ Procedure #1") for m in replies(sandbox, p.root_id)) == 1


@pytest.mark.parametrize("applied_before_crash", [True, False])
async def test_restart_mid_step_resumes_there_without_repeating_a_completed_step(
        sandbox, bots, probe, applied_before_crash):
    rt = await bots.start(quorum_high=1)
    probe.hang_two = True
    probe.two_applies_before_hang = applied_before_crash
    p = await start_procedure(sandbox, "alice", "test-probe")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await asyncio.wait_for(probe.reached.wait(), 10)
    await wait_step(sandbox, p.id, 2, "⏳")
    assert step_line(sandbox, p.id, 1).startswith("1. ✅")
    await crash(bots, rt)
    probe.hang_two = False
    await bots.start(quorum_high=1)
    await wait_status(sandbox, p.id, "**succeeded**")
    assert probe.runs["one"] == 1  # the completed step is not repeated
    line = step_line(sandbox, p.id, 2)
    if applied_before_crash:  # its precondition finds it done: marked done, not run again
        assert probe.runs["two"] == 1 and "already done: two is in place (found after a restart)" in line
    else:  # its precondition finds it not done: run again, and said so
        assert probe.runs["two"] == 2 and "two ran" in line
    assert probe.runs["three"] == 1


async def test_abort_stops_a_procedure_waiting_at_a_failed_step(sandbox, bots, probe):
    await bots.start(quorum_high=1)
    async def blocked(r: StepRun) -> Gate:
        return Gate.blocked("the probe says no")
    original = PROCEDURES["test-probe"].steps
    type(PROCEDURES["test-probe"]).steps = (original[0], Step("two", "Step two", run=original[1].run,
                                                             precondition=blocked, next_step="ask the probe"),
                                            original[2])
    p = await start_procedure(sandbox, "alice", "test-probe")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    line = await wait_step(sandbox, p.id, 2, "❌")
    assert "blocked: the probe says no" in line
    reply = await sandbox.mattermost.run_command("bob", "sop-alerts", "/sop fix abort 1")
    assert "may not abort" in reply["text"]  # bob is no approver and did not ask for it
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix abort 1")
    assert "aborted" in reply["text"]
    await wait_status(sandbox, p.id, "**aborted**")
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix resume 1")
    assert "only a stopped procedure resumes" in reply["text"]
    await bots.running[-1].bot.drain()
    assert probe.runs == {"one": 1, "two": 0, "three": 0}


async def test_restart_at_a_gate_resumes_there_and_repeats_no_step(sandbox, bots):
    rt = await bots.start(quorum_high=1)
    p = await start_procedure(sandbox, "alice", f"node-maintenance node={NODE}")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await approve_gate(sandbox, p.root_id, 4)
    await wait_step(sandbox, p.id, 6, "⏸")  # maintenance window: waits for the uncordon approval
    done = [step_line(sandbox, p.id, n) for n in range(1, 6)]
    await bots.stop(rt)
    g = gate_post(sandbox, p.root_id, 6)
    sandbox.mattermost.react("alice", g.id, APPROVE)  # approved while the bot is down
    rt2 = await bots.start(quorum_high=1)
    await wait_status(sandbox, p.id, "**succeeded**")
    assert [step_line(sandbox, p.id, n) for n in range(1, 6)] == done  # steps 1–5 untouched
    assert not (await node(sandbox, NODE))["spec"].get("unschedulable")
    started = [e for e in await rt2.approvals.repo.audit(100) if e["event"] == "step-started"]
    # Each step that ran started exactly once (step 2 had nothing to do and never started).
    assert sorted(e["detail"]["step"] for e in started) == [1, 3, 4, 5, 6, 7]


async def test_cnpg_primary_is_switched_over_before_the_drain(sandbox, bots):
    """11.3: a CNPG primary on the node moves first. The sandbox has no CNPG operator: the test
    plays it (promotes the target the bot asked for)."""
    plat = sandbox.platform
    db_node = "rke2-database-1"
    clusters = [c["metadata"]["name"] for c in plat.kube.list("postgresql.cnpg.io/v1", "Cluster", "database")]
    for c in clusters:  # one replica of each cluster on another node, as anti-affinity would place it
        plat.kube.update("v1", "Pod", f"{c}-2", "database", lambda pod: pod["spec"].update(nodeName="rke2-general-1"))
    await bots.start(quorum_high=1)
    p = await start_procedure(sandbox, "alice", f"node-maintenance node={db_node}")
    assert "CNPG primary of harbor-pg" in p.message  # the considerations' dry run
    sandbox.mattermost.react("alice", p.id, APPROVE)

    def asked() -> list[str]:
        return [c for c in clusters if plat.kube.get("postgresql.cnpg.io/v1", "Cluster", c, "database")
                ["status"]["targetPrimary"] == f"{c}-2"]
    await wait_for(lambda: len(asked()) >= 1, what="the first switchover request")
    promoted: set[str] = set()
    while len(promoted) < len(clusters):  # the operator: promote what was asked, one by one
        for c in asked():
            if c in promoted:
                continue
            for pod, role in ((f"{c}-1", "replica"), (f"{c}-2", "primary")):
                plat.kube.update("v1", "Pod", pod, "database", lambda o, role=role: o["metadata"]["labels"].update(
                    {"cnpg.io/instanceRole": role, "role": role}))
            plat.kube.update("postgresql.cnpg.io/v1", "Cluster", c, "database",
                             lambda o, c=c: o["status"].update(currentPrimary=f"{c}-2", phase="Cluster in healthy state"))
            promoted.add(c)
        await wait_for(lambda: len(asked()) > len(promoted) or len(promoted) == len(clusters), timeout=20,
                       what="the next switchover request")
    line = await wait_step(sandbox, p.id, 2, "✅")
    assert "switched over" in line and f"database/{clusters[0]}: {clusters[0]}-1 → {clusters[0]}-2" in line
    await wait_step(sandbox, p.id, 4, "⏸")  # the drain asks again; nobody evicted a primary before
    reply = await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix abort 1")
    assert "aborted" in reply["text"]
    await wait_status(sandbox, p.id, "**aborted**")
    assert "vault/vault-0" in await pods_on(sandbox, db_node)  # the drain never ran
