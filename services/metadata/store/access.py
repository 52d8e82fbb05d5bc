"""The one place that decides how a statement of the metadata plane reaches the database.

A statement declares what it is (a `Read` of some `Kind`, or a write transaction); `Access.route`
turns that declaration and the database's configuration into the path it takes (`Route`). Stores
never pick an engine, a thread or a reader themselves: they declare, and call `Access`.

Kinds (declared by the caller, one per statement):
- `READ`: one statement that may scan (listings, admin views, GC scans); may read the replica.
- `HOT_READ`: a hot single-row or single-page read of a client request (GetManifest, StatBlob,
  tags/list, _catalog, referrers). Only plain columns (ints, text, bytes): on a SQLite file it may
  skip SQLAlchemy's result processing.
- `PUSH_READ`: a small indexed lookup between the write transactions of one push (GC holds). It
  must never scan.
- `PRIMARY_READ`: a read that must see the primary, never a lagging replica (change feed heads,
  the primary's health check, sessions).
- writes: `write(work)` runs a synchronous transaction body; `transaction()` opens an async one
  (for the few stores whose bodies await, such as accounts and the event outbox).

Routes (what the database offers):
- `SQLITE3`: read-only sqlite3 connections on a small thread pool, ONE thread hop per read
  (sqlite_reads.py). Only for `HOT_READ` on a SQLite file.
- `WRITER`: the database's writer (writes.py): on a SQLite file one dedicated thread with its own
  connection, elsewhere `run_sync` on the write engine. Every `write`, and `PUSH_READ` on a SQLite
  file without a replica (one hop between the push's own write transactions, instead of the
  async engine's four or five).
- `READS`: SQLAlchemy's async engine, the `reads` view (no BEGIN; AUTOCOMMIT on PostgreSQL; the
  replica when configured; with a hot standby, the replay gate may send a repository's reads to
  the primary until the standby replayed its last write, and sends every read there while the
  standby does not answer: store/replay.py). `READ`, and `HOT_READ`/`PUSH_READ` where no faster path exists.
- `PRIMARY`: the async engine on the primary, no explicit transaction. `PRIMARY_READ`.
- `TRANSACTION`: an async transaction on the primary's `writes` view (BEGIN IMMEDIATE on SQLite).

The decision is made once per declaration (`route`), so a hot call costs one attribute lookup.
`taken` counts the routes actually used (tests read it to check that each declaration takes its
path; it is not exported as a metric). Errors are the routes' own: SQLAlchemy errors from the
engine routes and the writer, `RegistryError(UNAVAILABLE)` from `SQLITE3`; callers translate.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metadata.store.dialect import is_unavailable
from services.metadata.store.sqlite_reads import Query, SqliteReader
from services.metadata.store.writes import SqliteThreadWriter

if TYPE_CHECKING:
    from services.metadata.store.engine import Database
    from services.metadata.store.replay import ReplayGate

T = TypeVar("T")

# Busy timeout of the one-hop SQLite readers. In WAL mode readers do not wait for writers; this
# only covers the rare moments SQLite itself makes a reader wait (WAL recovery after a crash).
READ_BUSY_SECONDS = 5.0


class Kind(enum.Enum):
    READ = "read"
    HOT_READ = "hot read"
    PUSH_READ = "push read"
    PRIMARY_READ = "primary read"


class Route(enum.Enum):
    SQLITE3 = "sqlite3 reader"
    WRITER = "writer"
    READS = "async engine (reads)"
    PRIMARY = "async engine (primary)"
    TRANSACTION = "async transaction (primary)"


class Read:
    """A read statement and its declared `Kind`. Build these once (at a store's construction)
    for hot statements: the compiled form for the `SQLITE3` route is kept on the object."""

    __slots__ = ("kind", "statement", "_query")

    def __init__(self, kind: Kind, statement: Any) -> None:
        self.kind = kind
        self.statement = statement
        self._query: Query | None = None

    def __repr__(self) -> str:
        return f"Read({self.kind.name})"


def read(statement: Any) -> Read:
    return Read(Kind.READ, statement)


def hot_read(statement: Any) -> Read:
    return Read(Kind.HOT_READ, statement)


def push_read(statement: Any) -> Read:
    return Read(Kind.PUSH_READ, statement)


def primary_read(statement: Any) -> Read:
    return Read(Kind.PRIMARY_READ, statement)


class Access:
    """Routes the metadata plane's statements over one `Database` (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._reader: SqliteReader | None = None
        self._reader_path = _sqlite_file(database)
        one_hop_writer = isinstance(database.writer, SqliteThreadWriter) and database.replica is None
        self._routes: dict[Kind, Route] = {
            Kind.READ: Route.READS,
            Kind.HOT_READ: Route.SQLITE3 if self._reader_path is not None else Route.READS,
            Kind.PUSH_READ: Route.WRITER if one_hop_writer else Route.READS,
            Kind.PRIMARY_READ: Route.PRIMARY,
        }
        self.taken: collections.Counter[Route] = collections.Counter()
        # Read-your-writes with a hot standby as the read replica (store/replay.py): decides per
        # repository whether a READS-route read may go to the standby, and holds writes until the
        # standby replayed them.
        self._replay: ReplayGate | None = None

    def use_replay(self, gate: ReplayGate | None) -> None:
        """Routes READS-route reads through `gate` (when it is enabled)."""
        self._replay = gate if gate is not None and gate.enabled else None

    def route(self, declared: Read) -> Route:
        """The path `declared` takes on this database."""
        return self._routes[declared.kind]

    # -- reads ---------------------------------------------------------------------------------------

    async def rows(self, declared: Read, params: dict[str, Any] | None = None) -> list[Any]:
        """Every row of the read, as tuples (or SQLAlchemy rows, which behave as tuples)."""
        route = self._routes[declared.kind]
        self.taken[route] += 1
        params = params or {}
        if route is Route.SQLITE3:
            reader = self._sqlite_reader()
            query = declared._query
            if query is None:
                query = declared._query = reader.compile(declared.statement)
            return await reader.fetch(query, params)
        if route is Route.WRITER:
            statement = declared.statement
            # Writes nothing, so nobody waits for a durable commit.
            return await self._db.writer.run(lambda conn: list(conn.execute(statement, params)), durable=False)
        if route is Route.PRIMARY:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(declared.statement, params))
        return await self._replica_rows(declared.statement, params)

    async def _replica_rows(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """A READS-route read: the read replica, unless the replay gate says it still lacks a write
        of the repository (`params["repository"]`) or it does not answer (then it is marked down
        and the read goes to the primary)."""
        gate = self._replay
        engine = self._db.reads if gate is None else await gate.engine_for(params.get("repository"), self._db.reads)
        try:
            async with engine.connect() as conn:
                return list(await conn.execute(statement, params))
        except Exception as exc:
            if gate is None or engine is not self._db.reads or not is_unavailable(exc):
                raise
            gate.mark_down(exc)
        async with gate.primary_reads.connect() as conn:
            return list(await conn.execute(statement, params))

    async def first(self, declared: Read, params: dict[str, Any] | None = None) -> Any:
        """The first row, or None."""
        rows = await self.rows(declared, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def connection(self, kind: Kind) -> AsyncIterator[AsyncConnection]:
        """An async connection for several reads of one `kind` (READ or PRIMARY_READ), without an
        explicit transaction."""
        route = self._routes[kind]
        if route not in (Route.READS, Route.PRIMARY):
            raise ValueError(f"{kind.name} reads take the {route.value} route, not an async connection")
        self.taken[route] += 1
        engine = self._db.reads if route is Route.READS else self._db.engine
        async with engine.connect() as conn:
            yield conn

    # -- writes --------------------------------------------------------------------------------------

    async def write(self, work: Callable[[Connection], T], *, durable: bool = True,
                    repository: str | None = None) -> T:
        """Runs the synchronous `work(conn)` in one write transaction on the writer (writes.py:
        `durable` as `Writer.run` says). No retry here: callers retry what they know is safe.
        With a hot standby as the read replica, returns once the standby has replayed the commit,
        or (past the bound) once reads of `repository` go to the primary (store/replay.py)."""
        self.taken[Route.WRITER] += 1
        result = await self._db.writer.run(work, durable=durable)
        if self._replay is not None:
            await self._replay.after_write(repository)
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """An async write transaction on the primary (commits on exit, rolls back on error)."""
        self.taken[Route.TRANSACTION] += 1
        async with self._db.writes.begin() as conn:
            yield conn

    # -- life cycle ----------------------------------------------------------------------------------

    def _sqlite_reader(self) -> SqliteReader:
        reader = self._reader
        if reader is None:
            assert self._reader_path is not None  # only the SQLITE3 route gets here
            reader = self._reader = SqliteReader(self._reader_path, self._db.reads.dialect,
                                                 busy_timeout_seconds=READ_BUSY_SECONDS)
        return reader

    async def close(self) -> None:
        """Closes the sqlite3 readers (if any were opened). Idempotent; a later read reopens."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.to_thread(reader.close)


def _sqlite_file(database: Database) -> Path | None:
    """The SQLite file the reads go to, or None (PostgreSQL, in-memory or `file:` URL databases)."""
    url = database.reads.url
    name = url.database or ""
    if url.get_backend_name() != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)
