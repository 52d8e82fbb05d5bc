"""One write transaction, one call: `Writer.run(work)` runs the synchronous `work(conn)` (a sync
SQLAlchemy `Connection`) inside one write transaction and returns its result.

Why synchronous bodies: through the async engine, every statement of a transaction costs several
hops between the event loop and aiosqlite's thread (cursor, execute, fetch, close), each a queue
put plus a loop wake-up, while the transaction holds SQLite's single write lock. Under 16
concurrent pushes the writers queued behind each other for ~100 ms per LinkBlob. Here:

- SQLite file (`SqliteThreadWriter`): one dedicated thread owns one pysqlite connection and runs
  each whole transaction (BEGIN IMMEDIATE, statements, COMMIT) in ONE hop; transactions queued
  meanwhile run back to back on that thread without waiting for the event loop. Every writer of
  the process shares this thread (the store's and the collector's), so they never spin in
  busy_timeout against each other; other processes are still serialised by BEGIN IMMEDIATE +
  busy_timeout. The connection has the engine's pragmas (WAL, foreign_keys, busy_timeout,
  synchronous=FULL by default: a COMMIT returns once the WAL is fsynced).

  Group commit: the transactions queued while the previous COMMIT waited for the disk run
  together, each inside a SAVEPOINT of ONE transaction, and share its COMMIT (one WAL fsync for
  the group instead of one each). A transaction whose `work` raises is rolled back to its
  savepoint and gets its error; the others are unaffected. If the group's transaction fails as
  a whole (its COMMIT, or an error after which SQLite rolled everything back), nobody has been
  answered yet, and each transaction of the group runs again alone: `work` must be re-runnable,
  which the callers' retries already require (writes are idempotent).

  `run(work, durable=False)` is for a transaction nobody is answered on the strength of (a
  reservation a later transaction completes, such as LinkBlob's `pending` blob row): a group of
  only such transactions commits with synchronous=NORMAL, skipping the WAL fsync. That loses
  nothing: the transaction that does answer someone commits with FULL later, and its fsync of
  the WAL makes every frame written before it durable too.
- PostgreSQL and in-memory SQLite (`EngineWriter`): `AsyncConnection.run_sync` on the `writes`
  engine (SQLAlchemy's greenlet bridge: one transaction, each statement one driver round trip);
  on SQLite also behind an asyncio lock, one writer at a time.

Contract: `work` runs in one transaction that commits when it returns and rolls back when it
raises; its exception (RegistryError, or the driver's error wrapped by SQLAlchemy) reaches the
caller unchanged, so callers keep their own retry and translation. ContextVars of the caller are
visible inside `work` (event notifications read the request context). A caller cancelled while
its transaction runs on the thread does not stop it: it commits or rolls back as a whole
(writes are idempotent, so the client's retry converges). `close()` waits for queued work and
closes the connection; a later `run` opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("lading.metadata.store")

T = TypeVar("T")
# A queued transaction: the work, the caller's context, its loop, the future it awaits, and
# whether its commit must be durable before it is answered.
_Job = tuple[
    Callable[[Connection], Any], contextvars.Context, asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool
]
# Transactions run per wake-up of the writer thread at most (then the loop hears of them).
_BATCH = 64
_BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
# One job of a group at a time, so one savepoint name serves them all.
_SAVEPOINT = "SAVEPOINT lading_job"
_RELEASE_SAVEPOINT = "RELEASE SAVEPOINT lading_job"
_ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT lading_job"


class Writer(Protocol):
    @property
    def engine(self) -> Engine:
        """The synchronous engine whose connections run the transactions (for event hooks)."""
        ...

    async def run(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        """Runs `work(conn)` in one write transaction (see the module docstring). `durable`
        False: nobody is answered on the strength of this commit alone, so it need not wait for
        the disk (a later durable commit makes it durable too)."""
        ...

    async def close(self) -> None:
        """Releases the writer's connection. Idempotent."""
        ...


