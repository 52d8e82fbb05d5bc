"""The seam between the blob plane and whatever stores bytes: `BlobBackend` and its `BlobWriter`.

One contract for every backend (filesystem, S3, memory), run by one test suite
(tests/contracts/blob_backend_suite.py). Upload sessions (`services.blob.uploads`) are written
once against it; nothing here knows about digests or sessions.

- Objects: whole objects written atomically (`put`, and the small-object calls `put_if_absent`,
  `replace`, `create_unsynced`), ranged streamed reads, prefix listing, deletes.
- Writers: the staged bytes of one upload, grown by appends and moved into place by a commit
  (`open_writer`). Each backend stages the way it can: the filesystem appends to one locked file
  and renames it at commit; S3 stores each append as an object of its own, merges small ones to
  its 5 MiB part minimum and composes them server-side at commit (`parts.PartsWriter`). What a
  writer holds is described by its `Part`s, which the caller saves with its own state and hands
  back to the next writer, so a session can continue on any replica.

Keys are `/`-separated paths of segments made of `[A-Za-z0-9._-]`, never starting with `.`, with no
empty segment and no leading or trailing `/`, at most `MAX_KEY_LENGTH` characters; anything else
is refused with `InvalidKey` (by the instrumented wrapper, `instrumented.py`, around every
backend), so a key can never climb out of a filesystem root. A key must not also be the
`/`-prefix of another key ("a" and "a/b" cannot both exist): a filesystem cannot represent that,
and Lading's key layout (`keys.py`) never needs it.

Every failure a backend reports on purpose is a typed `BackendError`; the blob plane's core
(`services.blob.core`) translates them into registry errors, once. Exceptions of the caller's
own chunk streams propagate unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MiB = 1024 * 1024
# Largest chunk a backend yields from `get`: big enough for throughput, small enough for one
# gRPC message.
READ_CHUNK_BYTES = 1 * MiB
MAX_KEY_LENGTH = 1024

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
# A prefix is a key, or the start of one: complete segments then a possibly partial last one.
_PREFIX = re.compile(rf"(?:{_SEGMENT}/)*(?:{_SEGMENT})?")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What `stat` and `list` tell about one object."""

    key: str
    size: int
    # Unix seconds of the last write.
    modified: float


@dataclass(frozen=True, slots=True)
class Part:
    """Staged bytes [start, start+size) of a writer's content: the first `size` bytes of the
    object at `key` (readable with `get(key, 0, size)`)."""

    key: str
    start: int
    size: int


def staged_size(parts: Sequence[Part]) -> int:
    """How many bytes `parts` (consecutive, from 0) describe."""
    return parts[-1].start + parts[-1].size if parts else 0


# -- errors ----------------------------------------------------------------------------------------


class BackendError(Exception):
    """Base of every failure a backend reports on purpose."""


class ObjectNotFound(BackendError):
    """The key names no object (for a writer: bytes its parts describe are not stored any more)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no object at key {key!r}")


class InvalidKey(BackendError):
    """The key (or prefix) is not of the allowed form, or cannot be used in this call."""

    def __init__(self, key: str, reason: str = "not a valid key") -> None:
        self.key = key
        super().__init__(f"{key!r}: {reason}")


class InvalidRange(BackendError):
    """A read range outside the object: negative offset or length, or offset past the end."""

    def __init__(self, key: str, offset: int, length: int | None, size: int) -> None:
        self.key = key
        self.offset = offset
        self.length = length
        self.size = size
        super().__init__(f"range offset={offset} length={length} is outside {key!r} of {size} bytes")


class WriterBusy(BackendError):
    """Another writer holds the key's lock (on backends whose writers exclude each other)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"staged object {key!r} is being written by another request")


class BackendUnavailable(BackendError):
    """The store did not answer, or failed in a way a retry may cure (S3 down, throttling, a
    timeout, an object replaced while being read). The message says what happened."""


class BackendAccessDenied(BackendError):
    """The store refused Lading's credentials or permissions: an operator must act. The message
    names the setting to check."""


class BackendFull(BackendError):
    """The store has no room left for the write (a full disk: ENOSPC; a disk quota: EDQUOT).
    Nothing the call was writing is kept (a put leaves the old object, an append the saved parts);
    the write succeeds again once an operator frees or adds space."""


class BackendLimitExceeded(BackendError):
    """The request is beyond what the store can do (e.g. more than S3's 10,000 parts)."""


# -- checks shared by the wrapper and the backends --------------------------------------------------


def validate_key(key: str) -> str:
    """Returns `key` when it is of the allowed form; raises InvalidKey otherwise."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidKey(str(key))
    return key


def validate_prefix(prefix: str) -> str:
    """Returns `prefix` when some valid key could start with it ("" lists everything)."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH or not _PREFIX.fullmatch(prefix):
        raise InvalidKey(str(prefix), "not a valid key prefix")
    return prefix


