"""The one contract every BlobBackend passes, unchanged.

A backend's test module subclasses `BlobBackendContract` and provides a `make_backend` fixture:
a zero-argument callable returning a new backend over fresh, empty storage. Every test gets such
a backend and must leave it empty: after each test the suite lists every key, and a test that
left any behind fails (at teardown) with the keys named, after they are removed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.blob.backends.base import (
    READ_CHUNK_BYTES,
    BlobBackend,
    InvalidKey,
    InvalidRange,
    ObjectNotFound,
    PartTooSmall,
)
from services.blob.backends.keys import blob_key
from services.common.digests import Digest

MiB = 1024 * 1024

INVALID_KEYS = ["", "/a", "a/", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/.tmp-1", "a b", "a\\b", "a\x00b",
                "ä", "x" * 1025]
INVALID_PREFIXES = ["/", "/a", "a//", "../", "a/../", "a/.", " "]


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(backend: BlobBackend, key: str, offset: int = 0, length: int | None = None) -> bytes:
    stream = await backend.get(key, offset, length)
    return b"".join([chunk async for chunk in stream])


async def keys_of(backend: BlobBackend, prefix: str = "") -> list[str]:
    return [info.key async for info in backend.list(prefix)]


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (so misplaced ranges are caught)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


async def assert_nothing_left(backend: BlobBackend) -> None:
    """Fails, naming them, when any key is left in the backend (after removing them)."""
    leftovers = await keys_of(backend)
    for key in leftovers:
        await backend.delete(key)
    assert not leftovers, f"the test left keys behind: {leftovers}"


def _fails_on_leftovers(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Runs the leftover check as part of the test, so a leak fails the test itself (the
    fixture's teardown check stays as a safety net for tests that subclasses add)."""

    @functools.wraps(test)
    async def checked(self: object, *args: object, **kwargs: object) -> None:
        await test(self, *args, **kwargs)
        backend = kwargs.get("backend")
        if backend is not None:
            await assert_nothing_left(backend)  # type: ignore[arg-type]

    return checked


def _checking_leftovers(cls: type) -> type:
    for name, member in list(vars(cls).items()):
        if name.startswith("test_") and asyncio.iscoroutinefunction(member):
            setattr(cls, name, _fails_on_leftovers(member))
    return cls


