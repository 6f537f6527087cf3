"""Scheduled work (the daily health check): APScheduler 3 cron jobs that run on one replica only.

Only the replica holding a ``coordination.k8s.io/v1`` Lease runs schedules (``LeaseElector``, a
small lease loop through ``KubeClient``, the same protocol as client-go's leader election:
get → create or update with the resourceVersion, so two replicas racing get a 409). Each
schedule's fire time is claimed in the store before it runs and recorded on the Lease (an
annotation per schedule, for replicas that do not share a store), so a fire time runs once even
when the leader changes around it; a new leader catches up on a fire time it saw pass within
``misfire_grace_s`` that nobody ran.

Cron expressions are standard crontab (minute hour day-of-month month day-of-week): day-of-week
numbers mean 0 or 7 = Sunday, 1 = Monday … 6 = Saturday, names (mon-fri) work too. Careful:
APScheduler 3's own ``CronTrigger.from_crontab`` numbers days Monday=0 (so "1-5" would be
Tuesday–Saturday there); ``cron_trigger`` translates numbers to names first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED,
                                JobEvent)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.clients.errors import SourceError
from bot.clients.kube import KubeClient

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- cron ------------------------------------------------------------------------------------------
def _day_of_week(field: str) -> str:
    """Crontab day-of-week (0/7 = Sunday) → APScheduler names, e.g. "1-5" → "mon,tue,wed,thu,fri"."""
    out: list[str] = []
    for part in field.lower().split(","):
        body, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ValueError(f"day-of-week step must be positive: {part!r}")
        if body == "*":
            if not step_s:
                return "*"
            lo, hi = 0, 6
        elif body.isalpha() or (("-" in body) and body.replace("-", "").isalpha()):
            out.append(part)  # names: APScheduler reads them the crontab way
            continue
        else:
            a, _, b = body.partition("-")
            if not a.isdigit() or (b and not b.isdigit()):
                raise ValueError(f"bad day-of-week {part!r}: use 0-7 (0/7 = Sunday) or mon..sun")
            lo, hi = int(a), int(b) if b else int(a)
            if not (0 <= lo <= 7 and 0 <= hi <= 7) or lo > hi:
                raise ValueError(f"bad day-of-week range {part!r}: 0-7, 0 and 7 are Sunday")
            if not b and step_s:
                hi = 6
        out += [_DAYS[d % 7] for d in range(lo, hi + 1, step)]
    return ",".join(dict.fromkeys(out))


def cron_trigger(expr: str, tz: str = "UTC") -> CronTrigger:
    """A CronTrigger from a 5-field crontab line in the given IANA time zone; ValueError if bad."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r}: 5 fields (minute hour day month weekday), got {len(fields)}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name like Europe/Berlin)") from None
    minute, hour, day, month, dow = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_day_of_week(dow),
                       timezone=zone)


def last_fire_time(trigger: CronTrigger, now: datetime, window_s: float) -> datetime | None:
    """The latest fire time in (now - window, now], or None."""
    t = trigger.get_next_fire_time(None, now - timedelta(seconds=window_s))
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return last


# -- leader election -------------------------------------------------------------------------------
FIRED = "sopbot.io/fired."  # + schedule name: annotation on the Lease


