"""The supervisor of the gateway's worker processes (`gateway.workers > 1`): uvicorn's, with
bounded waits for workers that stop, workers that end with it, and a stop that cuts a restart short.

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
there held the restart, and every signal queued behind it, for ever.

A stop signal (SIGTERM/SIGINT) that arrives during a SIGHUP restart ends the restart there:
uvicorn handles its signals one after the other, so the stop waited for the whole restart (each
old worker up to its bound). The workers not replaced yet are not replaced; the stop begins at
once (within about a second while a replacement is starting) and gives every worker running, the
one being retired and a replacement that had not reported ready included, the normal bounded stop.

Each worker ends with the supervisor (`WorkerConfig`): a supervisor that dies without its stop
(SIGKILL, the OOM killer) left its workers serving, holding the registry port, with nobody to
stop them. The kernel now sends each worker SIGTERM when the supervisor dies
(services/common/parent_death.py), and the worker stops as it would when told to by a live
supervisor (stop accepting, the grace for requests in flight, the lifespan's cleanup), within the
same bound: a worker still running `stop_within_seconds` after the supervisor's death exits at
once, with status 1 and its stacks on stderr, as the single process does at its bound. (Requests
held open by their clients are cancelled at the grace, as at any stop; what held an orphan was a
stop step stuck past that, such as the last trace flush to a collector that never answers.)

Everything else is uvicorn's: SIGTTIN adding a worker, a worker that stops answering its health
check while serving being replaced. Each worker sets up its logging as the single process does
(gateway.main.app_from_environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from socket import socket
from types import FrameType
from typing import Any

from uvicorn import Config
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from services.common.parent_death import bound_orphaned_stop, die_with_parent

logger = logging.getLogger(__name__)

# How often a wait for a retired worker looks for a stop signal.
_RETIRE_POLL_SECONDS = 0.05


class WorkerConfig(Config):
    """uvicorn's Config, of which each worker gets a copy: `load()`, which uvicorn calls in the
    worker as it begins to serve (its signal handlers in place, before the app is built), first
    ties the worker's life to the supervisor's, its stop then bounded by `stop_within_seconds`
    from the supervisor's death (see the module docstring)."""

    def __init__(self, *args: Any, stop_within_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Taken in the supervisor, which builds this config and starts the workers.
        self.supervisor_pid = os.getpid()
        self.stop_within_seconds = stop_within_seconds

    def load(self) -> None:
        if os.getpid() != self.supervisor_pid:
            if not die_with_parent(self.supervisor_pid):
                # It died before the line above: the kernel will not tell this worker, so it ends
                # here, before it serves anything.
                logger.warning("Gateway worker [%s]: its supervisor [%s] is gone; exiting without serving.",
                               os.getpid(), self.supervisor_pid)
                raise SystemExit(1)
            bound_orphaned_stop(self.supervisor_pid, self.stop_within_seconds, process="gateway worker",
                                bound="shutdown drain + grace + cleanup, the bound its supervisor would have "
                                      "given it: LADING_GATEWAY__SHUTDOWN_DRAIN_SECONDS, __SHUTDOWN_GRACE_SECONDS, "
                                      "__SHUTDOWN_CLEANUP_SECONDS")
        super().load()


class _StopSignal:
    """Set by the stop signals' handler, read by the restart. A plain attribute: a handler must
    not take a lock (threading.Event's) that the code it interrupted may hold. Has the one method
    uvicorn's `Process.wait_until_ready` asks of its `should_exit`."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def is_set(self) -> bool:
        return self.signal is not None


@dataclass(frozen=True)
class _Stopping:
    """A worker sent SIGTERM outside the stop's own round: killed if still running at `deadline`."""

    process: Process
    deadline: float
    stop: str


class BoundedMultiprocess(Multiprocess):
    """uvicorn's worker supervisor; a worker told to stop is killed `stop_within_seconds` later,
    and a stop signal ends a SIGHUP restart at once (see the module docstring)."""

    def __init__(self, config: Config, sockets: list[socket], *, stop_within_seconds: float) -> None:
        super().__init__(config, sockets)
        self._stop_within_seconds = stop_within_seconds
        # Pids of the workers this supervisor had to kill at the end of its stop.
        self.killed: list[int] = []
        self._stop_signal = _StopSignal()
        # Workers a restart or SIGTTOU had sent SIGTERM when a stop signal cut their wait short:
        # no longer in `processes`, waited for (and killed at their bound) by the stop.
        self._stopping: list[_Stopping] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signal_queue.append(sig)  # uvicorn's handling, in its loop
        self._stop_signal.signal = sig  # seen by a restart under way

    def join_all(self) -> None:
        """Waits for the workers, just sent SIGTERM, up to the bound (and for those a cut-short
        retirement left, up to theirs), then kills the rest."""
        deadline = time.monotonic() + self._stop_within_seconds
        waits = [_Stopping(process, deadline, "the gateway's stop") for process in self.processes]
        for waiting in sorted([*waits, *self._stopping], key=lambda waiting: waiting.deadline):
            process = waiting.process
            process.process.join(max(0.0, waiting.deadline - time.monotonic()))
            if process.process.is_alive():
                self._kill(process, waiting.stop)
                if process.pid is not None:
                    self.killed.append(process.pid)
        for waiting in [*waits, *self._stopping]:
            Process.join(waiting.process)  # the killed ones end at once
        self._stopping = []

    def restart_all(self) -> None:
        """SIGHUP: uvicorn's rolling restart (each replacement serves before its old worker is
        retired), each old worker retired within the stop's bound, and ended by a stop signal."""
        if self.should_exit.is_set():  # a SIGHUP queued behind the stop that ended the last one
            return
        for index, old in enumerate(self.processes):
            if self._stop_signal.is_set():
                self._end_restart(len(self.processes) - index)
                return
            new = Process(self.config, self.sockets)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self._stop_signal):  # type: ignore[arg-type]
                if self._stop_signal.is_set():
                    # It may be serving already: the normal bounded stop, with the others.
                    new.terminate()
                    self._stopping.append(_Stopping(new, time.monotonic() + self._stop_within_seconds,
                                                    "the gateway's stop"))
                    self._end_restart(len(self.processes) - index)
                    return
                new.kill()
                new.join()
                logger.error("New child process [%s] was not ready in time; keeping worker [%s] and aborting "
                             "the restart.", new.pid, old.pid)
                return
            self.processes[index] = new
            old.terminate()
            self._retire(old, "its retirement (SIGHUP restart)")

    def _end_restart(self, not_replaced: int) -> None:
        name = signal.Signals(self._stop_signal.signal or signal.SIGTERM).name
        logger.info("Received %s during the restart (SIGHUP): %d worker(s) not replaced; exiting.", name, not_replaced)
        self.should_exit.set()

    def handle_ttou(self) -> None:
        """SIGTTOU: uvicorn's, the retired worker stopped within the stop's bound."""
        logger.info("Received SIGTTOU, decreasing number of processes.")
        if self.processes_num <= 1:
            logger.info("Already reached one process, cannot decrease the number of processes anymore.")
            return
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        self._retire(process, "its retirement (SIGTTOU)")

    def _retire(self, process: Process, stop: str) -> None:
        """Waits for a worker just sent SIGTERM, up to the bound (then kills it); a stop signal
        ends the wait at once and leaves the worker to the stop's (`_stopping`)."""
        deadline = time.monotonic() + self._stop_within_seconds
        while process.process.is_alive() and (left := deadline - time.monotonic()) > 0:
            if self._stop_signal.is_set():
                self._stopping.append(_Stopping(process, deadline, stop))
                return
            process.process.join(min(left, _RETIRE_POLL_SECONDS))
        if process.process.is_alive():
            self._kill(process, stop)
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
