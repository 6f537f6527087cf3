"""Composed health reports (the runbook's daily health check is one): run a set of SOPs as the
areas of one report, against one per-run Kubernetes list cache, and say what changed since the
previous report of the same name. Generic: the areas come from ``compose()`` calls in handler
modules; nothing here knows what a node or a Vault is.

    compose("daily", [HealthCheck("Nodes", "node-health"), HealthCheck("Vault", "vault-status")])
    report = await run_health("daily", checks, registry, ctx)
    report.changes = await HealthStore(store).record(report)
    root, replies = health_markdown(report, runbook)
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field

from bot.clients.kube import KubeClient, resource_path
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.metrics import DISCARD, Metrics
from bot.models import Finding, Report, Severity, Status
from bot.registry import Registry
from bot.render import EMOJI, TERMINAL, report_markdown, report_text, section_ref
from bot.safe_text import code, text
from bot.runbook import Runbook
from bot.store import Store
from bot.schedule import Missed, Term

if TYPE_CHECKING:
    from bot.config import HealthCheckConfig, HealthScheduleConfig

log = logging.getLogger(__name__)


_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class HealthCheck:
    """One area of a composed report: a line in the root post, a thread reply when not ok."""

    area: str
    sop_id: str


# name → areas, in report order; filled by handler modules (handlers/daytwo.py: "daily").
COMPOSITIONS: dict[str, list[HealthCheck]] = {}


def compose(name: str, checks: Iterable[HealthCheck]) -> list[HealthCheck]:
    checks = list(checks)
    COMPOSITIONS[name] = checks
    return checks


def select(checks: list[HealthCheck], registry: Registry, *, sop_ids: list[str] | None = None,
           severities: Iterable[Severity] = ()) -> list[HealthCheck]:
    """The areas a schedule runs: given SOP ids (None = all), then only the given severities."""
    wanted = set(severities)
    out = [c for c in checks if sop_ids is None or c.sop_id in sop_ids]
    if sop_ids is not None:  # ids outside the composition still run, as their own area
        known = {c.sop_id for c in out}
        # (an unknown id becomes an "unknown" area naming it, see run_health)
        out += [HealthCheck(registry.sops[i].title if i in registry.sops else i, i)
                for i in sop_ids if i not in known]
    if wanted:
        out = [c for c in out if c.sop_id in registry.sops and registry.sops[c.sop_id].severity in wanted]
    return out


# -- the per-run Kubernetes client ---------------------------------------------------------------
class RunKube(KubeClient):
    """The shared connection for one report: concurrent requests bounded, every list and object
    fetched once and shared by the composed handlers (``fetches`` counts them, per path).

    ``pages()`` streams a list nobody asked for whole before (pods on a large cluster do not fit
    in memory as dicts, so they are reduced page by page and never retained)."""

    def __init__(self, inner: KubeClient, *, concurrency: int = 4):
        super().__init__(inner.api, source=inner.source, timeout_s=inner.timeout_s)
        self._sem = asyncio.Semaphore(concurrency)
        self._memo: dict[tuple[Any, ...], asyncio.Task[Any]] = {}
        self.fetches: Counter[str] = Counter()

    async def close(self) -> None:
        """The connection belongs to the bot's client, not to the run."""

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self._sem:
            return await super().request(method, path, **kwargs)

    async def request_text(self, path: str, **kwargs: Any) -> str:
        async with self._sem:
            return await super().request_text(path, **kwargs)

    async def _once(self, key: tuple[Any, ...], path: str,
                    fetch: Callable[[], Awaitable[Any]]) -> Any:
        task = self._memo.get(key)
        if task is None:
            self.fetches[path] += 1
            task = self._memo[key] = asyncio.ensure_future(fetch())
        # shield: one handler timing out must not cancel the fetch the others wait for
        return await asyncio.shield(task)

    async def list(self, api_version: str, plural: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int = 500) -> list[dict[str, Any]]:
        key = ("list", api_version, plural, namespace, label_selector, field_selector)
        return await self._once(key, _describe(api_version, plural, namespace, label_selector, field_selector),
                                lambda: self._fetch_all(api_version, plural, namespace, label_selector,
                                                        field_selector, limit))

    async def _fetch_all(self, api_version: str, plural: str, namespace: str | None,
                         label_selector: str | None, field_selector: str | None,
                         limit: int) -> list[dict[str, Any]]:
        # KubeClient.pages, not self.pages: ours would wait on the memo entry being filled here.
        items: list[dict[str, Any]] = []
        async for page in KubeClient.pages(self, api_version, plural, namespace, label_selector=label_selector,
                                           field_selector=field_selector, limit=limit):
            items.extend(page)
        return items

    async def pages(self, api_version: str, plural: str, namespace: str | None = None, *,
                    label_selector: str | None = None, field_selector: str | None = None,
                    limit: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        key = ("list", api_version, plural, namespace, label_selector, field_selector)
        if key in self._memo:
            yield await asyncio.shield(self._memo[key])
            return
        self.fetches[_describe(api_version, plural, namespace, label_selector, field_selector)] += 1
        async for page in KubeClient.pages(self, api_version, plural, namespace,
                                           label_selector=label_selector,
                                           field_selector=field_selector, limit=limit):
            yield page

    async def get(self, api_version: str, plural: str, name: str,
                  namespace: str | None = None) -> dict[str, Any]:
        path = resource_path(api_version, plural, namespace, name)
        return await self._once(("get", path), path,
                                lambda: KubeClient.get(self, api_version, plural, name, namespace))


def _describe(api_version: str, plural: str, namespace: str | None, label_selector: str | None,
              field_selector: str | None) -> str:
    path = resource_path(api_version, plural, namespace)
    sel = "&".join(f"{k}={v}" for k, v in (("labelSelector", label_selector),
                                            ("fieldSelector", field_selector)) if v)
    return f"{path}?{sel}" if sel else path


# -- the report ----------------------------------------------------------------------------------
class Problem(BaseModel):
    """A non-ok finding as the diff tracks it: ``key`` stays the same while the problem lasts."""

    key: str
    area: str
    sop_id: str
    status: Status
    summary: str
    first_seen: datetime


class Changes(BaseModel):
    previous_at: datetime | None = None
    new: list[Problem] = Field(default_factory=list)
    resolved: list[Problem] = Field(default_factory=list)
    still_open: list[Problem] = Field(default_factory=list)


class AreaResult(BaseModel):
    area: str
    report: Report

    @property
    def status(self) -> Status:
        return self.report.status

    @property
    def headline(self) -> str:
        """The area's line: the worst finding, and how many more problems there are."""
        findings = sorted(self.report.findings, key=lambda f: -f.status.rank)
        if not findings:
            return "nothing to check"
        worst = findings[0]
        if worst.status is Status.ok:
            if len(findings) == 1:
                return worst.summary
            return _clip(f"{len(findings)} ok: " + "; ".join(
                f"{f.target}: {f.summary}" if f.target else f.summary for f in findings))
        others = sum(1 for f in findings[1:] if f.status is not Status.ok)
        text = _clip(f"{worst.target}: {worst.summary}" if worst.target else worst.summary)
        return text + (f" (+{others} more)" if others else "")


def _clip(text: str, width: int = 150) -> str:
    # One line per area in the root post; the thread reply has it all. Keep head and tail:
    # nested error messages put the cause last ("… Errors: * Vault is sealed").
    return text if len(text) <= width else f"{text[:width * 3 // 5]} … {text[-(width * 2 // 5 - 3):]}"


class HealthReport(BaseModel):
    name: str
    areas: list[AreaResult] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    duration_s: float = 0.0
    changes: Changes | None = None
    # Kubernetes lists and objects fetched, per path (each should be 1: the cache shares them).
    fetches: dict[str, int] = Field(default_factory=dict, exclude=True)

    @property
    def status(self) -> Status:
        return Status.worst([a.status for a in self.areas])

    def count(self, status: Status) -> int:
        return sum(1 for a in self.areas if a.status is status)

    @property
    def headline(self) -> str:
        if self.status is Status.ok:
            return "all good"
        parts = []
        for status, word in ((Status.crit, "critical"), (Status.warn, "warning"),
                             (Status.unknown, "unknown")):
            n = self.count(status)
            if n:
                plural = "s" if n > 1 and status is Status.warn else ""
                parts.append(f"{n} {word}{plural}")
        return ", ".join(parts)

    def problems(self) -> list[Problem]:
        out: dict[str, Problem] = {}
        for area in self.areas:
            for f in area.report.findings:
                if f.status is Status.ok:
                    continue
                key = f"{area.report.sop_id}|{f.target or f.summary}"
                out.setdefault(key, Problem(key=key, area=area.area, sop_id=area.report.sop_id,
                                            status=f.status, summary=f.summary,
                                            first_seen=self.started_at))
        return list(out.values())

    def unchecked_sops(self) -> set[str]:
        """SOPs whose source failed as a whole: their earlier problems are not known resolved."""
        return {a.report.sop_id for a in self.areas
                if a.status is Status.unknown and all(f.status is Status.unknown for f in a.report.findings)}


_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Decoding tens of thousands of list items allocates millions of containers, none of them
    cyclic garbage: at CPython's default gen-0 threshold (700) that means thousands of
    collections finding nothing, a third of a large cluster's run. Collect less often while a
    report runs (nested runs share the setting; the last one out restores it)."""
    global _gc_users, _gc_saved
    if _gc_users == 0:
        _gc_saved = gc.get_threshold()
        gc.set_threshold(max(_gc_saved[0], 50_000), *_gc_saved[1:])
    _gc_users += 1
    try:
        yield
    finally:
        _gc_users -= 1
        if _gc_users == 0 and _gc_saved is not None:
            gc.set_threshold(*_gc_saved)


async def run_health(name: str, checks: list[HealthCheck], registry: Registry, ctx: HandlerContext,
                     *, timeout_s: float = 60.0, concurrency: int = 4) -> HealthReport:
    """Run every area concurrently on one shared per-run client; a failing area is "unknown"."""
    with _fewer_gc_passes():
        return await _run_health(name, checks, registry, ctx, timeout_s=timeout_s, concurrency=concurrency)


async def _run_health(name: str, checks: list[HealthCheck], registry: Registry, ctx: HandlerContext,
                      *, timeout_s: float, concurrency: int) -> HealthReport:
    report = HealthReport(name=name)
    started = time.perf_counter()
    run_kube = RunKube(ctx.kube, concurrency=concurrency) if ctx.kube is not None else None
    run_ctx = dataclasses.replace(ctx, kube=run_kube)

    async def one(check: HealthCheck) -> AreaResult:
        if check.sop_id not in registry.sops:
            return AreaResult(area=check.area, report=Report(
                sop_id=check.sop_id, title=check.area, section="11.1", severity=Severity.P3,
                findings=[Finding(status=Status.unknown, target=check.sop_id,
                                  summary=f"no SOP {check.sop_id!r} is registered")]))
        result = await run_sop(registry.get(check.sop_id), run_ctx, timeout_s=timeout_s)
        return AreaResult(area=check.area, report=result)

    report.areas = list(await asyncio.gather(*(one(c) for c in checks)))
    report.duration_s = time.perf_counter() - started
    report.fetches = dict(run_kube.fetches) if run_kube is not None else {}
    return report


# -- "what changed since the last report" ---------------------------------------------------------
class HealthStore:
    """Open problems per report name (for the diff) and the schedules' fire-time records."""

    def __init__(self, store: Store):
        self.store = store

    async def setup(self) -> None:
        await self.store.migrate("health-1", [
            "CREATE TABLE health_reports (name TEXT PRIMARY KEY, last_at TEXT NOT NULL, status TEXT NOT NULL)",
            "CREATE TABLE health_problems (name TEXT NOT NULL, key TEXT NOT NULL, area TEXT NOT NULL, "
            "sop_id TEXT NOT NULL, status TEXT NOT NULL, summary TEXT NOT NULL, first_seen TEXT NOT NULL, "
            "PRIMARY KEY (name, key))",
            "CREATE TABLE health_fires (schedule TEXT NOT NULL, fire_time TEXT NOT NULL, "
            "runner TEXT NOT NULL, PRIMARY KEY (schedule, fire_time))",
        ])
        await self.store.migrate("health-2", [
            # Who was up and who led, as intervals (one row per replica life / leadership term,
            # last_seen renewed with the lease): the missed-schedule report's evidence.
            "CREATE TABLE health_terms (identity TEXT NOT NULL, role TEXT NOT NULL, started TEXT NOT NULL, "
            "last_seen TEXT NOT NULL, PRIMARY KEY (identity, role, started))",
            # A fire time reported as missed, so it is reported once whichever replica leads next.
            "CREATE TABLE health_missed (schedule TEXT NOT NULL, fire_time TEXT NOT NULL, "
            "reported_at TEXT NOT NULL, PRIMARY KEY (schedule, fire_time))",
            # When a leader first had the schedule configured: a schedule added today (or a
            # store from before this table) is not "missed" for the days before.
            "CREATE TABLE health_schedules (schedule TEXT PRIMARY KEY, since TEXT NOT NULL)",
        ])

    async def record(self, report: HealthReport) -> Changes:
        """Compare with the previous report of the same name, then make this one the previous."""
        now = report.started_at
        async with self.store.transaction() as db:
            prev_row = await (await db.execute(
                "SELECT last_at FROM health_reports WHERE name=?", (report.name,))).fetchone()
            rows = await (await db.execute(
                "SELECT key, area, sop_id, status, summary, first_seen FROM health_problems WHERE name=?",
                (report.name,))).fetchall()
            before = {r["key"]: Problem(key=r["key"], area=r["area"], sop_id=r["sop_id"],
                                        status=Status(r["status"]), summary=r["summary"],
                                        first_seen=datetime.fromisoformat(r["first_seen"])) for r in rows}
            current = {p.key: p for p in report.problems()}
            unchecked = report.unchecked_sops()
            changes = Changes(previous_at=datetime.fromisoformat(prev_row["last_at"]) if prev_row else None)
            for key, p in current.items():
                if key in before:
                    p.first_seen = before[key].first_seen
                    changes.still_open.append(p)
                else:
                    changes.new.append(p)
            for key, p in before.items():
                if key in current:
                    continue
                if p.sop_id in unchecked:  # its source failed this time: not known to be fixed
                    current[key] = p
                    changes.still_open.append(p)
                else:
                    changes.resolved.append(p)
            await db.execute("DELETE FROM health_problems WHERE name=?", (report.name,))
            await db.executemany(
                "INSERT INTO health_problems (name, key, area, sop_id, status, summary, first_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(report.name, p.key, p.area, p.sop_id, p.status.value, p.summary, p.first_seen.isoformat())
                 for p in current.values()])
            await db.execute(
                "INSERT INTO health_reports (name, last_at, status) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_at=excluded.last_at, status=excluded.status",
                (report.name, now.isoformat(), report.status.value))
        changes.still_open.sort(key=lambda p: p.first_seen)
        return changes

    async def claim_fire(self, schedule: str, fire_time: datetime, runner: str) -> bool:
        """True for the first claim of a schedule's fire time: a second run (another replica, or
        this one after a failover) of the same fire time is refused."""
        async with self.store.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO health_fires (schedule, fire_time, runner) VALUES (?, ?, ?)",
                (schedule, fire_time.astimezone(timezone.utc).isoformat(), runner))
            return cur.rowcount == 1

    async def fired(self, schedule: str, fire_time: datetime) -> bool:
        row = await self.store.fetchone(
            "SELECT 1 FROM health_fires WHERE schedule=? AND fire_time=?",
            (schedule, fire_time.astimezone(timezone.utc).isoformat()))
        return row is not None

    async def last_fire(self, schedule: str) -> datetime | None:
        """The latest fire time run or already reported missed (where the next report starts)."""
        times = []
        for table in ("health_fires", "health_missed"):
            row = await self.store.fetchone(f"SELECT MAX(fire_time) AS t FROM {table} WHERE schedule=?",
                                            (schedule,))
            if row is not None and row["t"]:
                times.append(datetime.fromisoformat(row["t"]))
        return max(times, default=None)

    async def known_since(self, schedule: str, now: datetime) -> datetime:
        await self.store.execute("INSERT OR IGNORE INTO health_schedules (schedule, since) VALUES (?, ?)",
                                 (schedule, _utc(now)))
        row = await self.store.fetchone("SELECT since FROM health_schedules WHERE schedule=?", (schedule,))
        return datetime.fromisoformat(row["since"])

    async def note_term(self, identity: str, role: str, started: datetime, now: datetime) -> None:
        await self.note_terms(identity, [(role, started)], now)

    async def note_terms(self, identity: str, terms: list[tuple[str, datetime]], now: datetime) -> None:
        """(role, started) terms of one replica seen now, in one commit (every lease step)."""
        async with self.store.transaction() as db:
            await db.executemany(
                "INSERT INTO health_terms (identity, role, started, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(identity, role, started) DO UPDATE SET last_seen=excluded.last_seen",
                [(identity, role, _utc(started), _utc(now)) for role, started in terms])

    async def terms(self) -> list[Term]:
        rows = await self.store.fetchall(
            "SELECT identity, role, started, last_seen FROM health_terms ORDER BY started")
        return [Term(r["identity"], r["role"], datetime.fromisoformat(r["started"]),
                     datetime.fromisoformat(r["last_seen"])) for r in rows]

    async def prune_terms(self, before: datetime) -> None:
        await self.store.execute("DELETE FROM health_terms WHERE last_seen < ?", (_utc(before),))

    async def claim_missed(self, schedule: str, fire_time: datetime, now: datetime) -> bool:
        """True the first time a fire time is reported missed (replicas and restarts: once)."""
        async with self.store.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO health_missed (schedule, fire_time, reported_at) VALUES (?, ?, ?)",
                (schedule, _utc(fire_time), _utc(now)))
            return cur.rowcount == 1


