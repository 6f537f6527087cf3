"""Schedules: APScheduler cron jobs fire at the configured time (a controlled clock drives
APScheduler's own job processing through its wakeup(), no sleeping), only on the replica holding the Lease, and each
fire time runs once even across a failover."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.clients.kube import KubeClient
from bot.config import Settings
from bot.health import HealthStore
from bot.schedule import LeaseElector, Schedule, Scheduler, cron_trigger
from bot.store import Store

UTC = timezone.utc


class Clock:
    """The one time source of a test: Scheduler and APScheduler both read it."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(datetime(2026, 11, 26, 7, 59, 0, tzinfo=UTC))  # a Thursday

    class ClockedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # what APScheduler's job processing calls
            return clock.now.astimezone(tz) if tz else clock.now.replace(tzinfo=None)

    import apscheduler.executors.base as aps_executors
    import apscheduler.schedulers.base as aps_base
    monkeypatch.setattr(aps_base, "datetime", ClockedDatetime)  # which jobs are due
    monkeypatch.setattr(aps_executors, "datetime", ClockedDatetime)  # misfire grace check
    return clock


@pytest.fixture
async def fires(tmp_path: Path):
    store = await Store.open(tmp_path / "sopbot.db")
    hstore = HealthStore(store)
    await hstore.setup()
    yield hstore
    await store.close()


# -- cron ------------------------------------------------------------------------------------------
def test_weekday_numbers_are_crontab_numbers_not_apscheduler_ones():
    friday_9 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    # crontab: 1-5 = Monday..Friday (APScheduler 3's from_crontab would read Tuesday..Saturday)
    assert cron_trigger("0 8 * * 1-5").get_next_fire_time(None, friday_9) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert cron_trigger("0 8 * * mon-fri").get_next_fire_time(None, friday_9) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    for sunday in ("0", "7", "sun"):
        assert cron_trigger(f"0 8 * * {sunday}").get_next_fire_time(None, friday_9).weekday() == 6


