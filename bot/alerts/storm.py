"""Storm control: more than ``threshold`` new groups within ``window_s`` → the next ones are
listed in one storm thread (edited in place) instead of each getting a root post, and their
diagnoses run from a queue, highest severity first. The chat adapter's write queue keeps the
posting rate under the limit whatever happens here.

New groups are counted in the store (``alert_storm_arrivals``), and the ongoing storm is the
store's: replicas sharing it (each applying some of the groups) see one storm, one thread, and a
restarted bot goes on with the storm it was in."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.alerts.debounce import Debounced
from bot.alerts.models import AlertGroup, GroupState
from bot.alerts.render import _cell
from bot.alerts.repo import GroupRepo
from bot.alerts.storm_diag import StormDiagnoses
from bot.ports import Chat

log = logging.getLogger(__name__)

MAX_ROWS = 60
Work = Callable[[], Awaitable[None]]

# A replica that joins a storm another one opened waits this long for its thread's root post.
ROOT_WAIT_S = 20.0


class StormControl:
    def __init__(self, *, repo: GroupRepo, chat: Chat, threshold: int, window_s: float,
                 workers: int = 2, debounce_s: float = 1.0):
        self.repo = repo
        self.chat = chat
        self.threshold = threshold
        self.window = timedelta(seconds=window_s)
        self.debounce_s = debounce_s
        self._queue: asyncio.PriorityQueue[tuple[str, int, Work]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._workers: list[asyncio.Task[None]] = []
        self._n_workers = workers
        # Many changes within debounce_s become one edit per storm thread.
        self._edits: Debounced[tuple[int, str]] = Debounced(debounce_s, self._edit, "storm thread edit")
        self.storms = 0
        self._lock = asyncio.Lock()
        self._opened: set[int] = set()  # storms this process opened (it posts their root)
        self._rows: dict[int, dict[str, StormRow]] = {}
        self.diagnoses = StormDiagnoses(chat, debounce_s)  # one per (SOP, target) per storm

    # -- placement -----------------------------------------------------------------------------
    async def place(self, group: AlertGroup, now: datetime) -> bool:
        """True when ``group`` went to the storm thread (it then has no root post of its own)."""
        # Groups are processed concurrently: one at a time here, or each would start a storm.
        async with self._lock:
            return await self._place(group, now)

    async def _place(self, group: AlertGroup, now: datetime) -> bool:
        t, since = now.timestamp(), (now - self.window).timestamp()
        # One transaction: of two replicas placing groups at once, one opens the storm.
        async with self.repo.store.transaction() as db:
            await db.execute("DELETE FROM alert_storm_arrivals WHERE at < ?", (since,))
            await db.execute("INSERT INTO alert_storm_arrivals(at) VALUES (?)", (t,))
            cur = await db.execute("SELECT COUNT(*) AS n FROM alert_storm_arrivals WHERE at >= ?", (since,))
            recent = (await cur.fetchone())["n"]
            cur = await db.execute("SELECT id, root_id, last_at FROM alert_storms WHERE channel_id=? "
                                   "ORDER BY id DESC LIMIT 1", (group.channel_id,))
            last = await cur.fetchone()
            ongoing = last is not None and t - last["last_at"] <= self.window.total_seconds()
            if recent <= self.threshold and not ongoing:
                return False
            if ongoing:
                assert last is not None
                storm_id, root_id = int(last["id"]), last["root_id"] or None
                await db.execute("UPDATE alert_storms SET last_at=? WHERE id=? AND last_at<?", (t, storm_id, t))
            else:
                cur = await db.execute("INSERT INTO alert_storms(channel_id, started_at, last_at) VALUES (?,?,?)",
                                       (group.channel_id, t, t))
                storm_id, root_id = int(cur.lastrowid or 0), None
        if root_id is None:  # a new storm, or its root post failed (here: try again; elsewhere: wait)
            mine = not ongoing or storm_id in self._opened
            self._opened.add(storm_id)
            root_id = await (self._start(storm_id, group.channel_id) if mine
                             else self._root_of(storm_id, group.channel_id))
        group.storm_id, group.root_id = storm_id, root_id
        return True

    async def _start(self, storm_id: int, channel_id: str) -> str:
        post = await self.chat.post(channel_id, f"#### :cloud_with_lightning: Alert storm: more than "
                                    f"{self.threshold} new alert groups within {self.window.total_seconds():g}s",
                                    props={"sopbot_alert_storm": storm_id}, urgent=True)
        # Urgent (above): the storm's diagnoses wait for this root; other writes need not go first.
        await self.repo.store.execute("UPDATE alert_storms SET root_id=? WHERE id=?", (post.id, storm_id))
        self.storms += 1
        log.warning("alert storm %d started", storm_id)
        return post.id

    async def _root_of(self, storm_id: int, channel_id: str) -> str:
        """The root of a storm another replica opened (or this one, before a restart): posted by
        now or within ``ROOT_WAIT_S``; else its opener died first, and this replica posts it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOT_WAIT_S
        while True:
            row = await self.repo.store.fetchone("SELECT root_id FROM alert_storms WHERE id=?", (storm_id,))
            if row is not None and row["root_id"]:
                return str(row["root_id"])
            if loop.time() > deadline:
                log.warning("alert storm %d has no thread after %.0fs: posting it here", storm_id, ROOT_WAIT_S)
                return await self._start(storm_id, channel_id)
            await asyncio.sleep(0.2)

    # -- the storm root, edited in place (debounced) ---------------------------------------------
    async def changed(self, group: AlertGroup) -> None:
        """Note the group's new state; the storm root is re-rendered from memory (re-reading
        hundreds of groups from the store each time would stall the event loop)."""
        if group.storm_id is None or group.root_id is None:
            return
        if group.storm_id not in self._rows:  # first change since a restart: the rest from the store
            self._rows[group.storm_id] = {g.group_key: StormRow.of(g)
                                          for g in await self.repo.in_storm(group.storm_id)}
        self._rows[group.storm_id][group.group_key] = StormRow.of(group)
        self._edits.mark((group.storm_id, group.root_id))

    async def _edit(self, item: tuple[int, str]) -> None:
        storm_id, root_id = item
        if self.repo.store.shared:  # other replicas change groups of this storm too
            self._rows[storm_id] = {g.group_key: StormRow.of(g) for g in await self.repo.in_storm(storm_id)}
        rows = list(self._rows.get(storm_id, {}).values())
        await self.chat.edit(root_id, storm_message(rows, self.threshold, self.window))

    # -- diagnoses, most severe first -------------------------------------------------------------
    def diagnose_later(self, group: AlertGroup, work: Work) -> None:
        self._queue.put_nowait((group.severity.value, next(self._seq), work))

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"storm-diagnose-{i}")
                         for i in range(self._n_workers)]

    async def _work(self) -> None:
        while True:
            _, _, work = await self._queue.get()
            try:
                await work()
            except Exception:
                log.exception("storm diagnosis failed")
            finally:
                self._queue.task_done()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def join(self) -> None:
        await self._queue.join()
        await self._edits.join()
        await self.diagnoses.join()

    async def stop(self) -> None:
        for t in self._workers:
            t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._edits.stop()
        await self.diagnoses.stop()


