"""The S3 backend's part buffer budget (`blob.s3.part_buffer_budget_bytes`), against a real SeaweedFS:
concurrent puts never hold more part buffers than the budget (the others wait, and every object
still arrives whole), a part larger than the budget proceeds alone instead of deadlocking, small
and one-chunk objects never wait for it, a put cancelled while waiting gives nothing back twice,
and neither puts nor streamed reads pile bytes up in Python's heap."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from services.blob.backends.base import READ_CHUNK_BYTES
from services.blob.backends.s3 import S3Backend
from services.blob.backends.s3_factory import create_s3_backend
from services.common.settings import BlobSettings, S3BackendSettings
from tests.contracts.blob_backend_suite import assert_nothing_left
from tests.support.seaweedfs import SeaweedFS

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: the smallest parts, the quickest tests
# Generous bound for "completes instead of hanging" (a deadlock would never complete).
DEADLOCK_SECONDS = 180

pytestmark = pytest.mark.s3

_BLOCK = random.Random(5).randbytes(256 * 1024)


def make_backend(server: SeaweedFS, budget: int, *, io_threads: int = 8) -> S3Backend:
    """The backend as the blob plane builds it, with `budget` bytes of part buffers."""
    s3 = S3BackendSettings(
        endpoint=server.endpoint,
        region=server.region,
        bucket=server.bucket,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        path_style=True,
        key_prefix=server.new_prefix(),
        part_size_bytes=PART,
        part_buffer_budget_bytes=budget,
        read_timeout_seconds=60.0,
    )
    return create_s3_backend(BlobSettings(backend="s3", io_threads=io_threads, s3=s3))


class Stream:
    """`size` bytes as fresh 256 KiB chunks (the seed and chunk number written over the start of
    a fixed random block), hashed as they are handed out: no test holds a whole object."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = size
        self.hasher = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        for index, start in enumerate(range(0, self.size, len(_BLOCK))):
            chunk = (struct.pack(">QQ", self.seed, index) + _BLOCK[16:])[: self.size - start]
            self.hasher.update(chunk)
            yield chunk
            await asyncio.sleep(0)  # let the other puts interleave, as network streams do

    @property
    def digest(self) -> str:
        return self.hasher.hexdigest()


async def stored_digest(backend: S3Backend, key: str) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    async for piece in await backend.get(key):
        assert len(piece) <= READ_CHUNK_BYTES
        hasher.update(piece)
        size += len(piece)
    return size, hasher.hexdigest()


async def remove_all(backend: S3Backend, keys: list[str]) -> None:
    """Deletes the objects a test wrote, then fails on anything else left: other keys, or
    multipart uploads never completed or aborted."""
    for key in keys:
        await backend.delete(key)
    await assert_nothing_left(backend)
    uploads = backend._client._list_multipart_uploads(backend.bucket, prefix=backend.key_prefix).uploads
    assert not uploads, [upload.object_name for upload in uploads]


async def put_all(backend: S3Backend, streams: list[Stream]) -> list[int]:
    return await asyncio.wait_for(
        asyncio.gather(*(backend.put(f"obj/{s.seed}", s.chunks()) for s in streams)), DEADLOCK_SECONDS
    )


async def test_concurrent_puts_wait_for_room_and_never_exceed_the_budget(seaweedfs: SeaweedFS) -> None:
    budget = 2 * PART
    backend = make_backend(seaweedfs, budget)
    try:
        # 12 MiB + change each: three parts (5 + 5 + the rest), six writes at once.
        streams = [Stream(seed, 12 * MiB + 1000 * seed) for seed in range(6)]
        assert await put_all(backend, streams) == [s.size for s in streams]
        buffers = backend.part_buffers
        assert buffers.peak_reserved <= budget, f"{buffers.peak_reserved} bytes of part buffers held, budget {budget}"
        assert buffers.waited > 0, "six writes of three parts each never had to wait for a budget of two parts"
        assert buffers.reserved == 0 and buffers.waiting == 0
        for stream in streams:
            assert await stored_digest(backend, f"obj/{stream.seed}") == (stream.size, stream.digest)
        await remove_all(backend, [f"obj/{stream.seed}" for stream in streams])
    finally:
        await backend.close()


