"""Slash commands, response_url follow-ups and interactive dialogs: the sandbox Mattermost calls a
tiny aiohttp receiver the way the real server calls an integration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from mattermostautodriver.exceptions import InvalidOrMissingParameters, ResourceNotFound, UnknownMattermostError

from sandbox.mattermost import MattermostState
from sandbox.mattermost.testing import FakeClock, Served, serve

Reply = Callable[[dict[str, str]], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """Stands in for the bot's web endpoints: records what Mattermost sent, answers via `reply`."""

    url: str = ""
    commands: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)  # (form, headers)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    reply: Reply | None = None

    async def command(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.commands.append((form, dict(request.headers)))
        if self.reply is not None:
            return await self.reply(form)
        return web.json_response({"response_type": "ephemeral", "text": "working on it"})

    async def dialog(self, request: web.Request) -> web.StreamResponse:
        self.submissions.append(await request.json())
        return web.json_response({})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/mattermost/command", rec.command)
    app.router.add_post("/mattermost/dialog", rec.dialog)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def served(receiver: Receiver, clock: FakeClock) -> AsyncIterator[Served]:
    state = MattermostState(command_url=f"{receiver.url}/mattermost/command", clock=clock)
    async with serve(state) as s:
        yield s


async def test_command_reaches_the_integration_with_every_form_field(served: Served, receiver: Receiver) -> None:
    state = served.state
    alice = served.driver("alice")
    await alice.login()
    alerts = state.channel("sop-alerts")
    answer = await alice.commands.execute_command(alerts.id, "/sop vault-sealed cluster=prod")

    [(form, headers)] = receiver.commands
    hook_id = form["response_url"].rsplit("/", 1)[1]
    assert form == {
        "token": state.slash_token,
        "team_id": state.team.id,
        "team_domain": "platform",
        "channel_id": alerts.id,
        "channel_name": "sop-alerts",
        "user_id": state.user("alice").id,
        "user_name": "alice",
        "command": "/sop",
        "text": "vault-sealed cluster=prod",
        "trigger_id": form["trigger_id"],
        "response_url": f"{served.url}/hooks/commands/{hook_id}",
    }
    assert form["trigger_id"] and answer["trigger_id"] == form["trigger_id"]
    assert headers["Authorization"] == f"Token {state.slash_token}"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"

    # The default reply was ephemeral: alice sees it, the channel does not.
    assert answer["text"] == "working on it"
    assert [p.message for p in state.ephemerals_for("alice")] == ["working on it"]
    assert state.posts_in("sop-alerts") == []
    await alice.close()


async def test_in_channel_reply_becomes_a_post(served: Served, receiver: Receiver) -> None:
    async def in_channel(form: dict[str, str]) -> web.StreamResponse:
        return web.json_response({"response_type": "in_channel", "text": f"running {form['text']}"})

    receiver.reply = in_channel
    await served.state.run_command("alice", "sop-ops", "/sop list")
    [post] = served.state.posts_in("sop-ops")
    assert post.message == "running list"
    assert post.user_id == served.state.user("alice").id
    assert post.props["from_webhook"] == "true"


async def test_response_url_takes_five_follow_ups(served: Served, receiver: Receiver) -> None:
    await served.state.run_command("alice", "sop-alerts", "/sop status")
    response_url = receiver.commands[0][0]["response_url"]
    async with httpx.AsyncClient() as http:
        for i in range(5):
            resp = await http.post(response_url, json={"response_type": "in_channel", "text": f"step {i}"})
            assert resp.status_code == 200 and resp.text == "ok"
        sixth = await http.post(response_url, json={"response_type": "in_channel", "text": "too many"})
    assert sixth.status_code == 400
    assert sixth.json()["id"] == "app.command_webhook.try_use.invalid"
    assert [p.message for p in served.state.posts_in("sop-alerts")] == [f"step {i}" for i in range(5)]


async def test_response_url_expires_after_30_minutes(served: Served, receiver: Receiver, clock: FakeClock) -> None:
    await served.state.run_command("alice", "sop-alerts", "/sop status")
    response_url = receiver.commands[0][0]["response_url"]
    clock.advance(30 * 60 + 1)
    async with httpx.AsyncClient() as http:
        late = await http.post(response_url, json={"response_type": "in_channel", "text": "late"})
    assert late.status_code == 400
    assert served.state.posts_in("sop-alerts") == []


async def test_dialog_opened_with_trigger_and_submitted_reaches_the_integration(served: Served, receiver: Receiver) -> None:
    bot = served.driver("sop-bot")
    await bot.login()

    async def open_dialog(form: dict[str, str]) -> web.StreamResponse:
        # Like the bot: open the approval dialog while answering the command.
        await bot.integration_actions.open_interactive_dialog(
            form["trigger_id"],
            f"{receiver.url}/mattermost/dialog",
            {
                "callback_id": "approve-restart",
                "title": "Approve restart",
                "elements": [{"display_name": "Reason", "name": "reason", "type": "text"}],
                "state": "run-42",
            },
        )
        return web.Response(status=200)  # empty body: nothing to post

    receiver.reply = open_dialog
    state = served.state
    await state.run_command("alice", "sop-ops", "/sop approve run-42")
    [dialog] = state.dialogs_for("alice")
    assert dialog.dialog["title"] == "Approve restart"
    assert dialog.warnings == []

    await state.submit_dialog("alice", receiver.commands[0][0]["trigger_id"], {"reason": "planned"})
    assert receiver.submissions == [
        {
            "type": "dialog_submission",
            "callback_id": "approve-restart",
            "state": "run-42",
            "user_id": state.user("alice").id,
            "channel_id": state.channel("sop-ops").id,
            "team_id": state.team.id,
            "submission": {"reason": "planned"},
            "cancelled": False,
        }
    ]
    await bot.close()


async def test_invalid_trigger_id_is_400(served: Served) -> None:
    bot = served.driver("sop-bot")
    await bot.login()
    with pytest.raises(InvalidOrMissingParameters) as err:
        await bot.integration_actions.open_interactive_dialog("bm90LWEtdHJpZ2dlcg==", "http://127.0.0.1:9/x", {"title": "t"})
    assert err.value.error_id.startswith("interactive_message.decode_trigger_id.")
    assert served.state.dialogs == {}
    await bot.close()


async def test_expired_trigger_id_is_400(served: Served, receiver: Receiver, clock: FakeClock) -> None:
    await served.state.run_command("alice", "sop-ops", "/sop approve")
    trigger_id = receiver.commands[0][0]["trigger_id"]
    clock.advance(served.state.trigger_ttl_s + 0.5)
    bot = served.driver("sop-bot")
    await bot.login()
    with pytest.raises(InvalidOrMissingParameters) as err:
        await bot.integration_actions.open_interactive_dialog(trigger_id, f"{receiver.url}/mattermost/dialog", {"title": "t"})
    assert err.value.error_id == "interactive_message.decode_trigger_id.expired"
    await bot.close()


async def test_unknown_command_is_404(served: Served) -> None:
    alice = served.driver("alice")
    await alice.login()
    with pytest.raises(ResourceNotFound) as err:
        await alice.commands.execute_command(served.state.channel("sop-ops").id, "/nope")
    assert err.value.error_id == "api.command.execute_command.not_found.app_error"
    await alice.close()


async def test_integration_error_is_reported_to_the_user(served: Served, receiver: Receiver) -> None:
    async def broken(form: dict[str, str]) -> web.StreamResponse:
        return web.Response(status=500, text="boom")

    receiver.reply = broken
    alice = served.driver("alice")
    await alice.login()
    with pytest.raises(UnknownMattermostError) as err:
        await alice.commands.execute_command(served.state.channel("sop-ops").id, "/sop status")
    assert err.value.status_code == 500
    assert err.value.error_id == "api.command.execute_command.failed_resp.app_error"
    await alice.close()


async def test_plain_text_reply_is_an_ephemeral_message(served: Served, receiver: Receiver) -> None:
    async def plain(form: dict[str, str]) -> web.StreamResponse:
        return web.Response(text="usage: /sop <id>")

    receiver.reply = plain
    answer = await served.state.run_command("bob", "sop-ops", "/sop")
    assert answer["text"] == "usage: /sop <id>"
    assert [p.message for p in served.state.ephemerals_for("bob")] == ["usage: /sop <id>"]
    assert answer["trigger_id"]


async def test_opened_dialog_is_announced_to_the_user_over_the_websocket(served: Served, receiver: Receiver) -> None:
    bot = served.driver("sop-bot")
    await bot.login()

    async def open_dialog(form: dict[str, str]) -> web.StreamResponse:
        await bot.integration_actions.open_interactive_dialog(
            form["trigger_id"],
            f"{receiver.url}/mattermost/dialog",
            {"callback_id": "c", "title": "Approve the restart of vault-1 in prod"},
        )
        return web.Response(status=200)

    receiver.reply = open_dialog
    headers = {"Authorization": f"Bearer {served.state.tokens['alice']}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://{served.host}:{served.port}/api/v4/websocket", headers=headers) as ws:
            assert (await ws.receive_json(timeout=5))["event"] == "hello"
            await served.state.run_command("alice", "sop-ops", "/sop approve")
            event = await ws.receive_json(timeout=5)
    assert event["event"] == "open_dialog"
    assert event["broadcast"]["user_id"] == served.state.user("alice").id
    opened = json.loads(event["data"]["dialog"])
    assert opened["trigger_id"] == receiver.commands[0][0]["trigger_id"]
    assert opened["dialog"]["title"].startswith("Approve")
    [dialog] = served.state.dialogs_for("alice")
    assert dialog.warnings == ["invalid dialog title 'Approve the restart of vault-1 in prod' (1-24 characters)"]
    await bot.close()
