"""A child process that ends with its parent: `lading serve`'s planes and the gateway's workers.

A supervisor that dies without its stop (SIGKILL, the OOM killer) cannot tell its children to
stop; children left running keep what they hold (the registry port, for the gateway's workers)
and nobody stops them any more. On Linux the kernel sends a chosen signal to a child whose parent
dies (`PR_SET_PDEATHSIG`): SIGTERM here, so the child begins its own graceful, bounded stop
rather than being cut in the middle of its requests.

A child whose stop is bounded by its parent (a gateway worker: the gateway's supervisor kills a
worker still stopping at its bound) has no bound once that parent is gone: a stop step stuck past
its own timeouts (the last trace flush to a collector that takes the spans and never answers
blocks the event loop; a thread the loop's close waits for) held the orphan, and what it holds,
for as long as that lasts. `bound_orphaned_stop` gives it the bound the parent would have: it exits
that long after the parent's death, whatever it still waits on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time

from services.common.stop_deadline import arm_stop_deadline

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None, sig: int = signal.SIGTERM) -> bool:
    """Asks the kernel to send this process `sig` when its parent dies (Linux only; elsewhere a
    no-op). Call it first thing in the child: before exec (a `preexec_fn`), right after fork, or
    at the start of a spawned child.

    `parent`: the pid the parent had when it started this child. The request only covers a death
    after it; a parent that died before has been replaced already (by init or a subreaper), and
    then this returns False: the signal will never come, so the caller ends at once. True
    otherwise (also when `parent` is None: nothing to check)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return parent is None or os.getppid() == parent


# How often a child without pidfds (not Linux ≥ 5.3) looks whether its parent is still there.
_PARENT_POLL_SECONDS = 0.5


def bound_orphaned_stop(parent: int, within_seconds: float, *, process: str, bound: str) -> threading.Thread:
    """Starts a thread that waits for `parent` (this process's parent, alive when called) to die,
    then ends this process `within_seconds` after the death unless it has exited before (status
    1, its stacks on stderr: services/common/stop_deadline.py); `process` and `bound` name the
    process and the bound in that last line. The death itself starts the stop (`die_with_parent`'s
    signal); this only bounds it."""
    thread = threading.Thread(target=_bound_after_death, args=(parent, within_seconds, process, bound),
                              name="orphan-stop-bound", daemon=True)
    thread.start()
    return thread


def _bound_after_death(parent: int, within_seconds: float, process: str, bound: str) -> None:
    _wait_for_death(parent)
    arm_stop_deadline(within_seconds, process=process, bound=f"{bound}, from its parent's death ({parent})",
                      started=time.monotonic())


def _wait_for_death(parent: int) -> None:
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfds here, or the parent is gone already
        pidfd = None
    try:
        # Parent still ours: then the pidfd is its (a pid is not reused while its process lives).
        if os.getppid() != parent:
            return
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once the process has exited
            return
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
    finally:
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)