@dataclass(frozen=True)
class StormRow:
    """What the storm thread shows of one group."""

    order: int
    severity: str
    names: str
    labels: str
    firing: int
    total: int
    state: GroupState
    acked_by: str | None

    @classmethod
    def of(cls, g: AlertGroup) -> "StormRow":
        names = sorted({a.alertname for a in g.alerts.values()})
        return cls(order=g.id, severity=g.severity.value, names=", ".join(names[:3]),
                   labels=" ".join(f"{k}={v}" for k, v in sorted(g.group_labels.items()) if k != "alertname"),
                   firing=len(g.firing), total=len(g.alerts), state=g.state, acked_by=g.acked_by)


def storm_message(rows: list[StormRow], threshold: int, window: timedelta) -> str:
    firing = [r for r in rows if r.state is GroupState.open]
    lines = [f"#### :cloud_with_lightning: Alert storm: {len(rows)} alert groups "
             f"({len(firing)} still firing), more than {threshold} new within {window.total_seconds():g}s",
             "Diagnoses follow in this thread, most severe first.", "",
             "| Severity | Alerts | Firing | State |", "|:--|:--|:--|:--|"]
    ordered = sorted(rows, key=lambda r: (r.state is not GroupState.open, r.severity, r.order))
    for r in ordered[:MAX_ROWS]:
        lines.append(f"| {r.severity} | {_cell(r.names)} {_cell(r.labels)} | {r.firing}/{r.total} | "
                     f"{r.state.value}{' (acked by @' + r.acked_by + ')' if r.acked_by else ''} |")
    if len(ordered) > MAX_ROWS:
        lines.append(f"| | … and {len(ordered) - MAX_ROWS} more | | |")
    return "\n".join(lines)