class EngineWriter:
    """Write transactions on the async `writes` engine through `run_sync` (PostgreSQL; SQLite
    databases without a file, which the writer thread cannot share)."""

    def __init__(self, writes: AsyncEngine, *, serialize: bool) -> None:
        self._writes = writes
        self._lock: Any = asyncio.Lock() if serialize else contextlib.nullcontext()

    @property
    def engine(self) -> Engine:
        return self._writes.sync_engine

    async def run(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        # PostgreSQL: every commit is as durable as the server's synchronous_commit makes it.
        async with self._lock, self._writes.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        return None


class SqliteThreadWriter:
    """Write transactions on one thread with its own pysqlite connection (see the module docstring).

    `engine` is a synchronous engine over the same file with the driver's own BEGIN handling
    off (engine.py builds it); each transaction opens with BEGIN IMMEDIATE sent here, on the
    driver connection. Its connection is opened on the writer thread at first use. The
    thread takes every transaction queued so far (up to `_BATCH`), runs them as one group (each
    in a savepoint of one transaction, one COMMIT: see the module docstring), and hands their
    results back to the event loop in ONE callback: one loop wake-up per batch instead of one
    per transaction.
    """

    def __init__(self, engine: Engine, *, durable_commits: bool = True) -> None:
        self._engine = engine
        # False: the operator traded durability away (every commit is synchronous=NORMAL).
        self._durable_commits = durable_commits
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        # Only touched on the writer thread: the connection, and the synchronous level it is
        # set to (None: as it was opened, `durable_commits`' level).
        self._conn: Connection | None = None
        self._synchronous: str | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._started().put((work, contextvars.copy_context(), loop, future, durable))
        return await future

    def _started(self) -> queue.SimpleQueue[_Job | None]:
        if self._jobs is None or self._thread is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="lading-sqlite-write",
                                            daemon=True)
            self._thread.start()
        return self._jobs

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        stopping = False
        while not stopping:
            first = jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            # A job whose caller is gone before it started has nothing to undo: skipped.
            live = [job for job in batch if not job[3].cancelled()]
            results = self._group(live) if len(live) > 1 else [self._alone(job) for job in live]
            settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            for (_, _, loop, future, _), outcome in zip(live, results, strict=True):
                settled.setdefault(loop, []).append((future, *outcome))
            for loop, outcomes in settled.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)
        self._close_connection()

    def _alone(self, job: _Job) -> tuple[bool, Any]:
        """(True, result) or (False, error) of one job in a transaction of its own."""
        work, context, _, _, durable = job
        try:
            return True, context.run(self._transaction, work, durable)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            return False, error

    def _group(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        """Group commit (see the module docstring): every job in a savepoint of one transaction,
        one COMMIT; each job alone again if that transaction fails as a whole."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn = self._connection(durable=any(job[4] for job in jobs))
            with conn.begin():
                _begin_immediate(conn)
                # The savepoints go to the driver as plain SQL: through `begin_nested` each one
                # was two statements SQLAlchemy compiled anew every time (SAVEPOINT/RELEASE have
                # no cache key), a fifth of the writer thread's CPU under a push load. The
                # statements and their effect are the same.
                dbapi = conn.connection.dbapi_connection
                for work, context, _, _, _ in jobs:
                    dbapi.execute(_SAVEPOINT)
                    try:
                        value = context.run(work, conn)
                    except BaseException as error:  # noqa: BLE001 - this job's answer
                        dbapi.execute(_ROLLBACK_TO_SAVEPOINT)
                        dbapi.execute(_RELEASE_SAVEPOINT)
                        outcomes.append((False, error))
                    else:
                        dbapi.execute(_RELEASE_SAVEPOINT)
                        outcomes.append((True, value))
        except BaseException as error:  # noqa: BLE001 - nothing of the group was committed
            self._recover(error)
            log.debug("group of %d write transactions failed as a whole (%s); running each alone",
                      len(jobs), error)
            return [self._alone(job) for job in jobs]
        return outcomes

    def _connection(self, *, durable: bool) -> Connection:
        """The connection, set to commit the next transaction durably or not (see `run`)."""
        conn = self._conn
        if conn is None or conn.invalidated or conn.closed:
            if conn is not None:
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    conn.close()
            conn = self._conn = self._engine.connect()
            self._synchronous = None
        if self._durable_commits:
            wanted = "FULL" if durable else "NORMAL"
            if (self._synchronous or "FULL") != wanted:
                # On the driver's connection, outside any transaction (SQLAlchemy would BEGIN
                # first); SQLite reads the level at each COMMIT.
                conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
        return conn

    def _recover(self, error: BaseException) -> None:
        """After a failed transaction, the next one starts on a connection without an open
        transaction: a failed COMMIT (SQLITE_BUSY, an I/O error) can leave one open, and then
        every BEGIN would fail. A connection that cannot be cleaned is dropped (the next
        transaction reconnects)."""
        conn = self._conn
        if conn is None:
            return
        if (isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated) or conn.invalidated or conn.closed:
            self._conn = None
            return
        try:
            dbapi = conn.connection.dbapi_connection
            if dbapi is not None and dbapi.in_transaction:
                dbapi.rollback()
        except Exception:  # noqa: BLE001 - unusable: start afresh
            with contextlib.suppress(Exception):
                conn.invalidate()
            self._conn = None

    def _transaction(self, work: Callable[[Connection], T], durable: bool = True) -> T:
        conn = self._connection(durable=durable)
        try:
            with conn.begin():
                _begin_immediate(conn)
                return work(conn)
        except BaseException as error:
            self._recover(error)
            raise

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                conn.close()

    async def close(self) -> None:
        jobs, thread = self._jobs, self._thread
        self._jobs = self._thread = None
        if jobs is None or thread is None:
            return
        jobs.put(None)  # after the queued work
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._engine.dispose()


def _begin_immediate(conn: Connection) -> None:
    """Takes SQLite's write lock up front (see engine.py), inside SQLAlchemy's `begin`: its
    rollback and commit then end this transaction. A failure (the lock still busy after
    busy_timeout) is wrapped as SQLAlchemy wraps driver errors, so callers retry and translate
    it as before."""
    try:
        conn.connection.dbapi_connection.execute(_BEGIN_IMMEDIATE)
    except sqlite3.Error as error:
        raise sa_exc.DBAPIError.instance(_BEGIN_IMMEDIATE, None, error, sqlite3.Error) from error


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue  # cancelled meanwhile
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