async def test_a_part_larger_than_the_budget_proceeds_alone(seaweedfs: SeaweedFS) -> None:
    budget = 1 * MiB  # smaller than one part
    backend = make_backend(seaweedfs, budget)
    try:
        streams = [Stream(100 + seed, 11 * MiB) for seed in range(3)]
        assert await put_all(backend, streams) == [s.size for s in streams]
        assert backend.part_buffers.peak_reserved <= budget
        for stream in streams:
            assert await stored_digest(backend, f"obj/{stream.seed}") == (stream.size, stream.digest)
        await remove_all(backend, [f"obj/{stream.seed}" for stream in streams])
    finally:
        await backend.close()


async def test_small_and_one_chunk_objects_do_not_wait_for_part_buffers(seaweedfs: SeaweedFS) -> None:
    backend = make_backend(seaweedfs, PART)
    try:
        held = await backend.part_buffers.acquire(PART)  # the whole budget, as a big write would
        try:
            small = Stream(200, 700 * 1024)  # under the unbuffered head: never a part buffer
            assert await asyncio.wait_for(backend.put("small", small.chunks()), DEADLOCK_SECONDS) == small.size
            whole = bytes(7 * MiB)  # one chunk bigger than a part, as a commit's bytes come

            async def one() -> AsyncIterator[bytes]:
                yield whole

            assert await asyncio.wait_for(backend.put("whole", one()), DEADLOCK_SECONDS) == len(whole)
            assert backend.part_buffers.waited == 0
        finally:
            backend.part_buffers.release(held)
        assert await stored_digest(backend, "small") == (small.size, small.digest)
        assert await stored_digest(backend, "whole") == (len(whole), hashlib.sha256(whole).hexdigest())
        await remove_all(backend, ["small", "whole"])
    finally:
        await backend.close()


async def test_a_put_cancelled_while_waiting_for_room_leaves_the_budget_whole(seaweedfs: SeaweedFS) -> None:
    backend = make_backend(seaweedfs, PART)
    try:
        buffers = backend.part_buffers
        held = await buffers.acquire(PART)
        waiting = asyncio.ensure_future(backend.put("cancelled", Stream(300, 8 * MiB).chunks()))
        while buffers.waiting == 0:
            assert not waiting.done(), waiting
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        buffers.release(held)
        assert buffers.reserved == 0 and buffers.waiting == 0
        # The budget is whole again: a write that needs all of it goes through.
        stream = Stream(301, 8 * MiB)
        assert await asyncio.wait_for(backend.put("after", stream.chunks()), DEADLOCK_SECONDS) == stream.size
        assert await stored_digest(backend, "after") == (stream.size, stream.digest)
        assert buffers.reserved == 0
        await remove_all(backend, ["after"])
    finally:
        await backend.close()


async def test_puts_and_streamed_reads_keep_python_allocations_small(seaweedfs: SeaweedFS) -> None:
    """Part buffers are memory maps within the budget; what Python allocates besides (the chunks
    in hand, one read piece per stream) stays a few MiB however many bytes pass. Before the budget,
    each write joined its pending chunks into a part: ~3 parts per write of Python bytes."""
    backend = make_backend(seaweedfs, 4 * PART)
    try:
        streams = [Stream(400 + seed, 16 * MiB) for seed in range(8)]
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            assert await put_all(backend, streams) == [s.size for s in streams]
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            stored = await asyncio.wait_for(
                asyncio.gather(*(stored_digest(backend, f"obj/{s.seed}") for s in streams)), DEADLOCK_SECONDS
            )
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stored == [(s.size, s.digest) for s in streams]
        # 8 writes × (a couple of 256 KiB chunks) and 8 reads × (a 1 MiB piece, maybe two).
        assert put_peak < 12 * MiB, f"puts allocated up to {put_peak / MiB:.1f} MiB in Python"
        assert read_peak < 24 * MiB, f"reads allocated up to {read_peak / MiB:.1f} MiB in Python"
        await remove_all(backend, [f"obj/{stream.seed}" for stream in streams])
    finally:
        await backend.close()
