"""`lading gateway` with `workers > 1`: a worker stuck in its stop is killed at the stop's bound,
at the gateway's stop and in a SIGHUP restart (gateway/workers.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.stack import LadingProcess, free_port, lading_command, wait_until_http_ok

# Far above the stop's bound (drain 0 + grace + cleanup below) and a worker's start: only a wait
# that never ends reaches it.
_HANG_GUARD_SECONDS = 60.0


def _gateway(tmp_path: Path) -> tuple[LadingProcess, int, list[int]]:
    """`lading gateway` with two workers and a stop bound of 1.5 s (drain 0 + grace + cleanup; a
    healthy worker stops in about 0.2 s), answering; the planes' targets point at nothing (no
    request here needs them). Returns the process, its port and its workers' pids."""
    port = free_port()
    env = {"LADING_GATEWAY__WORKERS": "2",
           "LADING_GATEWAY__HOST": "127.0.0.1",
           "LADING_GATEWAY__PORT": str(port),
           "LADING_GATEWAY__METADATA_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__BLOB_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "0.5",
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": "1.0"}
    gateway = LadingProcess("gateway", lading_command("gateway"), log_dir=tmp_path, env=env).start()
    wait_until_http_ok(f"http://127.0.0.1:{port}/healthz", gateway)
    _wait_for(lambda: len(_workers(gateway)) == 2, gateway, "two workers")
    return gateway, port, _workers(gateway)


def _workers(gateway: LadingProcess) -> list[int]:
    """The uvicorn workers among the gateway's children (not multiprocessing's resource tracker)."""
    workers = []
    for pid in gateway.children():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and _alive(pid):
                workers.append(pid)
    return sorted(workers)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition: Callable[[], bool], gateway: LadingProcess, what: str) -> None:
    guard = time.monotonic() + _HANG_GUARD_SECONDS
    while not condition():
        assert time.monotonic() < guard, f"{what}: not within {_HANG_GUARD_SECONDS:g} s\n{gateway.log()}"
        time.sleep(0.05)


def _end(gateway: LadingProcess, pids: list[int]) -> None:
    """Also after a failed run: the frozen workers first (by pid), then the gateway and its group."""
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    gateway.stop()


def test_a_worker_stuck_in_its_stop_is_killed_and_the_gateway_exits(tmp_path: Path) -> None:
    """A worker that never finishes its stop (frozen here with SIGSTOP) held uvicorn's supervisor,
    which waited for its workers without a bound, and so the gateway for ever. Now the supervisor
    kills it once drain + grace + cleanup have passed, says so, and exits with status 1."""
    gateway, _, workers = _gateway(tmp_path)
    try:
        stuck = workers[0]
        os.kill(stuck, signal.SIGSTOP)
        os.kill(gateway.pid, signal.SIGTERM)
        _wait_for(lambda: gateway.poll() is not None, gateway, "the gateway's exit after SIGTERM")
        assert gateway.poll() == 1, gateway.log()
        assert not [pid for pid in workers if _alive(pid)], gateway.log()
        assert f"Gateway worker [{stuck}] was still running" in gateway.log(), gateway.log()
    finally:
        _end(gateway, workers)


def test_a_sighup_restart_retires_a_stuck_worker_and_the_gateway_still_stops_cleanly(tmp_path: Path) -> None:
    """SIGHUP replaces the workers one by one; an old worker stuck in its stop held the restart
    (and every signal behind it) for ever. Now it is killed at the bound, the restart completes,
    the new workers serve, and a later SIGTERM stops them all in time, with status 0."""
    gateway, port, old = _gateway(tmp_path)
    new: list[int] = []
    try:
        stuck = old[0]
        os.kill(stuck, signal.SIGSTOP)
        os.kill(gateway.pid, signal.SIGHUP)

        def replaced() -> bool:
            nonlocal new
            new = _workers(gateway)
            return len(new) == 2 and not set(new) & set(old)

        _wait_for(replaced, gateway, "two new workers in place of the old ones")
        assert not [pid for pid in old if _alive(pid)], gateway.log()
        assert f"Gateway worker [{stuck}] was still running" in gateway.log(), gateway.log()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        os.kill(gateway.pid, signal.SIGTERM)
        _wait_for(lambda: gateway.poll() is not None, gateway, "the gateway's exit after SIGTERM")
        assert gateway.poll() == 0, gateway.log()
        assert not [pid for pid in new if _alive(pid)], gateway.log()
    finally:
        _end(gateway, [*old, *new])
