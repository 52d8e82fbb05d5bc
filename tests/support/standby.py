"""A PostgreSQL primary and its hot standby for the regions tests (issue 15): a fresh primary
made with `initdb` (the machine's shared server takes no replication connections, and must not be
touched), then a standby made from it with `pg_basebackup -R` (streaming replication), each on a
free 127.0.0.1 port, in a temporary folder. Debian's binaries (/usr/lib/postgresql/*/bin).

PostgreSQL refuses to run as root: when the tests run as root, the servers run as the `postgres`
system user and the folder is theirs. `primary_and_standby()` stops both servers (by pg_ctl on
their data folders) and deletes the folder at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.clients import missing_tool
from tests.support.stack import free_port

TIMEOUT_SECONDS = 60


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@dataclass
class Server:
    data: Path
    port: int
    bin: Path
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, check=True,
                              timeout=TIMEOUT_SECONDS, user=self.user)

    def start(self) -> None:
        self.run("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.data / "server.log"), "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.run("pg_ctl", "-w", "-m", "fast", "-D", str(self.data), "stop")

    def promote(self) -> None:
        """A standby becomes a primary (failover)."""
        self.run("pg_ctl", "-w", "-D", str(self.data), "promote")

    def rejoin_as_standby_of(self, primary: Server) -> None:
        """A stopped (old) server comes back as a standby of `primary`: its data folder is made
        again with `pg_basebackup -R` from `primary` (what it had that `primary` has not is lost:
        the failover runbook's price for an old primary), then it starts on its own port."""
        self.stop()
        shutil.rmtree(self.data)
        primary.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                    "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.port}\n")
        self.start()

    def stream_through(self, port: int, *, timeout: float = 30.0) -> None:
        """A standby streams from its primary through 127.0.0.1:`port` (a relay, to cut the link
        in a test) from now on: `primary_conninfo`'s port is changed (ALTER SYSTEM, reload: the WAL
        receiver reconnects), and this returns once it streams through `port`."""
        conninfo = re.sub(r"port=\d+", f"port={port}", self.psql("SHOW primary_conninfo"))
        quoted = conninfo.replace("'", "''")
        self.psql(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
        self.psql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while self.psql("SELECT status || ':' || sender_port FROM pg_stat_wal_receiver") != f"streaming:{port}":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby does not stream through port {port}: "
                                   f"{self.psql('SELECT * FROM pg_stat_wal_receiver')}")
            time.sleep(0.1)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                        "-Atc", sql).stdout.strip()


@dataclass
class Pair:
    primary: Server
    standby: Server


def _settings(port: int, sockets: Path) -> str:
    return "\n".join([
        "listen_addresses = '127.0.0.1'", f"port = {port}", f"unix_socket_directories = '{sockets}'",
        "wal_level = replica", "max_wal_senders = 8", "hot_standby = on", "max_connections = 100",
        # A test server: no fsync (a power cut loses nothing we keep), small memory.
        "fsync = off", "full_page_writes = off", "shared_buffers = 32MB",
        # The standby answers often, so the primary's view of its progress is fresh.
        "wal_receiver_status_interval = 1s", "hot_standby_feedback = on",
    ]) + "\n"


_TEMPLATES: dict[tuple[Path, str | None], Path] = {}


def _initdb_template(bin_dir: Path, user: str | None) -> Path:
    """A fresh cluster's data folder (`initdb`), made once per test process and copied (`cp -a`:
    owner and modes kept) for each primary: initdb costs about a second of CPU, a copy a few
    milliseconds, and the copy is the same fresh cluster. Removed when the process exits."""
    key = (bin_dir, user)
    if key not in _TEMPLATES or not _TEMPLATES[key].is_dir():
        root = Path(tempfile.mkdtemp(prefix="lading-initdb-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        Server(root / "data", 0, bin_dir, user).run(
            "initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
            "--no-instructions")
        _TEMPLATES[key] = root / "data"
    return _TEMPLATES[key]


@contextlib.contextmanager
def primary_and_standby() -> Iterator[Pair]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        missing_tool("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="lading-standby-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    primary = Server(root / "primary", free_port(), bin_dir, user)
    standby = Server(root / "standby", free_port(), bin_dir, user)
    started: list[Server] = []
    try:
        subprocess.run(["cp", "-a", str(_initdb_template(bin_dir, user)), str(primary.data)], check=True,
                       timeout=TIMEOUT_SECONDS)
        with open(primary.data / "postgresql.conf", "a") as conf:
            conf.write(_settings(primary.port, root))
        with open(primary.data / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.start()
        started.append(primary)
        primary.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                    "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(standby.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {standby.port}\n")
        standby.start()
        started.append(standby)
        yield Pair(primary, standby)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
