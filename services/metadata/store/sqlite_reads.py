"""One-hop reads for the SQLite metadata store: the hot read statements on read-only sqlite3
connections, one per thread of a small bounded pool.

Why: through SQLAlchemy's async engine, one aiosqlite read costs four or five hops between the
event loop and aiosqlite's connection thread (cursor, execute, fetch, close, and the pool's
rollback on check-in), each a queue put plus a loop wake-up; under load those hops were most of
the metadata process's CPU. Here a read is ONE `run_in_executor` call: the worker thread runs
the precompiled statement on its own connection and returns plain tuples.

Contract:
- `compile(statement)` turns a SQLAlchemy Core select with named bind parameters into SQL text
  plus the order of its parameters (no expanding IN parameters, no result processing: only
  columns whose Python value is what sqlite3 returns — ints, text, bytes — may be selected).
- `fetch(query, params)` returns the rows as tuples. sqlite3.OperationalError (locked past the
  busy timeout, file unreadable) becomes UNAVAILABLE, like the engine's own errors; anything else
  is a bug and goes up unchanged.
- Connections open `mode=ro` (a read can never write) with the same busy timeout as the engine,
  in WAL mode (set by the writer), so readers never block the writer nor each other.
- `close()` closes every connection and the pool; later calls fail.
Only for SQLite files: in-memory and `file:` URL databases keep the SQLAlchemy path.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Dialect

from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.metadata.store")

# Reads in flight at once; sqlite3 releases the GIL while it steps, so a few threads overlap.
READ_THREADS = 4


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    names: tuple[str, ...]  # bind parameter names in the order of the `?` marks
    # Values of binds the statement fixed itself (e.g. SQLite's `OFFSET ?` after a LIMIT).
    defaults: dict[str, Any]


class SqliteReader:
    """Read-only connections to one SQLite file, each owned by one thread of the pool."""

    def __init__(self, path: Path, dialect: Dialect, *, busy_timeout_seconds: float) -> None:
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._dialect = dialect
        self._timeout = busy_timeout_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="lading-sqlite-read")

    def compile(self, statement: Any) -> Query:
        compiled = statement.compile(dialect=self._dialect)
        names = tuple(compiled.positiontup or ())
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        return Query(compiled.string, names, defaults)

    async def fetch(self, query: Query, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        values = tuple(params[name] if name in params else query.defaults[name] for name in query.names)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, query.sql, values)
        except sqlite3.OperationalError as exc:
            log.warning("metadata database unavailable: %s", exc)
            raise RegistryError(
                ErrorKind.UNAVAILABLE,
                "the metadata database is unavailable; retry shortly",
                {"reason": type(exc).__name__},
            ) from None

    def _run(self, sql: str, values: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._uri, uri=True, timeout=self._timeout, check_same_thread=False,
                                         isolation_level=None)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection.execute(sql, values).fetchall()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
