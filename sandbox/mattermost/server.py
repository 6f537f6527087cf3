"""The sandbox Mattermost HTTP server: `make_app(state)` serves `/api/v4/...`, the websocket and
the slash-command `response_url` hooks with the real paths, status codes and error bodies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sandbox.mattermost import integrations
from sandbox.mattermost.errors import AppError, bad_param, bad_url_param, forbidden, not_found, session_expired
from sandbox.mattermost.hub import SERVER_VERSION
from sandbox.mattermost.models import (
    ChannelMember,
    CommandResponse,
    CreatePostBody,
    EphemeralPostBody,
    ExecuteCommandBody,
    OpenDialogBody,
    PatchPostBody,
    ReactionBody,
    SubmitDialogBody,
    Team,
    UpdatePostBody,
    User,
)
from sandbox.mattermost.state import MattermostState
from sandbox.mattermost.websocket import make_handler

STATE_KEY = web.AppKey("mattermost_state", MattermostState)
USER_KEY = web.RequestKey("mm_user", User)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

_PUBLIC = ("/api/v4/system/ping", "/api/v4/websocket")


def token_of(request: web.Request) -> str:
    """The session token: Authorization header (Bearer/Token), MMAUTHTOKEN cookie, or access_token."""
    auth = request.headers.get("Authorization", "")
    for scheme in ("Bearer ", "BEARER ", "bearer ", "Token ", "token "):
        if auth.startswith(scheme):
            return auth[len(scheme) :].strip()
    return request.cookies.get("MMAUTHTOKEN") or request.query.get("access_token", "")


def ok_json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json" (no charset): the driver compares the header verbatim.
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def status_ok() -> web.Response:
    return ok_json({"status": "OK"})


async def parse(request: web.Request, model: type[M], where: str) -> M:
    try:
        raw = await request.read()
        return model.model_validate_json(raw or b"{}")
    except (ValidationError, ValueError):
        raise bad_param(where, model.__name__.removesuffix("Body").lower()) from None


def caller(request: web.Request) -> User:
    user: User = request[USER_KEY]
    return user


# -- middlewares -----------------------------------------------------------------------------
@web.middleware
async def errors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as err:
        return err.response()
    except web.HTTPNotFound:
        if not request.path.startswith("/api/v4/"):
            raise
        return AppError("ServeHTTP", "api.context.404.app_error", "Sorry, we could not find the page.", 404).response()
    except web.HTTPMethodNotAllowed:
        return AppError("ServeHTTP", "api.context.405.app_error", "Method not allowed.", 405).response()


def make_gate_mw(state: MattermostState) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not state.site_url:
            state.site_url = str(request.url.origin())
        path = request.path
        api = path.startswith("/api/v4/") and path != "/api/v4/websocket"
        if not api:
            return await handler(request)
        status = state.take_fault(path)
        if status is not None:
            resp = AppError("ServeHTTP", "api.sandbox.injected_fault.app_error", "Injected fault.", status).response()
            if status == 429:  # as the real limiter answers: when to come back (1 s, its smallest)
                resp.headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1", "Retry-After": "1"})
            return resp
        token = token_of(request)
        user = state.user_for_token(token)
        decision = state.check_rate(token or (request.remote or ""), user)
        if decision is not None and not decision.allowed:
            # Mattermost's throttled limiter: plain-text body, relative reset seconds.
            return web.Response(
                status=429,
                text="limit exceeded\n",
                headers={
                    "X-RateLimit-Limit": str(decision.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(decision.reset_s),
                    "Retry-After": str(decision.retry_after_s),
                },
            )
        if path not in _PUBLIC:
            if user is None:
                resp: web.StreamResponse = session_expired().response()
                return resp
            request[USER_KEY] = user
        resp = await handler(request)
        if decision is not None:
            resp.headers["X-RateLimit-Limit"] = str(decision.limit)
            resp.headers["X-RateLimit-Remaining"] = str(decision.remaining)
            resp.headers["X-RateLimit-Reset"] = str(decision.reset_s)
        return resp

    return gate


# -- handlers ----------------------------------------------------------------------------------
def make_app(state: MattermostState) -> web.Application:
    app = web.Application(middlewares=[errors_mw, make_gate_mw(state)], client_max_size=100 * 1024 * 1024)
    app[STATE_KEY] = state
    r = app.router

    async def ping(request: web.Request) -> web.Response:
        return ok_json({"status": "OK", "ActiveSearchBackend": "database", "Version": SERVER_VERSION})

    # users
    def find_user(user_id: str, request: web.Request) -> User:
        if user_id == "me":
            return caller(request)
        user = state.users.get(user_id)
        if user is None:
            raise not_found("GetUser", "app.user.missing_account.const", "user")
        return user

    async def get_user(request: web.Request) -> web.Response:
        return ok_json(find_user(request.match_info["user_id"], request).model_dump())

    async def get_user_by_username(request: web.Request) -> web.Response:
        try:
            return ok_json(state.user(request.match_info["username"]).model_dump())
        except KeyError:
            raise not_found("GetUserByUsername", "app.user.get_by_username.app_error", "user") from None

    async def users_by_ids(request: web.Request) -> web.Response:
        try:
            ids = json.loads(await request.read() or b"[]")
        except ValueError:
            raise bad_param("getUsersByIds", "user_ids") from None
        if not isinstance(ids, list) or not ids:
            raise bad_param("getUsersByIds", "user_ids")
        return ok_json([state.users[i].model_dump() for i in ids if isinstance(i, str) and i in state.users])

    # teams and channels
    def find_team(team_id: str = "", name: str = "") -> Team:
        t = state.team
        if (team_id and t.id != team_id) or (name and t.name != name):
            raise not_found("GetTeam", "app.team.get.find.app_error", "team")
        return t

    async def get_team(request: web.Request) -> web.Response:
        return ok_json(find_team(team_id=request.match_info["team_id"]).model_dump())

    async def get_team_by_name(request: web.Request) -> web.Response:
        return ok_json(find_team(name=request.match_info["name"]).model_dump())

    def channel_by_name(team_id: str, name: str, user: User) -> web.Response:
        for ch in state.channels.values():
            if ch.team_id == team_id and ch.name == name and not ch.delete_at:
                if not state.is_member(ch.id, user.id) and ch.type != "O":
                    raise forbidden("getChannelByName")
                return ok_json(ch.model_dump())
        raise not_found("GetChannelByName", "app.channel.get_by_name.missing.app_error", "channel")

    async def get_channel_by_name(request: web.Request) -> web.Response:
        team = find_team(team_id=request.match_info["team_id"])
        return channel_by_name(team.id, request.match_info["channel_name"], caller(request))

    async def get_channel_by_team_name(request: web.Request) -> web.Response:
        team = find_team(name=request.match_info["team_name"])
        return channel_by_name(team.id, request.match_info["channel_name"], caller(request))

    async def get_channel(request: web.Request) -> web.Response:
        return ok_json(state.get_channel(request.match_info["channel_id"], caller(request).id).model_dump())

    async def get_channel_member(request: web.Request) -> web.Response:
        ch = state.get_channel(request.match_info["channel_id"], caller(request).id)
        uid = request.match_info["user_id"]
        uid = caller(request).id if uid == "me" else uid
        if not state.is_member(ch.id, uid):
            raise not_found("GetChannelMember", "app.channel.get_member.missing.app_error", "channel member")
        return ok_json(ChannelMember(channel_id=ch.id, user_id=uid).model_dump())

    async def get_posts_for_channel(request: web.Request) -> web.Response:
        ch = state.get_channel(request.match_info["channel_id"], caller(request).id)
        try:
            page = int(request.query.get("page", "0"))
            per_page = min(int(request.query.get("per_page", "60")), 200)
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise bad_url_param("getPostsForChannel", "page") from None
        posts = state.posts_in(ch.id)
        if since:
            return ok_json(state.post_list([p for p in posts if p.update_at > since]))
        newest_first = list(reversed(posts))[page * per_page : (page + 1) * per_page]
        return ok_json(state.post_list(newest_first))

    # posts
    async def create_post(request: web.Request) -> web.Response:
        body = await parse(request, CreatePostBody, "createPost")
        post = state.create_post(caller(request).id, body)
        return ok_json(state.post_json(post), status=201)

    async def create_ephemeral(request: web.Request) -> web.Response:
        body = await parse(request, EphemeralPostBody, "createEphemeralPost")
        post = state.create_ephemeral(body.user_id, body.post, sender_id=caller(request).id)
        return ok_json(post.model_dump(), status=201)

    async def get_post(request: web.Request) -> web.Response:
        include_deleted = request.query.get("include_deleted") == "true"
        post = state.get_post(request.match_info["post_id"], caller(request).id, include_deleted)
        return ok_json(state.post_json(post))

    async def patch_post(request: web.Request) -> web.Response:
        body = await parse(request, PatchPostBody, "patchPost")
        post = state.edit_post(caller(request).id, request.match_info["post_id"], body)
        return ok_json(state.post_json(post))

    async def update_post(request: web.Request) -> web.Response:
        body = await parse(request, UpdatePostBody, "updatePost")
        if body.id != request.match_info["post_id"]:
            raise bad_param("updatePost", "id")
        patch = PatchPostBody(message=body.message, props=body.props, file_ids=body.file_ids, is_pinned=body.is_pinned)
        post = state.edit_post(caller(request).id, body.id, patch)
        return ok_json(state.post_json(post))

    async def delete_post(request: web.Request) -> web.Response:
        state.delete_post(caller(request).id, request.match_info["post_id"])
        return status_ok()

    async def get_thread(request: web.Request) -> web.Response:
        post = state.get_post(request.match_info["post_id"], caller(request).id)
        return ok_json(state.post_list(state.thread(post.root_id or post.id)))

    # reactions
    async def save_reaction(request: web.Request) -> web.Response:
        body = await parse(request, ReactionBody, "saveReaction")
        reaction = state.add_reaction(caller(request).id, body.user_id, body.post_id, body.emoji_name)
        return ok_json(reaction.model_dump())

    async def delete_reaction(request: web.Request) -> web.Response:
        m = request.match_info
        uid = caller(request).id if m["user_id"] == "me" else m["user_id"]
        state.remove_reaction(caller(request).id, uid, m["post_id"], m["emoji_name"])
        return status_ok()

    async def get_reactions(request: web.Request) -> web.Response:
        post = state.get_post(request.match_info["post_id"], caller(request).id)
        return ok_json([r.model_dump() for r in state.reactions_on(post.id)])

    # files
    async def upload_file(request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise AppError("uploadFile", "api.file.upload_file.incorrect_content_type.app_error", "Incorrect content type.", 400)
        channel_id = request.query.get("channel_id", "")
        client_ids: list[str] = []
        uploads: list[tuple[str, bytes, str]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not hasattr(part, "name"):
                continue
            if part.name == "channel_id":
                channel_id = (await part.text()).strip() or channel_id  # type: ignore[union-attr]
            elif part.name == "client_ids":
                client_ids.append(await part.text())  # type: ignore[union-attr]
            elif part.name == "files":
                data = await part.read()  # type: ignore[union-attr]
                name = part.filename or request.query.get("filename", "file")  # type: ignore[union-attr]
                uploads.append((name, bytes(data), part.headers.get("Content-Type", "")))  # type: ignore[union-attr]
        if not channel_id:
            raise bad_url_param("uploadFileStream", "channel_id")
        if not uploads:
            raise AppError("uploadFile", "api.file.upload_file.no_files.app_error", "No files in the request.", 400)
        user = caller(request)
        infos = [state.upload_file(user.id, channel_id, n, d, "" if m == "application/octet-stream" else m) for n, d, m in uploads]
        return ok_json({"file_infos": [i.model_dump() for i in infos], "client_ids": client_ids}, status=201)

    async def get_file(request: web.Request) -> web.Response:
        info, data = state.get_file(request.match_info["file_id"], caller(request).id)
        disposition = f"attachment;filename=\"{info.name}\"; filename*=UTF-8''{quote(info.name)}"
        return web.Response(body=data, headers={"Content-Type": info.mime_type, "Content-Disposition": disposition})

    async def get_file_info(request: web.Request) -> web.Response:
        info, _ = state.get_file(request.match_info["file_id"], caller(request).id)
        return ok_json(info.model_dump())

    # commands, hooks, dialogs
    async def list_commands(request: web.Request) -> web.Response:
        team_id = request.query.get("team_id", "")
        return ok_json([c.model_dump() for c in state.commands.values() if not team_id or c.team_id == team_id])

    async def execute_command(request: web.Request) -> web.Response:
        body = await parse(request, ExecuteCommandBody, "executeCommand")
        reply = await integrations.execute_command(state, caller(request).id, body.channel_id, body.command, body.root_id)
        return ok_json(reply)

    async def command_hook(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            if request.content_type == "application/x-www-form-urlencoded":
                form = await request.post()
                raw = str(form.get("payload", "")).encode()
            reply = CommandResponse.model_validate_json(raw)
        except (ValidationError, ValueError):
            return AppError("commandWebhook", "web.command_webhook.parse.app_error", "Unable to parse incoming data.", 400).response()
        integrations.use_command_hook(state, request.match_info["hook_id"], reply)
        return web.Response(text="ok", content_type="text/plain")

    async def open_dialog(request: web.Request) -> web.Response:
        body = await parse(request, OpenDialogBody, "openDialog")
        integrations.open_dialog(state, body.trigger_id, body.url, body.dialog)
        return status_ok()

    async def submit_dialog(request: web.Request) -> web.Response:
        body = await parse(request, SubmitDialogBody, "submitDialog")
        answer = await integrations.submit_dialog(state, caller(request).id, body)
        return ok_json(answer) if answer else status_ok()

    v4 = "/api/v4"
    r.add_get(f"{v4}/system/ping", ping)
    r.add_get(f"{v4}/websocket", make_handler(state, token_of))
    r.add_post(f"{v4}/users/ids", users_by_ids)
    r.add_get(f"{v4}/users/username/{{username}}", get_user_by_username)
    r.add_get(f"{v4}/users/{{user_id}}", get_user)
    r.add_delete(f"{v4}/users/{{user_id}}/posts/{{post_id}}/reactions/{{emoji_name}}", delete_reaction)
    r.add_get(f"{v4}/teams/name/{{team_name}}/channels/name/{{channel_name}}", get_channel_by_team_name)
    r.add_get(f"{v4}/teams/name/{{name}}", get_team_by_name)
    r.add_get(f"{v4}/teams/{{team_id}}", get_team)
    r.add_get(f"{v4}/teams/{{team_id}}/channels/name/{{channel_name}}", get_channel_by_name)
    r.add_get(f"{v4}/channels/{{channel_id}}", get_channel)
    r.add_get(f"{v4}/channels/{{channel_id}}/members/{{user_id}}", get_channel_member)
    r.add_get(f"{v4}/channels/{{channel_id}}/posts", get_posts_for_channel)
    r.add_post(f"{v4}/posts", create_post)
    r.add_post(f"{v4}/posts/ephemeral", create_ephemeral)
    r.add_get(f"{v4}/posts/{{post_id}}", get_post)
    r.add_put(f"{v4}/posts/{{post_id}}", update_post)
    r.add_delete(f"{v4}/posts/{{post_id}}", delete_post)
    r.add_put(f"{v4}/posts/{{post_id}}/patch", patch_post)
    r.add_get(f"{v4}/posts/{{post_id}}/thread", get_thread)
    r.add_get(f"{v4}/posts/{{post_id}}/reactions", get_reactions)
    r.add_post(f"{v4}/reactions", save_reaction)
    r.add_post(f"{v4}/files", upload_file)
    r.add_get(f"{v4}/files/{{file_id}}", get_file)
    r.add_get(f"{v4}/files/{{file_id}}/info", get_file_info)
    r.add_get(f"{v4}/commands", list_commands)
    r.add_post(f"{v4}/commands/execute", execute_command)
    r.add_post(f"{v4}/actions/dialogs/open", open_dialog)
    r.add_post(f"{v4}/actions/dialogs/submit", submit_dialog)
    r.add_post("/hooks/commands/{hook_id}", command_hook)

    async def close_state(_: web.Application) -> None:
        await state.close()

    async def close_sockets(_: web.Application) -> None:
        await state.hub.close_all()  # otherwise shutdown waits for open websockets

    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(close_state)
    return app
