"""Real Lading processes for end-to-end tests.

`Stack` runs `lading serve` (three planes as child processes, gRPC over unix sockets) on a free
127.0.0.1 port in its own data directory; `LadingProcess` runs any one `lading ...` command. Each
process starts in a session (process group) of its own, so stopping can always finish the job by
group id even when a parent dies before its children; nothing else on the machine is touched.

Children get a clean environment: inherited `LADING_*` variables (other than `LADING_TEST_*`) are
dropped so a developer's shell cannot leak into a test, then the caller's `env` is applied.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def _outgoing_port_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_PICKER = random.SystemRandom()  # not the global generator, which tests may seed


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago, picked below the range
    the kernel takes outgoing connections' ports from: a port the OS picked (bind to 0) comes from
    that range, so a client connecting anywhere in the suite could take it before the server meant
    for it binds (seen: a gateway's `address already in use` in the HA tests)."""
    ceiling = min(_outgoing_port_range()[0], 65536) - 1
    floor = max(1024, ceiling - 12_000)
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", _PICKER.randint(floor, ceiling)))
            except OSError:  # in use (or lingering): pick again
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (see free_ports)."""
    return free_ports(1)[0]


def lading_command(*args: str) -> list[str]:
    """The `lading` CLI run with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "services.cli", *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADING_") or k.startswith("LADING_TEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _process_group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (read from /proc; Linux only)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class LadingProcess:
    """One process started by the tests, with its output captured to a log file."""

    def __init__(self, name: str, command: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, exact_env: bool = False) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_dir / f"{name}.log"
        # exact_env: `env` is the whole environment (e.g. a container image's), nothing inherited.
        self._env = dict(env or {}) if exact_env else child_env(env)
        self._cwd = cwd or log_dir
        self._popen: subprocess.Popen[bytes] | None = None
        # Pids still in the process group after the leader exited (a child that outlived it).
        self.leftover_pids: list[int] = []

    @property
    def pid(self) -> int:
        assert self._popen is not None, f"{self.name} was not started"
        return self._popen.pid

    def start(self) -> LadingProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._popen = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env, cwd=self._cwd, start_new_session=True,
            )
        return self

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no output)"

    def wait_for_output(self, text: str, timeout: float = START_TIMEOUT_SECONDS) -> bool:
        """True once `text` shows up in the process's output, False after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(tail=1_000_000):
                return True
            if self.poll() is not None:
                return text in self.log(tail=1_000_000)
            time.sleep(0.05)
        return False

    def describe_failure(self, what: str) -> str:
        code = self.poll()
        state = "still running" if code is None else f"exited with {code}"
        return f"{self.name} ({' '.join(self.command)}) {what}; it is {state}. Output:\n{self.log()}"

    def children(self) -> list[int]:
        """Pids of the direct children of this process: every process whose parent it is (each
        one's /proc/PID/stat). Not /proc/PID/task/*/children: a child is listed under the thread
        that forked it, and the kernel documents that list as unreliable while children come and
        go (a SIGHUP restart's old worker went missing from it while it was still running)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return found

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole process group. Returns the exit code.

        Group members left after the leader exits are recorded in `leftover_pids` and killed."""
        if self._popen is None:
            return None
        pgid = self._popen.pid  # start_new_session: the leader's pid is the group id
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (members := _process_group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.leftover_pids = members
        if members:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return self._popen.returncode


def wait_until_http_ok(url: str, process: LadingProcess, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Polls GET `url` until it answers 200; fails with the process's output on timeout or exit."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.describe_failure(f"exited before {url} answered"))
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(process.describe_failure(f"did not answer GET {url} with 200 within {timeout:.0f}s "
                                                f"(last: {last})"))


def wait_until_path_exists(path: Path, process: LadingProcess, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Waits for a unix socket (or any file) to appear; fails with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.describe_failure(f"exited before creating {path}"))
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(process.describe_failure(f"did not create {path} within {timeout:.0f}s"))


class Stack:
    """`lading serve` on a free port with its own data directory.

    Use as a context manager, or call `start()` and `stop()`. `env` is applied on top of the clean
    environment, e.g. `{"LADING_METADATA__DATABASE_URL": "postgresql+asyncpg://..."}`.
    """

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None, port: int | None = None,
                 name: str = "lading-serve") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process = LadingProcess(
            name,
            lading_command("serve", "--data-dir", str(data_dir), "--host", self.host, "--port", str(self.port)),
            log_dir=data_dir.parent / f"{data_dir.name}-logs",
            env=env,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hostport(self) -> str:
        """`127.0.0.1:<port>`, as clients such as skopeo and oras want the registry named."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> Stack:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Stack:
        """Starts the process without waiting for it to answer (`wait_ready` does), so a caller can
        do slow work of its own meanwhile."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> Stack:
        """Waits until `launch`ed stack answers /v2/; stops it and raises if it does not."""
        try:
            wait_until_http_ok(f"{self.base_url}/v2/", self.process, timeout=timeout)
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> int | None:
        return self.process.stop()

    def log(self) -> str:
        return self.process.log()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ExternalRegistry:
    """A registry the tests did not start (LADING_TEST_REGISTRY_URL), e.g. the reference registry,
    to check that the end-to-end suite itself is right. Same attributes as `Stack`."""

    base_url: str

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or 80

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@contextlib.contextmanager
def running(*processes: LadingProcess) -> Iterator[tuple[LadingProcess, ...]]:
    """Starts the processes in order and stops them all (in reverse order) on exit."""
    started: list[LadingProcess] = []
    try:
        for process in processes:
            started.append(process.start())
        yield processes
    finally:
        for process in reversed(started):
            process.stop()
