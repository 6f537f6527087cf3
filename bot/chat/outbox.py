"""The durable outbox: every post and edit the bot promised (a slash command's thread, a report,
a proposal, an action's outcome, a health report) is committed before it is sent, and retried
with capped exponential backoff until Mattermost takes it or the retry horizon passes. A bot
restarted meanwhile delivers what is left at its next start.

Order is kept per thread (a reply never overtakes its root or an earlier reply); nothing is
posted twice: each post carries its key in ``props.sopbot_key``, and an entry whose earlier
attempt may have reached the server is looked for (``Chat.find_post``) before it is posted again.
A 4xx other than 429 (the bot is not in the channel, the channel does not exist) is final.

Replicas on one shared store (PostgreSQL) share one outbox: it is drained by one of them at a
time, the one holding its claim (``bot.claims``, kind ``chat-outbox``), so no entry is sent by
two at once and order per thread holds across them. The others look again every ``poll_s``
while entries are pending (their own callers wait on entries another replica delivers), and
take over when the holder's lease lapses (it died without releasing it)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bot.backoff import Backoff
from bot.claims import Claims
from bot.chat.errors import ChatError
from bot.chat.models import PostRef
from bot.ports import Chat
from bot.store import Store

log = logging.getLogger(__name__)

# Bot and Mattermost clocks differ: look this much further back for a post made before a crash.
CLOCK_SLACK_S = 300.0
CLAIM_KIND = "chat-outbox"  # one claim for the whole outbox (bot.claims)

MIGRATION = ("chat-outbox-1", [
    """CREATE TABLE chat_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,            -- props.sopbot_key of the post
        thread TEXT NOT NULL,                -- delivery order is kept per thread
        op TEXT NOT NULL,                    -- post | edit
        channel_id TEXT NOT NULL DEFAULT '',
        root_id TEXT NOT NULL DEFAULT '',    -- reply in this thread (a post id) …
        root_key TEXT NOT NULL DEFAULT '',   -- … or in the thread of this outbox post
        target TEXT NOT NULL DEFAULT '',     -- edit: a post id or an outbox key
        message TEXT NOT NULL,
        props TEXT NOT NULL DEFAULT '{}',
        urgent INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        post_id TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX chat_outbox_pending ON chat_outbox(state, id)",
    "CREATE INDEX chat_outbox_post ON chat_outbox(post_id)",
])


@dataclass
class _Row:
    id: int
    key: str
    thread: str
    op: str
    channel_id: str
    root_id: str
    root_key: str
    target: str
    message: str
    props: dict[str, Any]
    urgent: bool
    created_at: float
    attempts: int


def transient(exc: Exception) -> bool:
    """Worth retrying later: Mattermost down, overloaded or unreachable."""
    if isinstance(exc, ChatError):
        return exc.status is None or exc.status >= 500 or exc.status == 429
    return True  # an unexpected error: retried with backoff rather than dropped


