"""`ChangeStream.close()` ends its stream every time (gateway/change_stream.py): the gateway's
shutdown waits for it (the lifespan closes the cache feed and the revocation feed).

Its loop waited for each answer with `asyncio.wait_for`, which on Python 3.11 swallows a
cancellation that lands as the awaited call completes: here a call to a metadata plane that is
gone, failing. The loop then retried on, and close(), and the gateway's stop with it, waited for
ever: about one close in twenty below, a gateway whose supervisor (and metadata plane) died now
and then. Real gRPC, to a socket nobody listens on."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc

from gateway.change_stream import ChangeStream

CLOSES = 300


async def test_closing_a_stream_to_a_gone_metadata_plane_always_ends_it(tmp_path: Path) -> None:
    channel = grpc.aio.insecure_channel(f"unix:{tmp_path}/gone.sock")
    timing = random.Random(15)
    running: list[asyncio.Task[None]] = []
    try:
        for attempt in range(CLOSES):
            # Resubscribing every millisecond: failed calls complete all the time, as close() comes.
            stream = ChangeStream(channel, heartbeat_seconds=0.1, stale_after_seconds=1.0,
                                  reconnect_max_seconds=0.001, on_answer=lambda answer: None)
            stream.start()
            task = stream._task
            assert task is not None
            await asyncio.sleep(timing.uniform(0, 0.005))
            closing = asyncio.ensure_future(stream.close())
            await asyncio.wait({closing}, timeout=3)
            if not task.done():
                running.append(task)
            assert closing.done() and task.done(), f"close {attempt + 1} of {CLOSES} left its stream running"
    finally:
        for task in running:  # not left retrying in the tests' shared event loop
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        await channel.close()
