"""The supervisor of the gateway's worker processes (`gateway.workers > 1`): uvicorn's, with a
bounded stop.

uvicorn's `Multiprocess` answers SIGTERM/SIGINT by sending SIGTERM to every worker and then joins
them with no bound: one worker stuck in its shutdown (a close that never returns, a worker frozen
by SIGSTOP or a debugger) held the gateway, and `lading serve` around it, for ever. Here the
workers get `stop_within_seconds` (drain + grace + cleanup, the single process's bound, see
gateway.main) counted from the first stop signal; a worker still running then is killed (SIGKILL,
sent to the pid of our own child, never to a group), the kill is logged with the reason, and
`killed` names it so the gateway can exit with status 1, as the single process does.

Everything else is uvicorn's: SIGHUP restarts the workers one by one, SIGTTIN/SIGTTOU add or
remove one, a worker that stops answering its health check while serving is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from socket import socket
from types import FrameType

from uvicorn import Config
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

logger = logging.getLogger(__name__)


class BoundedMultiprocess(Multiprocess):
    """uvicorn's worker supervisor whose stop ends within `stop_within_seconds` of the signal."""

    def __init__(self, config: Config, sockets: list[socket], *, stop_within_seconds: float) -> None:
        super().__init__(config, sockets)
        self._stop_within_seconds = stop_within_seconds
        self._stop_began: float | None = None
        # Pids of the workers this supervisor had to kill at the end of its stop.
        self.killed: list[int] = []
        # uvicorn only queues signals (handled every half second); the bound counts from the signal.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: a timestamp and uvicorn's queue, nothing more.
        if self._stop_began is None:
            self._stop_began = time.monotonic()
        self.signal_queue.append(sig)

    def join_all(self) -> None:
        """Waits for the workers (already sent SIGTERM) until the deadline, then kills the rest."""
        began = self._stop_began if self._stop_began is not None else time.monotonic()
        deadline = began + self._stop_within_seconds
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.process.is_alive():
                self._kill(process)
        super().join_all()  # the killed ones end at once

    def _kill(self, process: Process) -> None:
        pid = process.pid
        logger.error(
            "Gateway worker [%s] was still running %g s after the stop began (shutdown drain + grace + cleanup: "
            "LADING_GATEWAY__SHUTDOWN_DRAIN_SECONDS, __SHUTDOWN_GRACE_SECONDS, __SHUTDOWN_CLEANUP_SECONDS); "
            "killing it (SIGKILL). Its state: %s. A worker stuck in its shutdown waits on something that does not "
            "answer (a plane, a trace collector); a stopped one (T) was frozen by a signal or a debugger.",
            pid, self._stop_within_seconds, _state(pid),
        )
        process.kill()
        if pid is not None:
            self.killed.append(pid)


def _state(pid: int | None) -> str:
    """The process's state as /proc shows it (`S (sleeping)`, `T (stopped)`...), or "unknown"."""
    with contextlib.suppress(OSError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split(":", 1)[1].strip()
    return "unknown"