class Outbox:
    poll_s = 0.5  # while another replica holds the claim and entries are pending
    # Shared store, nothing to do: look for entries another replica left (it died holding the
    # claim, or is busy) this often.
    idle_poll_s = 5.0

    def __init__(self, store: Store, chat: Chat, *, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.time, claims: Claims | None = None):
        """``claims``: given when replicas share the store; None (one replica): no claim."""
        self.store = store
        self.claims = claims
        self._held_since: float | None = None  # monotonic time of the last successful claim
        self._recheck_at = 0.0  # another replica delivers: look again then
        self.chat = chat
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.delivered = 0  # counters for metrics
        self.given_up = 0
        self._wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._pause_until = 0.0  # after a transient failure: Mattermost is down for everyone
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self.store.migrate(*MIGRATION)
        if self.claims is not None:
            await self.claims.migrate()
        await self.prune()
        self._task = asyncio.create_task(self._deliver_forever(), name="chat-outbox")

    def stopping(self) -> None:
        """Shutdown begins: callers stop waiting for a Mattermost that is down (what they
        committed is sent at the next start); while it is up, delivery goes on as usual."""
        self._stopping = True
        if self._pause_until > time.monotonic():
            self._release_waiters()

    def _release_waiters(self) -> None:
        for futures in self._waiters.values():
            for f in futures:
                if not f.done():
                    f.set_exception(ChatError("deliver a post", "the bot is stopping; it is sent at the next start"))
        self._waiters.clear()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what can be delivered within ``timeout_s``; the rest waits for the next start."""
        deadline = time.monotonic() + timeout_s
        while await self.pending_count() and time.monotonic() < deadline \
                and self._pause_until <= time.monotonic() and self._recheck_at <= time.monotonic():
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._release_waiters()
        try:  # the other replicas need not wait for the lease to lapse
            await self._release_claim()
        except Exception as exc:  # the store down: the claim lapses instead
            log.warning("releasing the chat outbox claim failed: %s", exc)

    # -- adding ----------------------------------------------------------------------------
    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   root_key: str | None = None, props: dict[str, Any] | None = None,
                   urgent: bool = False, key: str | None = None) -> str:
        """Commit a post; returns its key. ``root_key``: a reply in the thread of an outbox post
        that may not be delivered yet."""
        props = dict(props or {})
        key = key or props.get("sopbot_key") or f"out:{uuid.uuid4().hex}"
        props["sopbot_key"] = key
        thread = root_key or root_id or key
        await self._insert(key, thread, "post", channel_id=channel_id, root_id=root_id or "",
                           root_key=root_key or "", message=message, props=json.dumps(props),
                           urgent=int(urgent))
        return key

    async def edit(self, target: str, message: str) -> str:
        """Commit an edit of a post (its id, or its outbox key); in order with its thread."""
        row = await self.store.fetchone(
            "SELECT key, thread FROM chat_outbox WHERE op='post' AND (key=? OR post_id=?)", (target, target))
        thread = row["thread"] if row is not None else target
        key = f"edit:{uuid.uuid4().hex}"
        await self._insert(key, thread, "edit", target=target, message=message)
        return key

    async def _insert(self, key: str, thread: str, op: str, **values: Any) -> None:
        cols = ["key", "thread", "op", "created_at", *values]
        params = [key, thread, op, self.clock(), *values.values()]
        # A key already there is the same post (a replay): it is not added twice.
        await self.store.execute(f"INSERT OR IGNORE INTO chat_outbox({', '.join(cols)}) "
                                 f"VALUES ({', '.join('?' * len(cols))})", params)
        self._wake.set()

    async def wait(self, key: str) -> str:
        """The post id once delivered ("" for an edit); ChatError when it was given up."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self._stopping and self._pause_until > time.monotonic():
            raise ChatError("deliver a post", "the bot is stopping; it is sent at the next start")
        self._waiters.setdefault(key, []).append(fut)
        self._wake.set()  # the entry may have been settled already: the worker checks waiters
        return await fut

    async def prune(self, older_than_s: float = 7 * 86400) -> int:
        """Forget settled entries after a while (their text is already dropped); pending never."""
        async with self.store.transaction() as db:
            cur = await db.execute("DELETE FROM chat_outbox WHERE state!='pending' AND created_at < ?",
                                   (self.clock() - older_than_s,))
            return cur.rowcount or 0

    # -- backlog ---------------------------------------------------------------------------
    async def pending_count(self) -> int:
        row = await self.store.fetchone("SELECT COUNT(*) AS n FROM chat_outbox WHERE state='pending'")
        return int(row["n"]) if row else 0

    async def oldest_pending(self) -> float | None:
        row = await self.store.fetchone("SELECT MIN(created_at) AS t FROM chat_outbox WHERE state='pending'")
        return row["t"] if row is not None and row["t"] is not None else None

    # -- delivering ------------------------------------------------------------------------
    async def _deliver_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._round()
                await self._settle_waiters()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store itself failed: try again later, never stop delivering
                log.exception("chat outbox round failed")
                self._pause_until = time.monotonic() + self.backoff.max_s
            wait: float | None = max(max(self._pause_until, self._recheck_at) - time.monotonic(), 0.0)
            if not wait:  # idle: woken by an entry of this replica's, or, shared, to look at the others'
                wait = self.idle_poll_s if self.claims is not None else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass
            if self._pause_until > time.monotonic():
                await asyncio.sleep(self._pause_until - time.monotonic())

    async def _round(self) -> None:
        if self._pause_until > time.monotonic():
            return
        self._recheck_at = 0.0
        rows = await self.store.fetchall("SELECT * FROM chat_outbox WHERE state='pending' ORDER BY id")
        if not rows:
            await self._release_claim()  # nothing to deliver: another replica may take it
            return
        dead: set[str] = set()  # threads whose root was given up in this round
        for r in rows:
            if not await self._claim():  # before every entry: the lease is renewed as it goes
                self._recheck_at = time.monotonic() + self.poll_s
                return
            if r["thread"] in dead:
                continue
            row = _Row(r["id"], r["key"], r["thread"], r["op"], r["channel_id"], r["root_id"],
                       r["root_key"], r["target"], r["message"], json.loads(r["props"]),
                       bool(r["urgent"]), r["created_at"], r["attempts"])
            try:
                post_id = await self._deliver(row)
            except Exception as exc:
                if not transient(exc):
                    await self._fail(row, str(exc))
                    dead.add(row.key)
                    continue
                attempts = row.attempts + 1
                if self.backoff.expired(row.created_at, self.clock()):
                    await self._fail(row, f"gave up after the retry horizon: {exc}")
                    dead.add(row.key)
                    continue
                await self.store.execute("UPDATE chat_outbox SET attempts=?, error=? WHERE id=?",
                                         (attempts, str(exc)[:500], row.id))
                wait = self.backoff.delay(attempts)
                log.warning("Mattermost did not take %s (%s); %d waiting, retrying in %.1fs",
                            row.key, exc, len(rows), wait)
                self._pause_until = time.monotonic() + wait
                if self._stopping:
                    self._release_waiters()
                return  # Mattermost is down for every thread: do not hammer it with the rest
            await self.store.execute("UPDATE chat_outbox SET state='done', post_id=?, error='', "
                                     "message='' WHERE id=?", (post_id, row.id))
            self.delivered += 1
            self._resolve(row.key, post_id)
        if self.claims is not None:
            self._wake.set()  # read again: entries another replica added meanwhile, or release

    async def _claim(self) -> bool:
        """Hold the outbox's claim (always, with no claims): taken, or renewed once a third
        of its lease has passed."""
        if self.claims is None:
            return True
        now = time.monotonic()
        if self._held_since is not None and now - self._held_since < self.claims.lease_s / 3:
            return True
        # Judged by the store's clock (the database server's): replicas' own clocks may differ.
        if await self.claims.claim(CLAIM_KIND, 0, datetime.fromtimestamp(await self.store.now(), timezone.utc)):
            self._held_since = now
            return True
        self._held_since = None
        return False

    async def _release_claim(self) -> None:
        if self.claims is not None and self._held_since is not None:
            self._held_since = None
            await self.claims.release(CLAIM_KIND, 0)

    async def _deliver(self, row: _Row) -> str:
        if row.op == "edit":
            post_id = await self._post_id_of(row.target)
            if not post_id:
                raise ChatError("edit post", "the post to edit was never delivered", 404)
            await self.chat.edit(post_id, row.message)
            return ""
        root_id = row.root_id or None
        if row.root_key:
            root_id = await self._post_id_of(row.root_key)
            if not root_id:
                raise ChatError("create post", "its thread's first post was never delivered", 404)
        if row.attempts:  # an earlier attempt may have reached the server without an answer
            found = await self.chat.find_post(row.channel_id, row.key, root_id=root_id,
                                              since_ms=int((row.created_at - CLOCK_SLACK_S) * 1000))
            if found is not None:
                log.info("found %s posted by an earlier attempt; not posting it again", row.key)
                return found.id
        # Counted before sending: a crash mid-request leaves attempts > 0, so the replay looks first.
        await self.store.execute("UPDATE chat_outbox SET attempts=attempts+1 WHERE id=?", (row.id,))
        row.attempts += 1
        post = await self.chat.post(row.channel_id, row.message, root_id=root_id, props=row.props,
                                    urgent=row.urgent)
        return post.id

    async def _post_id_of(self, target: str) -> str:
        row = await self.store.fetchone("SELECT post_id, state FROM chat_outbox WHERE key=?", (target,))
        if row is None:
            return target  # a post id, not an outbox key
        return row["post_id"] if row["state"] == "done" else ""

    async def _fail(self, row: _Row, reason: str) -> None:
        log.error("gave up delivering %s to channel %s: %s", row.key, row.channel_id or row.target, reason)
        async with self.store.transaction() as db:
            await db.execute("UPDATE chat_outbox SET state='failed', error=? WHERE id=?", (reason[:500], row.id))
            if row.op == "post" and row.thread == row.key:  # a thread's root: its replies cannot follow
                cur = await db.execute("SELECT key FROM chat_outbox WHERE thread=? AND state='pending'",
                                       (row.key,))
                dependents = [r["key"] for r in await cur.fetchall()]
                await db.execute("UPDATE chat_outbox SET state='failed', error=? WHERE thread=? "
                                 "AND state='pending'", (f"its thread's first post failed: {reason}"[:500], row.key))
            else:
                dependents = []
        self.given_up += 1 + len(dependents)
        for key in [row.key, *dependents]:
            self._resolve(key, None, reason)

    def _resolve(self, key: str, post_id: str | None, reason: str = "") -> None:
        for fut in self._waiters.pop(key, []):
            if fut.done():
                continue
            if post_id is None:
                fut.set_exception(ChatError("deliver a post", reason))
            else:
                fut.set_result(post_id)

    async def _settle_waiters(self) -> None:
        """Waiters for entries settled before they started waiting."""
        for key in list(self._waiters):
            row = await self.store.fetchone("SELECT state, post_id, error FROM chat_outbox WHERE key=?", (key,))
            if row is None or row["state"] == "pending":
                continue
            self._resolve(key, row["post_id"] if row["state"] == "done" else None, row["error"])


class DurableChat:
    """The ``Chat`` port over the outbox: ``post`` and ``edit`` are committed first and return
    once delivered (after an outage, however long it lasts within the horizon). Everything else
    (reads, reactions, dialogs) goes straight to the chat underneath."""

    def __init__(self, chat: Any, outbox: Outbox):
        self._chat = chat
        self.outbox = outbox

    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None, urgent: bool = False) -> PostRef:
        key = await self.outbox.post(channel_id, message, root_id=root_id, props=props, urgent=urgent)
        return PostRef(id=await self.outbox.wait(key), channel_id=channel_id, root_id=root_id)

    async def edit(self, post_id: str, message: str) -> None:
        await self.outbox.wait(await self.outbox.edit(post_id, message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)