@_checking_leftovers
class BlobBackendContract:
    """Subclass in a test module and define the `make_backend` fixture."""

    @pytest.fixture
    def make_backend(self) -> Callable[[], BlobBackend]:  # pragma: no cover - overridden
        raise NotImplementedError("a BlobBackendContract subclass must define the make_backend fixture")

    @pytest.fixture
    async def backend(self, make_backend: Callable[[], BlobBackend]) -> AsyncIterator[BlobBackend]:
        backend = make_backend()
        try:
            yield backend
            await assert_nothing_left(backend)
        finally:
            await backend.close()

    # -- the leftover check itself --------------------------------------------------------------

    async def test_leftover_keys_are_detected(self, make_backend: Callable[[], BlobBackend]) -> None:
        backend = make_backend()
        try:
            await backend.put("left/behind", chunks_of(b"x"))
            with pytest.raises(AssertionError, match="left/behind"):
                await assert_nothing_left(backend)
            assert await keys_of(backend) == []
        finally:
            await backend.close()

    # -- put / get ------------------------------------------------------------------------------

    async def test_put_then_get_round_trip(self, backend: BlobBackend) -> None:
        data = pattern(100_000)
        size = await backend.put("a/b/object", chunks_of(data[:10], b"", data[10:70_000], data[70_000:]))
        assert size == len(data)
        assert await read(backend, "a/b/object") == data
        await backend.delete("a/b/object")

    async def test_empty_object(self, backend: BlobBackend) -> None:
        assert await backend.put("empty/none", chunks_of()) == 0
        assert await backend.put("empty/blank", chunks_of(b"", b"")) == 0
        for key in ("empty/none", "empty/blank"):
            assert (await backend.stat(key)).size == 0
            assert await read(backend, key) == b""
            assert await read(backend, key, 0, 10) == b""
            with pytest.raises(InvalidRange):
                await backend.get(key, 1)
            await backend.delete(key)

    async def test_ranged_reads_at_the_edges(self, backend: BlobBackend) -> None:
        data = pattern(1000)
        await backend.put("r", chunks_of(data))
        assert await read(backend, "r", 0) == data
        assert await read(backend, "r", 0, 1) == data[:1]
        assert await read(backend, "r", 999) == data[999:]
        assert await read(backend, "r", 999, 1) == data[999:]
        assert await read(backend, "r", 500, 100) == data[500:600]
        assert await read(backend, "r", 900, 5000) == data[900:]
        assert await read(backend, "r", 1000) == b""
        assert await read(backend, "r", 10, 0) == b""
        await backend.delete("r")

    async def test_invalid_ranges(self, backend: BlobBackend) -> None:
        await backend.put("r", chunks_of(b"0123456789"))
        for offset, length in [(11, None), (11, 1), (-1, None), (0, -1), (10**12, None)]:
            with pytest.raises(InvalidRange) as caught:
                await backend.get("r", offset, length)
            assert caught.value.size == 10
        await backend.delete("r")

    async def test_large_object_streams_in_bounded_chunks(self, backend: BlobBackend) -> None:
        data = pattern(3 * MiB + 12345, seed=7)
        await backend.put("big", chunks_of(*(data[i : i + 300_000] for i in range(0, len(data), 300_000))))
        stream = await backend.get("big")
        sizes = []
        received = bytearray()
        async for chunk in stream:
            sizes.append(len(chunk))
            received += chunk
        assert bytes(received) == data
        assert max(sizes) <= READ_CHUNK_BYTES
        assert await read(backend, "big", MiB + 5, 2 * MiB) == data[MiB + 5 : 3 * MiB + 5]
        await backend.delete("big")

    async def test_abandoned_read_does_not_block_delete(self, backend: BlobBackend) -> None:
        data = pattern(3 * MiB)
        await backend.put("big", chunks_of(data))
        stream = await backend.get("big")
        first = await anext(stream)
        assert first == data[: len(first)]
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        unopened = await backend.get("big")  # opened, never iterated
        del unopened
        await backend.delete("big")
        with pytest.raises(ObjectNotFound):
            await backend.stat("big")

    async def test_absent_key(self, backend: BlobBackend) -> None:
        with pytest.raises(ObjectNotFound) as caught:
            await backend.get("no/such/key")
        assert caught.value.key == "no/such/key"
        with pytest.raises(ObjectNotFound):
            await backend.stat("no/such/key")
        await backend.put("no/such-sibling", chunks_of(b"x"))
        with pytest.raises(ObjectNotFound):
            await backend.stat("no/such")
        with pytest.raises(ObjectNotFound):
            await backend.stat("no")  # a "folder" of another key is not an object
        await backend.delete("no/such-sibling")

    async def test_overwrite_replaces_the_whole_object(self, backend: BlobBackend) -> None:
        await backend.put("k", chunks_of(b"a much longer first version"))
        assert await backend.put("k", chunks_of(b"short")) == 5
        assert await read(backend, "k") == b"short"
        assert (await backend.stat("k")).size == 5
        assert await keys_of(backend) == ["k"]
        await backend.delete("k")

    async def test_failed_put_keeps_the_previous_object_and_leaves_nothing(self, backend: BlobBackend) -> None:
        async def failing() -> AsyncIterator[bytes]:
            yield pattern(2 * MiB)
            raise ConnectionError("client went away")

        with pytest.raises(ConnectionError):
            await backend.put("fresh", failing())
        with pytest.raises(ObjectNotFound):
            await backend.stat("fresh")
        await backend.put("kept", chunks_of(b"old"))
        with pytest.raises(ConnectionError):
            await backend.put("kept", failing())
        assert await read(backend, "kept") == b"old"
        assert await keys_of(backend) == ["kept"]
        await backend.delete("kept")

    async def test_stat(self, backend: BlobBackend) -> None:
        before = time.time()
        await backend.put("s/t", chunks_of(b"12345"))
        info = await backend.stat("s/t")
        assert info.key == "s/t"
        assert info.size == 5
        # Clocks of a filesystem or an object store may be coarse; allow generous slack.
        assert before - 60 <= info.modified <= time.time() + 60
        await backend.delete("s/t")

    async def test_concurrent_puts_of_one_key_leave_one_whole_version(self, backend: BlobBackend) -> None:
        versions = [pattern(200_000 + 10_000 * i, seed=i) for i in range(8)]

        async def slow(data: bytes) -> AsyncIterator[bytes]:
            for start in range(0, len(data), 50_000):
                await asyncio.sleep(0)
                yield data[start : start + 50_000]

        sizes = await asyncio.gather(*(backend.put("same", slow(v)) for v in versions))
        assert sizes == [len(v) for v in versions]
        assert await read(backend, "same") in versions
        assert await keys_of(backend) == ["same"]
        await backend.delete("same")

    async def test_concurrent_puts_of_different_keys(self, backend: BlobBackend) -> None:
        names = [f"many/{i:03d}" for i in range(20)]
        await asyncio.gather(*(backend.put(name, chunks_of(name.encode())) for name in names))
        assert await keys_of(backend, "many/") == names
        for name in names:
            assert await read(backend, name) == name.encode()
        await asyncio.gather(*(backend.delete(name) for name in names))

    # -- delete -----------------------------------------------------------------------------------

    async def test_delete_is_idempotent(self, backend: BlobBackend) -> None:
        await backend.delete("never/existed")
        await backend.put("d/x", chunks_of(b"x"))
        await backend.put("d/y", chunks_of(b"y"))
        await backend.delete("d/x")
        await backend.delete("d/x")
        with pytest.raises(ObjectNotFound):
            await backend.stat("d/x")
        with pytest.raises(ObjectNotFound):
            await backend.get("d/x")
        assert await keys_of(backend) == ["d/y"]
        await backend.delete("d/y")
        await backend.put("d/x", chunks_of(b"again"))  # its folder may have been pruned
        assert await read(backend, "d/x") == b"again"
        await backend.delete("d/x")

    # -- list -------------------------------------------------------------------------------------

    async def test_list_by_prefix_in_lexical_order(self, backend: BlobBackend) -> None:
        names = ["a/b/1", "a/b/2", "a/c", "a-b", "ab", "b", "a/bc/x", "a/b-/y"]
        for name in names:
            await backend.put(name, chunks_of(name.encode() * 3))
        assert await keys_of(backend) == sorted(names)
        assert await keys_of(backend, "a/") == sorted(n for n in names if n.startswith("a/"))
        assert await keys_of(backend, "a/b") == ["a/b-/y", "a/b/1", "a/b/2", "a/bc/x"]
        assert await keys_of(backend, "a/b/") == ["a/b/1", "a/b/2"]
        assert await keys_of(backend, "a") == sorted(n for n in names if n.startswith("a"))
        assert await keys_of(backend, "a/b/1") == ["a/b/1"]
        assert await keys_of(backend, "zzz") == []
        assert await keys_of(backend, "a/nothing/") == []
        sizes = {info.key: info.size async for info in backend.list("")}
        assert sizes == {name: 3 * len(name) for name in names}
        for name in names:
            await backend.delete(name)

    async def test_list_rejects_impossible_prefixes(self, backend: BlobBackend) -> None:
        for prefix in INVALID_PREFIXES:
            with pytest.raises(InvalidKey):
                await keys_of(backend, prefix)

    # -- keys -------------------------------------------------------------------------------------

    async def test_invalid_keys_are_refused_everywhere(self, backend: BlobBackend) -> None:
        for key in INVALID_KEYS:
            with pytest.raises(InvalidKey):
                await backend.put(key, chunks_of(b"x"))
            with pytest.raises(InvalidKey):
                await backend.get(key)
            with pytest.raises(InvalidKey):
                await backend.stat(key)
            with pytest.raises(InvalidKey):
                await backend.delete(key)
        await backend.put("ok", chunks_of(b"x"))
        for key in INVALID_KEYS:
            with pytest.raises(InvalidKey):
                await backend.compose(key, ["ok"])
            with pytest.raises(InvalidKey):
                await backend.compose("ok2", ["ok", key])
        await backend.delete("ok")

    # -- compose ----------------------------------------------------------------------------------

    async def test_compose_concatenates_and_keeps_the_sources(self, backend: BlobBackend) -> None:
        minimum = backend.min_part_size
        first, second, last = pattern(max(minimum, 70_000), 1), pattern(max(minimum, 1), 2), pattern(33, 3)
        for key, data in (("p/1", first), ("p/2", second), ("p/3", last)):
            await backend.put(key, chunks_of(data))
        assert await backend.compose("out/whole", ["p/1", "p/2", "p/3"]) == len(first + second + last)
        assert await read(backend, "out/whole") == first + second + last
        assert (await backend.stat("out/whole")).size == len(first + second + last)
        assert await read(backend, "p/2") == second
        assert await keys_of(backend) == ["out/whole", "p/1", "p/2", "p/3"]
        for key in ("out/whole", "p/1", "p/2", "p/3"):
            await backend.delete(key)

    async def test_compose_of_one_source_is_independent_of_it(self, backend: BlobBackend) -> None:
        await backend.put("src", chunks_of(b"original bytes"))
        assert await backend.compose("dst/copy", ["src"]) == 14
        await backend.put("src", chunks_of(b"replaced"))
        assert await read(backend, "dst/copy") == b"original bytes"
        await backend.delete("src")
        assert await read(backend, "dst/copy") == b"original bytes"
        await backend.delete("dst/copy")

    async def test_compose_replaces_an_existing_destination(self, backend: BlobBackend) -> None:
        await backend.put("dst", chunks_of(b"old old old"))
        await backend.put("src", chunks_of(b"new"))
        assert await backend.compose("dst", ["src"]) == 3
        assert await read(backend, "dst") == b"new"
        await backend.delete("dst")
        await backend.delete("src")

    async def test_compose_of_a_missing_source_writes_nothing(self, backend: BlobBackend) -> None:
        await backend.put("present", chunks_of(pattern(max(backend.min_part_size, 10))))
        with pytest.raises(ObjectNotFound) as caught:
            await backend.compose("dst", ["present", "absent"])
        assert caught.value.key == "absent"
        with pytest.raises(ObjectNotFound):
            await backend.stat("dst")
        await backend.delete("present")

    async def test_compose_argument_rules(self, backend: BlobBackend) -> None:
        await backend.put("src", chunks_of(b"x"))
        with pytest.raises(InvalidKey):
            await backend.compose("dst", [])
        with pytest.raises(InvalidKey):
            await backend.compose("src", ["src"])
        await backend.delete("src")

    async def test_compose_minimum_part_size(self, backend: BlobBackend) -> None:
        assert backend.min_part_size >= 0
        await backend.put("small", chunks_of(b"tiny"))
        await backend.put("large", chunks_of(pattern(max(backend.min_part_size, 8))))
        # The last source may always be small.
        assert await backend.compose("ok", ["large", "small"]) == max(backend.min_part_size, 8) + 4
        if backend.min_part_size > len(b"tiny"):
            with pytest.raises(PartTooSmall) as caught:
                await backend.compose("bad", ["small", "large"])
            assert caught.value.key == "small"
            with pytest.raises(ObjectNotFound):
                await backend.stat("bad")
        else:
            assert await backend.compose("bad", ["small", "large"]) == max(backend.min_part_size, 8) + 4
            await backend.delete("bad")
        for key in ("ok", "small", "large"):
            await backend.delete(key)

    # -- list_blobs -------------------------------------------------------------------------------

    async def test_list_blobs_lists_committed_blobs_in_key_order_and_resumes(self, backend: BlobBackend) -> None:
        blob_keys = sorted({blob_key(Digest.of(f"blob {i}".encode())) for i in range(12)}
                           | {blob_key(Digest.of(b"long", "sha512"))})
        assert len({key.split("/")[2] for key in blob_keys}) > 5, "the blobs should span several shards"
        others = ["blobs-x", "blobsy/z", "uploads/u/state.json", "probes/0123456789abcdef", "a"]
        for index, key in enumerate(blob_keys):
            await backend.put(key, chunks_of(pattern(index + 1)))
        for key in others:
            await backend.put(key, chunks_of(b"not a blob"))
        listed = [info async for info in backend.list_blobs()]
        assert [info.key for info in listed] == blob_keys
        assert [info.size for info in listed] == list(range(1, len(blob_keys) + 1))
        # Resuming after any key (present, or in between) gives exactly the rest.
        for index, key in enumerate(blob_keys):
            assert [info.key async for info in backend.list_blobs(key)] == blob_keys[index + 1:]
        between = blob_keys[3][:-1] + "0"
        assert [info.key async for info in backend.list_blobs(between)] == [k for k in blob_keys if k > between]
        assert [info.key async for info in backend.list_blobs("blobs/sha256/zz")] == [
            k for k in blob_keys if k > "blobs/sha256/zz"]
        assert [info.key async for info in backend.list_blobs("a")] == blob_keys
        assert [info.key async for info in backend.list_blobs("z")] == []
        # Stopping early is fine (a page), and deleting what was listed does not disturb the rest.
        listing = backend.list_blobs()
        first = await anext(listing)
        await listing.aclose()  # type: ignore[attr-defined]
        await backend.delete(first.key)
        assert [info.key async for info in backend.list_blobs(first.key)] == blob_keys[1:]
        for key in [*blob_keys[1:], *others]:
            await backend.delete(key)
        assert [info async for info in backend.list_blobs()] == []

    async def test_list_blobs_times_are_when_the_key_was_put_in_place(self, backend: BlobBackend) -> None:
        key = blob_key(Digest.of(b"timed"))
        await backend.put("staged/part", chunks_of(b"timed"))
        before = time.time()
        await backend.compose(key, ["staged/part"])  # how a commit puts a staged part in place
        await backend.delete("staged/part")
        (info,) = [info async for info in backend.list_blobs()]
        assert info.key == key and info.size == 5
        # Clocks of a filesystem or an object store may be coarse; allow generous slack.
        assert before - 60 <= info.modified <= time.time() + 60
        await backend.delete(key)

    async def test_list_blobs_refuses_an_impossible_start(self, backend: BlobBackend) -> None:
        for start in ("/a", "a//b", "../x", "a b"):
            with pytest.raises(InvalidKey):
                [info async for info in backend.list_blobs(start)]

    # -- lifecycle --------------------------------------------------------------------------------

    async def test_close_is_idempotent(self, make_backend: Callable[[], BlobBackend]) -> None:
        backend = make_backend()
        await backend.put("c", chunks_of(b"x"))
        await backend.delete("c")
        await backend.close()
        await backend.close()
