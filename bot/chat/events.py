"""Websocket supervisor: follows /api/v4/websocket, turns `posted` and `reaction_added` /
`reaction_removed` into models, and reconnects after any drop.

Why aiohttp's client directly and not the driver's ``Websocket`` class: that class retries on a
fixed delay (no exponential backoff or jitter), has no hook to run after a reconnect, keeps the
connection alive with unsolicited pongs (it never notices a dead peer), and logs and swallows
every failure, authentication included. ``ws_connect(heartbeat=...)`` pings and drops the
connection when no pong comes back, which is what makes the reconnect loop trustworthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import SecretStr, ValidationError

from bot.chat.models import Post, PostedEvent, ReactionEvent

if TYPE_CHECKING:
    from bot.chat.mattermost import MattermostChat

log = logging.getLogger(__name__)

OnReaction = Callable[[ReactionEvent], Awaitable[None]]
OnPosted = Callable[[PostedEvent], Awaitable[None]]
OnReconnect = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class AuthenticationFailed(Exception):
    """The server refused the token on the websocket."""


def _embedded_json(value: Any) -> Any:
    # Mattermost double-encodes: data.post and data.reaction are JSON strings.
    return json.loads(value) if isinstance(value, str) else value


def parse_event(raw: dict[str, Any]) -> ReactionEvent | PostedEvent | None:
    """One websocket event as a model, or None for events we do not follow (or cannot read)."""
    event = raw.get("event")
    data = raw.get("data") or {}
    try:
        if event == "posted":
            sender = data.get("sender_name") or None
            return PostedEvent(post=Post.model_validate(_embedded_json(data["post"])),
                               username=sender.lstrip("@") if sender else None,
                               channel_name=data.get("channel_name") or None,
                               channel_type=data.get("channel_type") or None)
        if event in ("reaction_added", "reaction_removed"):
            reaction = _embedded_json(data["reaction"])
            return ReactionEvent(user_id=reaction["user_id"], post_id=reaction["post_id"],
                                 emoji_name=reaction["emoji_name"],
                                 added=event == "reaction_added")
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        log.warning("ignoring malformed %s event: %s", event, exc.__class__.__name__)
    return None


class EventSupervisor:
    """``await run()`` until ``stop()``. Callbacks run one at a time in arrival order; one that
    raises is logged and does not break the connection. ``on_reconnect`` runs (as its own task)
    after every connection that follows a drop or a failed attempt, so the engine can resync
    over REST what it may have missed."""

    def __init__(self, url: str, token: str | SecretStr, bot_user_id: str, *,
                 on_reaction: OnReaction | None = None, on_posted: OnPosted | None = None,
                 on_reconnect: OnReconnect | None = None,
                 resolve_username: Callable[[str], Awaitable[str]] | None = None,
                 heartbeat_s: float = 30.0, auth_timeout_s: float = 10.0,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 rng: Callable[[], float] = random.random, sleep: Sleep = asyncio.sleep):
        self.url = url
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self.bot_user_id = bot_user_id
        self.on_reaction = on_reaction
        self.on_posted = on_posted
        self.on_reconnect = on_reconnect
        self.resolve_username = resolve_username
        self.heartbeat_s = heartbeat_s
        self.auth_timeout_s = auth_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = rng
        self._sleep = sleep
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._resyncs: set[asyncio.Task[None]] = set()
        self.reconnects = 0      # connections made after a drop or failure
        self.drops = 0           # connections lost or attempts failed
        self.events = 0          # events handed to a callback

    @classmethod
    def for_chat(cls, chat: MattermostChat, **kwargs: Any) -> EventSupervisor:
        """A supervisor for the chat adapter's server, token and bot user (after start())."""
        assert chat.config.token is not None  # start() has checked it
        return cls(chat.websocket_url, chat.config.token, chat.bot_user_id,
                   resolve_username=chat.username, **kwargs)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._ws is not None:
            await self._ws.close()
        for task in list(self._resyncs):
            task.cancel()

    async def run(self) -> None:
        failures = 0
        had_connection = False
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                try:
                    async with session.ws_connect(self.url, heartbeat=self.heartbeat_s) as ws:
                        self._ws = ws
                        if self._stop.is_set():  # stop() came while we were connecting
                            break
                        await self._authenticate(ws)
                        failures = 0
                        self._connected.set()
                        if had_connection:
                            self.reconnects += 1
                            log.info("websocket reconnected (%d so far)", self.reconnects)
                            self._resync()
                        had_connection = True
                        await self._follow(ws)
                except (aiohttp.ClientError, OSError, TimeoutError, AuthenticationFailed,
                        ValueError) as exc:
                    if not self._stop.is_set():
                        log.warning("websocket: %s", exc.__class__.__name__ + (f": {exc}" if str(exc) else ""))
                except Exception:  # a bug here must not end the supervision for good
                    log.exception("websocket: unexpected failure")
                finally:
                    self._ws = None
                    self._connected.clear()
                if self._stop.is_set():
                    break
                self.drops += 1
                had_connection = True  # whatever comes next follows a gap
                delay = self._backoff(failures)
                failures += 1
                await self._wait_or_stop(delay)
        for task in list(self._resyncs):
            task.cancel()

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_json({"seq": 1, "action": "authentication_challenge",
                            "data": {"token": self._token.get_secret_value()}})
        async with asyncio.timeout(self.auth_timeout_s):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise aiohttp.ClientError(f"closed during authentication ({msg.type.name}); "
                                             "is the bot token valid?")
                reply = json.loads(msg.data)
                if reply.get("seq_reply") == 1:
                    if reply.get("status") == "OK":
                        return
                    raise AuthenticationFailed("the server refused the bot token")
                if reply.get("event") == "hello":
                    return

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    raw = json.loads(msg.data)
                except ValueError:
                    log.warning("ignoring a websocket frame that is not JSON")
                    continue
                if isinstance(raw, dict):
                    await self._dispatch(raw)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise aiohttp.ClientError(f"websocket error: {ws.exception()!r}")
        # The iterator ends on close frames and on a missed heartbeat pong.
        if not self._stop.is_set():
            raise aiohttp.ClientError(f"connection closed (code {ws.close_code})")

    async def _dispatch(self, raw: dict[str, Any]) -> None:
        event = parse_event(raw)
        try:
            if isinstance(event, ReactionEvent) and self.on_reaction is not None:
                if event.user_id == self.bot_user_id:
                    return
                if self.resolve_username is not None:
                    event = event.model_copy(update={"username": await self._username(event.user_id)})
                self.events += 1
                await self.on_reaction(event)
            elif isinstance(event, PostedEvent) and self.on_posted is not None:
                if event.post.user_id == self.bot_user_id:
                    return
                self.events += 1
                await self.on_posted(event)
        except Exception:
            log.exception("websocket callback for %s failed", raw.get("event"))

    async def _username(self, user_id: str) -> str | None:
        assert self.resolve_username is not None
        try:
            return await self.resolve_username(user_id)
        except Exception as exc:  # the event is still worth delivering without a name
            log.warning("could not resolve user %s: %s", user_id, exc)
            return None

    def _resync(self) -> None:
        if self.on_reconnect is None:
            return
        task = asyncio.get_running_loop().create_task(self._run_resync(self.on_reconnect))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    @staticmethod
    async def _run_resync(callback: OnReconnect) -> None:
        try:
            await callback()
        except Exception:
            log.exception("on_reconnect failed")

    def _backoff(self, n: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** n))
        return ceiling / 2 + ceiling / 2 * self._rng()

    async def _wait_or_stop(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                fut.cancel()
