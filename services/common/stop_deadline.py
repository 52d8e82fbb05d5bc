"""The hard bound of a process's stop: a thread that ends the process if it still runs then.

A stop waits on others: in-flight calls, a storage backend closing its threads, the last flush of
traces to a collector. One that never answers (a hung mount, a collector that takes the spans and
never replies) held the process for ever, and whatever waits for it (a supervisor, Kubernetes)
with it. The bound is a thread, not an asyncio timeout: the event loop itself may be what is
stuck (the trace flush blocks it while the exporter waits). At the bound it says on stderr what
the stop was doing (`cut`) and the threads' stacks, then exits at once with status 1.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import threading
import time
from collections.abc import Callable


class StopProgress:
    """The step a stop is in (`step`, set by the stop as it goes); called, it names that step."""

    def __init__(self, step: str) -> None:
        self.step = step

    def __call__(self) -> str:
        return self.step


def arm_stop_deadline(within_seconds: float, *, process: str, bound: str,
                      cut: Callable[[], str] | None = None, started: float | None = None) -> threading.Thread:
    """Starts the thread: the process exits (status 1) `within_seconds` after `started` (a
    `time.monotonic()` reading; now when None) unless it has exited before. `process` ("gateway",
    "blob") and `bound` (what the bound is made of, with its settings) go into the last line;
    `cut()`, read at the bound, names the step the stop was in."""
    start = started if started is not None else time.monotonic()
    thread = threading.Thread(target=_exit_at, args=(start + within_seconds, within_seconds, process, bound, cut),
                              name="shutdown-deadline", daemon=True)
    thread.start()
    return thread


def _exit_at(deadline: float, within_seconds: float, process: str, bound: str,
             cut: Callable[[], str] | None) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
    # Straight to the descriptor: the stuck thread may hold sys.stderr's lock (or a log handler's).
    with contextlib.suppress(Exception):
        step = f"; cut short: {cut()}" if cut is not None else ""
        os.write(2, f"lading {process}: still stopping {within_seconds:g} s after the stop began ({bound}){step}; "
                    "exiting now (status 1). Stacks:\n".encode())
        faulthandler.dump_traceback(file=2, all_threads=True)
    os._exit(1)
