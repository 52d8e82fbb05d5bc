"""`lading gateway` with `workers > 1` (gateway/workers.py): a worker stuck in its stop is killed at
the stop's bound, at the gateway's stop and in a SIGHUP restart; a stop signal ends a restart; the
workers end with a supervisor killed without its stop, within the bound it would have given them;
each worker logs as the single process does."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.stack import LadingProcess, free_port, lading_command, wait_until_http_ok

# Far above the stop's bound (drain 0 + grace + cleanup below) and a worker's start: only a wait
# that never ends reaches it.
_HANG_GUARD_SECONDS = 60.0


def _gateway(tmp_path: Path, *, workers: int = 2, cleanup_seconds: float = 1.0,
             settings: dict[str, str] | None = None) -> tuple[LadingProcess, int, list[int]]:
    """`lading gateway` with `workers` workers, each started, and a stop bound of 1.5 s (drain 0 +
    grace 0.5 + `cleanup_seconds` 1.0; a healthy worker stops in about 0.2 s), answering; the
    planes' targets point at nothing (no request here needs them). Returns the process, its port
    and its workers' pids (with `workers=1`: the one process's own). `settings`: more LADING_*
    variables."""
    port = free_port()
    env = {"LADING_GATEWAY__WORKERS": str(workers),
           "LADING_GATEWAY__HOST": "127.0.0.1",
           "LADING_GATEWAY__PORT": str(port),
           "LADING_GATEWAY__METADATA_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__BLOB_TARGET": f"unix:{tmp_path}/none.sock",
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "0.5",
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": str(cleanup_seconds), **(settings or {})}
    gateway = LadingProcess(f"gateway-{workers}", lading_command("gateway"), log_dir=tmp_path, env=env).start()
    wait_until_http_ok(f"http://127.0.0.1:{port}/healthz", gateway)
    if workers == 1:
        return gateway, port, [gateway.pid]
    _wait_for(lambda: len(_workers(gateway)) == workers, gateway, f"{workers} workers")
    # Each worker serving (or about to), not still starting: one frozen while it starts has no
    # SIGTERM handler yet (the signal then ends it at once, frozen or not), and the supervisor's
    # health check, waiting on it, would replace it.
    _wait_for(lambda: set(_workers(gateway)) <= _started(gateway), gateway, "each worker's start-up line")
    return gateway, port, _workers(gateway)


_STARTED = re.compile(r" gateway INFO uvicorn\.error: Started server process \[(\d+)\]$", re.MULTILINE)


def _started(gateway: LadingProcess) -> set[int]:
    """The processes that logged uvicorn's start-up line, in the gateway's format."""
    return {int(pid) for pid in _STARTED.findall(gateway.log(tail=1_000_000))}


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


def _wait_for(condition: Callable[[], bool], gateway: LadingProcess, what: str,
              within_seconds: float = _HANG_GUARD_SECONDS) -> None:
    guard = time.monotonic() + within_seconds
    while not condition():
        assert time.monotonic() < guard, f"{what}: not within {within_seconds:g} s\n{gateway.log()}"
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


def test_the_workers_end_with_a_supervisor_killed_without_its_stop(tmp_path: Path) -> None:
    """A gateway whose supervisor dies without its stop (SIGKILL, the OOM killer) left its workers
    running, orphaned, serving the registry port with nobody to stop them. Now the kernel sends
    each worker SIGTERM and it stops as it would when told to (its normal stop, logged), and the
    port is free."""
    gateway, port, workers = _gateway(tmp_path)
    try:
        os.kill(gateway.pid, signal.SIGKILL)
        _wait_for(lambda: not [pid for pid in workers if _alive(pid)], gateway,
                  "the workers' end after their supervisor's death")
        log = gateway.log(tail=1_000_000)
        for pid in workers:  # uvicorn's last line of a stop it went through, not of a kill
            assert f"Finished server process [{pid}]" in log, log
        with socket.socket() as probe:  # EADDRINUSE while any process still listens there
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
    finally:
        _end(gateway, workers)


def test_each_worker_logs_at_info_as_the_single_process_gateway_does(tmp_path: Path) -> None:
    """uvicorn gives its workers no log handler (`log_config` None) and the workers never set up
    the gateway's logging: with `workers > 1` no INFO line was written at all, and the warnings
    came without our format. Now each worker writes the lines the single process writes, in the
    same format (here uvicorn's start-up line, one per serving process)."""
    single, _, single_pids = _gateway(tmp_path, workers=1)
    try:
        assert _started(single) == set(single_pids), single.log()
    finally:
        single.stop()
    gateway, _, workers = _gateway(tmp_path)  # waits for each worker's line (or fails)
    try:
        assert _started(gateway) == set(workers), gateway.log()
    finally:
        _end(gateway, workers)


def test_a_stop_signal_during_a_sighup_restart_ends_the_restart(tmp_path: Path) -> None:
    """uvicorn handles its signals one after the other: a SIGTERM that came during a SIGHUP
    restart waited for the whole restart (each old worker up to its stop's bound), which went on
    to replace every worker first. Now the stop ends the restart: no worker is replaced after it,
    and the gateway stops every worker and exits. The old workers are frozen (SIGSTOP) so that
    the restart cannot get past the first of them (its bound is far off) before the SIGTERM,
    sent once the first replacement exists, then let go so that they stop normally."""
    gateway, _, old = _gateway(tmp_path, cleanup_seconds=30.0)
    ever = set(old)

    def watch() -> set[int]:
        """The replacement workers seen so far (pids that came after the old ones)."""
        ever.update(_workers(gateway))
        return ever - set(old)

    try:
        for pid in old:
            os.kill(pid, signal.SIGSTOP)
        os.kill(gateway.pid, signal.SIGHUP)
        _wait_for(lambda: bool(watch()), gateway, "the restart's first replacement worker")
        os.kill(gateway.pid, signal.SIGTERM)
        for pid in old:
            os.kill(pid, signal.SIGCONT)
        _wait_for(lambda: (watch(), gateway.poll())[1] is not None, gateway, "the gateway's exit after SIGTERM")
        log = gateway.log(tail=1_000_000)
        assert len(watch()) == 1, f"workers replaced after the stop signal: {sorted(watch())}\n{log}"
        assert "Received SIGTERM during the restart (SIGHUP)" in log, log
        assert gateway.poll() == 0, log
        assert not [pid for pid in ever if _alive(pid)], log
    finally:
        _end(gateway, sorted(ever))


def _hold_a_request_open(port: int) -> socket.socket:
    """A connection whose request a worker is handling and never sees the end of: a manifest PUT
    whose body stops after its first bytes. Returns once the handler reads the body (uvicorn
    answers `Expect: 100-continue` at the app's first read)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=_HANG_GUARD_SECONDS)
    client.sendall(b"PUT /v2/held/manifests/open HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                   b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
    answer = client.recv(100)
    assert answer.startswith(b"HTTP/1.1 100 "), answer
    client.sendall(b'{"schemaVersion": 2')  # and never the rest
    return client


def test_an_orphaned_worker_exits_at_the_bound_its_supervisor_would_have_given_it(tmp_path: Path) -> None:
    """A worker whose supervisor died without its stop (SIGKILL) stops gracefully (the kernel's
    SIGTERM), but nothing bounded that stop any more: the supervisor that kills a worker still
    stopping at drain + grace + cleanup was gone, and an orphan stuck in its stop kept running,
    holding the registry port. Here clients hold requests open (their bodies never finish; uvicorn
    cancels them at the grace) and the last trace flush waits on a collector that takes the spans
    and never answers (up to the exporter's timeout, 60 s here, beyond the wait's guard). Now an
    orphan still running at that bound after the supervisor's death exits (status 1), saying which
    bound it reached."""
    collector = socket.socket()  # listens, never accepts: an export waits for its answer
    collector.bind(("127.0.0.1", 0))
    collector.listen(8)
    # No body-read timeout: the held requests end only with the worker's stop.
    gateway, port, workers = _gateway(tmp_path, settings={
        "LADING_GATEWAY__BODY_READ_TIMEOUT_SECONDS": "0",
        "LADING_OBSERVABILITY__OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
        "LADING_OBSERVABILITY__OTLP_TIMEOUT_SECONDS": "60"})
    held = [_hold_a_request_open(port) for _ in range(4)]
    try:
        os.kill(gateway.pid, signal.SIGKILL)
        # 20 times the bound: only a stop the bound did not end reaches it.
        _wait_for(lambda: not [pid for pid in workers if _alive(pid)], gateway,
                  "the orphaned workers' end", within_seconds=30)
        log = gateway.log(tail=1_000_000)
        assert "lading gateway worker: still stopping 1.5 s after the stop began" in log, log
        assert "from its parent's death" in log, log
    finally:
        for client in held:
            client.close()
        _end(gateway, workers)
        collector.close()
