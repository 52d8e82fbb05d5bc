"""A child process that ends with its parent: `lading serve`'s planes and the gateway's workers.

A supervisor that dies without its stop (SIGKILL, the OOM killer) cannot tell its children to
stop; children left running keep what they hold (the registry port, for the gateway's workers)
and nobody stops them any more. On Linux the kernel sends a chosen signal to a child whose parent
dies (`PR_SET_PDEATHSIG`): SIGTERM here, so the child begins its own graceful, bounded stop
rather than being cut in the middle of its requests.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