def _micro(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One replica's view of a coordination.k8s.io/v1 Lease.

    Expiry is judged as client-go does, by this replica's clock: a lease is free when its record
    has not changed for ``duration_s`` since this replica first saw it (no clock-skew trust)."""

    def __init__(self, kube: KubeClient, namespace: str, name: str, identity: str, *,
                 duration_s: float = 15.0, clock: Clock = utcnow):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.clock = clock
        self._observed: tuple[str, datetime] | None = None  # (record, when we first saw it)
        self._renewed_at: datetime | None = None
        self.holder: str | None = None
        # schedule → last fire time run, kept in the Lease's annotations so every replica sees
        # it even with a store of its own
        self.fired: dict[str, str] = {}
        self.api_failing_since: datetime | None = None

    @property
    def api_down(self) -> bool:
        """The Lease API has not answered for a lease duration (connection errors, timeouts, 5xx):
        no replica can be elected, and Kubernetes being down is what a health report must say."""
        since = self.api_failing_since
        return since is not None and self.clock() >= since + timedelta(seconds=self.duration_s)

    @property
    def is_leader(self) -> bool:
        # Stop acting as leader before another replica may take over (renew deadline 2/3).
        return (self.holder == self.identity and self._renewed_at is not None
                and self.clock() < self._renewed_at + timedelta(seconds=self.duration_s * 2 / 3))

    def _body(self, lease: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        spec = dict((lease or {}).get("spec") or {})
        taking_over = spec.get("holderIdentity") != self.identity
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.duration_s),
                    renewTime=_micro(now))
        if taking_over:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        annotations = {k: v for k, v in ((lease or {}).get("metadata", {}).get("annotations") or {}).items()
                       if not k.startswith(FIRED)}
        annotations.update({FIRED + name: stamp for name, stamp in self.fired.items()})
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "annotations": annotations}
        if lease is not None:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _read_marks(self, lease: dict[str, Any]) -> None:
        for key, stamp in ((lease.get("metadata") or {}).get("annotations") or {}).items():
            if key.startswith(FIRED) and stamp > self.fired.get(key[len(FIRED):], ""):
                self.fired[key[len(FIRED):]] = stamp

    def has_fired(self, schedule: str, fire_time: datetime) -> bool:
        return self.fired.get(schedule, "") >= _micro(fire_time)

    async def mark_fired(self, schedule: str, fire_time: datetime) -> None:
        """Record a run in the Lease (written with the renewal, at once)."""
        self.fired[schedule] = max(self.fired.get(schedule, ""), _micro(fire_time))
        await self.step()

    async def step(self) -> bool:
        """Acquire or renew once; True while this replica leads."""
        now = self.clock()
        try:
            try:
                lease = await self.kube.get("coordination.k8s.io/v1", "leases", self.name, self.namespace)
            except SourceError as exc:
                if exc.status != 404:
                    raise
                await self.kube.create("coordination.k8s.io/v1", "leases", self._body(None, now), self.namespace)
                return self._won(now)
            self._read_marks(lease)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            record = f"{holder}|{spec.get('renewTime')}"
            if self._observed is None or self._observed[0] != record:
                self._observed = (record, now)
            duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
            free = not holder or now >= self._observed[1] + timedelta(seconds=duration)
            self.api_failing_since = None
            if holder != self.identity and not free:
                self.holder = holder
                return False
            await self.kube.request(
                "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}",
                body=self._body(lease, now))
            return self._won(now)
        except SourceError as exc:
            # 409: another replica wrote first. Anything else: we cannot prove we lead.
            if exc.status != 409:
                log.warning("leader election: %s", exc)
            if exc.status is None or exc.status >= 500:
                self.api_failing_since = self.api_failing_since or now
            if self.holder == self.identity and not self.is_leader:
                self.holder = None
            return self.is_leader

    def _won(self, now: datetime) -> bool:
        self.api_failing_since = None
        if self.holder != self.identity:
            log.info("leader election: %s now leads (%s/%s)", self.identity, self.namespace, self.name)
        self.holder = self.identity
        self._renewed_at = now
        return True

    async def release(self) -> None:
        """Hand the lease over at shutdown so the next replica need not wait for expiry."""
        if self.holder != self.identity:
            return
        self.holder = None
        try:
            lease = await self.kube.get("coordination.k8s.io/v1", "leases", self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                await self.kube.request(
                    "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}",
                    body=lease)
        except SourceError as exc:
            log.warning("leader election: release failed: %s", exc)


# -- the scheduler ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str = "0 8 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class Term:
    """An interval a replica was up (role "replica") or led (role "leader"), as recorded."""

    identity: str
    role: str
    started: datetime
    last_seen: datetime

    def covers(self, t: datetime) -> bool:
        return self.started <= t <= self.last_seen


@dataclass(frozen=True)
class Missed:
    """Fire times of one schedule that nobody ran, and why (the same leaderless window)."""

    schedule: str
    fire_times: tuple[datetime, ...]
    reason: str  # with {0}, {1} for the window's ends, rendered in the schedule's time zone
    window: tuple[datetime, ...] = ()


class FireLog(Protocol):
    """Where fire times are claimed, and replicas' terms and missed reports recorded
    (``bot.health.HealthStore`` implements it)."""

    async def claim_fire(self, schedule: str, fire_time: datetime, runner: str) -> bool: ...

    async def fired(self, schedule: str, fire_time: datetime) -> bool: ...

    async def last_fire(self, schedule: str) -> datetime | None: ...

    async def known_since(self, schedule: str, now: datetime) -> datetime: ...

    async def note_terms(self, identity: str, terms: list[tuple[str, datetime]], now: datetime) -> None: ...

    async def terms(self) -> list[Term]: ...

    async def prune_terms(self, before: datetime) -> None: ...

    async def claim_missed(self, schedule: str, fire_time: datetime, now: datetime) -> bool: ...


def _hhmm(t: datetime, tz: ZoneInfo, now: datetime) -> str:
    local = t.astimezone(tz)
    day = "" if local.date() == now.astimezone(tz).date() else local.strftime("%b %d ").replace(" 0", " ")
    return day + local.strftime("%H:%M")


def missed_text(m: Missed, tz: str, now: datetime, *, named: bool = True) -> str:
    """ "the 08:00 health check did not run (no replica was leader from 07:58 to 08:06)"."""
    zone = ZoneInfo(tz)
    label = f" `{m.schedule}`" if named else ""
    reason = m.reason.format(*(_hhmm(t, zone, now) for t in m.window))
    times = [_hhmm(t, zone, now) for t in m.fire_times]
    if len(times) == 1:
        return f"the {times[0]}{label} health check did not run ({reason})"
    shown = ", ".join(times[:5]) + (f" and {len(times) - 5} more" if len(times) > 5 else "")
    return f"the{label} health check did not run at {shown} ({reason})"


def leaderless_window(t: datetime, terms: list[Term], now: datetime) -> tuple[str, tuple[datetime, ...]]:
    """Why nobody ran fire time ``t``, from the recorded terms: a reason with {0}/{1} for the
    window's ends, and those ends."""
    leaders = [x for x in terms if x.role == "leader"]
    holder = next((x for x in leaders if x.covers(t)), None)
    if holder is not None:  # a leader was there and still did not run it (loop stuck past the grace)
        return f"{holder.identity} was leader but its scheduler missed the time", ()
    before = max((x.last_seen for x in leaders if x.last_seen < t), default=None)
    after = min((x.started for x in leaders if x.started > t), default=now)
    standby = any(x.role == "replica" and x.covers(t) for x in terms)
    if before is None:
        return "the bot was down", ()
    if standby:
        return "no replica was leader from {0} to {1}", (before, after)
    return "the bot was down from {0} to {1}", (before, after)


class Scheduler:
    """Cron schedules on APScheduler's AsyncIOScheduler, run only by the lease holder, each fire
    time at most once (claimed in the store first).

    ``run(schedule, fire_time)`` does the work. ``clock`` is the time this class reads (tests
    drive it together with APScheduler's ``wakeup()``)."""

    def __init__(self, schedules: list[Schedule], run: Callable[[Schedule, datetime], Awaitable[Any]],
                 fires: FireLog, *, elector: LeaseElector | None = None, identity: str = "sopbot",
                 misfire_grace_s: float = 3600.0, renew_s: float = 5.0, clock: Clock = utcnow,
                 on_missed: Callable[[list[Missed]], Awaitable[Any]] | None = None,
                 keep_terms_s: float = 35 * 86400.0):
        self.schedules = {s.name: s for s in schedules}
        self.triggers = {s.name: cron_trigger(s.cron, s.timezone) for s in schedules}
        self.run = run
        self.fires = fires
        self.elector = elector
        self.identity = elector.identity if elector is not None else identity
        self.misfire_grace_s = misfire_grace_s
        self.renew_s = renew_s
        self.clock = clock
        self.aps = AsyncIOScheduler(timezone=timezone.utc)
        self.ran: list[tuple[str, datetime]] = []  # (schedule, fire time) this replica ran
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lease_task: asyncio.Task[None] | None = None
        # Catch-up covers fire times this replica saw pass (as a standby), not ones from before
        # it existed: a fresh install or a rolled pod does not replay the last report.
        self.started_at = clock()
        # Fire times nobody ran are reported through this when this replica becomes leader.
        self.on_missed = on_missed
        self.keep_terms_s = keep_terms_s
        self._leader_since: datetime | None = None  # this replica's current leadership term

    def start(self, *, lease_loop: bool = True) -> None:
        """Add the cron jobs and start; ``lease_loop=False`` leaves election to ``lease_step``
        calls (tests step it with their clock)."""
        for name, trigger in self.triggers.items():
            self.aps.add_job(self._fire, trigger, args=[name], id=name, name=f"health:{name}",
                             misfire_grace_time=int(self.misfire_grace_s), coalesce=True, max_instances=1)
        self.aps.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self.aps.add_listener(self._finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        self.aps.start()
        if lease_loop:  # without an elector too: it records this replica's term and reports misses
            self._lease_task = asyncio.create_task(self._lease_loop(), name="scheduler-lease")

    async def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        await self.idle()
        if self.elector is not None:
            await self.elector.release()

    def next_fire_times(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self.aps.get_jobs()}

    async def tick(self) -> None:
        """Let APScheduler process due jobs now and wait for the runs it starts (tests move the
        clock, then tick). ``wakeup`` is queued on the loop, so yield once for it to run."""
        self.aps.wakeup()
        await asyncio.sleep(0)
        await self.idle()

    async def idle(self) -> None:
        """Wait until every submitted run has finished."""
        await self._idle.wait()

    def _submitted(self, event: JobEvent) -> None:
        # Runs inside APScheduler's job processing, right after the run's task was created.
        self._inflight += 1
        self._idle.clear()

    def _finished(self, event: JobEvent) -> None:
        # One event per submission (coalesce=True): executed, failed, or missed beyond the grace.
        if event.code == EVENT_JOB_MISSED:
            log.warning("schedule %s: fire time %s missed by more than %gs, skipped",
                        event.job_id, getattr(event, "scheduled_run_time", "?"), self.misfire_grace_s)
        self._inflight = max(0, self._inflight - 1)
        if self._inflight == 0:
            self._idle.set()

    async def _fire(self, name: str) -> None:
        now = self.clock()
        fire_time = last_fire_time(self.triggers[name], now, self.misfire_grace_s)
        if fire_time is None:  # APScheduler lets it through, our clock says too late: missed
            log.warning("schedule %s: no fire time within the last %gs, skipped", name, self.misfire_grace_s)
            return
        await self.run_once(name, fire_time)

    async def run_once(self, name: str, fire_time: datetime) -> bool:
        """Run a schedule's fire time here if this replica leads and nobody ran it yet."""
        if self.elector is not None and not self.elector.is_leader:
            if not self.elector.api_down:
                log.info("schedule %s at %s: not the leader (%s holds the lease), skipping",
                         name, fire_time, self.elector.holder)
                return False
            # Nobody can be elected while the API is down, and that is when the report matters
            # most: run on the store's claim alone (replicas sharing a store still run it once).
            log.warning("schedule %s at %s: Kubernetes API unreachable, no leader: running on the "
                        "store's fire-time claim", name, fire_time)
        if self.elector is not None and self.elector.has_fired(name, fire_time):
            log.info("schedule %s at %s already ran (Lease record), skipping", name, fire_time)
            return False
        if not await self.fires.claim_fire(name, fire_time, self.identity):
            log.info("schedule %s at %s already ran, skipping", name, fire_time)
            return False
        if self.elector is not None:
            await self.elector.mark_fired(name, fire_time)
        self.ran.append((name, fire_time))
        try:
            await self.run(self.schedules[name], fire_time)
        except Exception:  # one failed run must not stop the schedule
            log.exception("schedule %s at %s failed", name, fire_time)
        return True

    async def catch_up(self) -> list[str]:
        """After becoming leader: run any fire time within the grace window, since this replica
        started, that nobody ran (the old leader died just before or during it)."""
        done = []
        now = self.clock()
        for name, trigger in self.triggers.items():
            fire_time = last_fire_time(trigger, now, self.misfire_grace_s)
            if fire_time is None or fire_time < self.started_at:
                continue
            if not await self.fires.fired(name, fire_time) and not (
                    self.elector is not None and self.elector.has_fired(name, fire_time)):
                if await self.run_once(name, fire_time):
                    done.append(name)
        return done

    async def lease_step(self) -> bool:
        """One round of leader election (no elector: a single replica, always leads); on
        becoming leader, catch up, then report the fire times nobody ran."""
        was = self.elector.is_leader if self.elector is not None else self._leader_since is not None
        leads = await self.elector.step() if self.elector is not None else True
        await self._note_terms(leads)
        if leads and not was:
            await self.catch_up()
            await self.report_missed()
        return leads

    async def _note_terms(self, leads: bool) -> None:
        """Record this replica's life and leadership in the store: a later leader reads who
        was up when a fire time passed unrun. A store failure must not stop the election."""
        now = self.clock()
        if not leads:
            self._leader_since = None
        elif self._leader_since is None:
            self._leader_since = now
        try:
            terms = [("replica", self.started_at)]
            if self._leader_since is not None:
                terms.append(("leader", self._leader_since))
            await self.fires.note_terms(self.identity, terms, now)
        except Exception as exc:
            log.warning("schedule: could not record this replica's term: %s", exc)

    async def report_missed(self, *, max_fire_times: int = 500) -> list[Missed]:
        """Each schedule's fire times since its last recorded run (or since a leader first had
        it configured) that nobody ran, each reported once (claimed in the store): grouped by
        their leaderless window, passed to ``on_missed``."""
        if self.on_missed is None:
            return []
        now = self.clock()
        terms = await self.fires.terms()
        out: list[Missed] = []
        for name, trigger in self.triggers.items():
            since = await self.fires.known_since(name, now)
            base = await self.fires.last_fire(name)
            # never run: a new schedule (or a fresh install) expects nothing before it was known
            start = base + timedelta(microseconds=1) if base is not None else since
            groups: dict[tuple[str, tuple[datetime, ...]], list[datetime]] = {}
            t = trigger.get_next_fire_time(None, start)
            for _ in range(max_fire_times):  # bounded: a minutely schedule after a long outage
                if t is None or t >= now:
                    break
                ran = await self.fires.fired(name, t) or (self.elector is not None
                                                          and self.elector.has_fired(name, t))
                if not ran and await self.fires.claim_missed(name, t, now):
                    groups.setdefault(leaderless_window(t, terms, now), []).append(t)
                t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
            out += [Missed(name, tuple(times), reason, window) for (reason, window), times in groups.items()]
        await self.fires.prune_terms(now - timedelta(seconds=self.keep_terms_s))
        if out:
            for m in out:
                log.warning("schedule %s: %d fire time(s) did not run (%s)", m.schedule, len(m.fire_times),
                            m.reason.format(*m.window))
            await self.on_missed(out)
        return out

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.lease_step()
            except Exception:
                log.exception("leader election step failed")
            await asyncio.sleep(self.renew_s)


# -- leadership for other loops ---------------------------------------------------------------------
class Leadership:
    """"Am I the leader?" for loops besides the scheduler's (alert reconciliation, escalation),
    so two replicas do not both act. Reads an elector the scheduler already renews
    (``renew=False``), or renews one itself; no elector (no Kubernetes): a single replica, leads."""

    def __init__(self, elector: LeaseElector | None, *, renew: bool = True, renew_s: float = 5.0):
        self.elector = elector
        self.renew = renew
        self.renew_s = renew_s
        self._task: asyncio.Task[None] | None = None

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def may_act(self) -> bool:
        """Leader, or nobody can be: while the Lease API is down no replica is elected, and
        acting twice (each replica) beats nobody escalating while Kubernetes is down."""
        return self.is_leader() or (self.elector is not None and self.elector.api_down)

    def start(self) -> None:
        if self.elector is not None and self.renew and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="leadership-lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            assert self.elector is not None
            await self.elector.release()

    async def _loop(self) -> None:
        assert self.elector is not None
        while True:
            try:
                await self.elector.step()
            except Exception:
                log.exception("leader election step failed")
            await asyncio.sleep(self.renew_s)
