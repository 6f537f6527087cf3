"""The persisted state machine (ProposalRepo on a real SQLite store): legal moves only, atomic
compare-and-set, quorum reached exactly once under concurrent votes, audit rows per step."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from bot.approvals.actions import Outcome, Plan, Risk
from bot.approvals.models import TRANSITIONS, IllegalTransition, Rule, State, allowed
from bot.approvals.repo import ProposalRepo
from bot.approvals.rules import rule_for
from bot.config import RemediationConfig

T0 = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
async def repo(open_store):
    """On each backend: SQLite, then a real PostgreSQL server."""
    store = await open_store()
    r = ProposalRepo(store)
    await r.migrate()
    await r.migrate()  # idempotent
    yield r
    await store.close()


async def new(repo: ProposalRepo, quorum: int = 1) -> int:
    return await repo.create(action="scale", params={"replicas": 3}, risk=Risk.low, requester="alice",
                             source="command", channel_id="c", root_id="r",
                             rule=Rule(usernames=["alice", "bob", "carol"], quorum=quorum),
                             plan=Plan(operations=["PATCH x"], state="s1"), now=T0,
                             expires_at=T0 + timedelta(minutes=15))


def test_only_the_documented_moves_are_legal():
    finals = [s for s in State if s.final]
    assert set(finals) == {State.succeeded, State.failed, State.rejected, State.expired, State.stale,
                           State.interrupted, State.withdrawn}
    for s in finals:
        assert not any(allowed(s, t) for t in State)  # final states stay final
    assert allowed(State.proposed, State.approved) and not allowed(State.proposed, State.running)
    assert allowed(State.proposed, State.withdrawn) and not allowed(State.approved, State.withdrawn)
    assert not allowed(State.approved, State.proposed) and not allowed(State.running, State.approved)
    assert set(TRANSITIONS) == {State.proposed, State.approved, State.running}


async def test_compare_and_set_moves_once(repo):
    pid = await new(repo)
    with pytest.raises(IllegalTransition):
        await repo.transition(pid, State.proposed, State.running, now=T0, actor="x")
    assert await repo.transition(pid, State.proposed, State.rejected, now=T0, actor="bob", rejected_by="bob")
    assert not await repo.transition(pid, State.proposed, State.approved, now=T0, actor="alice")
    p = await repo.get(pid)
    assert p.state is State.rejected and p.rejected_by == "bob" and p.finished_at == T0


async def test_concurrent_votes_reach_the_quorum_exactly_once(repo):
    pid = await new(repo, quorum=2)
    results = await asyncio.gather(*(repo.vote(pid, u, T0) for u in ["alice", "bob", "carol", "alice", "bob"] * 4))
    assert sum(approved for _, _, approved in results) == 1
    assert sum(new for new, _, _ in results) == 2  # the third person came after the decision
    p = await repo.get(pid)
    assert p.state is State.approved and len(p.approvers) == 2
    assert await repo.vote(pid, "carol", T0) == (False, 0, False)
    assert not await repo.unvote(pid, "alice", T0)  # decided: withdrawing changes nothing


async def test_votes_below_quorum_can_be_withdrawn(repo):
    pid = await new(repo, quorum=2)
    assert await repo.vote(pid, "alice", T0) == (True, 1, False)
    assert await repo.vote(pid, "alice", T0) == (False, 1, False)  # duplicate event
    assert await repo.unvote(pid, "alice", T0)
    assert (await repo.get(pid)).approvers == []
    assert await repo.vote(pid, "alice", T0) == (True, 1, False)


async def test_run_to_completion_and_the_audit_trail(repo):
    pid = await new(repo)
    await repo.vote(pid, "alice", T0)
    assert await repo.transition(pid, State.approved, State.running, now=T0, actor="sop-bot")
    out = Outcome(ok=True, summary="scaled to 3")
    assert await repo.transition(pid, State.running, State.succeeded, now=T0, actor="sop-bot", outcome=out)
    assert not await repo.transition(pid, State.running, State.failed, now=T0, actor="sop-bot")
    p = await repo.get(pid)
    assert p.state is State.succeeded and p.outcome == out
    events = [e["event"] for e in reversed(await repo.audit(20))]
    assert events == ["proposed", "approval", "approved", "running", "succeeded"]
    first = (await repo.audit(20))[-1]
    assert first["actor"] == "alice" and first["detail"]["params"] == {"replicas": 3}
    assert (await repo.audit(20))[0]["detail"]["result"]["summary"] == "scaled to 3"


async def test_notice_once_and_open_proposals(repo):
    pid = await new(repo)
    assert await repo.notice_once(pid, "bob", "not-approver")
    assert not await repo.notice_once(pid, "bob", "not-approver")
    assert (await repo.open_for("scale", {"replicas": 3})).id == pid
    assert await repo.open_for("scale", {"replicas": 4}) is None


def test_rules_per_action_then_risk_then_global():
    cfg = RemediationConfig(approvers=["alice"], groups={"sre": ["bob", "carol"]},
                            by_risk={"high": {"groups": ["sre"]}},
                            by_action={"drain": {"approvers": ["dave"], "quorum": 1}})
    low = rule_for(cfg, "scale", Risk.low)
    assert low.usernames == ["alice"] and low.quorum == 1
    high = rule_for(cfg, "scale", Risk.high)
    assert high.usernames == ["bob", "carol"] and high.quorum == 2 and "group sre (@bob, @carol)" in high.described
    drain = rule_for(cfg, "drain", Risk.high)
    assert drain.usernames == ["dave"] and drain.quorum == 1
    assert rule_for(RemediationConfig(), "scale", Risk.low).described.startswith("nobody")
