"""The supervisor of the gateway's worker processes (`gateway.workers > 1`): uvicorn's, with
bounded waits for workers that stop.

uvicorn's `Multiprocess` answers SIGTERM/SIGINT by sending SIGTERM to every worker and then waits
for them with no bound: one worker stuck in its shutdown (a close that never returns, a worker
frozen by SIGSTOP or a debugger) held the gateway, and `lading serve` around it, for ever. Here
each worker gets `stop_within_seconds` (drain + grace + cleanup, the single process's bound, see
gateway.main) from its SIGTERM, which uvicorn sends within half a second of the stop signal; a
worker still running then is killed (SIGKILL, sent to the pid of our own child, never to a group)
and the kill is logged with the reason. `killed` lists the workers a stop had to kill, so the
gateway exits with status 1, as the single process does.

A worker retired while the gateway runs (SIGHUP restarts the workers one by one, SIGTTOU removes
one) gets the same bound from its SIGTERM and is killed the same way: uvicorn's unbounded wait
there held the restart, and every signal queued behind it (a SIGTERM too), for ever. A stop
signal that arrives during a restart is handled once the restart ends (uvicorn's order).

Everything else is uvicorn's: the rolling restart itself, SIGTTIN adding a worker, a worker that
stops answering its health check while serving being replaced.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from socket import socket

from uvicorn import Config
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

logger = logging.getLogger(__name__)


class BoundedMultiprocess(Multiprocess):
    """uvicorn's worker supervisor; a worker told to stop is killed `stop_within_seconds` later."""

    def __init__(self, config: Config, sockets: list[socket], *, stop_within_seconds: float) -> None:
        super().__init__(config, sockets)
        self._stop_within_seconds = stop_within_seconds
        # Pids of the workers this supervisor had to kill at the end of its stop.
        self.killed: list[int] = []

    def join_all(self) -> None:
        """Waits for the workers, just sent SIGTERM, up to the bound, then kills the rest."""
        deadline = time.monotonic() + self._stop_within_seconds
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.process.is_alive():
                self._kill(process, "the gateway's stop")
                if process.pid is not None:
                    self.killed.append(process.pid)
        super().join_all()  # the killed ones end at once

    def restart_all(self) -> None:
        """SIGHUP: uvicorn's rolling restart, each old worker retired within the stop's bound."""
        self._bound_joins()
        super().restart_all()

    def handle_ttou(self) -> None:
        """SIGTTOU: uvicorn's, the retired worker stopped within the stop's bound."""
        self._bound_joins()
        super().handle_ttou()

    def _bound_joins(self) -> None:
        # uvicorn retires a worker with terminate() and then a join() without a bound: a worker
        # stuck in its stop held the restart, and every signal after it (SIGTERM too), for ever.
        # The workers' own join() is replaced by one that kills at the bound.
        for process in self.processes:
            process.join = functools.partial(self._retire, process)  # type: ignore[method-assign]

    def _retire(self, process: Process) -> None:
        process.process.join(self._stop_within_seconds)
        if process.process.is_alive():
            self._kill(process, "its retirement (SIGHUP restart or SIGTTOU)")
        Process.join(process)

    def _kill(self, process: Process, stop: str) -> None:
        pid = process.pid
        logger.error(
            "Gateway worker [%s] was still running %g s after %s began (shutdown drain + grace + cleanup: "
            "LADING_GATEWAY__SHUTDOWN_DRAIN_SECONDS, __SHUTDOWN_GRACE_SECONDS, __SHUTDOWN_CLEANUP_SECONDS); "
            "killing it (SIGKILL). Its state: %s. A worker stuck in its shutdown waits on something that does not "
            "answer (a plane, a trace collector); a stopped one (T) was frozen by a signal or a debugger.",
            pid, self._stop_within_seconds, stop, _state(pid),
        )
        process.kill()


def _state(pid: int | None) -> str:
    """The process's state as /proc shows it (`S (sleeping)`, `T (stopped)`...), or "unknown"."""
    with contextlib.suppress(OSError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split(":", 1)[1].strip()
    return "unknown"
