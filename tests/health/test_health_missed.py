"""A scheduled run that did not happen is reported, once, by the next leader: "the 08:00 health
check did not run (no replica was leader from 07:58 to 08:06)". Controlled clock (the one
APScheduler reads too), real Lease through the sandbox's Kubernetes API, store on disk."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.clients.errors import SourceError
from bot.clients.kube import KubeClient
from bot.config import Settings
from bot.health import HealthService, HealthStore
from bot.registry import Registry
from bot.schedule import LeaseElector, Missed, Schedule, Scheduler, missed_text
from bot.store import Store
from tests.health.test_health_schedule import UTC, Clock, clock  # noqa: F401 (fixture)

FIRE = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture
async def fires(open_store):
    """The shared store, on SQLite and on a real PostgreSQL (tests/conftest.py)."""
    store = await open_store()
    hstore = HealthStore(store)
    await hstore.setup()
    yield hstore
    await store.close()


class ForbiddenKube(KubeClient):
    """The replica's own Lease requests refused (its RBAC broken), while ``forbidden`` is set:
    it is up, but cannot lead."""

    forbidden = False

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        if self.forbidden and "/leases" in path:
            raise SourceError("kubernetes", "leases is forbidden", status=403)
        return await super().request(method, path, **kw)


class Posts:
    def __init__(self) -> None:
        self.missed: list[Missed] = []

    async def __call__(self, missed: list[Missed]) -> None:
        self.missed += missed


async def replica(name: str, sandbox, clock: Clock, fires: HealthStore, runs: list, posts: Posts,
                  kube_cls: type[KubeClient] = KubeClient, grace_s: float = 120) -> Scheduler:
    kube = await kube_cls.connect(sandbox.kubeconfig)
    elector = LeaseElector(kube, "default", "sopbot-scheduler", name, duration_s=15, clock=clock)

    async def run(schedule: Schedule, fire_time: datetime) -> None:
        runs.append((name, fire_time))

    return Scheduler([Schedule("daily", "0 8 * * *")], run, fires, elector=elector, clock=clock,
                     misfire_grace_s=grace_s, on_missed=posts)


def texts(posts: Posts, now: datetime) -> list[str]:
    return [missed_text(m, "UTC", now, named=False) for m in posts.missed]


async def test_a_standby_that_could_not_lead_reports_the_leaderless_window(sandbox, clock, fires):
    clock.now = datetime(2026, 11, 26, 7, 50, tzinfo=UTC)
    runs: list = []
    posts = Posts()
    a = await replica("bot-a", sandbox, clock, fires, runs, posts)
    b = await replica("bot-b", sandbox, clock, fires, runs, posts, kube_cls=ForbiddenKube)
    a.start(lease_loop=False)
    b.start(lease_loop=False)
    try:
        assert await a.lease_step() is True and await b.lease_step() is False
        clock.now = datetime(2026, 11, 26, 7, 58, tzinfo=UTC)
        assert await a.lease_step() is True  # bot-a's last renewal: it dies now
        b.elector.kube.forbidden = True  # and bot-b's Lease access is broken from here on
        for _ in range(12 * 8):  # bot-b steps every 5 s until 08:06, its APScheduler fires at 08:00
            clock.advance(seconds=5)
            assert await b.lease_step() is False
            await b.tick()
        assert runs == [] and posts.missed == []
        b.elector.kube.forbidden = False  # 08:06: fixed; bot-b takes the stale lease
        assert clock.now == datetime(2026, 11, 26, 8, 6, tzinfo=UTC)
        await b.lease_step()
        clock.advance(seconds=16)
        assert await b.lease_step() is True
        assert runs == []  # 08:00 is past the grace: not run late…
        assert texts(posts, clock.now) == [  # …but said
            "the 08:00 health check did not run (no replica was leader from 07:58 to 08:06)"]
        clock.advance(seconds=5)
        assert await b.lease_step() is True  # renewing reports nothing again
        assert len(posts.missed) == 1
    finally:
        for r in (a, b):
            await r.stop()
            await r.elector.kube.close()


async def test_the_bot_down_is_reported_once_by_whichever_replica_leads_next(sandbox, clock, fires):
    clock.now = datetime(2026, 11, 26, 7, 50, tzinfo=UTC)
    runs: list = []
    posts = Posts()
    a = await replica("bot-a", sandbox, clock, fires, runs, posts)
    try:
        assert await a.lease_step() is True
        clock.now = datetime(2026, 11, 26, 7, 58, tzinfo=UTC)
        assert await a.lease_step() is True  # then every replica is gone (a node drain, an upgrade)
    finally:
        await a.elector.kube.close()
    clock.now = datetime(2026, 11, 26, 8, 6, tzinfo=UTC)  # a fresh pod starts
    c = await replica("bot-c", sandbox, clock, fires, runs, posts)
    d = await replica("bot-d", sandbox, clock, fires, runs, posts)
    try:
        assert await c.lease_step() is False  # bot-a's lease, not yet seen expire by this pod
        clock.advance(seconds=16)
        assert await c.lease_step() is True
        assert runs == []
        assert texts(posts, clock.now) == ["the 08:00 health check did not run (the bot was down from 07:58 to 08:06)"]
        await c.elector.release()  # c restarts at once; d leads: the report is not repeated
        assert await d.lease_step() is True
        assert len(posts.missed) == 1
        # The next day's run happens and nothing is reported for it.
        clock.now = datetime(2026, 11, 27, 8, 0, 1, tzinfo=UTC)
        assert await d.lease_step() is True
        assert runs == [("bot-d", datetime(2026, 11, 27, 8, 0, tzinfo=UTC))]
        await d.elector.release()
        assert await c.lease_step() is True
        assert len(posts.missed) == 1
    finally:
        await c.elector.kube.close()
        await d.elector.kube.close()


async def test_without_any_record_of_the_outage_it_says_the_bot_was_down(sandbox, clock, fires):
    """A store from before terms were recorded: yesterday's run is known, nothing else."""
    assert await fires.claim_fire("daily", datetime(2026, 11, 25, 8, 0, tzinfo=UTC), "old-pod")
    clock.now = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    runs: list = []
    posts = Posts()
    c = await replica("bot-c", sandbox, clock, fires, runs, posts)
    try:
        assert await c.lease_step() is True
        assert texts(posts, clock.now) == ["the 08:00 health check did not run (the bot was down)"]
    finally:
        await c.elector.kube.close()


