"""In-memory state of the sandbox Mattermost server and the operations on it.

REST handlers and the test helpers (`post_as`, `react`, `run_command`, `submit_dialog`) call the
same operations, so websocket events fire whichever way a change comes in. Operations raise
`AppError`, which the server turns into Mattermost's JSON error body.
"""

from __future__ import annotations

import asyncio
import json
import math
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sandbox.mattermost.errors import AppError, bad_param, forbidden, not_found
from sandbox.mattermost.hub import Hub, broadcast
from sandbox.mattermost.ids import new_id, now_ms
from sandbox.mattermost.models import (
    MAX_POST_RUNES,
    Channel,
    CreatePostBody,
    FileInfo,
    PatchPostBody,
    Post,
    Reaction,
    SlashCommand,
    Team,
    User,
)

PostPredicate = Callable[[Post], bool]
PENDING_POST_TTL_S = 30.0  # app.PendingPostIDsCacheTTL: repeats within it are deduplicated


@dataclass
class RateLimit:
    """Token bucket per token (user): `burst` requests at once, refilled at `per_sec`.

    By default only bot accounts are limited, so tests that play people typing commands are not
    throttled themselves; `everyone=True` limits every caller as the real server does.
    """

    per_sec: float
    burst: int
    everyone: bool = False


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again (relative, as Mattermost sends it)
    retry_after_s: int


@dataclass
class Fault:
    remaining: int
    status: int
    path_prefix: str


@dataclass
class Trigger:
    """What a trigger_id stands for: the user action it came from (a slash command)."""

    user_id: str
    channel_id: str
    team_id: str
    issued_at: float


@dataclass
class OpenedDialog:
    id: str
    trigger_id: str
    user_id: str
    channel_id: str
    team_id: str
    url: str
    dialog: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # what the real server would log as invalid


@dataclass
class CommandHook:
    """A slash command's response_url: 5 uses within 30 minutes."""

    id: str
    user_id: str
    channel_id: str
    team_id: str
    root_id: str
    command_id: str
    created_at: float
    uses: int = 0


@dataclass
class Ephemeral:
    user_id: str
    post: Post