def validate_target(target: str) -> str:
    """A `delete_all` target: a key, or a non-empty prefix ending in `/` (a whole "folder")."""
    if isinstance(target, str) and target.endswith("/"):
        if target == "/" or not _KEY.fullmatch(target[:-1]) or len(target) > MAX_KEY_LENGTH:
            raise InvalidKey(target, "not a key or a folder prefix (ending in /)")
        return target
    return validate_key(target)


def check_range(key: str, offset: int, length: int | None, size: int) -> int:
    """Validates a read range against an object of `size` bytes; returns the bytes to read.

    `offset` may equal `size` (an empty read at the end, which is how an empty object is read);
    `length` None, or past the end, reads to the end.
    """
    if offset < 0 or (length is not None and length < 0) or offset > size:
        raise InvalidRange(key, offset, length, size)
    remaining = size - offset
    return remaining if length is None else min(length, remaining)


# -- the contract ------------------------------------------------------------------------------------

# Called with the bytes of each write, in order (see `BlobWriter.append`).
Observer = Callable[[bytes], None]
# Persists the parts an append produced (see `BlobWriter.append`).
SaveParts = Callable[[tuple[Part, ...]], Awaitable[None]]


class BlobWriter(Protocol):
    """The staged bytes under one key, open for appending (`BlobBackend.open_writer`).

    A writer holds no description of its content of its own: each call takes the `parts` the
    caller saved last (`()` for nothing staged yet), and `append` returns the new ones. Bytes a
    failed or unsaved append left behind never count: the next append drops them, a commit
    never sees them, `cancel` removes them.

    Concurrency, on every backend: the parts a caller saves always describe exactly the bytes
    appended along them, whatever other writers of the same key do meanwhile. Backends get there
    in one of two ways. The filesystem's writers exclude each other (`flock`, which replicas
    sharing the directory see too): `open_writer` takes the key's lock when something is staged
    there, otherwise the first `append` does, and another writer's open or first append raises
    WriterBusy until `close`, `commit` or `cancel` releases it; a caller that reads its saved
    parts after `open_writer` returned therefore reads the truth. S3's writers (and memory's)
    take no lock: every append stores new objects, so concurrent writers append along
    different parts and the one saved last wins (a writer whose small parts another one's
    merge removed meanwhile fails with ObjectNotFound instead).
    """

    key: str

    async def append(
        self,
        parts: Sequence[Part],
        chunks: AsyncIterable[bytes],
        *,
        observe: Observer | None = None,
        save: SaveParts | None = None,
    ) -> tuple[Part, ...]:
        """Appends the bytes of `chunks` after those `parts` describe; returns the parts of the
        whole content.

        Durable: the bytes are on the disk (or stored) before `save` is called with the new parts;
        `save` persists them with the caller's state, and only once it has returned are
        objects the new parts no longer name removed (S3's merged small parts), so a crash
        between the two leaves the previous parts valid. If `save` raises, the append is undone
        (its parts are not valid) and the exception propagates. `save` None: nothing to persist.
        `observe` sees every byte appended, in order, and has seen them all before `save`; it is
        called off the event loop for large chunks, possibly while they are being written (a
        hash runs beside the write), so chunks must not change once handed over. An append of
        no bytes returns `parts` unchanged, without calling `save`.

        If `chunks` (or a write) fails, the exception propagates once nothing is being written
        any more; `parts` stay valid. Raises ObjectNotFound when it finds bytes `parts` describe
        no longer stored (lost, or taken by a commit: the filesystem looks at once; S3 does not
        re-read its parts, so there the loss shows at `commit`), WriterBusy (see the class
        docstring), InvalidKey.
        """
        ...

    async def commit(self, parts: Sequence[Part], dest: str) -> None:
        """Stores the bytes `parts` describe as the object `dest`, atomically (readers see no
        object or the whole one) and durably, then ends the writer (as `close`).

        When `dest` exists already, the backend may keep that object instead: callers name
        `dest` by its content, so both hold the same bytes. What was staged may be gone
        afterwards (the filesystem renames its file) or stay until `cancel`. Raises
        ObjectNotFound when bytes `parts` describe are no longer stored, InvalidKey.
        """
        ...

    async def cancel(self) -> None:
        """Removes everything staged under the writer's key (whoever staged it, and leftovers of
        failed appends), then ends the writer. Idempotent; fine after `commit`."""
        ...

    async def close(self) -> None:
        """Ends the writer: releases its lock, if any. Idempotent."""
        ...


