"""The wrapper every backend runs in (services/blob/backends/instrumented.py): keys checked
before a backend sees them, a metric per call (writers' calls too) labelled with its outcome,
exceptions passed on unchanged, and the wrapped backend's extras reachable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest

from services.blob.backends.base import InvalidKey, ObjectNotFound, WriterBusy
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.instrumented import BackendMetrics, InstrumentedBackend
from services.blob.backends.memory import MemoryBackend
from services.common.metrics import Metrics
from tests.contracts.blob_backend_suite import chunks_of, failing_after, read


def samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(operation, outcome) -> calls counted, from the exposition text."""
    counted: dict[tuple[str, str], float] = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("lading_blob_backend_seconds_count{"):
            labels, value = line[len("lading_blob_backend_seconds_count{"):].split("} ")
            fields = dict(item.split("=", 1) for item in labels.split(","))
            counted[(fields["operation"].strip('"'), fields["outcome"].strip('"'))] = float(value)
    return counted


class Spy(MemoryBackend):
    """A memory backend that records the keys it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def put(self, key: str, chunks) -> int:  # type: ignore[no-untyped-def]
        self.seen.append(key)
        return await super().put(key, chunks)

    async def stat(self, key: str):  # type: ignore[no-untyped-def]
        self.seen.append(key)
        return await super().stat(key)


async def test_a_bad_key_never_reaches_the_backend() -> None:
    spy = Spy()
    backend = InstrumentedBackend(spy, name="memory")
    for key in ("../escape", "/abs", "a//b", ".hidden"):
        with pytest.raises(InvalidKey):
            await backend.put(key, chunks_of(b"x"))
        with pytest.raises(InvalidKey):
            await backend.stat(key)
    assert spy.seen == []
    await backend.put("fine", chunks_of(b"x"))
    assert spy.seen == ["fine"]


async def test_each_call_is_counted_with_its_outcome(tmp_path) -> None:
    metrics = Metrics("blob")
    backend = InstrumentedBackend(
        FilesystemBackend(tmp_path / "root", io_threads=2), name="filesystem", metrics=BackendMetrics(metrics)
    )
    try:
        await backend.put("a/b", chunks_of(b"hello"))
        await backend.stat("a/b")
        with pytest.raises(ObjectNotFound):
            await backend.stat("a/none")

        async def broken() -> AsyncIterator[bytes]:
            async for chunk in failing_after(b"partial"):
                yield chunk

        with pytest.raises(ConnectionResetError):  # the caller's own stream: passed on unchanged
            await backend.put("a/c", broken())
        writer = await backend.open_writer("uploads/u/data")
        parts = await writer.append((), chunks_of(b"staged"))
        with pytest.raises(WriterBusy):
            await backend.open_writer("uploads/u/data")
        await writer.commit(parts, "blobs/x")
        assert [info.key async for info in backend.list("")] == ["a/b", "blobs/x"]
        await backend.delete_all(["a/b", "blobs/x"])
    finally:
        await backend.close()
    counted = samples(metrics)
    assert counted[("put", "ok")] == 1
    assert counted[("stat", "ok")] == 1
    assert counted[("stat", "not_found")] == 1
    assert counted[("put", "error")] == 1
    assert counted[("open_writer", "ok")] == 1
    assert counted[("open_writer", "busy")] == 1
    assert counted[("writer.append", "ok")] == 1
    assert counted[("writer.commit", "ok")] == 1
    assert counted[("list", "ok")] == 1
    assert counted[("delete_all", "ok")] == 1


async def test_the_wrapped_backends_extras_are_reachable(tmp_path) -> None:
    inner = FilesystemBackend(tmp_path / "root", io_threads=1)
    backend = InstrumentedBackend(inner, name="filesystem")
    try:
        assert backend.local_path("blobs/k") == inner.root / "blobs/k"
        assert backend.min_part_size == 0
        await backend.put("blobs/k", chunks_of(b"v"))
        assert await read(backend, "blobs/k") == b"v"
        await backend.delete("blobs/k")
    finally:
        await backend.close()
