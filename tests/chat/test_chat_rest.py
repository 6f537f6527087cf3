"""The adapter's HTTP behaviour against respx (which mocks httpx, the driver's transport):
rate limits, retries, errors, ordering, long messages. Time is a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from bot.chat import ChatError, MattermostChat, WriteQueue
from bot.chat.long_messages import MAX_POST_RUNES
from bot.config import MattermostConfig
from chat_fakes import FakeClock

BASE = "http://mm.test:8065"
TOKEN = "s3cret-bot-token"
ME = {"id": "botuserid0000000000000000a", "username": "sop-bot"}


def created(body: dict[str, Any], post_id: str = "post1") -> httpx.Response:
    return httpx.Response(201, json={"id": post_id, "channel_id": body["channel_id"],
                                     "root_id": body.get("root_id") or "", "user_id": ME["id"],
                                     "message": body["message"], "file_ids": body.get("file_ids")})


def mm_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"id": "api.error", "message": message,
                                        "request_id": "r1", "status_code": status})


def body_of(call: Any) -> dict[str, Any]:
    return json.loads(call.request.content)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mm() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/api/v4/users/me").respond(200, json=ME)
        router.get("/api/v4/teams/name/platform").respond(200, json={"id": "team1", "name": "platform"})
        yield router


@pytest.fixture
async def chat(mm: respx.MockRouter, clock: FakeClock) -> AsyncIterator[MattermostChat]:
    queue = WriteQueue(10, clock=clock, sleep=clock.sleep, rng=lambda: 0.5)
    c = MattermostChat(MattermostConfig(url=BASE, token=TOKEN, team="platform"), queue=queue)
    await c.start()
    yield c
    await c.close()


async def test_start_resolves_bot_user_and_team(chat: MattermostChat, mm: respx.MockRouter) -> None:
    assert chat.bot_user_id == ME["id"]
    assert chat.team_id == "team1"
    assert mm.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_rejected_token_is_a_clear_error_and_never_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v4/users/me").mock(return_value=mm_error(401, "Invalid or expired session"))
        c = MattermostChat(MattermostConfig(url=BASE, token=TOKEN))
        with pytest.raises(ChatError) as err:
            await c.start()
        await c.close()
    assert err.value.status == 401
    assert "token was rejected" in str(err.value)
    assert TOKEN not in caplog.text and TOKEN not in str(err.value)


async def test_missing_token_is_reported_by_start_and_close_still_works() -> None:
    c = MattermostChat(MattermostConfig(url=BASE))
    with pytest.raises(ChatError, match="mattermost.token is not set"):
        await c.start()
    await c.close()


async def test_unknown_team_says_so(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v4/users/me").respond(200, json=ME)
        router.get("/api/v4/teams/name/nope").mock(return_value=mm_error(404, "Unable to find team"))
        c = MattermostChat(MattermostConfig(url=BASE, token=TOKEN, team="nope"))
        with pytest.raises(ChatError, match="no such team"):
            await c.start()
        await c.close()


async def test_429_with_retry_after_waits_as_told_then_posts_once(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    route = mm.post("/api/v4/posts")
    route.side_effect = [
        httpx.Response(429, text="limit exceeded", headers={"Retry-After": "2", "X-RateLimit-Reset": "2"}),
        lambda request: created(json.loads(request.content)),
    ]
    ref = await chat.post("chan1", "hello")
    assert ref.id == "post1" and ref.channel_id == "chan1" and ref.root_id is None
    assert route.call_count == 2
    # The retry is the same request: same body, same pending_post_id (server-side dedup key).
    assert body_of(route.calls[0]) == body_of(route.calls[1])
    assert body_of(route.calls[0])["pending_post_id"].startswith(ME["id"] + ":")
    assert 2.0 in clock.sleeps
    assert chat.queue.rate_limited == 1 and chat.queue.rate_limited_wait_s == 2.0
    assert chat.queue.sent == 1


async def test_429_with_only_ratelimit_reset_waits_that_long(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    route = mm.post("/api/v4/posts")
    route.side_effect = [
        httpx.Response(429, text="limit exceeded", headers={"X-RateLimit-Reset": "3"}),
        lambda request: created(json.loads(request.content)),
    ]
    await chat.post("chan1", "hello")
    assert chat.queue.rate_limited_wait_s == 3.0 and 3.0 in clock.sleeps


async def test_5xx_is_retried_with_exponential_backoff(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    route = mm.post("/api/v4/posts")
    route.side_effect = [
        mm_error(500, "database timeout"),
        httpx.Response(503, text="<html>upstream unavailable</html>"),
        lambda request: created(json.loads(request.content)),
    ]
    ref = await chat.post("chan1", "hello")
    assert ref.id == "post1" and route.call_count == 3
    assert chat.queue.retries == 2
    # rng=0.5: half the ceiling fixed plus a quarter → 0.75 × (0.5, 1.0)
    assert clock.sleeps[-2:] == [0.375, 0.75]


async def test_5xx_gives_up_after_the_bound(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    route = mm.post("/api/v4/posts").mock(return_value=mm_error(500, "database timeout"))
    with pytest.raises(ChatError) as err:
        await chat.post("chan1", "hello")
    assert err.value.status == 500 and "gave up after 5 attempts" in str(err.value)
    assert route.call_count == chat.queue.max_attempts == 5
    assert chat.queue.failed == 1


async def test_400_is_surfaced_at_once_and_the_queue_goes_on(
        chat: MattermostChat, mm: respx.MockRouter) -> None:
    route = mm.post("/api/v4/posts")
    route.side_effect = [mm_error(400, "Invalid RootId parameter."),
                         lambda request: created(json.loads(request.content), "post2")]
    with pytest.raises(ChatError) as err:
        await chat.post("chan1", "reply", root_id="nosuchpost")
    assert err.value.status == 400 and "Invalid RootId parameter." in str(err.value)
    assert route.call_count == 1
    assert (await chat.post("chan1", "next")).id == "post2"


async def test_timeouts_and_refused_connections_are_retried(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    route = mm.post("/api/v4/posts")
    route.side_effect = [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
                         lambda request: created(json.loads(request.content))]
    assert (await chat.post("chan1", "hello")).id == "post1"
    assert route.call_count == 3 and chat.queue.retries == 2
    bodies = [body_of(c) for c in route.calls]
    assert bodies[0]["pending_post_id"] == bodies[2]["pending_post_id"]


async def test_posts_arrive_in_order_while_one_waits_out_a_429(
        chat: MattermostChat, mm: respx.MockRouter) -> None:
    answers = iter([httpx.Response(429, text="limit exceeded", headers={"Retry-After": "1"})])

    def respond(request: httpx.Request) -> httpx.Response:
        nxt = next(answers, None)
        return nxt if nxt is not None else created(json.loads(request.content))

    route = mm.post("/api/v4/posts").mock(side_effect=respond)
    await asyncio.gather(*(chat.post("chan1", f"m{i}") for i in range(5)))
    messages = [body_of(c)["message"] for c in route.calls]
    assert messages == ["m0", "m0", "m1", "m2", "m3", "m4"]


async def test_writes_are_spaced_by_the_rate_limit(
        chat: MattermostChat, mm: respx.MockRouter, clock: FakeClock) -> None:
    seen_at: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen_at.append(round(clock(), 6))
        return created(json.loads(request.content))

    mm.post("/api/v4/posts").mock(side_effect=respond)
    await asyncio.gather(*(chat.post("chan1", f"m{i}") for i in range(5)))
    assert seen_at == [0.0, 0.1, 0.2, 0.3, 0.4]  # 10/s, burst 1
    assert chat.queue.waited_s == pytest.approx(0.4)


async def test_dialog_jumps_the_queue(mm: respx.MockRouter) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def gated_sleep(seconds: float) -> None:
        await gate.wait()

    queue = WriteQueue(1000, sleep=gated_sleep)
    c = MattermostChat(MattermostConfig(url=BASE, token=TOKEN), queue=queue)
    await c.start()
    first = [True]

    def post(request: httpx.Request) -> httpx.Response:
        order.append(json.loads(request.content)["message"])
        if first[0]:  # the first post is rate limited: the worker sleeps until the gate opens
            first[0] = False
            return httpx.Response(429, text="limit exceeded", headers={"Retry-After": "1"})
        return created(json.loads(request.content))

    def dialog(request: httpx.Request) -> httpx.Response:
        order.append("dialog")
        return httpx.Response(200, json={"status": "OK"})

    mm.post("/api/v4/posts").mock(side_effect=post)
    mm.post("/api/v4/actions/dialogs/open").mock(side_effect=dialog)
    posts = [asyncio.create_task(c.post("chan1", f"m{i}")) for i in range(3)]
    while not order:
        await asyncio.sleep(0)
    opened = asyncio.create_task(c.open_dialog("trigger1", "http://bot/dialog", {"title": "Approve"}))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*posts, opened)
    await c.close()
    assert order == ["m0", "m0", "dialog", "m1", "m2"]


async def test_long_message_becomes_summary_plus_attachment_in_thread(
        chat: MattermostChat, mm: respx.MockRouter) -> None:
    line = "ü" * 99 + "\n"  # 100 runes, 199 bytes: the limit is in runes
    message = line * 200  # 20,000 runes
    upload = mm.post("/api/v4/files").respond(
        201, json={"file_infos": [{"id": "file1", "name": "report.md"}], "client_ids": []})
    route = mm.post("/api/v4/posts").mock(side_effect=lambda r: created(json.loads(r.content)))
    ref = await chat.post("chan1", message, root_id="root1")
    assert ref.root_id == "root1"
    sent = upload.calls[0].request
    assert sent.url.params["channel_id"] == "chan1"
    assert message.encode() in sent.content  # the whole text, in the multipart body
    body = body_of(route.calls[0])
    assert body["file_ids"] == ["file1"] and body["root_id"] == "root1"
    assert len(body["message"]) <= MAX_POST_RUNES
    head, note = body["message"].split("\n\n_…")
    assert message.startswith(head + "\n")  # cut at a line boundary
    assert "full report attached" in note


async def test_message_at_the_limit_in_multibyte_runes_is_one_plain_post(
        chat: MattermostChat, mm: respx.MockRouter) -> None:
    upload = mm.post("/api/v4/files").respond(500)
    route = mm.post("/api/v4/posts").mock(side_effect=lambda r: created(json.loads(r.content)))
    message = "🔥" * MAX_POST_RUNES  # 4 bytes each, still 16383 runes
    await chat.post("chan1", message)
    assert not upload.called and body_of(route.calls[0])["message"] == message


async def test_edit_react_and_reads(chat: MattermostChat, mm: respx.MockRouter) -> None:
    patch = mm.put("/api/v4/posts/post1/patch").respond(200, json={"id": "post1"})
    react = mm.post("/api/v4/reactions").respond(201, json={})
    mm.get("/api/v4/posts/post1/reactions").respond(200, json=[
        {"user_id": "alice", "post_id": "post1", "emoji_name": "white_check_mark", "create_at": 5}])
    mm.get("/api/v4/posts/post2/reactions").respond(200, json=[])
    channel = mm.get("/api/v4/teams/team1/channels/name/sop-alerts").respond(
        200, json={"id": "chan1", "name": "sop-alerts"})
    user = mm.get("/api/v4/users/alice").respond(200, json={"id": "alice", "username": "alice"})
    mm.get("/api/v4/posts/root1/thread").respond(200, json={
        "order": ["r2", "root1"],
        "posts": {"r2": {"id": "r2", "channel_id": "chan1", "root_id": "root1", "user_id": "u",
                         "message": "second", "create_at": 20},
                  "root1": {"id": "root1", "channel_id": "chan1", "root_id": "", "user_id": "u",
                            "message": "first", "create_at": 10}}})

    await chat.edit("post1", "updated")
    assert body_of(patch.calls[0]) == {"message": "updated"}
    await chat.react("post1", ":eyes:")
    assert body_of(react.calls[0]) == {"user_id": ME["id"], "post_id": "post1", "emoji_name": "eyes"}
    assert [r.emoji_name for r in await chat.reactions("post1")] == ["white_check_mark"]
    assert await chat.reactions("post2") == []
    assert await chat.channel_id("~sop-alerts") == "chan1"
    assert await chat.channel_id("sop-alerts") == "chan1"
    assert channel.call_count == 1  # cached
    assert await chat.username("alice") == "alice" and await chat.username("alice") == "alice"
    assert user.call_count == 1
    posts = await chat.thread("root1")
    assert [p.message for p in posts] == ["first", "second"] and posts[0].root_id is None


async def test_edit_longer_than_a_post_is_shortened(chat: MattermostChat, mm: respx.MockRouter) -> None:
    patch = mm.put("/api/v4/posts/post1/patch").respond(200, json={"id": "post1"})
    await chat.edit("post1", "x" * 100 + "\n" + "y" * 20000)
    sent = body_of(patch.calls[0])["message"]
    assert len(sent) <= MAX_POST_RUNES and sent.startswith("x" * 100 + "\n\n_… shortened")