@runtime_checkable
class BlobBackend(Protocol):
    """A flat store of objects under string keys, and writers that grow staged content.

    Concurrency: every method may be called concurrently, from several processes sharing the
    same storage. Writes of one key are last-writer-wins; a reader sees either the old or the new
    object, never a mix and never a partial one (except `create_unsynced`'s, see there).
    """

    # Appends smaller than this (all but the last) cost the backend a copy later (S3 merges them
    # to its 5 MiB part minimum); 0 when any size is as good. A hint for clients
    # (OCI-Chunk-Min-Length), never a rule.
    min_part_size: int

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Creates or replaces the object at `key` with the concatenated `chunks`; returns its size.

        Atomic and durable: until `put` returns, readers see the previous object (or none); once
        it has, the object survives a crash or a power cut. If `chunks` raises, the exception
        propagates and the previous state is kept, with nothing left behind. Empty chunks are
        fine, and no chunks at all writes an empty object. Raises InvalidKey.
        """
        ...

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """The small-blob put: stores `data` at `key` as `put` does unless an object is there
        already, which is kept (and made durable, if another writer is still on its way to
        that); True when this call wrote. For content-addressed keys (a commit of a blob whose
        bytes are in hand). Raises InvalidKey."""
        ...

    async def replace(self, key: str, data: bytes) -> None:
        """Replaces the object at `key` with `data`, atomically and durably, only if there is one:
        ObjectNotFound when there is none (its owner removed it: a session ended meanwhile), so
        a late writer never brings a removed object back. The check and the write are one step
        on the filesystem; on S3 a removal racing between them leaves the new object, for the
        purge. Raises InvalidKey."""
        ...

    async def create_unsynced(
        self, objects: Sequence[tuple[str, bytes]], *, count_prefix: str = "", limit: int = 0
    ) -> int:
        """Counts the objects under `count_prefix` (none when it is ""); then, unless `limit` > 0
        and the count reached it, creates (or replaces) each of `objects`, in order. Returns the
        count. The count and the creations are not atomic: another writer may create under the
        prefix meanwhile.

        Cheap, not safe: not atomic (a reader may see part of an object) and not durable (a
        crash may leave any of them absent or torn). For bookkeeping nobody reads before this
        returns and whose loss costs nothing (keys.py: a new session's state, owner markers).
        Raises InvalidKey (before anything is written); BackendFull, after removing what it
        created, when the store has no room for them.
        """
        ...

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Opens `[offset, offset+length)` of the object for streaming, in chunks of ≤ READ_CHUNK_BYTES.

        Awaiting the call checks existence and range up front (so callers can fail before they
        start streaming); the returned iterator yields the bytes. `length` None, or reaching past
        the end, reads to the end; `offset == size` yields nothing. The bytes are those of the
        object as it was when opened, even if it is replaced meanwhile (filesystem, memory) — on
        S3 a replace during a long read may fail the read instead (BackendUnavailable), never
        mix the versions. Raises ObjectNotFound, InvalidRange (negative offset or length,
        offset > size), InvalidKey.
        """
        ...

    async def read_whole(self, key: str) -> bytes:
        """The whole object, read in one step (one request on S3, one trip to the filesystem's
        threads): for the small objects Lading keeps beside the blobs, such as an upload's state;
        the object is held in memory, so never for blobs. The bytes of one version, never a mix.
        Raises ObjectNotFound, InvalidKey."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of the object. Raises ObjectNotFound, InvalidKey."""
        ...

    async def delete(self, key: str) -> None:
        """Removes the object. Idempotent: deleting an absent key succeeds. Raises InvalidKey."""
        ...

    async def delete_all(self, targets: Sequence[str]) -> None:
        """Deletes every target: a key (absent: nothing to do), or a prefix ending in `/` (every
        object under it). The filesystem deletes them in order; S3 lists the prefixes first and
        deletes all in as few requests as it can (DeleteObjects), so callers must not rely on
        the order. Not synced, and not atomic: after a crash or a failure some removed objects
        may be back or left (the purge takes them). Raises InvalidKey (before anything is
        deleted)."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (plain string prefix, "" for all), in
        lexical key order. Objects written or deleted during the listing may or may not appear.
        Raises InvalidKey (on the first iteration) for a prefix no key could start with.
        """
        ...

    def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under `blobs/` (keys.BLOBS_PREFIX: committed blobs) whose key sorts after
        `start_after` ("" for all), in lexical key order, so a caller can page through a large
        store by passing the last key it saw. Garbage collection walks it to find bytes the
        metadata plane has no row for (orphans), and deletes those older than a grace period.

        `modified` is never earlier than when the key was put in place: a writer's commit may
        rename a file last written long before (filesystem), so that backend reports the later
        of the file's mtime and ctime. Objects written or deleted during the listing may or may
        not appear. Raises InvalidKey (on the first iteration) when `start_after` is neither ""
        nor a valid key.
        """
        ...

    async def open_writer(self, key: str) -> BlobWriter:
        """A writer of the content staged under `key` (see BlobWriter). Creates nothing by itself:
        the first append does. Raises WriterBusy, InvalidKey."""
        ...

    async def prepare(self) -> None:
        """One-time start-up work before the backend can serve (S3: the bucket exists, or is
        created when configured so). Raises BackendUnavailable, BackendAccessDenied."""
        ...

    async def clean_up(self, older_than: float) -> int:
        """Removes what the backend itself left behind that nobody lists and that was untouched
        for more than `older_than` seconds: S3 multipart uploads of crashed writers (when
        configured), empty folders that `delete_all` kept for reuse (filesystem). Returns how
        many things it removed."""
        ...

    async def close(self) -> None:
        """Releases the backend's resources (thread pool, connections). Idempotent."""
        ...