async def test_a_fresh_install_reports_nothing(sandbox, clock, fires):
    clock.now = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    posts = Posts()
    c = await replica("bot-c", sandbox, clock, fires, [], posts)
    try:
        assert await c.lease_step() is True
        assert posts.missed == []
    finally:
        await c.elector.kube.close()


async def test_a_single_replica_without_kubernetes_reports_its_own_downtime(tmp_path: Path, clock):
    """No elector (one replica, no Kubernetes): the restart itself is the new leader."""
    store = await Store.open(tmp_path / "one.db")
    hstore = HealthStore(store)
    await hstore.setup()
    posts = Posts()

    async def run(schedule: Schedule, fire_time: datetime) -> None:
        pass

    try:
        clock.now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
        first = Scheduler([Schedule("daily", "0 8 * * *")], run, hstore, clock=clock, on_missed=posts)
        await first.lease_step()
        clock.now = datetime(2026, 11, 26, 7, 59, 30, tzinfo=UTC)
        await first.lease_step()  # last sign of life
        clock.now = datetime(2026, 11, 26, 8, 10, tzinfo=UTC)
        second = Scheduler([Schedule("daily", "0 8 * * *")], run, hstore, clock=clock, on_missed=posts)
        await second.lease_step()
        assert texts(posts, clock.now) == ["the 08:00 health check did not run (the bot was down from 07:59 to 08:10)"]
    finally:
        await store.close()