def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


# -- rendering -------------------------------------------------------------------------------------
def _days(since: datetime, now: datetime) -> str:
    days = int((now - since).total_seconds() // 86400)
    return "since today" if days < 1 else f"for {days} day{'s' if days > 1 else ''}"


def _problem_line(p: Problem, emoji: str, now: datetime | None = None, md: bool = True) -> str:
    tail = f" — open {_days(p.first_seen, now)}" if now is not None else ""
    esc = text if md else str  # targets and summaries are cluster data
    return f"{emoji} {esc(p.area)}: {esc(p.key.split('|', 1)[1])}: {esc(p.summary)}{tail}"


def changes_lines(changes: Changes | None, now: datetime, limit: int = 10, md: bool = True) -> list[str]:
    if changes is None:
        return []
    if changes.previous_at is None:
        return ["**What changed:** first report, nothing to compare with."]
    lines = [f"**What changed since the last report** ({changes.previous_at:%Y-%m-%d %H:%M} UTC): "
             f"{len(changes.new)} new, {len(changes.resolved)} resolved, {len(changes.still_open)} still open"]
    for title, items, with_age in (("New", changes.new, False), ("Resolved", changes.resolved, False),
                                   ("Still open", changes.still_open, True)):
        if not items:
            continue
        lines.append(f"- {title}:")
        for p in items[:limit]:
            emoji = EMOJI[Status.ok] if title == "Resolved" else EMOJI[p.status]
            lines.append(f"  - {_problem_line(p, emoji, now if with_age else None, md)}")
        if len(items) > limit:
            lines.append(f"  - … and {len(items) - limit} more")
    return lines


def health_markdown(report: HealthReport, runbook: Runbook | None = None, *, trigger: str = "sop",
                    title: str = "Health check") -> tuple[str, list[str]]:
    """The root post (headline, one line per area, what changed) and one reply per non-ok area."""
    root = [f"#### {EMOJI[report.status]} {title} {code(report.name)}: **{text(report.headline)}**", ""]
    for a in report.areas:
        root.append(f"- {EMOJI[a.status]} **{text(a.area)}** — {text(a.headline)}")
    changes = changes_lines(report.changes, report.started_at)
    if changes:
        root += [""] + changes
    not_ok = [a for a in report.areas if a.status is not Status.ok]
    root += ["", f"_{len(report.areas)} areas checked in {report.duration_s:.1f}s at "
                 f"{report.started_at:%Y-%m-%d %H:%M} UTC"
                 + ("; details of each problem area in the thread_" if not_ok else "_")]
    replies = []
    for a in sorted(not_ok, key=lambda a: -a.status.rank):
        replies.append(f"**{text(a.area)}** — {section_ref(a.report.section, runbook)} · dig deeper with "
                       f"`/{trigger} {a.report.sop_id}`\n\n" + report_markdown(a.report, runbook))
    return "\n".join(root), replies


def health_text(report: HealthReport, runbook: Runbook | None = None, *,
                title: str = "Health check") -> str:
    lines = [f"{title} {report.name}: {report.headline.upper() if report.status is Status.ok else report.headline}"]
    width = max((len(a.area) for a in report.areas), default=0)
    for a in report.areas:
        lines.append(f"  [{TERMINAL[a.status]:^7}] {a.area:<{width}}  {a.headline}")
    for line in changes_lines(report.changes, report.started_at, md=False):
        lines.append(line.replace("**", ""))
    for a in sorted((a for a in report.areas if a.status is not Status.ok), key=lambda a: -a.status.rank):
        lines += ["", f"--- {a.area} (sopbot diagnose {a.report.sop_id}) ---", report_text(a.report, runbook)]
    lines.append(f"\n{len(report.areas)} areas checked in {report.duration_s:.1f}s")
    return "\n".join(lines)


EXIT_CODES = {Status.ok: 0, Status.warn: 1, Status.unknown: 1, Status.crit: 2}


# -- small helpers for handlers that feed health reports ---------------------------------------------
def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """A status condition of a Kubernetes object by type, or None."""
    return find_condition((obj.get("status") or {}).get("conditions"), type_)


def find_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """A condition by type in a conditions list (an object's, a Gateway listener's, a route parent's)."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def parse_time(stamp: str | None) -> datetime | None:
    """A Kubernetes RFC 3339 timestamp ("2026-11-26T08:00:00Z") as an aware datetime."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def check_settings(ctx: HandlerContext, sop_id: str, model: type[_M]) -> _M:
    """The ``checks.<sop_id>`` config section, validated; a bad one is a config problem the
    finding names (SourceError → "unknown"), not a crash."""
    from pydantic import ValidationError

    from bot.clients.errors import SourceError

    try:
        return model.model_validate(ctx.checks.get(sop_id) or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SourceError("config", f"checks.{sop_id}: {problems}") from None


# -- the service: on demand (/sop health, sopbot healthcheck) and on schedule -----------------------
class HealthService:
    """Runs a composition, records the diff, posts root + thread replies. Chat is optional (the
    terminal command has none)."""

    def __init__(self, config: "HealthCheckConfig", *, registry: Registry, ctx: HandlerContext,
                 store: HealthStore | None = None, chat: Any = None, runbook: Runbook | None = None,
                 trigger: str = "sop", channel_id: Callable[[str], Awaitable[str]] | None = None,
                 default_channel: str = "sop-alerts"):
        self.config = config
        self.registry = registry
        self.ctx = ctx
        self.store = store
        self.chat = chat
        self.runbook = runbook
        self.trigger = trigger
        self.channel_id = channel_id
        self.default_channel = config.channel or default_channel
        self.metrics: Metrics = DISCARD  # the runtime's, set by start_health
        self.scheduler: Any = None  # bot.schedule.Scheduler when schedules run here

    def schedule(self, name: str) -> "HealthScheduleConfig | None":
        return next((s for s in self.config.schedules if s.name == name), None)

    def checks_for(self, sched: "HealthScheduleConfig | None" = None) -> list[HealthCheck]:
        base = COMPOSITIONS.get(self.config.composition, [])
        if sched is None:
            return list(base)
        ids = None if sched.checks == "all" else list(sched.checks)
        return select(base, self.registry, sop_ids=ids, severities=sched.severities)

    async def report(self, name: str, checks: list[HealthCheck]) -> HealthReport:
        report = await run_health(name, checks, self.registry, self.ctx,
                                  timeout_s=self.config.check_timeout_s,
                                  concurrency=self.config.concurrency)
        for area in report.areas:
            self.metrics.observe_report(area.report)
        if self.store is not None:
            report.changes = await self.store.record(report)
        return report

    async def post(self, report: HealthReport, channel_id: str,
                   on_root: Callable[[str], None] = lambda post_id: None) -> str:
        root, replies = health_markdown(report, self.runbook, trigger=self.trigger)
        ref = await self.chat.post(channel_id, root)
        on_root(ref.id)
        for reply in replies:
            await self.chat.post(channel_id, reply, root_id=ref.id)
        return ref.id

    async def run_schedule(self, name: str, fire_time: datetime | None = None) -> HealthReport:
        """A scheduled run: the schedule's areas, posted in its channel."""
        sched = self.schedule(name)
        report = await self.report(name, self.checks_for(sched))
        channel = (sched.channel if sched else None) or self.default_channel
        quiet = (sched is not None and sched.quiet_when_ok and report.status is Status.ok
                 and not (report.changes and report.changes.resolved))
        if self.chat is not None and self.channel_id is not None and not quiet:
            await self.post(report, await self.channel_id(channel))
        return report

    async def post_missed(self, missed: "list[Missed]", now: datetime | None = None) -> None:
        """Fire times nobody ran, one post per schedule's channel (the new leader calls this)."""
        from bot.schedule import missed_text, utcnow

        if self.chat is None or self.channel_id is None:
            return
        now = now or (self.scheduler.clock() if self.scheduler is not None else utcnow())
        by_channel: dict[str, list[str]] = {}
        for m in missed:
            sched = self.schedule(m.schedule)
            line = missed_text(m, sched.timezone if sched else "UTC", now, named=len(self.config.schedules) > 1)
            by_channel.setdefault((sched.channel if sched else None) or self.default_channel, []).append(line)
        for channel, lines in by_channel.items():
            text = "\n".join(f":warning: {line[0].upper()}{line[1:]}." for line in lines)
            await self.chat.post(await self.channel_id(channel), text)

    def subcommand(self, spawn: Callable[..., Any], start_run: Callable[..., Any] | None = None) -> Any:
        """``/sop health [schedule]``: answers at once, posts the report in the invoking channel."""
        from bot.commands import Reply, Subcommand

        async def run(inv: Any, args: list[str]) -> Any:
            name = args[0] if args else self.config.schedules[0].name if self.config.schedules else "daily"
            sched = self.schedule(name)
            if args and sched is None:
                known = ", ".join(s.name for s in self.config.schedules) or "none"
                return Reply(text=f"No health schedule `{name}` (configured: {known}).")
            checks = self.checks_for(sched)

            async def go(run: Any = None) -> None:
                report = await self.report(name, checks)
                await self.post(report, inv.channel_id,
                                on_root=lambda pid: setattr(run, "root_id", pid) if run else None)

            if start_run is None:
                spawn(go(), name=f"health:{name}")
            else:  # Bot.start_run: the same check in this channel joins the run under way
                refused = start_run(inv, ("health", inv.channel_id, name), f"`/{self.trigger} health {name}`",
                                    go, name=f"health:{name}")
                if refused is not None:
                    return refused
            return Reply(text=f"Running the `{name}` health check ({len(checks)} areas); "
                              f"the report will appear in this channel.")

        return Subcommand(name="health", usage="health [schedule]",
                          summary="the daily health check (runbook 11.1) now, with what changed", run=run,
                          posts=True, sections=("11.1",))


def lease_namespace(config: "HealthCheckConfig") -> str:
    if config.lease_namespace:
        return config.lease_namespace
    try:  # in a pod: the service account's namespace
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


async def start_health(settings: Any, store: Store, chat: Any, bot: Any,
                       metrics: Metrics = DISCARD) -> HealthService:
    """Wire the health check into a running bot: the ``/sop health`` subcommand and, when
    enabled, the schedules (leader-elected through a Lease when Kubernetes is reachable)."""
    import os
    import socket

    from bot.schedule import LeaseElector, Schedule, Scheduler

    cfg = settings.health
    hstore = HealthStore(store)
    await hstore.setup()
    service = HealthService(cfg, registry=bot.registry, ctx=bot.ctx, store=hstore, chat=chat,
                            runbook=bot.runbook, trigger=bot.trigger, channel_id=chat.channel_id,
                            default_channel=settings.mattermost.channel)
    service.metrics = metrics
    bot.subcommands["health"] = service.subcommand(bot.spawn, getattr(bot, "start_run", None))
    if cfg.composition not in COMPOSITIONS:
        log.warning("health.composition %r is not defined (known: %s)", cfg.composition, ", ".join(COMPOSITIONS))
    for sched in cfg.schedules:
        unknown = [] if sched.checks == "all" else [i for i in sched.checks if i not in bot.registry.sops]
        if unknown:  # still runs: each unknown id is an "unknown" area naming it
            log.warning("health schedule %s: no SOP %s", sched.name, ", ".join(unknown))
    if cfg.enabled and cfg.schedules:
        identity = os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"
        elector = (LeaseElector(bot.ctx.kube, lease_namespace(cfg), cfg.lease_name, identity,
                                duration_s=cfg.lease_duration_s) if bot.ctx.kube is not None else None)

        async def run(sched: Schedule, fire_time: datetime) -> None:
            try:
                report = await service.run_schedule(sched.name, fire_time)
            except Exception:
                metrics.scheduled_runs.labels(sched.name, "error").inc()
                raise
            metrics.scheduled_runs.labels(sched.name, report.status.value).inc()

        service.scheduler = Scheduler([Schedule(s.name, s.cron, s.timezone) for s in cfg.schedules], run, hstore,
                                      elector=elector, identity=identity, misfire_grace_s=cfg.misfire_grace_s,
                                      renew_s=cfg.lease_renew_s, on_missed=service.post_missed)
        service.scheduler.start()
    return service
