"""Background asyncio tasks of the services (collector, delivery worker, queue gauges, purger)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancels `task` (None: nothing) and waits until it has finished unwinding, so that whatever
    it holds (connections, files) is released before the caller closes the rest."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
