"""Pieces of the adapter on their own: the write queue, long-message cutting, event parsing."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from mattermostautodriver.exceptions import TooManyRequests, UnknownMattermostError

from bot.chat import ChatError, PostedEvent, ReactionEvent, WriteQueue
from bot.chat.events import parse_event
from bot.chat.long_messages import MAX_POST_RUNES, shortened, summary_with_note
from chat_fakes import FakeClock


def fresh_queue(clock: FakeClock, **kw: object) -> WriteQueue:
    return WriteQueue(10, clock=clock, sleep=clock.sleep, rng=lambda: 0.5, **kw)  # type: ignore[arg-type]


# -- write queue ---------------------------------------------------------------------------------
async def test_429_without_a_wait_hint_backs_off_exponentially() -> None:
    clock = FakeClock()
    q = fresh_queue(clock)
    answers = [TooManyRequests("limit exceeded", None), TooManyRequests("limit exceeded", None)]

    async def call() -> str:
        if answers:
            raise answers.pop(0)
        return "done"

    assert await q.submit_call(call, what="create post") == "done"
    assert q.rate_limited == 2 and q.rate_limited_wait_s == pytest.approx(0.375 + 0.75)


async def test_endless_429s_end_in_a_clear_error() -> None:
    clock = FakeClock()
    q = fresh_queue(clock, max_rate_limited=3)

    async def call() -> str:
        raise TooManyRequests("limit exceeded", 1.0)

    with pytest.raises(ChatError, match="still rate limited after 4 tries"):
        await q.submit_call(call, what="create post")
    assert q.rate_limited == 4 and q.failed == 1


async def test_501_feature_disabled_is_not_retried() -> None:
    q = fresh_queue(FakeClock())
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise UnknownMattermostError("Interactive dialogs are disabled", 501, "x", "r", False)

    with pytest.raises(ChatError) as err:
        await q.submit_call(call, what="open dialog")
    assert calls == 1 and err.value.status == 501


async def test_depth_counts_waiting_and_running_jobs() -> None:
    q = fresh_queue(FakeClock())
    release = asyncio.Event()
    depths: list[int] = []

    async def slow() -> None:
        await release.wait()

    async def fast() -> None:
        depths.append(q.depth)

    jobs = [asyncio.create_task(q.submit_call(slow, what="w")),
            asyncio.create_task(q.submit_call(fast, what="w")),
            asyncio.create_task(q.submit_call(fast, what="w"))]
    await asyncio.sleep(0.01)
    assert q.depth == 3
    release.set()
    await asyncio.gather(*jobs)
    assert depths == [2, 1] and q.depth == 0 and q.sent == 3


async def test_a_cancelled_caller_is_skipped_and_the_rest_still_run() -> None:
    q = fresh_queue(FakeClock())
    release = asyncio.Event()
    ran: list[str] = []

    async def job(name: str) -> None:
        if name == "first":
            await release.wait()
        ran.append(name)

    first = asyncio.create_task(q.submit_call(lambda: job("first"), what="w"))
    gone = asyncio.create_task(q.submit_call(lambda: job("gone"), what="w"))
    last = asyncio.create_task(q.submit_call(lambda: job("last"), what="w"))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()
    await asyncio.gather(first, last)
    assert ran == ["first", "last"]


async def test_urgent_jobs_go_ahead_of_waiting_ones_in_their_own_order() -> None:
    q = fresh_queue(FakeClock())
    release = asyncio.Event()
    ran: list[str] = []

    async def job(name: str) -> None:
        if name == "running":
            await release.wait()
        ran.append(name)

    def submit(name: str, urgent: bool = False) -> asyncio.Task[None]:
        return asyncio.create_task(q.submit_call(lambda: job(name), what="w", urgent=urgent))

    tasks = [submit("running"), submit("reply 1"), submit("reply 2")]
    await asyncio.sleep(0.01)
    tasks += [submit("root A", urgent=True), submit("root B", urgent=True)]
    await asyncio.sleep(0.01)
    assert q.depth == 5
    release.set()
    await asyncio.gather(*tasks)
    # The job already running finishes first; roots keep their order (first come, first served).
    assert ran == ["running", "root A", "root B", "reply 1", "reply 2"]


async def test_close_drains_then_refuses() -> None:
    q = fresh_queue(FakeClock())
    sent: list[int] = []

    async def write(i: int) -> None:
        sent.append(i)

    tasks = [asyncio.create_task(q.submit_call(lambda i=i: write(i), what="w")) for i in range(5)]
    await asyncio.sleep(0)
    await q.close()
    await asyncio.gather(*tasks)
    assert sent == [0, 1, 2, 3, 4]
    with pytest.raises(ChatError, match="closed"):
        await q.submit_call(lambda: write(9), what="create post")


async def test_close_that_cannot_drain_fails_what_is_left() -> None:
    q = fresh_queue(FakeClock())
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    tasks = [asyncio.create_task(q.submit_call(stuck, what="create post")) for _ in range(2)]
    await asyncio.sleep(0)
    await q.close(timeout_s=0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ChatError) and "closed" in str(r) for r in results)


async def test_reads_skip_the_limiter_but_are_retried() -> None:
    clock = FakeClock()
    q = fresh_queue(clock)
    answers: list[Exception] = [httpx.ConnectError("refused")]

    async def read() -> dict[str, str]:
        if answers:
            raise answers.pop(0)
        return {"id": "u1"}

    for _ in range(3):
        await q.submit_call(lambda: asyncio.sleep(0), what="w")
    before = clock.now
    assert await q.call(read, what="look up user") == {"id": "u1"}
    assert clock.now - before == pytest.approx(0.375)  # only the backoff, no limiter spacing
    assert q.sent == 3  # reads are not counted as writes


# -- long messages -------------------------------------------------------------------------------
def test_summary_closes_an_open_code_fence() -> None:
    message = "## Findings\n```\n" + "\n".join(f"pod-{i} CrashLoopBackOff" for i in range(2000)) + "\n```\n"
    assert len(message) > MAX_POST_RUNES
    summary = summary_with_note(message, "report.md")
    assert len(summary) <= MAX_POST_RUNES
    head, note = summary.split("\n\n_…")
    assert head.endswith("\n```") and head.count("```") == 2
    assert "full report attached as `report.md`" in note


def test_one_endless_line_is_cut_hard() -> None:
    summary = summary_with_note("x" * 30000, "report.md")
    assert len(summary) <= MAX_POST_RUNES and summary.startswith("x" * 16000)


def test_short_text_is_left_alone_by_edits() -> None:
    assert shortened("fine") == "fine"
    cut = shortened("a\n" * 10000)
    assert len(cut) <= MAX_POST_RUNES and "characters cut" in cut


# -- websocket events ----------------------------------------------------------------------------
def test_posted_event_with_the_post_as_a_json_string() -> None:
    raw = {"event": "posted", "seq": 3, "data": {
        "channel_name": "sop-alerts", "channel_type": "O", "sender_name": "@alice",
        "post": json.dumps({"id": "p1", "channel_id": "c1", "root_id": "", "user_id": "u1",
                            "message": "approve", "create_at": 1, "props": None})}}
    event = parse_event(raw)
    assert isinstance(event, PostedEvent)
    assert event.username == "alice" and event.post.root_id is None and event.post.props == {}
    assert event.post.ref.thread_id == "p1"


def test_reaction_events_with_the_reaction_as_a_json_string() -> None:
    reaction = json.dumps({"user_id": "u1", "post_id": "p1", "emoji_name": "+1", "create_at": 1})
    added = parse_event({"event": "reaction_added", "data": {"reaction": reaction}})
    removed = parse_event({"event": "reaction_removed", "data": {"reaction": reaction}})
    assert added == ReactionEvent(user_id="u1", post_id="p1", emoji_name="+1", added=True)
    assert isinstance(removed, ReactionEvent) and removed.added is False


def test_malformed_and_unfollowed_events_are_ignored() -> None:
    assert parse_event({"event": "reaction_added", "data": {"reaction": "{not json"}}) is None
    assert parse_event({"event": "posted", "data": {}}) is None
    assert parse_event({"event": "typing", "data": {"user_id": "u1"}}) is None
