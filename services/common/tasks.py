"""Background asyncio tasks of the services (collector, delivery worker, queue gauges, purger)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("lading.tasks")

# How often `cancel_and_wait` cancels again a task that is still running (see there).
_RECANCEL_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task[Any] | None, within_seconds: float | None = None) -> None:
    """Cancels `task` (None: nothing) and waits until it has finished unwinding, so that whatever
    it holds (connections, files) is released before the caller closes the rest.

    A task can swallow one cancellation: on Python 3.11 `asyncio.wait_for` returns its result
    instead of raising when the awaited operation completes just as the task is cancelled, and a
    `while True` loop around it then runs on. So a task still running is cancelled again every
    `_RECANCEL_SECONDS`; with `within_seconds`, it is left running (logged) after that long, so
    that a shutdown never waits on it for ever."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    give_up_at = None if within_seconds is None else loop.time() + within_seconds
    while not task.done():
        task.cancel()
        pause = _RECANCEL_SECONDS if give_up_at is None else min(_RECANCEL_SECONDS, give_up_at - loop.time())
        if pause <= 0:
            log.warning("task %s did not stop within %.3g s of being cancelled; left behind",
                        task.get_name(), within_seconds)
            return
        await asyncio.wait({task}, timeout=pause)
    with contextlib.suppress(asyncio.CancelledError):
        await task
