"""The sandbox Mattermost websocket: the driver's Websocket class authenticates with the
challenge and receives events in the real envelope."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sandbox.mattermost import MattermostState
from sandbox.mattermost.testing import Served, serve

WAIT = 5.0  # safety net only: every wait below ends as soon as the expected frame arrives


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(MattermostState()) as s:
        yield s


class Listener:
    """Runs the driver's websocket loop and collects the decoded frames it hands to the handler."""

    def __init__(self, served: Served, username: str) -> None:
        self.driver = served.driver(username)
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def handler(self, message: str) -> None:
        await self.frames.put(json.loads(message))

    async def start(self) -> None:
        await self.driver.login()
        self.task = asyncio.create_task(self.driver.init_websocket(self.handler))

    async def next_event(self, skip_replies: bool = True) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), WAIT)
            if not (skip_replies and "seq_reply" in frame):
                return frame

    async def stop(self) -> None:
        self.driver.disconnect()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.driver.close()


@pytest.fixture
async def alice_ws(served: Served) -> AsyncIterator[Listener]:
    listener = Listener(served, "alice")
    await listener.start()
    yield listener
    await listener.stop()


async def test_challenge_ok_then_hello(alice_ws: Listener, served: Served) -> None:
    reply = await alice_ws.next_event(skip_replies=False)
    assert reply == {"status": "OK", "seq_reply": 1}
    hello = await alice_ws.next_event()
    assert hello["event"] == "hello" and hello["seq"] == 0
    assert hello["data"]["server_version"]
    assert hello["broadcast"]["user_id"] == served.state.user("alice").id


async def test_posted_and_reaction_events_carry_json_strings(alice_ws: Listener, served: Served) -> None:
    assert (await alice_ws.next_event())["event"] == "hello"
    state = served.state
    bot = served.driver("sop-bot")
    await bot.login()
    created = await bot.posts.create_post(state.channel("sop-alerts").id, "P1: vault sealed")

    posted = await alice_ws.next_event()
    assert posted["event"] == "posted" and posted["seq"] == 1
    assert isinstance(posted["data"]["post"], str)
    post = json.loads(posted["data"]["post"])
    assert (post["id"], post["message"]) == (created["id"], "P1: vault sealed")
    assert posted["data"]["channel_name"] == "sop-alerts"
    assert posted["data"]["sender_name"] == "@sop-bot"
    assert posted["broadcast"]["channel_id"] == state.channel("sop-alerts").id

    state.post_as("bob", "sop-alerts", "@alice please approve", root_id=created["id"])
    mention = await alice_ws.next_event()
    assert json.loads(mention["data"]["mentions"]) == [state.user("alice").id]

    state.react("bob", created["id"], "white_check_mark")
    added = await alice_ws.next_event()
    assert added["event"] == "reaction_added"
    assert isinstance(added["data"]["reaction"], str)
    reaction = json.loads(added["data"]["reaction"])
    assert reaction["user_id"] == state.user("bob").id
    assert (reaction["post_id"], reaction["emoji_name"]) == (created["id"], "white_check_mark")
    assert reaction["create_at"] > 0

    await bot.posts.patch_post(created["id"], message="P1: vault sealed (resolved)")
    edited = await alice_ws.next_event()
    assert edited["event"] == "post_edited"
    assert json.loads(edited["data"]["post"])["message"].endswith("(resolved)")

    state.unreact("bob", created["id"], "white_check_mark")
    removed = await alice_ws.next_event()
    assert removed["event"] == "reaction_removed"
    assert json.loads(removed["data"]["reaction"])["emoji_name"] == "white_check_mark"
    await bot.close()


async def test_events_go_only_to_channel_members(alice_ws: Listener, served: Served) -> None:
    state = served.state
    assert (await alice_ws.next_event())["event"] == "hello"
    state.members.discard((state.channel("sop-ops").id, state.user("alice").id))
    state.post_as("bob", "sop-ops", "not for alice")
    state.post_as("bob", "sop-alerts", "for alice")
    event = await alice_ws.next_event()
    assert json.loads(event["data"]["post"])["message"] == "for alice"


async def _raw_connect(http: aiohttp.ClientSession, served: Served, **kw: Any) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(f"ws://{served.host}:{served.port}/api/v4/websocket", **kw)


async def test_authorization_header_at_upgrade_gets_hello_without_challenge(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {served.state.tokens['bob']}"}
        async with await _raw_connect(http, served, headers=headers) as ws:
            hello = await ws.receive_json(timeout=WAIT)
            assert hello["event"] == "hello" and hello["seq"] == 0
            await ws.send_json({"seq": 2, "action": "ping"})
            pong = await ws.receive_json(timeout=WAIT)
            assert pong["seq_reply"] == 2 and pong["data"]["text"] == "pong"


async def test_bad_token_challenge_closes_the_socket(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with await _raw_connect(http, served) as ws:
            await ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": "wrong"}})
            msg = await ws.receive(timeout=WAIT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert served.state.hub.connections == []


async def test_actions_before_authentication_fail(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with await _raw_connect(http, served) as ws:
            await ws.send_json({"seq": 1, "action": "user_typing", "data": {"channel_id": "x"}})
            reply = await ws.receive_json(timeout=WAIT)
            assert reply["status"] == "FAIL" and reply["seq_reply"] == 1
            assert reply["error"]["id"] == "api.web_socket_router.not_authenticated.app_error"


async def test_disconnect_websockets_closes_and_client_can_reconnect(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        token = served.state.tokens["alice"]
        async with await _raw_connect(http, served) as ws:
            await ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": token}})
            assert (await ws.receive_json(timeout=WAIT))["status"] == "OK"
            assert (await ws.receive_json(timeout=WAIT))["event"] == "hello"
            await served.state.disconnect_websockets()
            msg = await ws.receive(timeout=WAIT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with await _raw_connect(http, served, headers={"Authorization": f"Bearer {token}"}) as ws2:
            assert (await ws2.receive_json(timeout=WAIT))["event"] == "hello"
            served.state.post_as("bob", "sop-alerts", "after reconnect")
            event = await ws2.receive_json(timeout=WAIT)
            assert event["event"] == "posted" and event["seq"] == 1
