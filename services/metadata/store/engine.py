"""Database engines for the metadata store: SQLite (aiosqlite) or PostgreSQL (asyncpg), from a URL.

`open_database(settings)` returns a `Database` with three views of one connection pool:
- `engine`: the plain engine (migrations use `writes`, tests may use this);
- `reads`: for single-statement reads. PostgreSQL runs them in AUTOCOMMIT (no BEGIN/ROLLBACK
  round trips); SQLite runs them without an explicit BEGIN (the statement is its own snapshot).
  With `read_replica_url` set, `reads` is the same view over a second pool on the replica
  (`replica`), and only `reads` goes there: writes, and the reads inside write transactions,
  stay on the primary;
- `writes`: for read-modify-write transactions. On SQLite these start with `BEGIN IMMEDIATE`, so a
  writer takes the write lock up front and waits (busy_timeout) instead of failing with
  SQLITE_BUSY when it would upgrade a read lock; PostgreSQL uses READ COMMITTED and relies on
  unique constraints with ON CONFLICT.

SQLite connections get WAL, `foreign_keys=ON` (the schema's ON DELETE CASCADE needs it), a busy
timeout of `statement_timeout_seconds`, and `synchronous=FULL` (`sqlite_durable_commits`, the
default): every COMMIT fsyncs the WAL before it returns, so an acknowledged write survives an OS
crash or a power cut, not only a crash of the process (NORMAL syncs the WAL only at checkpoints
and loses the last commits then). The writer thread groups concurrent transactions into one
COMMIT (writes.py), so concurrent writers share that fsync. The pysqlite driver's own BEGIN handling is switched off
(`isolation_level = None`) and the engine's `begin` event emits ours, as SQLAlchemy's SQLite docs
recommend ("Enabling Non-Legacy SQLite Transactional Modes"). PostgreSQL connections get the
`statement_timeout` server setting; the pool uses `pool_size`/`max_overflow` and waits at most
`statement_timeout_seconds` for a free connection.

`writer` runs whole write transactions as one synchronous function (writes.py): on a SQLite file,
on one dedicated thread with its own pysqlite connection (same pragmas, BEGIN IMMEDIATE);
otherwise through `run_sync` on `writes`.

Which of these a statement takes is decided in one place, `access` (access.py): stores declare
each read's kind (or hand the writer a transaction body) and never pick a view themselves.

URL conveniences: `sqlite:///path` becomes `sqlite+aiosqlite:///path`, and `postgresql://...` or
`postgres://...` becomes `postgresql+asyncpg://...`. The SQLite file's folder is created if missing
(0700, durably) and the file itself is created 0600 (its -wal and -shm take its mode), or set to
0600 when an older version made it readable by others (services/common/private_files.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.common.private_files import make_private_file, make_private_folder
from services.common.settings import MetadataSettings
from services.metadata.store.access import Access
from services.metadata.store.writes import EngineWriter, SqliteThreadWriter, Writer

# Execution option read by the SQLite `begin` hook: the statement that opens a transaction, or None.
_SQLITE_BEGIN = "lading_sqlite_begin"
# Seconds to wait for a new PostgreSQL connection before reporting the database unavailable.
_CONNECT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Database:
    """One connection pool and the read/write views over it (see the module docstring)."""

    engine: AsyncEngine
    reads: AsyncEngine
    writes: AsyncEngine
    # Whole write transactions in one call (writes.py); always the primary's.
    writer: Writer
    # The read replica's engine when `read_replica_url` is set (then `reads` is a view of it).
    replica: AsyncEngine | None = None
    # The one place that decides which of the views above (or the writer, or the one-hop sqlite3
    # readers) a statement takes (access.py). Stores go through it, not through the views.
    access: Access = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "access", Access(self))

    @property
    def write_engine(self) -> Engine:
        """The synchronous engine the write transactions run on (`writer`): hook SQLAlchemy
        events of writes here (on SQLite files it is not `engine`'s)."""
        return self.writer.engine

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    async def dispose(self) -> None:
        """Closes every pooled connection (the replica's, the writer's and the sqlite3 readers'
        too). Idempotent."""
        await self.access.close()
        await self.writer.close()
        await self.engine.dispose()
        if self.replica is not None:
            await self.replica.dispose()


def normalize_url(database_url: str) -> URL:
    """Parses `database_url` and picks the async driver for its dialect; refuses other databases."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"unsupported metadata database URL scheme {url.drivername!r}: use sqlite+aiosqlite:///path/to/file.db "
        "or postgresql+asyncpg://user@host/db"
    )


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL; None for in-memory and `file:` URLs (and other databases)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _open_sqlite(url: URL, settings: MetadataSettings) -> Database:
    path = sqlite_file(url)
    if path is not None:
        make_private_folder(path.parent, tighten=False)
        make_private_file(path, companions=("-wal", "-shm", "-journal"))
    busy_ms = int(settings.statement_timeout_seconds * 1000)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": settings.statement_timeout_seconds}}
    if path is not None:
        kwargs.update(pool_size=settings.pool_size, max_overflow=settings.max_overflow,
                      pool_timeout=settings.statement_timeout_seconds)
    engine = create_async_engine(url, **kwargs)
    synchronous = "FULL" if settings.sqlite_durable_commits else "NORMAL"
    _sqlite_hooks(engine.sync_engine, busy_ms, synchronous)
    writes = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
    writer: Writer
    if path is not None:
        # The writer thread's own connection: same file, same pragmas, the sync driver.
        sync_engine = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0,
                                    connect_args={"timeout": settings.statement_timeout_seconds,
                                                  "check_same_thread": False})
        # Pragmas only: the writer emits its BEGIN IMMEDIATE itself. A `begin` listener would
        # make SQLAlchemy dispatch its connection events around every statement of the writer.
        _sqlite_pragmas(sync_engine, busy_ms, synchronous)
        writer = SqliteThreadWriter(sync_engine, durable_commits=settings.sqlite_durable_commits)
    else:
        writer = EngineWriter(writes, serialize=True)
    return Database(
        engine=engine,
        reads=engine.execution_options(**{_SQLITE_BEGIN: None}),
        writes=writes,
        writer=writer,
    )


def _sqlite_hooks(sync_engine: Any, busy_ms: int, synchronous: str) -> None:
    """The pragmas of every SQLite connection, and our BEGIN instead of the driver's."""
    _sqlite_pragmas(sync_engine, busy_ms, synchronous)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        statement = connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN")
        if statement:
            connection.exec_driver_sql(statement)


def _sqlite_pragmas(sync_engine: Any, busy_ms: int, synchronous: str) -> None:
    """The pragmas of every SQLite connection (a pool event: statements pay nothing for it)."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver; `_on_begin` emits the right one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # FULL: a commit returns once the WAL is on the disk (see the module docstring);
            # NORMAL only when the operator traded that away (sqlite_durable_commits=false).
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()


def _open_postgresql(url: URL, settings: MetadataSettings) -> Database:
    timeout_ms = int(settings.statement_timeout_seconds * 1000)
    engine = create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.statement_timeout_seconds,
        # Connections that died with the server are dropped on first failure (the pool is
        # invalidated); reads are retried by the gateway's channel on UNAVAILABLE. We skip
        # pool_pre_ping: it would double the round trips of every hot read.
        pool_recycle=1800,
        connect_args={
            "timeout": min(_CONNECT_TIMEOUT_SECONDS, settings.statement_timeout_seconds),
            "command_timeout": settings.statement_timeout_seconds + 5,
            "server_settings": {
                "statement_timeout": str(timeout_ms),
                "application_name": "lading-metadata",
            },
        },
    )
    return Database(
        engine=engine,
        reads=engine.execution_options(isolation_level="AUTOCOMMIT"),
        writes=engine,
        writer=EngineWriter(engine, serialize=False),
    )


def _open(database_url: str, settings: MetadataSettings) -> Database:
    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _open_sqlite(url, settings)
    return _open_postgresql(url, settings)


def open_database(settings: MetadataSettings) -> Database:
    """Builds the engine for `settings.database_url`, and one for `settings.read_replica_url`
    when set (no connection is made until first use).

    Raises ValueError for an unsupported URL scheme, or a replica of another dialect than the
    primary (the statements are compiled for one).
    """
    primary = _open(settings.database_url, settings)
    if not settings.read_replica_url:
        return primary
    replica = _open(settings.read_replica_url, settings)
    if replica.dialect != primary.dialect:
        raise ValueError(
            f"the read replica is {replica.dialect} but the primary is {primary.dialect}; "
            "LADING_METADATA__READ_REPLICA_URL must point at a copy of the primary database"
        )
    return Database(engine=primary.engine, reads=replica.reads, writes=primary.writes, writer=primary.writer,
                    replica=replica.engine)
