"""The store on PostgreSQL (asyncpg), for replicas sharing one database (the team's CNPG):
the same methods as ``bot.store.Store``, and the features' SQL (written for SQLite) translated
on the way: ``?`` placeholders, ``INSERT OR IGNORE/REPLACE``, ``lastrowid``, the DDL's types.

Semantics kept from SQLite:
- a write transaction has the whole store to itself, as ``BEGIN IMMEDIATE`` gives it there: a
  transaction-level advisory lock, so the features' read-then-write transactions stay correct
  with several replicas (no serialization failures to retry);
- the urgent writes (a webhook's inbox insert) take no such lock and have connections of their
  own: the answer waits on its own commit only;
- migrations run once per name across replicas starting together: each runs under another
  advisory lock, and a replica that got the lock second finds the name recorded.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from bot.store import StoreError, WriteLock

# Advisory lock keys (one bigint namespace per database): arbitrary, fixed, documented.
WRITE_LOCK_KEY = 0x50_42_01  # "one writer at a time", as SQLite's BEGIN IMMEDIATE
MIGRATION_LOCK_KEY = 0x50_42_02  # migrations, across replicas starting together

# SQLSTATE classes meaning "this store cannot commit now" (for /readyz): insufficient resources
# (53: disk full, out of memory, too many connections), operator intervention (57: shutdown,
# read-only), system errors (58), connection exceptions (08), read-only transaction (25006).
_STORAGE_CLASSES = ("53", "57", "58", "08")


class PgCursor:
    """What a statement gave back, shaped as an sqlite3/aiosqlite cursor: ``lastrowid`` (the
    inserted row's ``id``), ``rowcount``, and the rows."""

    def __init__(self, rows: list[asyncpg.Record], rowcount: int, lastrowid: int | None):
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    async def fetchone(self) -> asyncpg.Record | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[asyncpg.Record]:
        return list(self.rows)


class PgConnection:
    """One connection as the features use aiosqlite's: ``await db.execute(sql, params)``."""

    def __init__(self, store: "PgStore", conn: asyncpg.Connection):
        self.store, self.conn = store, conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        return await self.store._run(self.conn, sql, params)

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        count = 0
        for params in seq:
            count += (await self.store._run(self.conn, sql, params)).rowcount
        return PgCursor([], count, None)


class PgStore:
    failure_window_s = 30.0
    shared = True  # replicas share it: work they could both do is claimed first (bot.claims)
    # No inbox file here: the urgent writes are plain transactions on connections of their own.
    writer = None

    def __init__(self, pool: asyncpg.Pool, urgent: asyncpg.Pool):
        self.pool, self.urgent = pool, urgent
        self._lock = WriteLock()  # in this process first: the advisory lock is across replicas
        self._tables: dict[str, tuple[list[str], bool]] = {}  # table → (primary key, has id)
        self._sql: dict[str, tuple[str, str | None]] = {}
        self._types: dict[str, list[str]] = {}  # statement → its parameters' types
        self._failure: tuple[float, str] | None = None
        self._queue: list[tuple[str, Sequence[Any], asyncio.Future[PgCursor]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, *, password: str | None = None, sslmode: str = "prefer",
                   sslrootcert: Path | None = None, sslcert: Path | None = None,
                   sslkey: Path | None = None, pool_size: int = 5,
                   timeout_s: float = 10.0) -> "PgStore":
        tls = tls_option(sslmode, sslrootcert, sslcert, sslkey)
        try:
            pool = await asyncpg.create_pool(url, password=password, ssl=tls, min_size=1,
                                             max_size=pool_size, timeout=timeout_s)
            try:
                urgent = await asyncpg.create_pool(url, password=password, ssl=tls, min_size=1,
                                                   max_size=1, timeout=timeout_s)
            except BaseException:
                await pool.close()
                raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ssl.SSLError) as exc:
            raise StoreError(f"cannot connect to the database {redact_url(url)} (store.url): "
                             f"{exc.__class__.__name__}: {exc}") from None
        store = cls(pool, urgent)
        await store._base_tables()
        return store

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.urgent.close()
        await self.pool.close()

    async def _base_tables(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                               "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            await conn.execute("CREATE TABLE IF NOT EXISTS store_probe (id BIGINT PRIMARY KEY, "
                               "at DOUBLE PRECISION)")

    # -- the Store interface ---------------------------------------------------------------
    async def migrate(self, name: str, statements: Iterable[str], urgent: bool = False) -> None:
        """Run a feature's DDL once, by name, whichever replica gets there first."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            if await conn.fetchval("SELECT 1 FROM migrations WHERE name=$1", name) is None:
                for sql in statements:
                    await conn.execute(ddl(sql))
                await conn.execute("INSERT INTO migrations(name) VALUES ($1)", name)
        self._tables.clear()  # the DDL may have changed what a table's key is
        self._sql.clear()
        self._types.clear()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        await self._lock.acquire()
        try:
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
                    yield PgConnection(self, conn)
                except BaseException as exc:
                    self._note(exc)
                    await _rollback(tx)
                    raise
                try:
                    await tx.commit()
                except BaseException as exc:
                    self._note(exc)
                    raise
        finally:
            self._lock.release()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.transaction() as db:
            return (await db.execute(sql, params)).lastrowid or 0

    async def execute_urgent(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A write someone waits on (a webhook's 2xx): its own connection, no store-wide lock;
        committed when this returns (PostgreSQL commits are durable: synchronous_commit)."""
        return (await self._urgent(sql, params)).lastrowid or 0

    async def execute_soon(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._urgent(sql, params)  # shares the urgent queue's commits anyway

    async def fetch_urgent(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        return (await self._urgent(sql, params)).rows

    async def run_urgent(self, fn: Callable[..., Any]) -> Any:
        raise NotImplementedError("run_urgent takes an sqlite3 connection: SQLite only")

    async def _urgent(self, sql: str, params: Sequence[Any]) -> PgCursor:
        """As SQLite's inbox writer: the urgent writes queued while a commit is in progress
        share the next one, in the order they came (one connection, one commit per batch)."""
        fut: asyncio.Future[PgCursor] = asyncio.get_running_loop().create_future()
        self._queue.append((sql, params, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_urgent(), name="store-urgent")
        return await fut

    async def _flush_urgent(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                async with self.urgent.acquire() as conn, conn.transaction():
                    results = [await self._run(conn, sql, params) for sql, params, _ in batch]
            except Exception as exc:  # a failing write fails its batch
                self._note(exc)
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (*_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)

    async def now(self) -> float:
        """The database server's clock: replicas judge claims' leases by one clock, so a replica
        whose own clock jumps (or drifts) neither takes a live claim nor keeps a lapsed one."""
        async with self.pool.acquire() as conn:
            return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await (await self._run(conn, sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return (await self._run(conn, sql, params)).rows

    async def problem(self) -> str | None:
        """None when the store can commit (for /readyz), else why not."""
        if self._failure and time.monotonic() - self._failure[0] < self.failure_window_s:
            return self._failure[1]
        try:
            await self.execute_urgent("INSERT OR REPLACE INTO store_probe(id, at) VALUES (1, ?)", (time.time(),))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            return f"the store cannot commit: {exc}"
        return None

    def _note(self, exc: BaseException) -> None:
        state = getattr(exc, "sqlstate", None) or ""
        if state[:2] in _STORAGE_CLASSES or state == "25006" or isinstance(
                exc, (OSError, asyncpg.InterfaceError, TimeoutError)):
            self._failure = (time.monotonic(), f"the store cannot commit: {exc}")

    # -- running SQLite-dialect statements -------------------------------------------------
    async def _run(self, conn: asyncpg.Connection, sql: str, params: Sequence[Any]) -> PgCursor:
        text, id_column = await self._translate(conn, sql)
        types = self._types.get(text)
        if types is None and params:  # what the server inferred, once per statement
            types = self._types[text] = [t.name for t in (await conn.prepare(text)).get_parameters()]
        args = [_coerce(value, t) for value, t in zip(params, types or ())]
        if not _returns_rows(text):
            return PgCursor([], _rowcount(await conn.execute(text, *args)), None)
        rows = await conn.fetch(text, *args)
        if id_column:  # RETURNING id added for lastrowid only
            return PgCursor([], len(rows), rows[0][id_column] if rows else None)
        return PgCursor(rows, len(rows), None)

    async def _translate(self, conn: asyncpg.Connection, sql: str) -> tuple[str, str | None]:
        if sql in self._sql:
            return self._sql[sql]
        text = placeholders(json_paths(sql))
        id_column = None
        insert = re.match(r"\s*INSERT\s+(?:OR\s+(IGNORE|REPLACE)\s+)?INTO\s+(\w+)\s*(\(([^)]*)\))?", text, re.I)
        if insert:
            how, table, cols = insert.group(1), insert.group(2), insert.group(4)
            key, has_id = await self._table(conn, table)
            text = re.sub(r"\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO", "INSERT INTO", text, count=1, flags=re.I)
            if how and how.upper() == "IGNORE":
                text = _before_returning(text, " ON CONFLICT DO NOTHING")
            elif how:  # REPLACE: the row with the same key is overwritten
                columns = [c.strip() for c in (cols or "").split(",") if c.strip()]
                rest = [c for c in columns if c not in key]
                action = ("DO UPDATE SET " + ", ".join(f"{c}=EXCLUDED.{c}" for c in rest)) if rest else "DO NOTHING"
                text = _before_returning(text, f" ON CONFLICT ({', '.join(key)}) {action}")
            if has_id and not _returns_rows(text):
                text, id_column = text + " RETURNING id", "id"
        text = re.sub(r"\bMAX\((\w+),\s*(\$\d+)\)", r"GREATEST(\1, \2)", text)
        self._sql[sql] = (text, id_column)
        return text, id_column

    async def _table(self, conn: asyncpg.Connection, table: str) -> tuple[list[str], bool]:
        if table not in self._tables:
            key = [r["attname"] for r in await conn.fetch(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
                table)]
            has_id = await conn.fetchval(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = $1 AND column_name = 'id'", table) is not None
            self._tables[table] = (key, has_id)
        return self._tables[table]


# -- translation, one statement at a time ----------------------------------------------------
def placeholders(sql: str) -> str:
    """``?`` → ``$1, $2…`` outside string literals and quoted names."""
    out, n, quote = [], 0, ""
    for ch in sql:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def json_paths(sql: str) -> str:
    """SQLite's ``json_extract(col, '$.a.b')`` → ``(col::jsonb #>> '{a,b}')`` (as text)."""
    return re.sub(r"json_extract\((\w+),\s*'\$\.([\w.]+)'\)",
                  lambda m: f"({m.group(1)}::jsonb #>> '{{{m.group(2).replace('.', ',')}}}')", sql)


def ddl(sql: str) -> str:
    """A feature's SQLite DDL in PostgreSQL's types: rowid keys become identity columns."""
    sql = re.sub(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                 sql, flags=re.I)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql, flags=re.I)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql, flags=re.I)
    sql = re.sub(r"\bBLOB\b", "BYTEA", sql, flags=re.I)
    return placeholders(sql)


def _returns_rows(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head in ("SELECT", "WITH", "VALUES", "SHOW") or bool(re.search(r"\bRETURNING\b", sql, re.I))


def _before_returning(sql: str, clause: str) -> str:
    m = re.search(r"\s+RETURNING\b", sql, re.I)
    return sql[:m.start()] + clause + sql[m.start():] if m else sql + clause


def _coerce(value: Any, pg_type: str) -> Any:
    """SQLite takes any value in any column; PostgreSQL's typed parameters do not: a value is
    converted to the type the server inferred when that loses nothing (an id compared with a
    JSON text, a whole float for a bigint, an int for a double)."""
    if value is None or isinstance(value, bool):
        return value
    if pg_type == "text" and isinstance(value, (int, float)):
        return str(value)
    if pg_type in ("int8", "int4", "int2") and isinstance(value, float) and value.is_integer():
        return int(value)
    if pg_type in ("float8", "float4", "numeric") and isinstance(value, int):
        return float(value)
    return value


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0




async def _rollback(tx: asyncpg.transaction.Transaction) -> None:
    try:
        await tx.rollback()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass  # the connection is gone: the server rolled back


def tls_option(sslmode: str, rootcert: Path | None, cert: Path | None, key: Path | None) -> Any:
    """asyncpg's ``ssl``: libpq's sslmode names, or a context when certificates are given
    (verify-ca / verify-full with the cluster's CA, as CNPG issues it; a client certificate)."""
    if rootcert is None and cert is None:
        return sslmode
    if sslmode in ("disable", "allow", "prefer"):
        raise ValueError(f"store.sslmode {sslmode!r} with certificates: use require, verify-ca or verify-full")
    context = ssl.create_default_context(cafile=str(rootcert) if rootcert else None)
    if sslmode in ("require", "verify-ca"):
        context.check_hostname = False  # verify-ca: the chain, not the name
    if sslmode == "require" and rootcert is None:
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def redact_url(url: str) -> str:
    """The URL without a password (one may have been given in it despite store.password)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
