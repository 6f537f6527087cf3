"""The bot's Mattermost account over mattermostautodriver's ``AsyncTypedDriver`` (httpx).

Writes (posts, edits, reactions, uploads, dialogs) go through ``WriteQueue``; reads go straight
out with the same retry policy. Nothing here knows what an SOP is."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from mattermostautodriver import AsyncTypedDriver
from mattermostautodriver.exceptions import MattermostError

from bot.chat.errors import ChatError
from bot.chat.long_messages import MAX_POST_RUNES, shortened, summary_with_note
from bot.chat.models import Post, PostRef, Reaction
from bot.chat.queue import Send, WriteQueue
from bot.config import MattermostConfig
from bot.redact import redact

log = logging.getLogger(__name__)

T = TypeVar("T")


def _json(result: Any) -> Any:
    # The driver's get() hands back the raw response unless Content-Type is exactly
    # "application/json" (a proxy or server adding "; charset=utf-8" is enough).
    return result.json() if isinstance(result, httpx.Response) else result


def driver_options(config: MattermostConfig, token: str) -> dict[str, Any]:
    parts = urlsplit(config.url)
    scheme = parts.scheme or "https"
    return {
        "scheme": scheme,
        "url": parts.hostname or "localhost",
        "port": parts.port or (443 if scheme == "https" else 80),
        "token": token,
        "request_timeout": config.request_timeout_s,
        "max_retries": 0,  # WriteQueue owns retries (injectable sleep, POSTs retried safely)
    }


class MattermostChat:
    """Post, edit, react and read as the bot. ``await start()`` before use, ``close()`` after."""

    def __init__(self, config: MattermostConfig, *, queue: WriteQueue | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 attachment_name: str = "report.md"):
        self.config = config
        self.queue = queue or WriteQueue(config.rate_limit_per_s)
        self.attachment_name = attachment_name
        # A missing token is reported by start(), so close() always works on what was built.
        token = config.token.get_secret_value() if config.token is not None else ""
        options = driver_options(config, token)
        if transport is not None:
            options["transport"] = transport
        self._driver = AsyncTypedDriver(options)
        # driver.login() would do this, but it chokes on a users/me answer whose Content-Type
        # is not exactly "application/json"; start() asks users/me itself.
        self._driver.client.token = options["token"]
        path = urlsplit(config.url).path.rstrip("/")
        if path:  # the driver builds scheme://host:port only; keep a subpath deployment's prefix
            self._driver.client._url += path
        self._bot_user_id: str | None = None
        self.bot_username: str | None = None
        self.team_id: str | None = None
        self._channels: dict[str, str] = {}
        self._usernames: dict[str, str] = {}
        self._postable: set[str] = set()  # channels the bot was found a member of

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the token (users/me) and find the configured team."""
        if self.config.token is None:
            raise ChatError("log in with the bot token", "mattermost.token is not set")
        me = _json(await self.queue.call(lambda: self._driver.users.get_user("me"),
                                         what="log in with the bot token"))
        if not isinstance(me, dict) or "id" not in me:
            raise ChatError("log in with the bot token", "users/me did not return a user")
        self._bot_user_id = me["id"]
        self.bot_username = me.get("username")
        if self.bot_username:
            self._usernames[me["id"]] = self.bot_username
        team = self.config.team
        try:
            data = _json(await self.queue.call(
                lambda: self._driver.teams.get_team_by_name(team), what=f"find team {team!r}"))
        except ChatError as exc:
            if exc.status in (403, 404):
                raise ChatError(exc.what, "no such team, or the bot is not a member of it",
                                exc.status) from None
            raise
        self.team_id = data["id"]
        log.info("connected to Mattermost as @%s in team %s", self.bot_username, team)

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        """Send what is queued (waiting at most ``drain_timeout_s``), then release the client."""
        try:
            await self.queue.close(drain=True, timeout_s=drain_timeout_s)
        finally:
            await self._driver.close()

    async def __aenter__(self) -> MattermostChat:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def bot_user_id(self) -> str:
        if self._bot_user_id is None:
            raise RuntimeError("MattermostChat.start() has not run")
        return self._bot_user_id

    @property
    def websocket_url(self) -> str:
        base = self._driver.client.url
        return ("wss" if base.startswith("https") else "ws") + base[base.index(":"):] + "/api/v4/websocket"

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        return _json(await self.queue.call(call, what=what))

    async def channel_id(self, name: str) -> str:
        """Id of channel ``name`` (URL name, "~" optional) in the configured team; cached."""
        name = name.lstrip("~")
        if name not in self._channels:
            team_id = self._team()
            try:
                data = await self._read(f"find channel ~{name}",
                                        lambda: self._driver.channels.get_channel_by_name(team_id, name))
            except ChatError as exc:
                if exc.status in (403, 404):
                    raise ChatError(exc.what, f"no such channel in team {self.config.team!r}, "
                                    "or the bot is not a member of it", exc.status) from None
                raise
            self._channels[name] = data["id"]
        return self._channels[name]

    async def channel_problem(self, channel_id: str, timeout_s: float = 2.0) -> str | None:
        """Why the bot cannot post in ``channel_id`` (not a member, no such channel), or None.
        One quick request, no retries: a slash command must be answered within seconds, and
        when Mattermost is merely slow or down the outbox delivers later."""
        if channel_id in self._postable:
            return None
        try:
            await asyncio.wait_for(self._driver.channels.get_channel_member(channel_id, self.bot_user_id),
                                   timeout_s)
        except MattermostError as exc:
            if exc.status_code in (403, 404):  # 403 for a channel it may not even read
                return (f"the bot is not a member of this channel (add it with "
                        f"`/invite @{self.bot_username or 'the-bot'}`), or the channel does not exist")
            return None
        except Exception:  # slow, down or unreachable: not the channel's fault
            return None
        self._postable.add(channel_id)
        return None

    async def username(self, user_id: str) -> str:
        """A user's username (without @); cached."""
        if user_id not in self._usernames:
            data = await self._read("look up user", lambda: self._driver.users.get_user(user_id))
            self._usernames[user_id] = data["username"]
        return self._usernames[user_id]

    async def reactions(self, post_id: str) -> list[Reaction]:
        data = await self._read("read reactions",
                                lambda: self._driver.reactions.get_reactions(post_id))
        return [Reaction.model_validate(r) for r in data or []]

    async def thread(self, root_id: str) -> list[Post]:
        """Every post of the thread ``root_id`` belongs to, oldest first."""
        data = await self._read("read thread", lambda: self._driver.posts.get_post_thread(root_id))
        order = {pid: i for i, pid in enumerate(data.get("order") or [])}
        posts = [Post.model_validate(p) for p in (data.get("posts") or {}).values()]
        return sorted(posts, key=lambda p: (p.create_at, -order.get(p.id, 0)))

    async def find_post(self, channel_id: str, key: str, *, since_ms: int,
                        root_id: str | None = None) -> PostRef | None:
        """The bot's own post with ``props.sopbot_key == key`` created since ``since_ms``: in
        thread ``root_id`` when given, else in the channel (posts changed since, so the scan is
        short). Finds what a crash kept the store from recording."""
        if root_id is not None:
            posts = await self.thread(root_id)
        else:
            # The server answers posts changed strictly after ``since``.
            data = await self._read("read recent posts", lambda: self._driver.posts.get_posts_for_channel(
                channel_id, since=max(int(since_ms) - 1, 1)))
            posts = [Post.model_validate(p) for p in ((data or {}).get("posts") or {}).values()]
        mine = [p for p in posts if p.user_id == self.bot_user_id and p.create_at >= since_ms
                and p.props.get("sopbot_key") == key]
        return min(mine, key=lambda p: p.create_at).ref if mine else None

    # -- writes ------------------------------------------------------------------------------
    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None, urgent: bool = False) -> PostRef:
        """Post (or reply in thread ``root_id``). Longer than 16383 runes: the head of the
        message with a note, and the full text attached as a file, in the same place.
        ``urgent`` posts go ahead of the other queued writes (in their own arrival order)."""
        message = redact(message)  # the one door every post goes through
        if len(message) <= MAX_POST_RUNES:
            data = await self.queue.submit_call(
                self._create_post(channel_id, message, root_id, props, None), what="create post",
                urgent=urgent)
            return PostRef.model_validate(data)

        file_name = self.attachment_name
        summary = summary_with_note(message, file_name)
        full = message.encode()

        async def job(send: Send) -> Any:
            upload = await send(lambda: self._driver.files.upload_file(
                files=(file_name, full, "text/markdown"), channel_id=channel_id), "upload report")
            try:
                file_id = upload["file_infos"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise ChatError("upload report", "the server's answer names no file") from None
            return await send(self._create_post(channel_id, summary, root_id, props, [file_id]),
                              "create post")

        return PostRef.model_validate(await self.queue.submit(job, what="create post with report",
                                                              urgent=urgent))

    def _create_post(self, channel_id: str, message: str, root_id: str | None,
                     props: dict[str, Any] | None, file_ids: list[str] | None
                     ) -> Callable[[], Awaitable[Any]]:
        # pending_post_id makes a retried POST idempotent: the server answers a repeat within
        # 30 s with the post it already created. The typed create_post() has no such parameter,
        # so this one call goes through the driver's client directly.
        body = {"channel_id": channel_id, "message": message, "root_id": root_id,
                "props": props, "file_ids": file_ids,
                "pending_post_id": f"{self.bot_user_id}:{uuid.uuid4().hex}"}
        return lambda: self._driver.client.post("/api/v4/posts", options=body)

    async def edit(self, post_id: str, message: str) -> None:
        """Replace a post's text (shortened with a note when over the limit)."""
        text = shortened(redact(message))
        await self.queue.submit_call(
            lambda: self._driver.posts.patch_post(post_id, message=text), what="edit post")

    async def react(self, post_id: str, emoji: str) -> None:
        body = {"user_id": self.bot_user_id, "post_id": post_id, "emoji_name": emoji.strip(":")}
        await self.queue.submit_call(lambda: self._driver.reactions.save_reaction(body),
                                     what="add reaction")

    async def open_dialog(self, trigger_id: str, url: str, dialog: dict[str, Any]) -> None:
        """Open an interactive dialog. Jumps the queue: trigger ids expire within seconds."""
        dialog = redact.deep(dialog)
        await self.queue.submit_call(
            lambda: self._driver.integration_actions.open_interactive_dialog(trigger_id, url, dialog),
            what="open dialog", urgent=True)

    def _team(self) -> str:
        if self.team_id is None:
            raise RuntimeError("MattermostChat.start() has not run")
        return self.team_id