class MattermostState:
    def __init__(self, command_url: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        # clock drives rate limiting, trigger and response_url expiry; tests may replace it.
        self.clock = clock
        self.team = Team(name="platform", display_name="Platform")
        self.users: dict[str, User] = {}
        self.tokens: dict[str, str] = {}
        self._token_owner: dict[str, str] = {}
        self.channels: dict[str, Channel] = {}
        self.members: set[tuple[str, str]] = set()  # (channel_id, user_id)
        self.posts: dict[str, Post] = {}
        self.ephemerals: list[Ephemeral] = []
        self.reactions: list[Reaction] = []
        self.files: dict[str, tuple[FileInfo, bytes]] = {}
        self.commands: dict[str, SlashCommand] = {}
        self.triggers: dict[str, Trigger] = {}
        self.dialogs: dict[str, OpenedDialog] = {}
        self.hooks: dict[str, CommandHook] = {}
        self.hub = Hub()
        # Base URL the server is reached at (response_url is built from it); the server fills it
        # from the first request unless the runner sets it.
        self.site_url = ""
        self.rate_limit: RateLimit | None = None
        self._buckets: dict[str, _Bucket] = {}
        self.accepted_posts: list[tuple[float, str]] = []  # (clock, user_id) of each created post
        self.faults: list[Fault] = []
        self.trigger_ttl_s = 3.0  # model.InteractiveDialogTriggerTimeoutMilliseconds
        self.command_timeout_s = 30.0  # ServiceSettings.OutgoingIntegrationRequestsTimeout
        self.hook_ttl_s = 30 * 60.0
        self.hook_max_uses = 5
        self.signing_key = new_id()
        self._last_create = 0
        self._waiters: list[tuple[PostPredicate, asyncio.Future[Post]]] = []
        self._http: aiohttp.ClientSession | None = None
        self._pending: dict[tuple[str, str], tuple[str, float]] = {}  # (user, pending_post_id) -> (post, clock)

        for name, bot in (("sop-bot", True), ("alice", False), ("bob", False)):
            user = User(
                username=name,
                is_bot=bot,
                email=f"{name}@platform.example",
                bot_description="SOP Bot: runs the platform runbook" if bot else "",
            )
            self.users[user.id] = user
            token = new_id()
            self.tokens[name] = token
            self._token_owner[token] = user.id
        for name, display in (("town-square", "Town Square"), ("sop-alerts", "SOP Alerts"), ("sop-ops", "SOP Ops")):
            ch = Channel(team_id=self.team.id, name=name, display_name=display)
            self.channels[ch.id] = ch
            for uid in self.users:
                self.members.add((ch.id, uid))
        self.sop_command = SlashCommand(
            team_id=self.team.id,
            trigger="sop",
            url=command_url,
            creator_id=self.user("alice").id,
            display_name="SOP Bot",
            description="Run a runbook procedure",
            auto_complete_hint="[sop-id] [params]",
        )
        self.commands[self.sop_command.id] = self.sop_command

    # -- lookups ---------------------------------------------------------------------------------
    @property
    def slash_token(self) -> str:
        return self.sop_command.token

    def user(self, username: str) -> User:
        for u in self.users.values():
            if u.username == username:
                return u
        raise KeyError(username)

    def user_for_token(self, token: str) -> User | None:
        uid = self._token_owner.get(token)
        return self.users.get(uid) if uid else None

    def act_as(self, username: str) -> str:
        """The personal access token a test or person uses to be `username`."""
        self.user(username)
        return self.tokens[username]

    def channel(self, id_or_name: str) -> Channel:
        if id_or_name in self.channels:
            return self.channels[id_or_name]
        for ch in self.channels.values():
            if ch.name == id_or_name:
                return ch
        raise KeyError(id_or_name)

    def get_channel(self, channel_id: str, user_id: str) -> Channel:
        ch = self.channels.get(channel_id)
        if ch is None or ch.delete_at:
            raise not_found("GetChannel", "app.channel.get.existing.app_error", "channel")
        if (ch.id, user_id) not in self.members:
            raise forbidden("getChannel")
        return ch

    def is_member(self, channel_id: str, user_id: str) -> bool:
        return (channel_id, user_id) in self.members

    def get_post(self, post_id: str, user_id: str, include_deleted: bool = False) -> Post:
        post = self.posts.get(post_id)
        if post is None or (post.delete_at and not include_deleted):
            raise not_found("GetSinglePost", "app.post.get.app_error", "post")
        if not self.is_member(post.channel_id, user_id):
            raise forbidden("getPost")
        return post

    # -- test-side reads (no clock involved) ----------------------------------------------------
    def posts_in(self, channel: str) -> list[Post]:
        """Live posts of a channel (id or name), oldest first."""
        cid = self.channel(channel).id
        return [p for p in self.posts.values() if p.channel_id == cid and not p.delete_at]

    def thread(self, root_id: str) -> list[Post]:
        """The root post and its replies, oldest first."""
        return [p for p in self.posts.values() if (p.id == root_id or p.root_id == root_id) and not p.delete_at]

    def reactions_on(self, post_id: str) -> list[Reaction]:
        return [r for r in self.reactions if r.post_id == post_id]

    def ephemerals_for(self, username: str) -> list[Post]:
        uid = self.user(username).id
        return [e.post for e in self.ephemerals if e.user_id == uid]

    def post_times(self, username: str | None = None) -> list[float]:
        """Clock readings at which post creations were accepted (for "no burst over the limit")."""
        uid = self.user(username).id if username else None
        return [t for t, u in self.accepted_posts if uid is None or u == uid]

    async def wait_for_post(self, pred: PostPredicate, timeout: float = 10.0) -> Post:
        """The first live post (existing or future) matching `pred`."""
        for p in self.posts.values():
            if not p.delete_at and pred(p):
                return p
        fut: asyncio.Future[Post] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake(self, post: Post) -> None:
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(post):
                fut.set_result(post)

    # -- serialization ----------------------------------------------------------------------------
    def post_json(self, post: Post) -> dict[str, Any]:
        """A post as the server returns it: metadata carries reactions and file infos."""
        d = post.model_dump()
        replies = [p for p in self.posts.values() if p.root_id == (post.root_id or post.id) and not p.delete_at]
        d["reply_count"] = len(replies)
        d["last_reply_at"] = max((p.create_at for p in replies), default=0)
        meta = dict(post.metadata)
        reactions = self.reactions_on(post.id)
        if reactions:
            meta["reactions"] = [r.model_dump() for r in reactions]
        files = [self.files[f][0].model_dump() for f in post.file_ids if f in self.files]
        if files:
            meta["files"] = files
        d["metadata"] = meta
        return d

    def post_list(self, posts: list[Post]) -> dict[str, Any]:
        """PostList: `order` newest first, `posts` keyed by id."""
        newest_first = sorted(posts, key=lambda p: p.create_at, reverse=True)
        return {
            "order": [p.id for p in newest_first],
            "posts": {p.id: self.post_json(p) for p in newest_first},
            "next_post_id": "",
            "prev_post_id": "",
            "has_next": False,
        }

    # -- writes ----------------------------------------------------------------------------------
    def _stamp(self) -> int:
        # Strictly increasing create_at keeps PostList order stable even within one millisecond.
        self._last_create = max(now_ms(), self._last_create + 1)
        return self._last_create

    def create_post(self, user_id: str, body: CreatePostBody, extra_props: dict[str, Any] | None = None) -> Post:
        seen = self._pending.get((user_id, body.pending_post_id)) if body.pending_post_id else None
        if seen is not None and self.clock() - seen[1] <= PENDING_POST_TTL_S and seen[0] in self.posts:
            return self.posts[seen[0]]  # a retried create: Mattermost answers with the first post
        ch = self.channels.get(body.channel_id)
        if ch is None:
            raise bad_param("createPost", "channel_id")
        if not self.is_member(ch.id, user_id):
            raise forbidden("createPost")
        _check_message(body.message)
        if body.root_id:
            root = self.posts.get(body.root_id)
            # The root must exist in the same channel and be a root itself, not a reply.
            if root is None or root.delete_at or root.channel_id != ch.id or root.root_id:
                raise AppError("createPost", "api.post.create_post.root_id.app_error", "Invalid RootId parameter.", 400)
        for fid in body.file_ids:
            info = self.files.get(fid)
            if info is None or info[0].user_id != user_id or info[0].post_id:
                raise bad_param("createPost", "file_ids")
        ts = self._stamp()
        props = {**body.props, **(extra_props or {})}
        if self.users[user_id].is_bot:
            props["from_bot"] = "true"  # the real server marks every bot account's post
        post = Post(
            user_id=user_id,
            channel_id=ch.id,
            root_id=body.root_id,
            message=body.message,
            props=props,
            file_ids=body.file_ids,
            metadata=body.metadata,
            pending_post_id=body.pending_post_id,
            create_at=ts,
            update_at=ts,
        )
        for fid in body.file_ids:
            self.files[fid][0].post_id = post.id
            self.files[fid][0].channel_id = ch.id
        self.posts[post.id] = post
        if body.pending_post_id:
            self._pending[(user_id, body.pending_post_id)] = (post.id, self.clock())
        self.accepted_posts.append((self.clock(), user_id))
        ch.last_post_at = ts
        ch.total_msg_count += 1
        sender = self.users[user_id]
        data: dict[str, Any] = {
            "channel_display_name": ch.display_name,
            "channel_name": ch.name,
            "channel_type": ch.type,
            "post": json.dumps(self.post_json(post)),
            "sender_name": f"@{sender.username}",
            "set_online": True,
            "team_id": ch.team_id,
        }
        mentioned = self._mentions(ch.id, post.message, exclude=user_id)
        if mentioned:
            data["mentions"] = json.dumps(mentioned)  # like post, a JSON string
        self.hub.publish(
            "posted",
            data,
            broadcast(channel_id=ch.id),
            self._channel_members(ch.id),
        )
        self._wake(post)
        return post

    def create_ephemeral(self, target_user_id: str, body: CreatePostBody, sender_id: str) -> Post:
        """An ephemeral post: shown to one user over the websocket, never stored in the channel."""
        ch = self.channels.get(body.channel_id)
        if ch is None:
            raise bad_param("createEphemeralPost", "channel_id")
        _check_message(body.message)
        ts = self._stamp()
        post = Post(
            user_id=sender_id,
            channel_id=ch.id,
            root_id=body.root_id,
            message=body.message,
            props=body.props,
            type="system_ephemeral",
            create_at=ts,
            update_at=ts,
        )
        self.ephemerals.append(Ephemeral(target_user_id, post))
        self.hub.publish(
            "ephemeral_message",
            {"post": json.dumps(post.model_dump())},
            broadcast(user_id=target_user_id, channel_id=ch.id),
            [target_user_id],
        )
        return post

    def edit_post(self, user_id: str, post_id: str, patch: PatchPostBody) -> Post:
        post = self.get_post(post_id, user_id)
        if post.user_id != user_id:
            raise forbidden("patchPost")
        now = self._stamp()
        if patch.message is not None and patch.message != post.message:
            _check_message(patch.message)
            post.message = patch.message
            post.edit_at = now
        if patch.props is not None:
            post.props = patch.props
        if patch.is_pinned is not None:
            post.is_pinned = patch.is_pinned
        if patch.file_ids is not None:
            post.file_ids = patch.file_ids
        post.update_at = now
        self.hub.publish(
            "post_edited",
            {"post": json.dumps(self.post_json(post))},
            broadcast(channel_id=post.channel_id),
            self._channel_members(post.channel_id),
        )
        self._wake(post)
        return post

    def delete_post(self, user_id: str, post_id: str) -> None:
        post = self.get_post(post_id, user_id)
        if post.user_id != user_id:
            raise forbidden("deletePost")
        post.delete_at = self._stamp()
        post.update_at = post.delete_at
        self.hub.publish(
            "post_deleted",
            {"post": json.dumps(self.post_json(post)), "delete_by": user_id},
            broadcast(channel_id=post.channel_id),
            self._channel_members(post.channel_id),
        )

    def add_reaction(self, caller_id: str, user_id: str, post_id: str, emoji_name: str) -> Reaction:
        if user_id != caller_id:
            raise AppError(
                "saveReaction", "api.reaction.save_reaction.user_id.app_error", "You cannot save reaction for the other user.", 403
            )
        if not emoji_name or len(emoji_name) > 64:
            raise bad_param("saveReaction", "emoji_name")
        post = self.get_post(post_id, caller_id)
        for r in self.reactions:
            if (r.user_id, r.post_id, r.emoji_name) == (user_id, post_id, emoji_name):
                return r  # Mattermost upserts: saving the same reaction twice is not an error
        reaction = Reaction(user_id=user_id, post_id=post_id, emoji_name=emoji_name)
        self.reactions.append(reaction)
        self._publish_reaction("reaction_added", post, reaction)
        return reaction

    def remove_reaction(self, caller_id: str, user_id: str, post_id: str, emoji_name: str) -> None:
        if user_id != caller_id:
            raise forbidden("deleteReaction")
        post = self.get_post(post_id, caller_id)
        for r in list(self.reactions):
            if (r.user_id, r.post_id, r.emoji_name) == (user_id, post_id, emoji_name):
                self.reactions.remove(r)
                self._publish_reaction("reaction_removed", post, r)
                return

    def _publish_reaction(self, event: str, post: Post, reaction: Reaction) -> None:
        self.hub.publish(
            event,
            {"reaction": json.dumps(reaction.model_dump())},
            broadcast(channel_id=post.channel_id),
            self._channel_members(post.channel_id),
        )

    def upload_file(self, user_id: str, channel_id: str, name: str, data: bytes, mime_type: str = "") -> FileInfo:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise bad_url_param_channel()
        if not self.is_member(ch.id, user_id):
            raise forbidden("uploadFile")
        ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
        mime = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        info = FileInfo(user_id=user_id, channel_id=ch.id, name=name, extension=ext, size=len(data), mime_type=mime)
        self.files[info.id] = (info, data)
        return info

    def get_file(self, file_id: str, user_id: str) -> tuple[FileInfo, bytes]:
        entry = self.files.get(file_id)
        if entry is None:
            raise not_found("GetFileInfo", "app.file_info.get.app_error", "file")
        if entry[0].channel_id and not self.is_member(entry[0].channel_id, user_id):
            raise forbidden("getFile")
        return entry

    def _mentions(self, channel_id: str, message: str, exclude: str) -> list[str]:
        words = set(re.findall(r"@([a-z0-9._-]+)", message.lower()))
        return [
            uid
            for uid in self._channel_members(channel_id)
            if uid != exclude and self.users[uid].username in words
        ]

    def _channel_members(self, channel_id: str) -> list[str]:
        return [u for c, u in self.members if c == channel_id]

    # -- people helpers (same code paths as the REST calls) ---------------------------------------
    def post_as(self, username: str, channel: str, message: str, root_id: str = "", props: dict[str, Any] | None = None) -> Post:
        body = CreatePostBody(channel_id=self.channel(channel).id, message=message, root_id=root_id, props=props or {})
        return self.create_post(self.user(username).id, body)

    def react(self, username: str, post_id: str, emoji_name: str) -> Reaction:
        uid = self.user(username).id
        return self.add_reaction(uid, uid, post_id, emoji_name)

    def unreact(self, username: str, post_id: str, emoji_name: str) -> None:
        uid = self.user(username).id
        self.remove_reaction(uid, uid, post_id, emoji_name)

    async def run_command(self, username: str, channel: str, command: str, root_id: str = "") -> dict[str, Any]:
        """Run `/sop ...` as `username` in `channel`, as if typed in the message box."""
        from sandbox.mattermost.integrations import execute_command

        return await execute_command(self, self.user(username).id, self.channel(channel).id, command, root_id)

    async def submit_dialog(
        self, username: str, dialog_or_trigger_id: str, submission: dict[str, Any], cancelled: bool = False
    ) -> dict[str, Any]:
        """Submit an opened dialog (by dialog id or the trigger_id it was opened with) as a user."""
        from sandbox.mattermost.integrations import submit_opened_dialog

        return await submit_opened_dialog(self, self.user(username).id, dialog_or_trigger_id, submission, cancelled)

    def dialogs_for(self, username: str) -> list[OpenedDialog]:
        uid = self.user(username).id
        return [d for d in self.dialogs.values() if d.user_id == uid]

    # -- websocket, faults, rate limit ----------------------------------------------------------
    async def disconnect_websockets(self) -> None:
        await self.hub.close_all()

    def fail_next(self, n: int, status: int = 503, path_prefix: str = "/api/v4/") -> None:
        """Answer the next `n` API requests under `path_prefix` with `status`."""
        self.faults.append(Fault(n, status, path_prefix))

    def take_fault(self, path: str) -> int | None:
        for f in self.faults:
            if f.remaining > 0 and path.startswith(f.path_prefix):
                f.remaining -= 1
                if f.remaining == 0:
                    self.faults.remove(f)
                return f.status
        return None

    def check_rate(self, key: str, user: User | None) -> RateDecision | None:
        rl = self.rate_limit
        if rl is None or not (rl.everyone or (user is not None and user.is_bot)):
            return None
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(tokens=float(rl.burst), updated=now)
        b.tokens = min(float(rl.burst), b.tokens + (now - b.updated) * rl.per_sec)
        b.updated = now
        allowed = b.tokens >= 1.0
        if allowed:
            b.tokens -= 1.0
        reset = math.ceil((rl.burst - b.tokens) / rl.per_sec) if rl.per_sec > 0 else 0
        retry = max(1, math.ceil((1.0 - b.tokens) / rl.per_sec)) if rl.per_sec > 0 else 1
        return RateDecision(allowed, rl.burst, int(b.tokens), reset, retry)

    # -- outgoing HTTP (slash commands, dialogs) -------------------------------------------------
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        for _, fut in self._waiters:
            fut.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    aclose = close


def _check_message(message: str) -> None:
    if len(message) > MAX_POST_RUNES:  # Python str length counts code points, i.e. Go runes
        raise AppError(
            "Post.IsValid",
            "model.post.is_valid.msg.app_error",
            "Invalid message.",
            400,
            detailed=f"message length {len(message)} exceeds {MAX_POST_RUNES} runes",
        )


def bad_url_param_channel() -> AppError:
    return AppError("uploadFileStream", "api.context.invalid_url_param.app_error", "Invalid or missing channel_id parameter in request URL.", 400)
