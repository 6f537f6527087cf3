"""The sandbox Mattermost REST API, driven by the unmodified mattermostautodriver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from mattermostautodriver import AsyncTypedDriver
from mattermostautodriver.exceptions import (
    InvalidOrMissingParameters,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
    TooManyRequests,
    UnknownMattermostError,
)

from sandbox.mattermost import MattermostState, RateLimit
from sandbox.mattermost.testing import FakeClock, Served, serve


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(MattermostState()) as s:
        yield s


@pytest.fixture
async def drv(served: Served) -> AsyncIterator[AsyncTypedDriver]:
    driver = served.driver("sop-bot")
    await driver.login()
    yield driver
    await driver.close()


async def test_login_returns_the_bot_account(drv: AsyncTypedDriver, served: Served) -> None:
    me = await drv.users.get_user("me")
    assert me["username"] == "sop-bot"
    assert me["is_bot"] is True
    assert drv.client.userid == served.state.user("sop-bot").id
    alice = await drv.users.get_user_by_username("alice")
    assert alice["is_bot"] is False
    again = await drv.users.get_user(alice["id"])
    assert again["username"] == "alice"
    both = await drv.users.get_users_by_ids([alice["id"], me["id"]])
    assert sorted(u["username"] for u in both) == ["alice", "sop-bot"]


async def test_team_and_channel_by_name(drv: AsyncTypedDriver, served: Served) -> None:
    team = await drv.teams.get_team_by_name("platform")
    assert (team["name"], team["display_name"]) == ("platform", "Platform")
    channel = await drv.channels.get_channel_by_name(team["id"], "sop-alerts")
    assert channel["id"] == served.state.channel("sop-alerts").id
    assert channel["team_id"] == team["id"]
    fetched = await drv.channels.get_channel(channel["id"])
    assert fetched["name"] == "sop-alerts"
    member = await drv.channels.get_channel_member(channel["id"], served.state.user("alice").id)
    assert member["user_id"] == served.state.user("alice").id
    with pytest.raises(ResourceNotFound):
        await drv.channels.get_channel_by_name(team["id"], "no-such-channel")


async def test_post_reply_edit_and_thread(drv: AsyncTypedDriver, served: Served) -> None:
    alerts = served.state.channel("sop-alerts").id
    root = await drv.posts.create_post(alerts, "Vault sealed on vault-1", props={"sop": "5.1"})
    assert root["props"] == {"sop": "5.1", "from_bot": "true"}
    assert len(root["id"]) == 26 and root["create_at"] > 0 and root["edit_at"] == 0
    reply = await drv.posts.create_post(alerts, "Diagnosis: 2/3 unsealed", root_id=root["id"])
    assert reply["root_id"] == root["id"]

    edited = await drv.posts.patch_post(root["id"], message="Vault sealed on vault-1 (resolved)")
    assert edited["edit_at"] > 0
    assert edited["props"] == {"sop": "5.1", "from_bot": "true"}
    assert (await drv.posts.get_post(root["id"]))["message"].endswith("(resolved)")

    thread = await drv.posts.get_post_thread(reply["id"])
    assert thread["order"] == [reply["id"], root["id"]]  # newest first, as Mattermost orders it
    assert set(thread["posts"]) == {root["id"], reply["id"]}
    assert [p.message for p in served.state.thread(root["id"])] == [
        "Vault sealed on vault-1 (resolved)",
        "Diagnosis: 2/3 unsealed",
    ]
    listing = await drv.posts.get_posts_for_channel(alerts, page=0, per_page=1)
    assert listing["order"] == [reply["id"]]

    await drv.posts.delete_post(reply["id"])
    assert [p.id for p in served.state.posts_in("sop-alerts")] == [root["id"]]


async def test_update_post_replaces_message(drv: AsyncTypedDriver, served: Served) -> None:
    post = served.state.post_as("sop-bot", "sop-ops", "checking")
    updated = await drv.posts.update_post(post.id, id=post.id, message="checked")
    assert updated["message"] == "checked" and updated["edit_at"] > 0


async def test_reply_to_post_of_another_channel_is_rejected(drv: AsyncTypedDriver, served: Served) -> None:
    elsewhere = served.state.post_as("alice", "town-square", "hello")
    with pytest.raises(InvalidOrMissingParameters) as err:
        await drv.posts.create_post(served.state.channel("sop-alerts").id, "reply", root_id=elsewhere.id)
    assert err.value.error_id == "api.post.create_post.root_id.app_error"


async def test_reply_to_a_reply_is_rejected(drv: AsyncTypedDriver, served: Served) -> None:
    root = served.state.post_as("alice", "sop-alerts", "root")
    reply = served.state.post_as("alice", "sop-alerts", "reply", root_id=root.id)
    with pytest.raises(InvalidOrMissingParameters):
        await drv.posts.create_post(served.state.channel("sop-alerts").id, "nested", root_id=reply.id)


async def test_post_length_limit_is_16383_runes(drv: AsyncTypedDriver, served: Served) -> None:
    alerts = served.state.channel("sop-alerts").id
    ok = await drv.posts.create_post(alerts, "é" * 16383)  # runes, not bytes
    assert len(ok["message"]) == 16383
    with pytest.raises(InvalidOrMissingParameters) as err:
        await drv.posts.create_post(alerts, "x" * 16384)
    assert err.value.error_id == "model.post.is_valid.msg.app_error"
    assert len(served.state.posts_in(alerts)) == 1


async def test_reactions_add_list_remove(drv: AsyncTypedDriver, served: Served) -> None:
    post = served.state.post_as("sop-bot", "sop-alerts", "Approve restart?")
    me = served.state.user("sop-bot").id
    saved = await drv.reactions.save_reaction({"user_id": me, "post_id": post.id, "emoji_name": "eyes"})
    assert saved["emoji_name"] == "eyes" and saved["create_at"] > 0
    served.state.react("alice", post.id, "white_check_mark")
    listed = await drv.reactions.get_reactions(post.id)
    assert sorted(r["emoji_name"] for r in listed) == ["eyes", "white_check_mark"]
    assert len((await drv.posts.get_post(post.id))["metadata"]["reactions"]) == 2

    await drv.reactions.delete_reaction(me, post.id, "eyes")
    assert [r.emoji_name for r in served.state.reactions_on(post.id)] == ["white_check_mark"]

    alice_id = served.state.user("alice").id
    with pytest.raises(NotEnoughPermissions) as err:
        await drv.reactions.save_reaction({"user_id": alice_id, "post_id": post.id, "emoji_name": "+1"})
    assert err.value.error_id == "api.reaction.save_reaction.user_id.app_error"


async def test_upload_file_and_post_with_it(drv: AsyncTypedDriver, served: Served) -> None:
    alerts = served.state.channel("sop-alerts").id
    content = b"vault-0 sealed=true\nvault-1 sealed=false\n"
    uploaded = await drv.files.upload_file(channel_id=alerts, files=("report.txt", content, "text/plain"))
    info = uploaded["file_infos"][0]
    assert (info["name"], info["size"], info["extension"]) == ("report.txt", len(content), "txt")

    post = await drv.posts.create_post(alerts, "full report attached", file_ids=[info["id"]])
    assert post["file_ids"] == [info["id"]]
    assert post["metadata"]["files"][0]["post_id"] == post["id"]

    raw = await drv.files.get_file(info["id"])
    assert raw.content == content
    assert (await drv.files.get_file_info(info["id"]))["post_id"] == post["id"]


async def test_wrong_token_is_401_with_the_real_error_body(served: Served) -> None:
    driver = AsyncTypedDriver({**served.driver_options("sop-bot"), "token": "not-a-token"})
    with pytest.raises(NoAccessTokenProvided) as err:
        await driver.login()
    assert err.value.error_id == "api.context.session_expired.app_error"
    await driver.close()
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{served.url}/api/v4/users/me", headers={"Authorization": "Bearer nope"})
    body = resp.json()
    assert resp.status_code == 401
    assert body["status_code"] == 401 and body["id"] == "api.context.session_expired.app_error"
    assert set(body) >= {"id", "message", "detailed_error", "request_id", "status_code"}


async def test_ping_needs_no_token(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{served.url}/api/v4/system/ping")
    assert resp.json()["status"] == "OK"


async def test_rate_limited_server_answers_429_with_headers() -> None:
    clock = FakeClock()
    state = MattermostState(clock=clock)
    state.rate_limit = RateLimit(per_sec=1, burst=2)
    async with serve(state) as served:
        driver = served.driver("sop-bot")
        await driver.login()  # takes one of the two
        alerts = state.channel("sop-alerts").id
        await driver.posts.create_post(alerts, "first")
        with pytest.raises(TooManyRequests) as err:
            await driver.posts.create_post(alerts, "second")
        assert err.value.retry_after == 1
        assert str(err.value) == "limit exceeded\n"

        async with httpx.AsyncClient() as http:
            resp = await http.get(
                f"{served.url}/api/v4/users/me", headers={"Authorization": f"Bearer {state.tokens['sop-bot']}"}
            )
            assert resp.status_code == 429
            assert resp.text == "limit exceeded\n"
            assert resp.headers["X-RateLimit-Limit"] == "2"
            assert resp.headers["X-RateLimit-Remaining"] == "0"
            assert resp.headers["X-RateLimit-Reset"] == "2"  # seconds until full, not an epoch
            assert resp.headers["Retry-After"] == "1"

            # People (alice typing commands) are not limited unless `everyone` is set.
            alice = {"Authorization": f"Bearer {state.tokens['alice']}"}
            for _ in range(3):
                assert (await http.get(f"{served.url}/api/v4/users/me", headers=alice)).status_code == 200
            clock.advance(1.0)

        await driver.posts.create_post(alerts, "second, after refill")
        assert state.post_times("sop-bot") == [1000.0, 1001.0]
        assert [p.message for p in state.posts_in("sop-alerts")] == ["first", "second, after refill"]
        await driver.close()


async def test_rate_limit_for_everyone_uses_one_bucket_per_token() -> None:
    state = MattermostState(clock=FakeClock())
    state.rate_limit = RateLimit(per_sec=1, burst=1, everyone=True)
    async with serve(state) as served, httpx.AsyncClient() as http:
        url = f"{served.url}/api/v4/users/me"
        alice = {"Authorization": f"Bearer {state.tokens['alice']}"}
        bob = {"Authorization": f"Bearer {state.tokens['bob']}"}
        first = await http.get(url, headers=alice)
        assert first.status_code == 200 and first.headers["X-RateLimit-Remaining"] == "0"
        assert (await http.get(url, headers=alice)).status_code == 429
        assert (await http.get(url, headers=bob)).status_code == 200


async def test_fail_next_answers_5xx_then_recovers(drv: AsyncTypedDriver, served: Served) -> None:
    served.state.fail_next(1, status=503)
    with pytest.raises(UnknownMattermostError) as err:
        await drv.posts.create_post(served.state.channel("sop-alerts").id, "lost")
    assert err.value.status_code == 503
    post = await drv.posts.create_post(served.state.channel("sop-alerts").id, "kept")
    assert [p.message for p in served.state.posts_in("sop-alerts")] == [post["message"]]


async def test_retried_create_with_same_pending_post_id_is_deduplicated(drv: AsyncTypedDriver, served: Served) -> None:
    body = {"channel_id": served.state.channel("sop-alerts").id, "message": "once", "pending_post_id": "p-1"}
    first = await drv.client.post("/api/v4/posts", options=body)
    again = await drv.client.post("/api/v4/posts", options=body)
    assert again["id"] == first["id"]
    assert [p.message for p in served.state.posts_in("sop-alerts")] == ["once"]


async def test_ephemeral_post_reaches_only_its_user(drv: AsyncTypedDriver, served: Served) -> None:
    state = served.state
    post = await drv.posts.create_post_ephemeral(
        state.user("bob").id, {"channel_id": state.channel("sop-ops").id, "message": "only you can approve"}
    )
    assert post["type"] == "system_ephemeral"
    assert [p.message for p in state.ephemerals_for("bob")] == ["only you can approve"]
    assert state.ephemerals_for("alice") == [] and state.posts_in("sop-ops") == []


async def test_channel_posts_since_returns_only_newer(drv: AsyncTypedDriver, served: Served) -> None:
    old = served.state.post_as("alice", "sop-ops", "old")
    new = served.state.post_as("alice", "sop-ops", "new")
    listing = await drv.posts.get_posts_for_channel(served.state.channel("sop-ops").id, since=old.update_at)
    assert listing["order"] == [new.id]


async def test_unknown_post_is_404(drv: AsyncTypedDriver) -> None:
    with pytest.raises(ResourceNotFound) as err:
        await drv.posts.get_post("x" * 26)
    assert err.value.error_id == "app.post.get.app_error"


async def test_wait_for_post_sees_a_later_post(served: Served) -> None:
    waiter = asyncio.create_task(served.state.wait_for_post(lambda p: p.message == "done"))
    await asyncio.sleep(0)
    served.state.post_as("sop-bot", "sop-ops", "done")
    assert (await waiter).message == "done"
