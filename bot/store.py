"""Durable state in SQLite (aiosqlite). Each feature owns its tables and declares them with
``Store.migrate``; SQL stays plain so a PostgreSQL backend can implement the same methods.

Two files: the main database, and beside it a small one (``<name>-inbox<suffix>``) for the
tables whose writes someone is waiting on (the webhook inbox, ``Store.migrate(urgent=True)``).
A webhook's commit then never waits for a processing transaction, not even inside SQLite (one
writer per file): its answer costs one durable commit of its own file. The main connection
attaches the small file read-only, so every read sees both by plain table names."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiosqlite

if TYPE_CHECKING:
    from bot.config import StoreConfig
    from bot.store_pg import PgStore

# Primary result codes that mean "this store cannot commit" (not a bug in one statement):
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_STORAGE_FAILURES = {8, 10, 11, 13, 14, 26}


class StoreError(Exception):
    """The store cannot be opened; the message is one line for the operator."""


class WriteLock:
    """One writer at a time, and a writer someone is waiting on (``urgent``: a webhook's 2xx)
    goes ahead of the queued background transactions instead of behind all of them."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool = False) -> None:
        if not self._held:
            self._held = True
            return
        fut = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed the lock as it was cancelled
                self.release()
            elif fut in queue:
                queue.remove(fut)
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock passes on, still held
                    return
        self._held = False


class Store:
    # A file of one process's: replicas need PostgreSQL (bot.store_pg), where the claims on
    # shared work (alert groups, the chat outbox) come into play.
    shared = False
    # Not ready for this long after a commit failed for want of storage: with a full disk, a
    # tiny probe write can still succeed while every webhook's insert fails.
    failure_window_s = 30.0

    def __init__(self, db: aiosqlite.Connection, writer: "UrgentWriter | None" = None):
        self.db = db
        # The urgent writes' thread and connection, to the inbox file (``db`` attaches it
        # read-only); None for ":memory:", where they go to ``db``, ahead in its lock's queue.
        self.writer = writer
        if writer is not None:
            writer.on_error = self._note
        # One writer at a time on ``db``: a transaction spans several awaits.
        self._lock = WriteLock()
        self._failure: tuple[float, str] | None = None  # (monotonic time, reason) of the last one

    @classmethod
    async def open(cls, path: Path | str) -> "Store":
        memory = str(path) == ":memory:"
        opened: list[aiosqlite.Connection] = []
        writer: UrgentWriter | None = None
        try:
            if not memory:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            main = await _connect(path, opened)
            if not memory:
                writer = await UrgentWriter.open(inbox_path(path))
                # Read-only: a BEGIN IMMEDIATE on ``main`` then takes no write lock on the inbox
                # file (SQLite starts only a read transaction on a read-only attached database).
                await main.execute("ATTACH DATABASE ? AS inbox", (f"file:{quote(str(inbox_path(path)))}?mode=ro",))
            await _tables(main)
        except (OSError, sqlite3.Error) as exc:
            for db in opened:  # their threads would keep the process alive after the error
                await db.close()
            if writer is not None:
                await writer.close()
            raise StoreError(_cannot_open(path, exc)) from None
        return cls(main, writer)

    @property
    def connections(self) -> tuple[aiosqlite.Connection, ...]:
        return (self.db,)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        await self.db.close()

    async def migrate(self, name: str, statements: Iterable[str], urgent: bool = False) -> None:
        """Run a feature's DDL once, by name; ``urgent``: in the inbox file (tables whose writes
        go through ``execute_urgent``)."""
        if urgent:
            statements = list(statements)

            def run(db: sqlite3.Connection) -> None:
                if db.execute("SELECT 1 FROM migrations WHERE name=?", (name,)).fetchone() is None:
                    for sql in statements:
                        db.execute(sql)
                    db.execute("INSERT INTO migrations(name) VALUES (?)", (name,))
            await self.run_urgent(run)
            return
        async with self.transaction():
            row = await (await self.db.execute("SELECT 1 FROM migrations WHERE name=?", (name,))).fetchone()
            if row is None:
                for sql in statements:
                    await self.db.execute(sql)
                await self.db.execute("INSERT INTO migrations(name) VALUES (?)", (name,))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._lock.acquire()
        try:
            await self._begin()
            try:
                yield self.db
                await self.db.execute("COMMIT")
            except BaseException as exc:
                self._note(exc)
                try:
                    if self.db.in_transaction:  # a failed COMMIT may have rolled back already
                        await self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # a cancelled COMMIT still ran in aiosqlite's thread: nothing to undo
                raise  # the first exception: a cancellation must stay one
        finally:
            self._lock.release()

    async def _begin(self, tries: int = 50) -> None:
        """BEGIN IMMEDIATE. SQLite answers "database is locked" at once, without its busy
        timeout, where waiting could deadlock (another connection to the file, e.g. a second
        replica starting on it, holds or recovers its log): try again for up to ~5 s."""
        for attempt in range(tries):
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == tries - 1:
                    raise
                await asyncio.sleep(0.1)

    def _note(self, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.Error) and (exc.sqlite_errorcode or 0) & 0xFF in _STORAGE_FAILURES:
            self._failure = (time.monotonic(), f"the store cannot commit: {exc}")

    async def problem(self) -> str | None:
        """None when the store can commit (for /readyz), else why not: a storage failure of the
        last ``failure_window_s``, or a probe write failing now."""
        if self._failure and time.monotonic() - self._failure[0] < self.failure_window_s:
            return self._failure[1]
        try:
            async with self.transaction() as db:
                await db.execute("INSERT OR REPLACE INTO store_probe(id, at) VALUES (1, ?)", (time.time(),))
            if self.writer is not None:  # the inbox file too: the webhooks' commits go there
                await self.execute_urgent("INSERT OR REPLACE INTO store_probe(id, at) VALUES (1, ?)",
                                          (time.time(),))
        except sqlite3.Error as exc:
            return f"the store cannot commit: {exc}"
        return None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write in its own transaction; returns lastrowid."""
        async with self.transaction() as db:
            cur = await db.execute(sql, params)
            return cur.lastrowid or 0

    async def execute_urgent(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write someone is waiting on (a webhook's 2xx), to a table of the inbox file,
        durable when this returns; returns lastrowid."""
        return await self.run_urgent(lambda db: db.execute(sql, params).lastrowid or 0)

    async def execute_soon(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A write to the inbox file nobody answers on (an entry marked done): committed when
        this returns, but sharing a webhook's commit when one comes within ``lazy_delay_s``."""
        if self.writer is not None:
            await self.writer.submit(lambda db: db.execute(sql, params), lazy=True)
        else:
            await self.execute_urgent(sql, params)

    async def fetch_urgent(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """An urgent write with ``RETURNING``: its rows, once committed."""
        return await self.run_urgent(lambda db: db.execute(sql, params).fetchall())

    async def run_urgent(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(connection)`` in a transaction of the inbox file (``UrgentWriter``); its
        result once committed. A failing write fails its whole batch."""
        if self.writer is not None:
            return await self.writer.submit(fn)
        await self._lock.acquire(urgent=True)
        try:
            # aiosqlite's own queue to its thread: the transaction runs there as one call.
            return (await self.db._execute(_commit_batch, self.db._conn, [fn]))[0]
        except Exception as exc:
            self._note(exc)
            raise
        finally:
            self._lock.release()

    async def now(self) -> float:
        """The time leases are judged by (claims): here this process's clock, one replica's."""
        return time.time()

    # Cursors closed at once: an open statement pins its connection to an old snapshot, and
    # that connection's next BEGIN IMMEDIATE, after the other one committed, would be "locked".
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())


class UrgentWriter:
    """The inbox file's connection in a thread of its own. What is submitted while a commit is
    in progress shares the next one (group commit: one fsync for all), and the thread settles
    the waiting futures itself: an answer needs the event loop once after its commit, however
    busy the loop is with the processing.

    WAL checkpoints (copying the log into the file, an fsync of its own) happen on another
    connection and thread, every ``checkpoint_every_s`` after commits: inline, SQLite would run
    one inside whichever commit crossed 1000 pages of log, i.e. inside a webhook's answer."""

    checkpoint_every_s = 1.0
    # How long a write nobody is waiting on urgently (``lazy``: an entry marked done) waits for
    # an urgent one to share its commit, before it is committed on its own.
    lazy_delay_s = 0.05

    def __init__(self, conn: sqlite3.Connection, checkpointer: sqlite3.Connection | None = None):
        self.conn = conn
        self.checkpointer = checkpointer
        self.on_error: Callable[[BaseException], None] = lambda exc: None
        self._ops: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._lazy: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._committed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-urgent", daemon=True)
        self._thread.start()
        self._checkpoints = threading.Thread(target=self._checkpoint, name="store-checkpoint", daemon=True)
        if checkpointer is not None:
            self._checkpoints.start()

    @classmethod
    async def open(cls, path: Path) -> "UrgentWriter":
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            try:
                conn.row_factory = sqlite3.Row
                for pragma in _PRAGMAS:
                    conn.execute(pragma)
                for sql in _TABLES:
                    conn.execute(sql)
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer does it
            except BaseException:
                conn.close()
                raise
            return conn
        conn = await asyncio.to_thread(connect)
        try:
            checkpointer = await asyncio.to_thread(
                sqlite3.connect, str(path), isolation_level=None, check_same_thread=False)
        except BaseException:
            conn.close()
            raise
        return cls(conn, checkpointer)

    def _checkpoint(self) -> None:
        assert self.checkpointer is not None
        while not self._stop.is_set():
            if not self._committed.wait(timeout=self.checkpoint_every_s) or self._stop.is_set():
                continue
            self._committed.clear()
            try:  # PASSIVE: as far as readers allow, never blocking the writer
                self.checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # the next round tries again; the log only grows meanwhile
            self._stop.wait(self.checkpoint_every_s)

    def submit(self, fn: Callable[[sqlite3.Connection], Any], lazy: bool = False) -> asyncio.Future[Any]:
        """``lazy``: rides with the next urgent commit, or goes after ``lazy_delay_s``: fewer
        commits of its own for a webhook to queue behind."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closing:
                raise sqlite3.ProgrammingError("the store is closed")
            (self._lazy if lazy else self._ops).append((fn, fut))
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                lazy_since = time.monotonic()
                while not self._ops and not self._closing:
                    if not self._lazy:
                        self._cond.wait()
                        lazy_since = time.monotonic()
                        continue
                    left = lazy_since + self.lazy_delay_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._ops and not self._lazy:
                    return  # closing, nothing left
                batch, self._ops, self._lazy = self._lazy + self._ops, [], []
            try:
                results, error = _commit_batch(self.conn, [fn for fn, _ in batch]), None
                self._committed.set()
            except Exception as exc:
                results, error = [], exc
            loop = batch[0][1].get_loop()
            try:
                loop.call_soon_threadsafe(self._settle, batch, results, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _settle(self, batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any],
                error: BaseException | None) -> None:
        if error is not None:
            self.on_error(error)
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])

    async def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.to_thread(self._thread.join)  # what was submitted is committed first
        if self.checkpointer is not None:
            self._stop.set()
            self._committed.set()
            if self._checkpoints.is_alive():
                await asyncio.to_thread(self._checkpoints.join)
            self.checkpointer.close()
        self.conn.close()  # the last connection: SQLite checkpoints the rest and removes the log


async def open_store(config: "StoreConfig") -> "Store | PgStore":
    """The configured store: PostgreSQL when ``store.url`` is set, else SQLite at ``store.path``."""
    if config.url:
        from bot.store_pg import PgStore  # asyncpg only for those who use it

        return await PgStore.open(
            config.url, password=config.password.get_secret_value() if config.password else None,
            sslmode=config.sslmode, sslrootcert=config.sslrootcert, sslcert=config.sslcert,
            sslkey=config.sslkey, pool_size=config.pool_size)
    return await Store.open(config.path)


async def check_store(config: "StoreConfig") -> str | None:
    """For ``sopbot check-config``: None when the configured store can be used, else why not.
    PostgreSQL: connect (TLS as configured) and commit a probe row. SQLite: nothing is created,
    an existing file is read, a new one's directory must be writable."""
    if config.url:
        try:
            store = await open_store(config)
        except (StoreError, ValueError, OSError) as exc:
            return str(exc)
        try:
            return await store.problem()
        finally:
            await store.close()
    path = Path(config.path)
    if path.exists():
        try:
            with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            return f"{path} (store.path): {exc}"
        return None
    where = next((p for p in path.absolute().parents if p.exists()), None)
    if where is None or not os.access(where, os.W_OK):
        return f"{path} (store.path) does not exist and {where} is not writable"
    return None


def inbox_path(path: Path | str) -> Path:
    """The inbox file beside the main database: ``sopbot.db`` → ``sopbot-inbox.db``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-inbox{path.suffix}")


# FULL: a webhook acknowledged with 2xx must survive a crash (nothing lost).
_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000")
_TABLES = ("CREATE TABLE IF NOT EXISTS main.migrations (name TEXT PRIMARY KEY)",
           "CREATE TABLE IF NOT EXISTS main.store_probe (id INTEGER PRIMARY KEY, at REAL)")


async def _connect(path: Path | str, opened: list[aiosqlite.Connection]) -> aiosqlite.Connection:
    db = await aiosqlite.connect(str(path), isolation_level=None)
    opened.append(db)
    db.row_factory = aiosqlite.Row
    for pragma in _PRAGMAS:
        await db.execute(pragma)
    return db


async def _tables(db: aiosqlite.Connection) -> None:
    for sql in _TABLES:
        await db.execute(sql)


def _commit_batch(db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
    """In the writer's thread: one transaction, one commit, for the whole batch."""
    db.execute("BEGIN IMMEDIATE")
    try:
        results = [fn(db) for fn in fns]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT may have rolled back already
            db.execute("ROLLBACK")
        raise
    return results


def _cannot_open(path: Path | str, exc: BaseException) -> str:
    where = Path(path).parent
    hint = ("; its directory is not writable (read-only filesystem?): SQLite writes the database "
            "and its -wal/-shm files there" if where.exists() and not os.access(where, os.W_OK) else "")
    return f"cannot open the database {path} (store.path): {exc}{hint}"
