"""Start-up rows: from starting a registry to its first `GET /v2/` answered 200.

Each registry gets a data folder of its own that it starts on again and again: a first, unmeasured
start creates it (Lading: the database and its migrations, and Python's bytecode cache of the
sources, as any earlier `make run` would have left it: "venv present"); then `runs` measured
starts, alternating Distribution and Lading. Lading is started as `make run` starts it, with the
virtual environment's `lading serve` (`make run` itself adds a few ms of make). A raw socket asks
`GET /v2/` every 5 ms from the moment the process is spawned; the time is taken when a 200 comes
back, and with it the CPU seconds every process of the registry has used so far (the kernel's
count: steadier than wall time on a busy machine). Then the registry is stopped (SIGTERM) and
waited for.

The started processes get the bench's environment without LADING_* settings (as tests/support
does), and without PYTHONDONTWRITEBYTECODE: some harnesses set it, users' shells do not, and
without bytecode every start would compile Lading's sources again (~0.25 s here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.registries import distribution_config, ensure_distribution, process_tree
from tests.support.stack import child_env, free_port, lading_command

_POLL_SECONDS = 0.005
_TIMEOUT_SECONDS = 60.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Start:
    seconds: float  # spawn to the first 200 from GET /v2/
    cpu_seconds: float  # CPU time of every process of the registry at that moment


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / _CLOCK_TICKS


def _answers_200(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    except OSError:
        return False


def _measure(command: list[str], port: int, env: dict[str, str], cwd: Path) -> Start:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not _answers_200(port):
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode} before GET /v2/ answered")
            if time.perf_counter() - started > _TIMEOUT_SECONDS:
                raise RuntimeError(f"{command[0]} did not answer GET /v2/ within {_TIMEOUT_SECONDS:.0f}s")
            time.sleep(_POLL_SECONDS)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds(process_tree(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return Start(seconds, cpu)


def _lading_command(data_dir: Path, port: int) -> list[str]:
    script = Path(sys.executable).with_name("lading")
    args = ["serve", "--data-dir", str(data_dir), "--port", str(port)]
    return [str(script), *args] if script.is_file() else lading_command(*args)


@contextmanager
def _starters(env_extra: dict[str, str]) -> Iterator[dict[str, tuple[list[str], int, dict[str, str], Path]]]:
    work = Path(tempfile.mkdtemp(prefix="lading-bench-startup-"))
    try:
        lading_port, distribution_port = free_port(), free_port()
        config = work / "distribution.yml"
        config.write_text(distribution_config(distribution_port, work / "distribution", None))
        env = child_env(env_extra)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        yield {
            "distribution": ([ensure_distribution(), "serve", str(config)], distribution_port,
                             {**env, "AWS_CA_BUNDLE": ""}, work),
            "lading": (_lading_command(work / "lading", lading_port), lading_port, env, work),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_startups(runs: int, env_extra: dict[str, str] | None = None) -> dict[str, list[Start]]:
    """`runs` measured starts of each registry (filesystem storage; Lading with `env_extra`),
    alternating which goes first, after one unmeasured start each."""
    results: dict[str, list[Start]] = {"distribution": [], "lading": []}
    with _starters(env_extra or {}) as starters:
        for name in starters:
            _measure(*starters[name])  # creates the data folder (and Lading's bytecode cache)
        for run in range(runs):
            order = ["distribution", "lading"] if run % 2 == 0 else ["lading", "distribution"]
            for name in order:
                results[name].append(_measure(*starters[name]))
    return results
