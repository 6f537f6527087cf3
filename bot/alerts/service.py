"""The alert pipeline as one unit the runtime starts and stops: receiver → inbox → worker →
threads, plus the reconcile and escalation loops and storm control."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.alerts.escalation import Escalator
from bot.alerts.inbox import Entry, GroupClaims, Inbox
from bot.alerts.models import WebhookPayload
from bot.alerts.receiver import alertmanager_handler
from bot.alerts.reconcile import Reconciler
from bot.alerts.repo import GroupRepo
from bot.alerts.router import Router
from bot.alerts.storm import StormControl
from bot.backoff import Backoff
from bot.alerts.threads import ChannelId, Clock, ReportHook, RunSOP, ThreadManager, TriageAlert, utcnow
from bot.chat.models import ReactionEvent
from bot.clients.alertmanager import AlertmanagerClient
from bot.config import AlertmanagerConfig
from bot.ports import Chat
from bot.registry import Registry
from bot.runbook import Runbook
from bot.store import Store

log = logging.getLogger(__name__)
CLAIM_RETRY_S = 0.5  # how soon a group another replica holds is asked for again
RESCAN_S = 2.0  # how often a replica sharing the inbox reads it from the start


class AlertService:
    def __init__(self, config: AlertmanagerConfig, *, store: Store, chat: Chat, registry: Registry,
                 run: RunSOP, channel_id: ChannelId, default_channel: str,
                 runbook: Runbook | None = None, client: AlertmanagerClient | None = None,
                 permalink: Callable[[str], str] | None = None, clock: Clock = utcnow,
                 concurrency: int = 8, backoff: Backoff | None = None,
                 leader: Callable[[], bool] = lambda: True,
                 on_report: Callable[[], Iterable[ReportHook]] = lambda: (),
                 triage: TriageAlert | None = None, claims_owner: str | None = None):
        self.config = config
        self.store = store
        self.inbox = Inbox(store, backoff=backoff)
        self.repo = GroupRepo(store)
        self.client = client
        self.router = Router(registry, config.routes, channel=config.channel or default_channel,
                             mention=config.mention, runbook=runbook)
        self.storm = StormControl(repo=self.repo, chat=chat, threshold=config.storm_groups,
                                  window_s=config.storm_window_s)
        self.threads = ThreadManager(repo=self.repo, chat=chat, router=self.router, run=run,
                                     channel_id=channel_id, runbook=runbook,
                                     reopen_window_s=config.reopen_window_s,
                                     rediagnose_after_s=config.rediagnose_after_s,
                                     permalink=permalink, clock=clock, storm=self.storm,
                                     on_report=on_report, diagnose_concurrency=concurrency,
                                     replies_per_group=config.replies_per_group,
                                     reply_window_s=config.reply_window_s, triage=triage,
                                     flap_window_s=config.flap_window_s)
        self.escalator = Escalator(repo=self.repo, threads=self.threads, chat=chat,
                                   config=config.escalation, clock=clock)
        self.reconciler = (Reconciler(repo=self.repo, threads=self.threads, chat=chat,
                                      client=client, clock=clock) if client else None)
        # With several replicas only the Lease holder reconciles and escalates, or each replica
        # would post its own closures and escalations (bot.schedule.Leadership.may_act).
        self.leader = leader
        self.passes_skipped = 0  # periodic passes left to the leader (tests, metrics)
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._cursor = 0
        self._inflight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        # Per-group order across retries: a group's entries are applied in the order received.
        # _owner: group key → the entry applied next (in flight or waiting for its retry);
        # _held: that group's later entries, in arrival order, until the owner is finished.
        self._owner: dict[str, int] = {}
        self._held: dict[str, collections.deque[tuple[Entry, WebhookPayload]]] = {}
        self._released: list[tuple[Entry, WebhookPayload]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # PostgreSQL: replicas share the inbox, so each sees every entry. A group's entries are
        # applied under a claim (one replica at a time); pending entries are rescanned from the
        # start (another replica's id may commit after a later one this worker already read),
        # _seen keeping each in the pipeline once. SQLite is one replica (the chart refuses more).
        self.claims = (GroupClaims(store, claims_owner) if claims_owner and store.shared
                       else None)
        self.threads.claims = self.claims  # reconcile, escalation and acks take them too
        self._seen: set[int] = set()
        self._rescan_at = 0.0
        self._retry_key: dict[int, str] = {}

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self, *, loops: bool = True) -> None:
        """Migrate, then replay what an earlier run accepted but did not finish."""
        await self.inbox.migrate()
        await self.repo.migrate()
        if self.claims is not None:
            await self.claims.migrate()
        await self.inbox.prune()
        await self.repo.prune_intents(utcnow() - timedelta(days=7))
        self.storm.start()
        self._loops.append(asyncio.create_task(self._worker(), name="alerts-inbox"))
        if loops:
            if self.reconciler is not None:
                self._loops.append(asyncio.create_task(
                    self._every(self.config.reconcile_interval_s, self.reconciler.run_once, self.leader),
                    name="alerts-reconcile"))
            self._loops.append(asyncio.create_task(
                self._every(self.config.escalation.check_interval_s, self.escalator.run_once, self.leader),
                name="alerts-escalate"))

    async def stop(self, timeout_s: float = 10.0) -> None:
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self.threads.stop(timeout_s)
        await self.storm.stop()
        if self.client is not None:
            await self.client.close()

    def handler(self) -> Callable[[web.Request], Any]:
        return alertmanager_handler(self.config, self.inbox, self.accepted)

    def accepted(self, entry_id: int) -> None:
        self._wake.set()

    async def on_reaction(self, event: ReactionEvent) -> None:
        await self.escalator.on_reaction(event)

    # -- the worker ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        # A store error (a PostgreSQL connection dropped, a failover) must not end the worker:
        # nothing accepted afterwards would be applied until a restart.
        while True:
            try:
                await self._work()
            except Exception:
                log.exception("the alert inbox worker failed; going on in 1 s")
                await asyncio.sleep(1.0)

    async def _work(self) -> None:
        while True:
            self._wake.clear()
            if self.claims is None:
                entries = await self.inbox.pending(after_id=self._cursor)
            else:
                # After the cursor as one replica does; from the start now and then for the gaps.
                full = time.monotonic() >= self._rescan_at
                if full:
                    self._rescan_at = time.monotonic() + RESCAN_S
                entries = [e for e in await self.inbox.pending(after_id=0 if full else self._cursor,
                                                               limit=10_000 if full else 500)
                           if e.id not in self._seen]
                self._seen.update(e.id for e in entries)
            entries += await self._due_retries()
            ready, self._released = self._released, []
            for entry in entries:
                self._cursor = max(self._cursor, entry.id)
                parsed = await self._parse(entry)
                if parsed is not None:
                    ready.append((entry, parsed))
                else:
                    self._seen.discard(entry.id)
            for entry, payload in sorted(ready, key=lambda r: r[0].id):
                if entry.id in self._inflight:
                    continue
                key = payload.groupKey
                owner = self._owner.setdefault(key, entry.id)
                if owner != entry.id:  # an earlier entry of the group is not finished yet
                    self._held.setdefault(key, collections.deque()).append((entry, payload))
                    continue
                await self._sem.acquire()
                self._inflight.add(entry.id)
                task = asyncio.create_task(self._handle(entry, payload), name=f"alert-entry-{entry.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not entries and not self._released:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._next_retry_in())
                except TimeoutError:
                    pass

    def _next_retry_in(self) -> float:
        if not self._retry_at:
            # Another replica's entries wake nobody here: a short rescan when they are shared.
            return 60.0 if self.claims is None else RESCAN_S
        return max(min(self._retry_at.values()) - time.monotonic(), 0.0)

    async def _parse(self, entry: Entry) -> WebhookPayload | None:
        try:
            return WebhookPayload.model_validate_json(entry.body)
        except ValidationError as exc:
            log.error("inbox entry %d unreadable: %s", entry.id, exc.errors()[0])
            await self.inbox.give_up(entry.id, "unreadable")
            return None

    def _finished(self, key: str, entry_id: int) -> None:
        """The group's owner is done (or given up): its next held entry may go."""
        if self._owner.get(key) != entry_id:
            return
        del self._owner[key]
        held = self._held.get(key)
        if held:
            nxt = held.popleft()
            self._owner[key] = nxt[0].id
            self._released.append(nxt)
        if not held:
            self._held.pop(key, None)

    async def _due_retries(self) -> list[Entry]:
        now = time.monotonic()
        due = [i for i, t in self._retry_at.items() if t <= now and i not in self._inflight]
        if not due:
            return []
        entries = [e for e in await self.inbox.pending(after_id=0, limit=10_000) if e.id in due]
        for i in due:  # after the read: a failed read leaves them due
            del self._retry_at[i]
        there = {e.id for e in entries}
        for i in due:
            key = self._retry_key.pop(i, None)
            if i not in there and key is not None:  # applied (or given up) by another replica
                self._seen.discard(i)
                self._finished(key, i)
        return entries

    async def _handle(self, entry: Entry, payload: WebhookPayload) -> None:
        released = False
        finished = True
        try:
            def diagnosing() -> None:
                # Only the diagnosis is left (it has slots of its own in ThreadManager): the
                # next notification may start, so its root does not wait behind SOP runs.
                nonlocal released
                released = True
                self._sem.release()

            if self.claims is None:
                await self.threads.process(payload, entry.id, diagnosing=diagnosing)
                await self.inbox.done(entry.id)
            else:
                async with self.claims.holding(payload.groupKey) as held:
                    if not held:  # another replica applies the group now: ask again shortly
                        finished = False
                        self._retry_at[entry.id] = time.monotonic() + CLAIM_RETRY_S
                        self._retry_key[entry.id] = payload.groupKey
                        return
                    if await self.inbox.is_pending(entry.id):  # else applied elsewhere meanwhile
                        await self.threads.process(payload, entry.id, diagnosing=diagnosing)
                        await self.inbox.done(entry.id)  # committed before the claim is released
            if self._retry_at:  # Mattermost may be back: what waits for a retry goes now
                now = time.monotonic()
                self._retry_at = {i: min(t, now) for i, t in self._retry_at.items()}
        except Exception as exc:
            log.exception("processing alert notification %d failed", entry.id)
            try:
                wait = await self.inbox.failed_attempt(entry.id, f"{exc.__class__.__name__}: {exc}")
                if wait is not None:  # still the group's owner: its later entries keep waiting
                    finished = False
                    self._retry_at[entry.id] = time.monotonic() + wait
                    self._retry_key[entry.id] = payload.groupKey
                else:
                    log.error("gave up on alert notification %d for %s after the retry horizon",
                              entry.id, payload.groupKey)
            except Exception:
                finished = False
                self._retry_at[entry.id] = time.monotonic() + self.inbox.backoff.max_s
                self._retry_key[entry.id] = payload.groupKey
                log.exception("could not record the failure of entry %d", entry.id)
        finally:
            self._inflight.discard(entry.id)
            if finished:
                self._seen.discard(entry.id)
                self._finished(payload.groupKey, entry.id)
            if not released:
                self._sem.release()
            self._wake.set()

    async def idle(self, timeout_s: float = 30.0) -> None:
        """Wait until every accepted notification was processed (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._inflight and not self._tasks and not self._released \
                    and await self.inbox.count("pending") == 0 \
                    and self.storm.backlog == 0:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"alert pipeline still busy after {timeout_s}s")

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[int]],
                     leader: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not leader():
                self.passes_skipped += 1
                continue
            try:
                await job()
            except Exception:
                log.exception("periodic alert job failed")
