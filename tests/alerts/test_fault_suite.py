"""The fault suite: two ``sopbot run`` replicas on one real PostgreSQL and the sandbox, a sender
that behaves as Alertmanager (every notification to both replicas or to one, seeded; anything
but a 2xx retried), and one fault per test: kill -9 of a replica mid-stream (then restarted, as
Kubernetes does), Mattermost 500s then a 429 storm, the Kubernetes API slower than the bot's
timeout then 503, a Vault replica that accepts TCP and never answers, the store read-only (the
webhook answers 503, never 2xx-and-lose), PostgreSQL connections dropped mid-transaction.
Each run ends with every group's one root, no post made twice, nothing left in the inbox.

One replica pair for the module (a few seconds to start); each test uses groups of its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from sandbox.runner import Sandbox
from tests.alerts.support import alert, payload
from tests.replicas import Pair, post_webhook
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")
KUBE_TIMEOUT_S = 2.0
VAULT_TIMEOUT_S = 2.0


@dataclass
class World:
    sb: Sandbox
    pair: Pair
    admin_url: str  # the server's superuser, for the faults only an operator can cause
    db_name: str
    sent: dict[str, int] = field(default_factory=dict)  # group → notifications answered 2xx


class Blackhole:
    """A listener that accepts connections and never answers (a hung Vault replica)."""

    def __init__(self) -> None:
        self.conns: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.conns.append(writer)
        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for w in self.conns:
            w.close()
        self.server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, postgres_server) -> AsyncIterator[World]:
    from tests.postgres import new_database

    tmp = tmp_path_factory.mktemp("faults")
    url = await new_database(postgres_server)
    hole = Blackhole()
    hung = await hole.start()
    async with Sandbox(workdir=tmp / "sandbox") as sb:
        vault = sb.bot_config()["vault"]
        # The last Vault replica's address is the listener that never answers.
        pair = Pair.configure(sb, url, tmp / "replicas",
                              kubernetes={"timeout_s": KUBE_TIMEOUT_S},
                              vault={"addrs": [*vault["addrs"][:-1], hung], "timeout_s": VAULT_TIMEOUT_S},
                              mattermost={"retry_base_s": 0.1, "retry_max_s": 1.0},
                              # Each test's groups get threads of their own (storms are not the subject).
                              alertmanager={"storm_groups": 1000})
        try:
            await pair.start()
            yield World(sb, pair, postgres_server.get_uri(), urlsplit(url).path.lstrip("/"))
        finally:
            await pair.stop()
            await hole.stop()


async def deliver(w: World, rng: random.Random, body: dict[str, Any], timeout_s: float = 60) -> None:
    """As Alertmanager: to both replicas (an HA pair, a retry through the Service) or to one,
    each retried until it answers 2xx; a replica that is down is left to the other."""
    targets = [r for r in w.pair.replicas if rng.random() < 0.6] or [rng.choice(w.pair.replicas)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        codes = [await post_webhook(r.url, w.sb.alertmanager_token, body) if r.alive else 0 for r in targets]
        assert all(c in (0, 200, 503) for c in codes), codes  # never a 4xx for a good payload
        if 200 in codes:
            w.sent[body["groupLabels"]["group"]] = w.sent.get(body["groupLabels"]["group"], 0) + 1
            return
        targets = list(w.pair.replicas)  # the next try goes through the Service: any replica
        await asyncio.sleep(0.3)
    pytest.fail(f"no replica accepted {body['groupKey']} in {timeout_s:g}s:\n{w.pair.logs()}")


def storm(prefix: str, n: int, rng: random.Random, name: str = "NodeDiskPressure",
          **labels: str) -> list[dict[str, Any]]:
    """``n`` groups, each notified two or three times (group_wait, group_interval, repeat), shuffled
    with order kept per group."""
    bodies: list[tuple[float, int, dict[str, Any]]] = []
    for g in range(n):
        group = f"{prefix}-{g}"
        a = alert(name, fp=f"{abs(hash(group)) % 16**16:016x}", group=group, **labels)
        for k in range(rng.choice((2, 3))):
            bodies.append((rng.uniform(0, 1) + k, k, payload(group, [a])))
    return [b for *_, b in sorted(bodies, key=lambda t: (t[0], t[1]))]


async def settled(w: World, prefix: str, n: int, sop_id: str | None = "node-health") -> None:
    """0 lost (a root per group, its diagnosis), 0 duplicated (no group twice, no key twice,
    no reply twice), the inbox empty of work."""
    pair = w.pair

    def mine() -> dict[str, int]:
        return {k: v for k, v in pair.roots_by_group().items() if f'group="{prefix}-' in k}

    try:
        await wait_until(f"a root per {prefix} group", lambda: len(mine()) == n, timeout_s=120)
    except BaseException:
        print(mine(), w.sent, pair.logs())  # shown with the failure
        raise
    roots = [p for p in pair.bot_posts() if not p.root_id
             and f'group="{prefix}-' in (p.props or {}).get("sopbot_alert_group", "")]
    if sop_id:
        await wait_until(f"every {prefix} thread's {sop_id} diagnosis",
                         lambda: all(pair.diagnoses(r.id, sop_id) for r in roots), timeout_s=120)
    await wait_until("the inbox drained", lambda: _drained(pair), timeout_s=120)
    assert set(mine().values()) == {1}, (mine(), pair.logs())
    assert len(roots) == n
    assert pair.duplicate_keys() == {}, pair.logs()
    assert pair.duplicate_replies() == {}, pair.logs()
    if sop_id:
        for r in roots:
            assert len(pair.diagnoses(r.id, sop_id)) == 1, [p.message[:200] for p in w.sb.mattermost.thread(r.id)]
    assert set(w.sent) >= {f"{prefix}-{g}" for g in range(n)}


async def _drained(pair: Pair) -> bool:
    states = await pair.inbox()
    assert states.get("failed", 0) == 0, states
    return states.get("pending", 0) == 0


@pytest.mark.parametrize("seed", [1, 2])
async def test_kill_9_of_a_replica_mid_stream(world: World, seed: int):
    rng = random.Random(seed)
    bodies = storm(f"kill{seed}", 6, rng)
    victim = world.pair.replicas[rng.randrange(2)]
    at = rng.randrange(2, len(bodies) - 2)  # after this many deliveries: some done, some in flight
    for i, body in enumerate(bodies):
        if i == at:
            victim.kill9()
        await deliver(world, rng, body)
    victim.start()  # Kubernetes restarts the pod
    await victim.ready()
    await settled(world, f"kill{seed}", 6)


async def test_mattermost_500s_then_a_429_storm(world: World):
    rng = random.Random(3)
    world.sb.mattermost.fail_next(20, status=500)
    world.sb.mattermost.fail_next(15, status=429)  # after the 500s: the faults apply in order
    for body in storm("mm", 5, rng):
        await deliver(world, rng, body)
    await wait_until("the injected faults spent", lambda: not world.sb.mattermost.faults, timeout_s=90)
    await settled(world, "mm", 5)


async def test_kubernetes_api_slower_than_the_timeout_then_503(world: World):
    rng = random.Random(4)
    world.sb.kube_faults.fail_next(2, status=None, delay_s=KUBE_TIMEOUT_S + 1)
    world.sb.kube_faults.fail_next(2, status=503)
    for body in storm("kube", 4, rng):
        await deliver(world, rng, body)
    await settled(world, "kube", 4)
    assert world.sb.kube_faults.pending == []  # every slow answer and 503 was met by the SOPs


async def test_a_vault_replica_that_accepts_tcp_and_never_answers(world: World):
    rng = random.Random(5)
    for body in storm("vault", 3, rng, name="VaultSealed", namespace="vault"):
        await deliver(world, rng, body)
    await settled(world, "vault", 3, sop_id="vault-status")
    roots = [p for p in world.pair.bot_posts() if not p.root_id
             and 'group="vault-' in (p.props or {}).get("sopbot_alert_group", "")]
    [diagnosis] = world.pair.diagnoses(roots[0].id, "vault-status")
    assert "vault-2" in diagnosis.message  # the hung replica is named, not waited on forever


async def test_a_read_only_store_answers_503_then_accepts_everything(world: World):
    rng = random.Random(6)
    admin = await asyncpg.connect(world.admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{world.db_name}" SET default_transaction_read_only = on')
        await _drop_connections(admin, world.db_name)  # new sessions take the setting
        bodies = storm("ro", 3, rng)
        for r in world.pair.replicas:
            # Alertmanager is told to retry, never 2xx-and-lose.
            assert await post_webhook(r.url, world.sb.alertmanager_token, bodies[0]) == 503
        sending = asyncio.create_task(_deliver_all(world, rng, bodies))
        await asyncio.sleep(2)
        assert not sending.done()  # nothing accepted while the store cannot commit
        await admin.execute(f'ALTER DATABASE "{world.db_name}" SET default_transaction_read_only = off')
        await _drop_connections(admin, world.db_name)
        await sending
    finally:
        await admin.execute(f'ALTER DATABASE "{world.db_name}" SET default_transaction_read_only = off')
        await admin.close()
    await settled(world, "ro", 3)


async def test_postgresql_connections_dropped_mid_transaction(world: World):
    rng = random.Random(7)
    admin = await asyncpg.connect(world.admin_url)
    try:
        dropped = [0]

        async def drop_now_and_then() -> None:
            while True:
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                dropped[0] += await _drop_connections(admin, world.db_name)
        dropping = asyncio.create_task(drop_now_and_then())
        try:
            for body in storm("pgdrop", 5, rng):
                await deliver(world, rng, body)
            await asyncio.sleep(2)
        finally:
            dropping.cancel()
            await asyncio.gather(dropping, return_exceptions=True)
    finally:
        await admin.close()
    assert dropped[0] > 0
    await settled(world, "pgdrop", 5)


async def _drop_connections(admin: asyncpg.Connection, db: str) -> int:
    """pg_terminate_backend of every session on the bot's database (a failover's effect)."""
    rows = await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = $1 AND pid <> pg_backend_pid()", db)
    return len(rows)


async def _deliver_all(w: World, rng: random.Random, bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        await deliver(w, rng, body, timeout_s=90)


# kill -9 at a chosen stage of one alert: the victim is held at that stage by a table lock taken
# from an operator's connection (its statement waits on it), killed there, then the lock goes.
STAGES = {
    "before-the-inbox-commit": "alert_inbox",  # the webhook's INSERT waits: no 2xx was given
    "after-the-inbox-commit": "alert_group_claims",  # 2xx given, processing not started
    "after-the-root-post-before-saving": "alert_groups",  # the root is in Mattermost, not in the store
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_kill_9_at_a_stage_of_an_alert(world: World, stage: str):
    rng = random.Random(8)
    victim, survivor = world.pair.replicas
    prefix = f"stage{list(STAGES).index(stage)}"
    [body] = storm(prefix, 1, rng)[:1]
    admin = await asyncpg.connect(world.pair.db_url)  # the bot's database, as its owner
    try:
        lock = admin.transaction()
        await lock.start()
        await admin.execute(f"LOCK TABLE {STAGES[stage]} IN EXCLUSIVE MODE")  # reads go on, writes wait
        sending = asyncio.create_task(post_webhook(victim.url, world.sb.alertmanager_token, body))
        await wait_until(f"the victim waiting {stage}", lambda: _waiting_on(admin, STAGES[stage]))
        if stage != "before-the-inbox-commit":
            assert await sending == 200
            world.sent[f"{prefix}-0"] = 1
        if stage == "after-the-root-post-before-saving":
            assert len([k for k in world.pair.roots_by_group() if f'"{prefix}-0"' in k]) == 1
        victim.kill9()
        if stage == "before-the-inbox-commit":
            assert await sending == 0  # no answer: Alertmanager retries, through the Service
        await lock.rollback()
        if stage == "before-the-inbox-commit":
            await deliver(world, rng, body)
    finally:
        await admin.close()
    victim.start()
    await victim.ready()
    await settled(world, prefix, 1)


async def _waiting_on(admin: asyncpg.Connection, table: str) -> bool:
    """A session waits for the table (parsing its statement already takes the table's lock)."""
    return bool(await admin.fetchval("SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass",
                                     table))
