"""The one contract every BlobBackend passes, unchanged: objects, small-object calls, writers.

A backend's test module subclasses `BlobBackendContract` and provides a `make_backend` fixture:
a zero-argument callable returning a new backend over fresh, empty storage. Every test gets such
a backend inside the wrapper production runs it in (`InstrumentedBackend`: keys checked, a metric
and a span per call) and must leave it empty: after each test the suite lists every key, and a
test that left any behind fails with the keys named, after they are removed.

Stores that back S3's writers (`parts.PartsWriter`: S3, memory) also subclass
`ComposingStoreContract`, the contract of their `compose`.
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
    Part,
    WriterBusy,
    staged_size,
)
from services.blob.backends.instrumented import InstrumentedBackend
from services.blob.backends.keys import blob_key
from services.blob.backends.parts import PartTooSmall
from services.common.digests import Digest

MiB = 1024 * 1024

INVALID_KEYS = ["", "/a", "a/", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/.tmp-1", "a b", "a\\b", "a\x00b",
                "ä", "x" * 1025]
INVALID_PREFIXES = ["/", "/a", "a//", "../", "a/../", "a/.", " "]


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing_after(*parts: bytes) -> AsyncIterator[bytes]:
    """`parts`, then the stream breaks (a client that went away)."""
    for part in parts:
        yield part
    raise ConnectionResetError("client went away")


def wrapped(backend: BlobBackend) -> InstrumentedBackend:
    """`backend` as the blob plane runs it."""
    return backend if isinstance(backend, InstrumentedBackend) else InstrumentedBackend(backend, name="contract")


async def append_with_new_writer(
    backend: BlobBackend, key: str, parts: tuple[Part, ...], *chunks: bytes, seen: list[bytes] | None = None
) -> tuple[Part, ...]:
    """One append as the upload layer makes it: a writer of its own, the new parts saved, closed."""
    saved: list[tuple[Part, ...]] = []

    async def save(new: tuple[Part, ...]) -> None:
        saved.append(new)

    writer = await backend.open_writer(key)
    try:
        appended = await writer.append(
            parts, chunks_of(*chunks), observe=None if seen is None else seen.append, save=save
        )
    finally:
        await writer.close()
    if any(chunks):
        assert saved == [appended], "save must be called once, with the parts returned"
    else:
        assert saved == [] and appended == parts, "an append of no bytes changes nothing"
    return appended


async def commit_with_new_writer(backend: BlobBackend, key: str, parts: tuple[Part, ...], dest: str) -> None:
    writer = await backend.open_writer(key)
    try:
        await writer.commit(parts, dest)
    finally:
        await writer.close()


async def cancel_with_new_writer(backend: BlobBackend, key: str) -> None:
    writer = await backend.open_writer(key)
    await writer.cancel()


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
        backend = wrapped(make_backend())
        try:
            yield backend
            await assert_nothing_left(backend)
        finally:
            await backend.close()

    # -- the leftover check itself --------------------------------------------------------------

    async def test_leftover_keys_are_detected(self, make_backend: Callable[[], BlobBackend]) -> None:
        backend = wrapped(make_backend())
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

    async def test_read_whole(self, backend: BlobBackend) -> None:
        await backend.put("small/state.json", chunks_of(b'{"offset":', b"0}"))
        assert await backend.read_whole("small/state.json") == b'{"offset":0}'
        await backend.put("small/empty", chunks_of())
        assert await backend.read_whole("small/empty") == b""
        await backend.put("small/state.json", chunks_of(b"replaced"))
        assert await backend.read_whole("small/state.json") == b"replaced"
        with pytest.raises(ObjectNotFound) as caught:
            await backend.read_whole("small/absent")
        assert caught.value.key == "small/absent"
        with pytest.raises(ObjectNotFound):
            await backend.read_whole("small")  # a "folder" of other keys is not an object
        await backend.delete_all(["small/"])

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
                await backend.read_whole(key)
            with pytest.raises(InvalidKey):
                await backend.delete(key)
            with pytest.raises(InvalidKey):
                await backend.put_if_absent(key, b"x")
            with pytest.raises(InvalidKey):
                await backend.replace(key, b"x")
            with pytest.raises(InvalidKey):
                await backend.create_unsynced([("fine", b"x"), (key, b"x")])
            if not key.endswith("/"):  # "a/" is a valid prefix target of delete_all
                with pytest.raises(InvalidKey):
                    await backend.delete_all([key])
            with pytest.raises(InvalidKey):
                await backend.open_writer(key)
        # Nothing was written before a bad key was found.
        assert await keys_of(backend) == []
        writer = await backend.open_writer("w/data")
        parts = await writer.append((), chunks_of(b"x"))
        for key in INVALID_KEYS:
            with pytest.raises(InvalidKey):
                await writer.commit(parts, key)
        await writer.cancel()
        for prefix in ("/", "../", "a//"):
            with pytest.raises(InvalidKey):
                await backend.delete_all([prefix])
        with pytest.raises(InvalidKey):
            await backend.create_unsynced([], count_prefix="../")

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
        parts = await append_with_new_writer(backend, "staged/data", (), b"timed")
        before = time.time()
        await commit_with_new_writer(backend, "staged/data", parts, key)  # how a commit puts it in place
        await cancel_with_new_writer(backend, "staged/data")
        (info,) = [info async for info in backend.list_blobs()]
        assert info.key == key and info.size == 5
        # Clocks of a filesystem or an object store may be coarse; allow generous slack.
        assert before - 60 <= info.modified <= time.time() + 60
        await backend.delete(key)

    async def test_list_blobs_refuses_an_impossible_start(self, backend: BlobBackend) -> None:
        for start in ("/a", "a//b", "../x", "a b"):
            with pytest.raises(InvalidKey):
                [info async for info in backend.list_blobs(start)]

    # -- small-object calls -----------------------------------------------------------------------

    async def test_put_if_absent_writes_once(self, backend: BlobBackend) -> None:
        assert await backend.put_if_absent("blobs/sha256/ab/abc", b"first") is True
        assert await backend.put_if_absent("blobs/sha256/ab/abc", b"second") is False
        assert await read(backend, "blobs/sha256/ab/abc") == b"first"
        assert await backend.put_if_absent("empty", b"") is True
        assert await read(backend, "empty") == b""
        assert await keys_of(backend) == ["blobs/sha256/ab/abc", "empty"]
        await backend.delete_all(["blobs/sha256/ab/abc", "empty"])

    async def test_replace_needs_an_object_to_replace(self, backend: BlobBackend) -> None:
        # A late writer must not bring back what its owner removed.
        with pytest.raises(ObjectNotFound):
            await backend.replace("gone/state.json", b"late")
        assert await keys_of(backend) == []
        await backend.put("s/state.json", chunks_of(b"zero"))
        await backend.replace("s/state.json", b"one")
        assert await read(backend, "s/state.json") == b"one"
        await backend.replace("s/state.json", b"two, longer")
        assert await read(backend, "s/state.json") == b"two, longer"
        assert await keys_of(backend) == ["s/state.json"]
        await backend.delete("s/state.json")
        with pytest.raises(ObjectNotFound):
            await backend.replace("s/state.json", b"three")
        assert await keys_of(backend) == []

    async def test_create_unsynced_counts_then_creates_unless_full(self, backend: BlobBackend) -> None:
        first = [("uploads/x/state.json", b"{}"), ("owners/a/1", b"")]
        assert await backend.create_unsynced(first, count_prefix="owners/a/", limit=2) == 0
        assert await backend.create_unsynced([("owners/a/2", b"")], count_prefix="owners/a/", limit=2) == 1
        # Full: nothing is created. Keys elsewhere, or only sharing the name's start, do not count.
        await backend.create_unsynced([("owners/ab/1", b"")])
        assert await backend.create_unsynced([("owners/a/3", b"")], count_prefix="owners/a/", limit=2) == 2
        assert await keys_of(backend, "owners/a/") == ["owners/a/1", "owners/a/2"]
        # A partial last segment counts the keys below every folder it starts.
        assert await backend.create_unsynced([], count_prefix="owners/a") == 3
        # No prefix: nothing counted, no limit.
        assert await backend.create_unsynced([("owners/a/3", b"x")]) == 0
        assert await read(backend, "owners/a/3") == b"x"
        assert await read(backend, "uploads/x/state.json") == b"{}"
        assert (await backend.stat("owners/a/1")).size == 0
        await backend.delete_all(["uploads/", "owners/"])
        assert await keys_of(backend) == []

    async def test_delete_all_takes_keys_and_prefixes(self, backend: BlobBackend) -> None:
        session = ("uploads/x/state.json", "uploads/x/data", "uploads/x/data2/1")
        for key in (*session, "uploads/y/state.json", "uploads/xy/state.json", "owners/a/x"):
            await backend.put(key, chunks_of(b"bytes"))
        with pytest.raises(InvalidKey):  # checked before anything is deleted
            await backend.delete_all(["uploads/x/state.json", "../"])
        assert await read(backend, "uploads/x/state.json") == b"bytes"
        await backend.delete_all(
            ["uploads/x/state.json", "uploads/x/", "owners/a/x", "owners/a/absent", "uploads/z/"]
        )
        assert await keys_of(backend) == ["uploads/xy/state.json", "uploads/y/state.json"]
        await backend.put("owners/a/y", chunks_of(b"again"))  # into a folder its last key left
        assert await read(backend, "owners/a/y") == b"again"
        await backend.delete_all(["uploads/", "owners/a/y"])
        assert await keys_of(backend) == []
        # A key named twice (alone and under its prefix), and many keys at once.
        many = [f"many/{i:03d}" for i in range(120)]
        for key in many:
            await backend.put(key, chunks_of(b"x"))
        await backend.delete_all(["many/007", "many/", "many/007", *many[:5]])
        assert await keys_of(backend) == []

    async def test_clean_up_never_takes_an_object(self, backend: BlobBackend) -> None:
        for key in ("owners/a/1", "owners/b/1", "uploads/x/state.json", "blobs/sha256/ab/abc"):
            await backend.put(key, chunks_of(b"kept?"))
        await backend.delete_all(["owners/a/1", "uploads/x/"])
        cleaned = await backend.clean_up(0)
        assert cleaned >= 0
        assert await keys_of(backend) == ["blobs/sha256/ab/abc", "owners/b/1"]
        await backend.put("owners/a/2", chunks_of(b"new"))  # its folder may be gone: made again
        assert await read(backend, "owners/a/2") == b"new"
        await backend.delete_all(["owners/", "blobs/sha256/ab/abc"])

    # -- writers ----------------------------------------------------------------------------------

    async def test_writer_appends_across_writers_and_commits(self, backend: BlobBackend) -> None:
        """Appends of every size, each by a writer of its own (as replicas take turns), observed
        in order; the commit stores exactly the bytes appended; cancel takes what is staged."""
        unit = max(backend.min_part_size, 64 * 1024)
        pieces = [b"a" * 10, pattern(unit - 5, 1), b"", pattern(unit + 3, 2), b"b" * 7, pattern(300, 3), b"c" * 9]
        seen: list[bytes] = []
        parts: tuple[Part, ...] = ()
        received = b""
        for piece in pieces:
            halves = (piece[: len(piece) // 3], piece[len(piece) // 3 :])
            parts = await append_with_new_writer(backend, "uploads/w/data", parts, *halves, seen=seen)
            received += piece
            assert staged_size(parts) == len(received)
            assert [part.start for part in parts] == sorted(part.start for part in parts)
        assert b"".join(seen) == received
        for part in parts:  # every part is readable where it says
            assert await read(backend, part.key, 0, part.size) == received[part.start : part.start + part.size]
        dest = blob_key(Digest.of(received))
        await commit_with_new_writer(backend, "uploads/w/data", parts, dest)
        assert await read(backend, dest) == received
        await cancel_with_new_writer(backend, "uploads/w/data")
        assert await keys_of(backend) == [dest]
        # Committing the same content again keeps one whole copy.
        again = await append_with_new_writer(backend, "uploads/v/data", (), received)
        await commit_with_new_writer(backend, "uploads/v/data", again, dest)
        await cancel_with_new_writer(backend, "uploads/v/data")
        assert await read(backend, dest) == received
        assert await keys_of(backend) == [dest]
        await backend.delete(dest)

    async def test_writer_resumes_after_a_failed_append(self, backend: BlobBackend) -> None:
        parts = await append_with_new_writer(backend, "uploads/r/data", (), b"head:")
        writer = await backend.open_writer("uploads/r/data")
        big = pattern(max(backend.min_part_size, 2 * MiB) + 1, 4)
        with pytest.raises(ConnectionResetError):
            await writer.append(parts, failing_after(big, big), save=_never_saved)
        await writer.close()
        # The parts saved before the failure still describe the content; the next append
        # continues from them, whatever the failed one left behind.
        parts = await append_with_new_writer(backend, "uploads/r/data", parts, b"tail")
        assert staged_size(parts) == 9
        await commit_with_new_writer(backend, "uploads/r/data", parts, "blobs/resumed")
        assert await read(backend, "blobs/resumed") == b"head:tail"
        await cancel_with_new_writer(backend, "uploads/r/data")
        assert await keys_of(backend) == ["blobs/resumed"]
        await backend.delete("blobs/resumed")

    async def test_an_append_whose_save_fails_does_not_count(self, backend: BlobBackend) -> None:
        parts = await append_with_new_writer(backend, "uploads/s/data", (), b"one,")

        async def refuse(_: tuple[Part, ...]) -> None:
            raise RuntimeError("the session was removed meanwhile")

        writer = await backend.open_writer("uploads/s/data")
        with pytest.raises(RuntimeError):
            await writer.append(parts, chunks_of(b"two,"), save=refuse)
        await writer.close()
        parts = await append_with_new_writer(backend, "uploads/s/data", parts, b"three")
        await commit_with_new_writer(backend, "uploads/s/data", parts, "blobs/saved")
        assert await read(backend, "blobs/saved") == b"one,three"
        await cancel_with_new_writer(backend, "uploads/s/data")
        assert await keys_of(backend) == ["blobs/saved"]
        await backend.delete("blobs/saved")

    async def test_a_commit_of_nothing_is_an_empty_object(self, backend: BlobBackend) -> None:
        assert await append_with_new_writer(backend, "uploads/e/data", ()) == ()
        await commit_with_new_writer(backend, "uploads/e/data", (), "blobs/empty")
        assert await read(backend, "blobs/empty") == b""
        await cancel_with_new_writer(backend, "uploads/e/data")
        assert await keys_of(backend) == ["blobs/empty"]
        await backend.delete("blobs/empty")

    async def test_cancel_takes_everything_staged(self, backend: BlobBackend) -> None:
        parts = await append_with_new_writer(backend, "uploads/c/data", (), pattern(1000, 5))
        writer = await backend.open_writer("uploads/c/data")
        with pytest.raises(ConnectionResetError):
            await writer.append(parts, failing_after(pattern(3000, 6)), save=_never_saved)
        await writer.cancel()
        await writer.cancel()  # idempotent
        assert await keys_of(backend) == []

    async def test_lost_staged_bytes_are_not_found(self, backend: BlobBackend) -> None:
        parts = await append_with_new_writer(backend, "uploads/l/data", (), b"soon gone")
        await cancel_with_new_writer(backend, "uploads/l/data")
        writer = await backend.open_writer("uploads/l/data")
        try:
            with pytest.raises(ObjectNotFound):
                await writer.commit(parts, "blobs/lost")
        finally:
            await writer.close()
        with pytest.raises(ObjectNotFound):
            await backend.stat("blobs/lost")
        # An append after them fails (or, where the backend does not look, the loss shows at
        # the commit): never a blob with bytes missing.
        try:
            later = await append_with_new_writer(backend, "uploads/l/data", parts, b"+more")
        except ObjectNotFound:
            pass
        else:
            writer = await backend.open_writer("uploads/l/data")
            try:
                with pytest.raises(ObjectNotFound):
                    await writer.commit(later, "blobs/lost")
            finally:
                await writer.close()
        await cancel_with_new_writer(backend, "uploads/l/data")
        assert await keys_of(backend) == []

    async def test_concurrent_appenders_never_mix_their_bytes(self, backend: BlobBackend) -> None:
        """Two writers of one key append after the same parts at once. Each either is refused
        (WriterBusy where writers lock; ObjectNotFound where the other's merge took a part it
        needed) or gets parts that hold exactly its own bytes after the base; never both refused."""
        base = await append_with_new_writer(backend, "uploads/k/data", (), b"base-")
        first_started = asyncio.Event()

        async def slow(label: bytes) -> AsyncIterator[bytes]:
            for index in range(4):
                if label == b"one" and index == 1:
                    first_started.set()
                await asyncio.sleep(0.01)
                yield label * 1000

        async def appender(label: bytes) -> tuple[Part, ...]:
            if label == b"two":
                await first_started.wait()
            writer = await backend.open_writer("uploads/k/data")
            try:
                return await writer.append(base, slow(label))
            finally:
                await writer.close()

        outcomes = await asyncio.gather(appender(b"one"), appender(b"two"), return_exceptions=True)
        succeeded = []
        for label, outcome in zip((b"one", b"two"), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, WriterBusy | ObjectNotFound), outcome
            else:
                succeeded.append((label, outcome))
        assert succeeded, "at least one appender must succeed"
        for label, parts in succeeded:
            dest = f"blobs/{label.decode()}"
            await commit_with_new_writer(backend, "uploads/k/data", parts, dest)
            assert await read(backend, dest) == b"base-" + label * 4000
            await backend.delete(dest)
        await cancel_with_new_writer(backend, "uploads/k/data")

    # -- lifecycle --------------------------------------------------------------------------------

    async def test_prepare_is_repeatable(self, backend: BlobBackend) -> None:
        await backend.prepare()
        await backend.prepare()
        await backend.put("p", chunks_of(b"ready"))
        assert await read(backend, "p") == b"ready"
        await backend.delete("p")

    async def test_close_is_idempotent(self, make_backend: Callable[[], BlobBackend]) -> None:
        backend = make_backend()
        await backend.put("c", chunks_of(b"x"))
        await backend.delete("c")
        await backend.close()
        await backend.close()


async def _never_saved(parts: tuple[Part, ...]) -> None:
    raise AssertionError(f"a failed append must not save its parts: {parts}")


@_checking_leftovers
class ComposingStoreContract:
    """The contract of `compose`, for the stores under S3's writers (parts.ComposingStore).
    Mixed into a class that also subclasses BlobBackendContract (its `backend` fixture)."""

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
