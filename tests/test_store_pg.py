"""The PostgreSQL store (bot/store_pg.py) on a real server (tests/postgres.py): migrations once
across replicas starting together, one writer at a time across replicas (as SQLite's BEGIN
IMMEDIATE), the features' SQLite dialect translated, every feature's tables created, the
webhook inbox on both backends, the store.* settings and check-config's store line."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.alerts.inbox import Inbox
from bot.config import StoreConfig
from bot.store import check_store
from bot.store_pg import PgStore, ddl, placeholders, tls_option
from tests.postgres import new_database


@pytest.fixture
async def pg_url(postgres_server) -> str:
    return await new_database(postgres_server)


async def test_replicas_starting_together_run_each_migration_once(pg_url):
    replicas = await asyncio.gather(*(PgStore.open(pg_url, sslmode="disable") for _ in range(5)))
    # Without the lock, a second CREATE TABLE fails and the seed row is inserted twice.
    steps = ["CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)",
             "INSERT INTO jobs(name) VALUES ('seed')"]
    await asyncio.gather(*(r.migrate("jobs-1", steps) for r in replicas))
    await asyncio.gather(*(r.migrate("jobs-1", steps) for r in replicas))  # a restart: nothing
    store = replicas[0]
    assert [tuple(r) for r in await store.fetchall("SELECT name FROM jobs")] == [("seed",)]
    assert (await store.fetchone("SELECT COUNT(*) AS n FROM migrations WHERE name=?", ("jobs-1",)))["n"] == 1
    await asyncio.gather(*(r.close() for r in replicas))


async def test_one_writer_at_a_time_across_replicas_but_webhooks_do_not_wait(pg_url):
    a, b = PgStore.open(pg_url, sslmode="disable"), PgStore.open(pg_url, sslmode="disable")
    a, b = await asyncio.gather(a, b)
    await a.migrate("t-1", ["CREATE TABLE counter (k TEXT PRIMARY KEY, n INTEGER NOT NULL)",
                            "INSERT INTO counter VALUES ('x', 0)"])
    inbox = Inbox(b)
    await inbox.migrate()
    held, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def read_then_write(store: PgStore, name: str, wait: bool) -> None:
        async with store.transaction() as db:  # read-modify-write: lost updates without the lock
            n = (await (await db.execute("SELECT n FROM counter WHERE k='x'")).fetchone())["n"]
            if wait:
                held.set()
                await release.wait()
            await db.execute("UPDATE counter SET n=? WHERE k='x'", (n + 1,))
        order.append(name)

    first = asyncio.create_task(read_then_write(a, "a", True))
    await held.wait()
    second = asyncio.create_task(read_then_write(b, "b", False))
    await asyncio.wait_for(inbox.add('{"version": "4"}'), timeout=5)  # not behind replica a
    order.append("webhook")
    await asyncio.sleep(0.2)
    assert order == ["webhook"]  # replica b's transaction waits for a's
    release.set()
    await asyncio.gather(first, second)
    assert sorted(order) == ["a", "b", "webhook"]
    assert (await b.fetchone("SELECT n FROM counter WHERE k='x'"))["n"] == 2  # no lost update
    await a.close()
    await b.close()


async def test_the_sqlite_dialect_of_the_features_runs_on_postgresql(pg_url):
    store = await PgStore.open(pg_url, sslmode="disable")
    await store.migrate("d-1", [
        "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, "
        "n INTEGER NOT NULL DEFAULT 0, at REAL NOT NULL, data TEXT NOT NULL DEFAULT '{}')",
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, at REAL)",
    ])
    first = await store.execute("INSERT INTO items(key, at, data) VALUES (?, ?, ?)",
                                ("a?", 1.5, '{"severity": "critical", "storm": {"id": 7}}'))
    second = await store.execute("INSERT OR IGNORE INTO items(key, at) VALUES (?, ?)", ("b", 2.0))
    assert (first, second) == (1, 2)  # lastrowid: the identity column
    await store.execute("INSERT OR IGNORE INTO items(key, at) VALUES (?, ?)", ("b", 3.0))  # ignored
    await store.execute("INSERT OR REPLACE INTO kv(k, v, at) VALUES (?, ?, ?)", ("k", "1", 1.0))
    await store.execute("INSERT OR REPLACE INTO kv(k, v, at) VALUES (?, ?, ?)", ("k", "2", 2.0))
    assert [tuple(r) for r in await store.fetchall("SELECT k, v, at FROM kv")] == [("k", "2", 2.0)]
    async with store.transaction() as db:
        cur = await db.execute("UPDATE items SET n=MAX(n, ?) WHERE key != '?'", (5,))
        assert cur.rowcount == 2
    rows = await store.fetchall(
        "SELECT key, n, json_extract(data, '$.severity') AS severity, json_extract(data, '$.storm.id') AS storm "
        "FROM items WHERE at > ? ORDER BY id", (1.0,))
    assert [tuple(r) for r in rows] == [("a?", 5, "critical", "7"), ("b", 5, None, None)]
    assert (await store.fetchone("SELECT at FROM items WHERE key=?", ("b",)))[0] == 2.0
    await store.close()


def test_translation_keeps_question_marks_in_literals_and_makes_identity_keys():
    assert placeholders("SELECT '?' , x FROM t WHERE a=? AND b=\"?\" AND c=?") == \
        "SELECT '?' , x FROM t WHERE a=$1 AND b=\"?\" AND c=$2"
    assert ddl("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, n INTEGER, b BLOB)") == \
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION, n BIGINT, b BYTEA)"


async def test_every_feature_creates_its_tables_on_postgresql(pg_url):
    from bot.alerts.repo import GroupRepo
    from bot.approvals.procedure_repo import ProcedureRepo
    from bot.approvals.repo import ProposalRepo
    from bot.chat import outbox
    from bot.health import HealthStore

    store = await PgStore.open(pg_url, sslmode="disable")
    await Inbox(store).migrate()
    await GroupRepo(store).migrate()
    await ProposalRepo(store).migrate()
    await ProcedureRepo(store).migrate()
    await store.migrate(*outbox.MIGRATION)
    await HealthStore(store).setup()
    tables = {r["tablename"] for r in await store.fetchall(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert {"alert_inbox", "alert_groups", "alert_diagnoses", "alert_posts", "chat_outbox",
            "migrations", "store_probe"} <= tables
    await store.close()


async def test_the_webhook_inbox_on_both_backends(open_store):
    store = await open_store()
    inbox = Inbox(store)
    await inbox.migrate()
    ids = [await inbox.add(f'{{"n": {i}}}') for i in range(3)]
    assert ids == [1, 2, 3]
    await inbox.done(ids[0])
    assert await inbox.failed_attempt(ids[1], "chat down") is not None  # retried later
    assert [(e.id, e.attempts) for e in await inbox.pending()] == [(2, 1), (3, 0)]
    await inbox.give_up(ids[2], "unreadable")
    assert (await inbox.count("done"), await inbox.count("pending"), await inbox.count("failed")) == (1, 1, 1)
    assert await inbox.oldest_pending() is not None
    assert await inbox.prune(older_than_s=-60) == 1  # the done one; pending and failed stay
    assert [e.id for e in await inbox.pending()] == [2]
    assert await store.problem() is None
    await store.close()


async def test_a_scheduled_fire_is_claimed_once_whichever_replica_asks(open_store):
    from datetime import datetime, timezone

    from bot.health import HealthStore

    first, second = await open_store(), await open_store()  # two replicas, one store
    a, b = HealthStore(first), HealthStore(second)
    await asyncio.gather(a.setup(), b.setup())
    at = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)
    claims = await asyncio.gather(a.claim_fire("daily", at, "replica-a"), b.claim_fire("daily", at, "replica-b"))
    assert sorted(claims) == [False, True]
    assert await a.fired("daily", at) and await b.fired("daily", at)
    await first.close()
    await second.close()


def test_store_settings_refuse_a_password_in_the_url_and_tls_files_without_tls():
    with pytest.raises(ValidationError, match="no password in the URL"):
        StoreConfig(url="postgresql://sopbot:hunter2@db:5432/sopbot")
    with pytest.raises(ValidationError, match="expected postgresql://"):
        StoreConfig(url="mysql://db/sopbot")
    with pytest.raises(ValidationError, match="with certificates"):
        StoreConfig(url="postgresql://sopbot@db/sopbot", sslmode="disable", sslrootcert=Path("/ca.crt"))
    config = StoreConfig(url="postgres://sopbot@db-rw.sopbot:5432/sopbot", password="hunter2")
    assert config.sslmode == "verify-full" and config.password.get_secret_value() == "hunter2"
    assert StoreConfig().url is None  # SQLite stays the default


def test_tls_with_the_cluster_ca_verifies_the_chain_and_for_verify_full_the_name(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sopbot-db-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    full = tls_option("verify-full", ca, None, None)
    assert isinstance(full, ssl.SSLContext)
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname
    assert [c["subject"] for c in full.get_ca_certs()] == [((("commonName", "sopbot-db-ca"),),)]
    chain_only = tls_option("verify-ca", ca, None, None)
    assert chain_only.verify_mode == ssl.CERT_REQUIRED and not chain_only.check_hostname
    assert tls_option("require", None, None, None) == "require"  # asyncpg's own sslmode


async def test_check_config_connects_to_postgresql_and_names_what_fails(pg_url, postgres_server):
    assert await check_store(StoreConfig(url=pg_url, sslmode="disable")) is None
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_db?" + pg_url.split("?", 1)[1]
    problem = await check_store(StoreConfig(url=missing, sslmode="disable", password="s3cret-pw"))
    assert problem is not None and "(store.url)" in problem and "no_such_db" in problem
    assert "s3cret-pw" not in problem


async def test_check_config_on_sqlite_creates_nothing(tmp_path):
    path = tmp_path / "data" / "bot.db"
    assert await check_store(StoreConfig(path=path)) is None
    assert not path.exists()


async def test_claims_are_judged_by_the_database_clock_whatever_a_replicas_clock_says(pg_url, monkeypatch):
    """A replica's clock jumps an hour ahead (a bad NTP step): by its own clock every claim
    has lapsed and it would take the group another replica is applying. Leases are judged by
    the database server's clock, so it waits for the lease to lapse there."""
    import time

    from bot.alerts.inbox import GroupClaims

    store_a = await PgStore.open(pg_url, sslmode="disable")
    store_b = await PgStore.open(pg_url, sslmode="disable")
    try:
        a, b = GroupClaims(store_a, "replica-a", lease_s=1.0), GroupClaims(store_b, "replica-b", lease_s=1.0)
        await a.migrate()
        assert await a.take("{}:{alertname=\"X\"}")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        assert not await b.take("{}:{alertname=\"X\"}")  # live by the database's clock
        monkeypatch.undo()
        await asyncio.sleep(1.2)  # the lease lapses by the database's clock
        assert await b.take("{}:{alertname=\"X\"}")
    finally:
        await store_a.close()
        await store_b.close()
