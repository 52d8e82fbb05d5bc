"""A body whose chunks come from blocking reads in a worker thread, consumable two ways.

As an async iterator every chunk costs a round trip through the event loop (a thread-pool
submit, a wake-up of the loop, and the consumer's own hops for what it does with the chunk).
A consumer that works in threads anyway (the filesystem writer: hash and pwrite) calls `feed`
instead: the whole read loop runs in the source's worker thread and hands each chunk to the
consumer's `sink` there. For a 64 MiB upstream blob that replaced ~190 hops (read, hash, write
per MiB) by one, and cut the blob plane's CPU per cold fetch by ~50 ms, a quarter, with a client
reading (docs/benchmarks.md, issue 14).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

# Called in the worker thread with each chunk.
Sink = Callable[[bytes], None]


class ThreadChunks(AsyncIterator[bytes]):
    """Chunks of `read` (blocking; b"" at the end; it raises what the source's errors are),
    run in a worker thread by `run` (an awaitable of `fn(*args)` run in the source's thread)."""

    def __init__(self, read: Callable[[], bytes],
                 run: Callable[..., Awaitable[Any]]) -> None:
        self._read = read
        self._run = run

    def __aiter__(self) -> ThreadChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._run(self._read)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def feed(self, sink: Sink) -> None:
        """Reads every remaining chunk in one worker thread and calls `sink` with it there, in
        order; ends at the body's end or with the first error of `read` or `sink`. A caller
        that stops awaiting (cancelled) must make `sink` raise from then on: the thread goes on
        until its read returns."""
        await self._run(_feed, self._read, sink)

    def tapped(self, tap: Sink) -> ThreadChunks:
        """These chunks, with `tap` called (in the worker thread) with each one read."""
        read = self._read

        def tapped_read() -> bytes:
            chunk = read()
            if chunk:
                tap(chunk)
            return chunk

        return ThreadChunks(tapped_read, self._run)


def _feed(read: Callable[[], bytes], sink: Sink) -> None:
    while chunk := read():
        sink(chunk)
