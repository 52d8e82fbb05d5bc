"""`lading gateway` with `workers > 1`: the stop of its worker supervisor is bounded (gateway/workers.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.support.stack import LadingProcess, free_port, lading_command, wait_until_http_ok

# Far above the stop's bound (drain 0 + grace + cleanup below): only a stop that never ends reaches it.
_HANG_GUARD_SECONDS = 60.0


def _workers(gateway: LadingProcess) -> list[int]:
    """The uvicorn workers among the gateway's children (not multiprocessing's resource tracker)."""
    workers = []
    for pid in gateway.children():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_stuck_in_its_shutdown_is_killed_and_the_gateway_exits(tmp_path: Path) -> None:
    """A worker that never finishes its stop (frozen here with SIGSTOP) held uvicorn's supervisor,
    which joins its workers without a bound, and so the gateway for ever. Now the supervisor kills
    it once drain + grace + cleanup have passed, says so, and exits with status 1."""
    port = free_port()
    env = {"LADING_GATEWAY__WORKERS": "2",
           "LADING_GATEWAY__HOST": "127.0.0.1",
           "LADING_GATEWAY__PORT": str(port),
           "LADING_GATEWAY__METADATA_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__BLOB_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "0.5",
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": "0.5"}
    gateway = LadingProcess("gateway", lading_command("gateway"), log_dir=tmp_path, env=env)
    workers: list[int] = []
    try:
        gateway.start()
        wait_until_http_ok(f"http://127.0.0.1:{port}/healthz", gateway)
        deadline = time.monotonic() + 30
        while len(workers := _workers(gateway)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, gateway.log()
        stuck = workers[0]
        os.kill(stuck, signal.SIGSTOP)
        os.kill(gateway.pid, signal.SIGTERM)
        guard = time.monotonic() + _HANG_GUARD_SECONDS
        while (code := gateway.poll()) is None and time.monotonic() < guard:
            time.sleep(0.05)
        assert code is not None, (f"the gateway still runs {_HANG_GUARD_SECONDS:g} s after SIGTERM with a "
                                  f"stopped worker\n{gateway.log()}")
        assert code == 1, gateway.log()
        assert not [pid for pid in workers if _alive(pid)], gateway.log()
        assert f"Gateway worker [{stuck}] was still running" in gateway.log(), gateway.log()
    finally:
        for pid in workers:  # a failed run leaves the frozen worker behind: end it first
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        gateway.stop()
