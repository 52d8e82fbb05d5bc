"""The S3 backend's part buffers: memory for the parts of streamed multipart writes, within one
budget per blob process (`blob.s3.part_buffer_budget_bytes`).

A part reserves its whole size before it fills and gives it back once uploaded, so more
concurrent writes wait (and their streams pause) instead of buffering; see `PartBuffers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
from collections import deque

# Idle part buffers are unmapped once no write has used one for this long.
IDLE_BUFFER_SECONDS = 2.0


class PartBuffer:
    """One part's bytes: an anonymous memory map of `size` bytes, filled from the start.

    Memory maps, not bytearrays: unmapping gives the pages back to the kernel at once, where a
    freed 16 MiB heap block may stay resident (glibc's malloc raises its mmap threshold after the
    first such free), and a fresh map costs no memset (pages are zero-filled as first touched)."""

    __slots__ = ("map", "size", "filled", "reserved")

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self.size = size
        self.filled = 0
        self.reserved = 0  # bytes of the budget this buffer holds while in use

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def write(self, data: bytes | memoryview, start: int = 0) -> int:
        """Copies as much of `data[start:]` as fits; returns how many bytes that was."""
        count = min(self.size - self.filled, len(data) - start)
        if count > 0:
            piece = data if start == 0 and count == len(data) else memoryview(data)[start : start + count]
            self.map[self.filled : self.filled + count] = piece
            self.filled += count
        return max(count, 0)

    def view(self) -> memoryview:
        """The filled bytes, without a copy (valid until the buffer is given back)."""
        return memoryview(self.map)[: self.filled]

    def unmap(self) -> None:
        # A view still referenced (say, by a traceback) keeps the map until it is collected.
        with contextlib.suppress(BufferError):
            self.map.close()


class PartBuffers:
    """The part buffers of all puts of one backend (one per blob process), within `capacity` bytes.

    `acquire(size)` reserves `size` bytes (FIFO: no write starves), waiting while other parts
    hold the budget, then hands out an idle buffer of that size or maps a new one; `release`
    gives both back. Idle buffers are kept for reuse (refilling a mapped buffer costs about a
    tenth of faulting fresh pages in) but count against the budget too, so mapped part memory
    never exceeds `capacity`; they are unmapped when a new size needs the room, and all of them
    once no part has been in use for IDLE_BUFFER_SECONDS.

    Never deadlocks: a put reserves a part only when it has bytes for it and holds at most one
    part filling (fed by its own stream) and one uploading (finishes without the budget), so
    every reservation is given back without waiting on another. A part larger than `capacity`
    reserves the whole budget: it waits until nothing else is held and then proceeds alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0
        # Highest `reserved` so far, and how many acquires had to wait (tests and diagnostics).
        self.peak_reserved = 0
        self.waited = 0
        self._idle: list[PartBuffer] = []
        self._idle_bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._trim_timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Puts waiting for room."""
        return sum(1 for _, future in self._waiters if not future.done())

    async def acquire(self, size: int) -> PartBuffer:
        amount = min(size, self.capacity)
        if self._waiters or self.capacity - self.reserved < amount:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((amount, future))
            self.waited += 1
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self._give_back(amount)  # granted, then cancelled before it could be used
                else:
                    self._wake()  # a waiter at the head may have blocked the ones behind it
                raise
        else:
            self._take(amount)
        try:
            buffer = self._reuse(size)
            if buffer is None:
                # Idle buffers and every reservation (this one included) must fit the budget.
                self._unmap_idle(max(self.capacity - self.reserved, 0))
                buffer = PartBuffer(size)
        except BaseException:
            self._give_back(amount)
            raise
        buffer.reserved = amount
        return buffer

    def release(self, buffer: PartBuffer, *, reuse: bool = True) -> None:
        """Gives `buffer` and its reservation back; `reuse=False` when a thread may still read it."""
        amount, buffer.reserved = buffer.reserved, 0
        if (
            reuse
            and buffer.size <= self.capacity
            and self.reserved - amount + self._idle_bytes + buffer.size <= self.capacity
        ):
            buffer.filled = 0
            self._idle.append(buffer)
            self._idle_bytes += buffer.size
        else:
            buffer.unmap()
        self._give_back(amount)

    def close(self) -> None:
        """Unmaps the idle buffers (buffers in use are unmapped as they come back)."""
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
        self._unmap_idle(0)

    def _take(self, amount: int) -> None:
        self.reserved += amount
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _give_back(self, amount: int) -> None:
        self.reserved -= amount
        self._wake()
        if self.reserved == 0 and self._idle:
            # (Re)start the idle clock: the idle buffers go if nothing is reserved till it rings.
            if self._trim_timer is not None:
                self._trim_timer.cancel()
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
                loop = asyncio.get_running_loop()
                self._trim_timer = loop.call_later(IDLE_BUFFER_SECONDS, self._trim_if_idle)

    def _wake(self) -> None:
        while self._waiters:
            amount, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()  # cancelled
                continue
            if self.capacity - self.reserved < amount:
                return
            self._waiters.popleft()
            self._take(amount)
            future.set_result(None)

    def _reuse(self, size: int) -> PartBuffer | None:
        for index, buffer in enumerate(self._idle):
            if buffer.size == size:
                del self._idle[index]
                self._idle_bytes -= size
                return buffer
        return None

    def _unmap_idle(self, keep_bytes: int) -> None:
        while self._idle and self._idle_bytes > keep_bytes:
            buffer = self._idle.pop()
            self._idle_bytes -= buffer.size
            buffer.unmap()

    def _trim_if_idle(self) -> None:
        self._trim_timer = None
        if self.reserved == 0:
            self._unmap_idle(0)
