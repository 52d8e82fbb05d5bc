"""services/common/tasks.py: `cancel_and_wait` ends a task even when the task swallows one
cancellation (Python 3.11's `asyncio.wait_for` does, when what it waits for completes just as the
task is cancelled: the gateway's change streams then never stopped, and neither did its shutdown),
and with a bound, never waits longer."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again() -> None:
    from services.common.tasks import cancel_and_wait

    answers: asyncio.Queue[str] = asyncio.Queue()

    async def follow() -> None:  # the shape of a change stream's loop
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answers.get(), 0.5)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    answers.put_nowait("answer")  # what wait_for awaits completes...
    await asyncio.sleep(0)  # ...and releases it; the cancellation lands before it resumes
    async with asyncio.timeout(3):
        await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_task_that_refuses_to_stop_is_left_after_the_bound() -> None:
    from services.common.tasks import cancel_and_wait

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cancel_and_wait(task, 0.3)
    assert 0.25 < loop.time() - started < 1.5
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()


def test_the_planes_bound_their_waits_with_asyncio_timeout_not_wait_for() -> None:
    # On Python 3.11, a loop around `asyncio.wait_for` can swallow the cancellation meant to stop
    # it (the test above); `async with asyncio.timeout(...)` never does.
    root = Path(__file__).resolve().parents[2]
    users = [f"{path.relative_to(root)}:{number}"
             for folder in ("gateway", "services") for path in sorted((root / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if "asyncio.wait_for(" in line]
    assert users == []