async def test_the_report_is_posted_in_the_schedules_channel(tmp_path: Path, clock):
    settings = Settings(health={"schedules": [{"name": "daily", "channel": "ops"},
                                              {"name": "hourly", "cron": "30 * * * *"}]})
    sent: list[tuple[str, str]] = []

    class Chat:
        async def post(self, channel_id: str, text: str, **kw: Any) -> Any:
            sent.append((channel_id, text))

    async def channel_id(name: str) -> str:
        return f"id-{name}"

    service = HealthService(settings.health, registry=Registry(), ctx=None, chat=Chat(),  # type: ignore[arg-type]
                            channel_id=channel_id, default_channel="sop-alerts")
    clock.now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    window = (datetime(2026, 11, 26, 7, 58, tzinfo=UTC), datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    await service.post_missed([
        Missed("daily", (FIRE,), "the bot was down from {0} to {1}", window),
        Missed("hourly", tuple(datetime(2026, 11, 26, h, 30, tzinfo=UTC) for h in (8, 9)),
               "the bot was down from {0} to {1}", window)], now=clock.now)
    assert sent == [
        ("id-ops", ":warning: The 08:00 `daily` health check did not run (the bot was down from 07:58 to 10:00)."),
        ("id-sop-alerts", ":warning: The `hourly` health check did not run at 08:30, 09:30 "
                          "(the bot was down from 07:58 to 10:00)."),
    ]


async def test_a_schedule_added_later_is_not_missed_for_the_days_before(sandbox, clock, fires):
    runs: list = []
    posts = Posts()
    clock.now = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    a = await replica("bot-a", sandbox, clock, fires, runs, posts)
    try:
        assert await a.lease_step() is True  # the bot runs for days with no hourly schedule
    finally:
        await a.elector.kube.close()
    clock.now = datetime(2026, 11, 26, 9, 40, tzinfo=UTC)  # then it gets one (a new release)
    kube = await KubeClient.connect(sandbox.kubeconfig)
    elector = LeaseElector(kube, "default", "sopbot-scheduler-2", "bot-b", duration_s=15, clock=clock)

    async def run(schedule: Schedule, fire_time: datetime) -> None:
        runs.append(fire_time)

    b = Scheduler([Schedule("hourly", "30 * * * *")], run, fires, elector=elector, clock=clock,
                  misfire_grace_s=120, on_missed=posts)
    try:
        assert await b.lease_step() is True
        assert posts.missed == []
        clock.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # its 10:30 and 11:30 did not run
        await elector.release()
        assert await b.lease_step() is True
        assert [m.fire_times for m in posts.missed] == [
            (datetime(2026, 11, 26, 10, 30, tzinfo=UTC), datetime(2026, 11, 26, 11, 30, tzinfo=UTC))]
    finally:
        await kube.close()


async def test_a_restarted_bot_posts_the_report_in_mattermost(sandbox):
    """The whole way: a previous life of the bot in the store, `Runtime` started (its Lease on
    the sandbox's API), the report in ~sop-alerts through the outbox. Real time: the schedule
    fires every 10 minutes and the previous life ended over half an hour ago."""
    from bot.runtime import Runtime
    from bot.schedule import cron_trigger, last_fire_time, utcnow
    from tests.approvals.conftest import wait_for

    settings = sandbox.settings(health={"schedules": [{"name": "daily", "cron": "*/10 * * * *"}]})
    now = utcnow()
    last = last_fire_time(cron_trigger("*/10 * * * *"), now - timedelta(minutes=35), 600)
    store = await Store.open(settings.store.path)
    hstore = HealthStore(store)
    await hstore.setup()
    await hstore.known_since("daily", last - timedelta(days=1))
    assert await hstore.claim_fire("daily", last, "old-pod")
    await hstore.note_term("old-pod", "replica", last - timedelta(hours=1), last + timedelta(minutes=1))
    await hstore.note_term("old-pod", "leader", last - timedelta(hours=1), last + timedelta(minutes=1))
    await store.close()
    rt = Runtime(settings)
    await rt.start()
    try:
        bot_id = sandbox.mattermost.user("sop-bot").id
        post = await wait_for(lambda: next((p.message for p in sandbox.mattermost.posts_in(sandbox.channel_id)
                                            if p.user_id == bot_id and "health check did not run" in p.message),
                                           None), what="the missed-schedule report")
        end = (last + timedelta(minutes=1)).strftime("%H:%M")
        assert post.startswith(":warning: The health check did not run at ")  # 3 or 4 fire times
        assert f"(the bot was down from {end} to " in post
        assert (last + timedelta(minutes=10)).strftime("%H:%M") in post
    finally:
        await rt.stop()