def test_cron_is_read_in_its_time_zone():
    trigger = cron_trigger("0 8 * * *", "Europe/Berlin")
    nxt = trigger.get_next_fire_time(None, datetime(2026, 11, 26, 6, 0, tzinfo=UTC))
    assert nxt == datetime(2026, 11, 26, 8, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert nxt.astimezone(UTC).hour == 7  # CET


def test_bad_schedules_are_config_errors_naming_the_problem():
    for schedule, problem in [({"cron": "0 8 * *"}, "5 fields"), ({"cron": "0 8 * * 8"}, "day-of-week"),
                              ({"timezone": "Mars/Olympus"}, "unknown time zone")]:
        with pytest.raises(ValidationError, match=problem):
            Settings(health={"schedules": [schedule]})
    with pytest.raises(ValidationError, match="unique"):
        Settings(health={"schedules": [{"name": "a"}, {"name": "a"}]})
    s = Settings(health={"schedules": [{"name": "daily"},
                                       {"name": "hourly-p1", "cron": "0 * * * *", "severities": ["P1"]}]})
    assert [x.name for x in s.health.schedules] == ["daily", "hourly-p1"]


# -- firing ----------------------------------------------------------------------------------------
async def test_fires_at_the_configured_time_once_per_fire_time(clock, fires):
    runs: list[tuple[str, datetime]] = []

    async def run(schedule: Schedule, fire_time: datetime) -> None:
        runs.append((schedule.name, fire_time))

    sched = Scheduler([Schedule("daily", "0 8 * * *", "UTC"), Schedule("hourly-p1", "30 * * * *", "UTC")],
                      run, fires, clock=clock, misfire_grace_s=600)
    sched.start()
    try:
        assert sched.next_fire_times()["daily"] == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        await sched.tick()
        assert runs == []  # 07:59: nothing due
        clock.advance(minutes=1, seconds=2)  # 08:00:02
        await sched.tick()
        assert runs == [("daily", datetime(2026, 11, 26, 8, 0, tzinfo=UTC))]
        await sched.tick()
        assert len(runs) == 1  # the next daily fire is tomorrow
        assert sched.next_fire_times()["daily"] == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
        clock.advance(minutes=30)  # 08:30:02
        await sched.tick()
        assert runs[-1] == ("hourly-p1", datetime(2026, 11, 26, 8, 30, tzinfo=UTC))
        # A second claim of the same fire time (another replica, a restart) is refused.
        assert await sched.run_once("daily", datetime(2026, 11, 26, 8, 0, tzinfo=UTC)) is False
        assert len(runs) == 2
    finally:
        await sched.stop()


async def test_a_fire_time_missed_beyond_the_grace_is_skipped(clock, fires):
    runs = []

    async def run(schedule, fire_time):
        runs.append(fire_time)

    sched = Scheduler([Schedule("daily", "0 8 * * *")], run, fires, clock=clock, misfire_grace_s=60)
    sched.start()
    try:
        clock.advance(minutes=10)  # 08:09: the loop was stuck past 08:00 + 60 s
        await sched.tick()
        assert runs == []
    finally:
        await sched.stop()


# -- leader election -------------------------------------------------------------------------------
async def replica(name: str, sandbox, clock: Clock, fires: HealthStore, runs: list) -> Scheduler:
    kube = await KubeClient.connect(sandbox.kubeconfig)
    elector = LeaseElector(kube, "default", "sopbot-scheduler", name, duration_s=15, clock=clock)

    async def run(schedule: Schedule, fire_time: datetime) -> None:
        runs.append((name, fire_time))

    return Scheduler([Schedule("daily", "0 8 * * *")], run, fires, elector=elector, clock=clock,
                     misfire_grace_s=3600)


async def elapse(clock: Clock, seconds: int, *alive: Scheduler) -> None:
    """Time passes; the live replicas' lease loops step every 5 s as they do in production."""
    for _ in range(seconds // 5):
        clock.advance(seconds=5)
        for r in alive:
            await r.lease_step()
    clock.advance(seconds=seconds % 5)


async def test_only_the_lease_holder_runs_and_a_failover_does_not_run_it_twice(sandbox, clock, fires):
    runs: list[tuple[str, datetime]] = []
    a = await replica("bot-a", sandbox, clock, fires, runs)
    b = await replica("bot-b", sandbox, clock, fires, runs)
    a.start(lease_loop=False)  # the test steps the election with its clock
    b.start(lease_loop=False)
    try:
        assert await a.lease_step() is True
        assert await b.lease_step() is False
        lease = sandbox.platform.kube.get("coordination.k8s.io/v1", "Lease", "sopbot-scheduler", "default")
        assert lease["spec"]["holderIdentity"] == "bot-a"

        await elapse(clock, 61, a, b)  # 08:00:01, a renewing all along: both APSchedulers fire
        assert runs == []
        for r in (a, b):
            await r.tick()
        assert runs == [("bot-a", datetime(2026, 11, 26, 8, 0, tzinfo=UTC))]
        assert a.ran and not b.ran

        # bot-a dies after running. bot-b sees the lease go stale and takes over…
        await b.lease_step()
        clock.advance(seconds=16)
        assert await b.lease_step() is True
        lease = sandbox.platform.kube.get("coordination.k8s.io/v1", "Lease", "sopbot-scheduler", "default")
        assert lease["spec"]["holderIdentity"] == "bot-b" and lease["spec"]["leaseTransitions"] == 1
        # …and its catch-up finds the 08:00 run recorded: no second report.
        assert runs == [("bot-a", datetime(2026, 11, 26, 8, 0, tzinfo=UTC))]
        assert a.elector.is_leader is False  # a's renew deadline passed: it would not run either
    finally:
        await a.stop()
        await b.stop()
        await a.elector.kube.close()
        await b.elector.kube.close()


async def test_replicas_with_stores_of_their_own_agree_through_the_lease(sandbox, clock, fires, tmp_path):
    other_store = await Store.open(tmp_path / "other.db")  # e.g. one PVC per replica
    other = HealthStore(other_store)
    await other.setup()
    runs: list[tuple[str, datetime]] = []
    a = await replica("bot-a", sandbox, clock, fires, runs)
    b = await replica("bot-b", sandbox, clock, other, runs)
    try:
        assert await a.lease_step() is True
        assert await b.lease_step() is False
        await elapse(clock, 61, a, b)
        fire = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        assert await a.run_once("daily", fire) is True
        lease = sandbox.platform.kube.get("coordination.k8s.io/v1", "Lease", "sopbot-scheduler", "default")
        assert lease["metadata"]["annotations"]["sopbot.io/fired.daily"].startswith("2026-11-26T08:00:00")
        await b.lease_step()  # bot-a dies; bot-b observes, then takes over
        clock.advance(seconds=16)
        assert await b.lease_step() is True
        assert not await other.fired("daily", fire)  # its own store never saw the run…
        assert runs == [("bot-a", fire)]  # …the Lease did: no second report
        assert await b.run_once("daily", fire) is False
    finally:
        await a.elector.kube.close()
        await b.elector.kube.close()
        await other_store.close()


async def test_a_new_leader_catches_up_on_a_fire_time_the_old_one_missed(sandbox, clock, fires):
    runs: list[tuple[str, datetime]] = []
    a = await replica("bot-a", sandbox, clock, fires, runs)
    b = await replica("bot-b", sandbox, clock, fires, runs)
    try:
        assert await a.lease_step() is True  # 07:59:00, then bot-a dies
        assert await b.lease_step() is False
        clock.advance(minutes=1, seconds=20)  # 08:00:20: nobody ran 08:00
        assert await b.lease_step() is True
        assert runs == [("bot-b", datetime(2026, 11, 26, 8, 0, tzinfo=UTC))]  # b was up at 08:00
        clock.advance(seconds=5)
        assert await b.lease_step() is True  # renewing does not run it again
        assert len(runs) == 1
    finally:
        await a.elector.kube.close()
        await b.elector.kube.close()


async def test_a_replica_started_after_the_fire_time_does_not_replay_it(sandbox, clock, fires):
    runs: list = []
    clock.advance(minutes=5)  # 08:04: a fresh pod, nobody ran 08:00 (e.g. a new install)
    c = await replica("bot-c", sandbox, clock, fires, runs)
    try:
        assert await c.lease_step() is True
        assert runs == []
    finally:
        await c.elector.kube.close()


async def test_released_lease_is_taken_over_at_once(sandbox, clock, fires):
    runs: list = []
    a = await replica("bot-a", sandbox, clock, fires, runs)
    b = await replica("bot-b", sandbox, clock, fires, runs)
    try:
        assert await a.lease_step() is True
        await a.elector.release()  # graceful shutdown
        assert await b.lease_step() is True
    finally:
        await a.elector.kube.close()
        await b.elector.kube.close()


async def test_with_the_kubernetes_api_down_the_schedule_still_runs_once(sandbox, clock, fires, tmp_path):
    """No replica can be elected while the API is down, which is when the report matters most:
    after a lease duration of failures each replica falls back to the store's fire-time claim."""
    import yaml

    doc = yaml.safe_load(sandbox.kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens: refused
    down = tmp_path / "down-kubeconfig"
    down.write_text(yaml.safe_dump(doc))
    runs: list[tuple[str, datetime]] = []
    replicas = []
    for name in ("bot-a", "bot-b"):
        kube = await KubeClient.connect(down)
        elector = LeaseElector(kube, "default", "sopbot-scheduler", name, duration_s=15, clock=clock)

        async def run(schedule: Schedule, fire_time: datetime, name: str = name) -> None:
            runs.append((name, fire_time))
        replicas.append(Scheduler([Schedule("daily", "0 8 * * *")], run, fires, elector=elector, clock=clock))
    a, b = replicas
    try:
        fire = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        assert await a.lease_step() is False and await b.lease_step() is False
        assert await a.run_once("daily", fire) is False  # a blip: not yet "down"
        clock.advance(seconds=16)
        assert await a.lease_step() is False and await b.lease_step() is False
        assert a.elector.api_down and b.elector.api_down
        assert await a.run_once("daily", fire) is True
        assert await b.run_once("daily", fire) is False  # the shared store's claim
        assert runs == [("bot-a", fire)]
    finally:
        for r in replicas:
            await r.elector.kube.close()
