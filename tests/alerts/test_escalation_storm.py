"""Acknowledge, escalate on the severity's response time (hand-driven clock), storm control."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.alerts.escalation import Escalator, next_business_day
from bot.alerts.models import WebhookPayload
from bot.alerts.repo import GroupRepo
from bot.alerts.router import Router
from bot.alerts.storm import StormControl
from bot.alerts.threads import ThreadManager
from bot.chat.models import ReactionEvent
from bot.config import EscalationConfig
from bot.models import Severity
from tests.alerts.support import Clock, FakeHandlers, RecordingChat, alert, payload


@pytest.fixture
async def parts(open_store):
    """On each backend (SQLite, a real PostgreSQL): escalation and storms read and write the store."""
    store = await open_store()
    repo = GroupRepo(store)
    await repo.migrate()
    chat, clock, handlers = RecordingChat(), Clock(), FakeHandlers()
    yield store, repo, chat, clock, handlers
    await store.close()


def manager(repo, chat, clock, handlers, storm=None) -> ThreadManager:
    return ThreadManager(repo=repo, chat=chat, router=Router(handlers.registry, [], channel="sop-alerts"),
                         run=handlers.run, channel_id=chat.channel_id, clock=clock, storm=storm)


def escalator(repo, tm, chat, clock, **cfg) -> Escalator:
    return Escalator(repo=repo, threads=tm, chat=chat, clock=clock,
                     config=EscalationConfig(contacts=["oncall"], **cfg))


def P(data) -> WebhookPayload:
    return WebhookPayload.model_validate(data)


async def test_unacked_alert_escalates_once_after_its_response_time(parts):
    store, repo, chat, clock, handlers = parts
    tm = manager(repo, chat, clock, handlers)
    esc = escalator(repo, tm, chat, clock, contacts_by_severity={Severity.P2: ["lead"]})
    await tm.process(P(payload("n", [alert("NodeNotReady", node="worker-1", fp="n1")])), 1)  # P2: 1 h
    root = chat.roots[0]
    clock.advance(3599)
    assert await esc.run_once() == 0
    clock.advance(1)
    assert await esc.run_once() == 1
    escalation = [m for m in chat.replies(root.id) if "Escalation" in m.text]
    assert len(escalation) == 1 and "@lead" in escalation[0].text and "1h 0m" in escalation[0].text
    assert "escalated at 11:00 UTC" in root.text
    clock.advance(3600)
    assert await esc.run_once() == 0  # once


async def test_an_ack_reaction_on_the_root_stops_escalation(parts):
    store, repo, chat, clock, handlers = parts
    tm = manager(repo, chat, clock, handlers)
    esc = escalator(repo, tm, chat, clock)
    await tm.process(P(payload("d", [alert("NodeDiskPressure", node="worker-1", fp="d1")])), 1)  # P3
    root = chat.roots[0]
    await esc.on_reaction(ReactionEvent(user_id="u1", username="bob", post_id=root.id,
                                        emoji_name="thumbsup", added=True))
    assert "acked" not in root.text  # not the configured reaction
    await esc.on_reaction(ReactionEvent(user_id="u2", username="alice", post_id=root.id,
                                        emoji_name="eyes", added=True))
    assert "acked by @alice" in root.text
    clock.advance(5 * 3600)
    assert await esc.run_once() == 0
    assert not [m for m in chat.replies(root.id) if "Escalation" in m.text]


async def test_p4_escalates_at_the_start_of_the_next_business_day(parts):
    store, repo, chat, clock, handlers = parts
    # Friday 16:00 → Monday 09:00
    assert next_business_day(datetime(2026, 11, 27, 16, tzinfo=timezone.utc), 9) == \
        datetime(2026, 11, 30, 9, tzinfo=timezone.utc)
    tm = ThreadManager(repo=repo, chat=chat, run=handlers.run, channel_id=chat.channel_id, clock=clock,
                       router=Router(handlers.registry, [], channel="c"))
    clock.now = datetime(2026, 11, 27, 16, tzinfo=timezone.utc)
    await tm.process(P(payload("x", [alert("SomethingCosmetic", severity="info", fp="x1")])), 1)
    esc = escalator(repo, tm, chat, clock)
    clock.now = datetime(2026, 11, 30, 8, 59, tzinfo=timezone.utc)
    assert await esc.run_once() == 0
    clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    assert await esc.run_once() == 1


async def test_a_storm_lists_new_groups_in_one_thread_and_diagnoses_most_severe_first(parts):
    store, repo, chat, clock, handlers = parts
    storm = StormControl(repo=repo, chat=chat, threshold=3, window_s=60, workers=1, debounce_s=0)
    tm = manager(repo, chat, clock, handlers, storm=storm)
    for i in range(3):
        await tm.process(P(payload(f"g{i}", [alert("NodeDiskPressure", node=f"w-{i}", fp=f"f{i}")])), i + 1)
        clock.advance(1)
    assert len(chat.roots) == 3  # at the threshold: still one thread each
    # The storm: a P3 group first, then a P2 one; nothing runs until the workers start.
    await tm.process(P(payload("g3", [alert("NodeDiskPressure", node="w-3", fp="f3")])), 4)
    await tm.process(P(payload("g4", [alert("NodeNotReady", node="w-4", fp="f4")])), 5)
    await tm.process(P(payload("g4", [alert("NodeNotReady", node="w-4", fp="f4")])), 6)  # repeat
    assert len(chat.roots) == 4
    storm_root = chat.roots[3]
    assert storm.storms == 1
    handlers.runs.clear()
    storm.start()
    await storm.join()
    assert [r[0] for r in handlers.runs] == ["node-status", "node-disk"]  # P2 before P3
    assert "2 alert groups (2 still firing)" in storm_root.text
    lines = storm_root.text.splitlines()
    assert lines.index(next(l for l in lines if "NodeNotReady" in l)) < \
        lines.index(next(l for l in lines if "NodeDiskPressure" in l))
    assert len(chat.replies(storm_root.id)) == 2  # diagnoses in the storm thread, once each
    # Resolution of a stormed group updates the list, without a reply per group.
    await tm.process(P(payload("g3", [alert("NodeDiskPressure", "resolved", node="w-3", fp="f3")])), 7)
    await storm.join()
    assert "(1 still firing)" in storm_root.text
    assert len(chat.replies(storm_root.id)) == 2
    await storm.stop()


async def test_after_a_restart_the_storm_thread_still_lists_every_group(parts):
    store, repo, chat, clock, handlers = parts
    storm = StormControl(repo=repo, chat=chat, threshold=1, window_s=60, workers=1, debounce_s=0)
    storm.start()
    tm = manager(repo, chat, clock, handlers, storm=storm)
    for i in range(4):
        await tm.process(P(payload(f"g{i}", [alert("NodeDiskPressure", node=f"w-{i}", fp=f"f{i}")])), i + 1)
    await storm.join()
    storm_root = chat.roots[1]
    assert "3 alert groups (3 still firing)" in storm_root.text
    # A new process: fresh storm control and thread manager over the same store.
    storm2 = StormControl(repo=repo, chat=chat, threshold=1, window_s=60, workers=1, debounce_s=0)
    storm2.start()
    tm2 = manager(repo, chat, clock, handlers, storm=storm2)
    await tm2.process(P(payload("g3", [alert("NodeDiskPressure", "resolved", node="w-3", fp="f3")])), 5)
    await storm2.join()
    assert "3 alert groups (2 still firing)" in storm_root.text
    await storm.stop()
    await storm2.stop()


async def test_two_replicas_sharing_the_store_see_one_storm_and_one_thread(parts, open_store):
    """Each replica applies some of the groups (the claims split them): the storm is counted
    and opened in the store, so together they cross the threshold once, into one thread."""
    store, repo, chat, clock, handlers = parts
    store_b = await open_store()
    repo_b = GroupRepo(store_b)
    await repo_b.migrate()
    storms = [StormControl(repo=r, chat=chat, threshold=3, window_s=60, workers=1, debounce_s=0)
              for r in (repo, repo_b)]
    managers = [manager(r, chat, clock, handlers, storm=st) for r, st in zip((repo, repo_b), storms)]
    try:
        for i in range(8):  # alternately: neither replica alone passes the threshold
            await managers[i % 2].process(P(payload(f"g{i}", [alert("NodeDiskPressure", node=f"w-{i}", fp=f"f{i}")])),
                                          i + 1)
            clock.advance(1)
        for st in storms:
            st.start()
        for st in storms:
            await st.join()
        storm_roots = [r for r in chat.roots if "Alert storm" in r.text]
        assert len(storm_roots) == 1
        assert len(chat.roots) == 3 + 1  # three threads of their own, then the storm's
        if store.shared:  # PostgreSQL: each edit renders every replica's groups from the store
            assert "5 alert groups (5 still firing)" in storm_roots[0].text
    finally:
        for st in storms:
            await st.stop()
        await store_b.close()


async def test_escalation_leaves_a_group_another_replica_is_applying(parts):
    """Replicas sharing the store: a group held by the replica applying its notification is
    not escalated from a stale read (that save would undo the other's change); the next pass
    escalates it once the claim is released."""
    from bot.alerts.inbox import GroupClaims

    store, repo, chat, clock, handlers = parts
    tm = manager(repo, chat, clock, handlers)
    tm.claims = GroupClaims(store, "replica-a")
    await tm.claims.migrate()
    await tm.process(P(payload("n", [alert("NodeNotReady", node="worker-1", fp="n1")])), 1)  # P2: 1 h
    (group,) = await repo.open_groups()
    other = GroupClaims(store, "replica-b")
    assert await other.take(group.group_key)
    esc = escalator(repo, tm, chat, clock)
    clock.advance(3600)
    assert await esc.run_once() == 0
    assert not [m for m in chat.replies(chat.roots[0].id) if "Escalation" in m.text]
    await other.release(group.group_key)
    assert await esc.run_once() == 1
