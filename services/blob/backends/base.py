"""The seam between the blob plane and whatever stores bytes: `BlobBackend`.

The protocol is deliberately what an S3 bucket can do, so that every backend behaves alike:
whole objects written at once (no append, no rename), ranged streamed reads, prefix listing and
server-side concatenation (`compose`, S3's multipart UploadPartCopy / ComposeObject). Upload
sessions are built on top of it in `services.blob.uploads`; nothing here knows about digests.

Keys are `/`-separated paths of segments made of `[A-Za-z0-9._-]`, never starting with `.`, with no
empty segment and no leading or trailing `/`, at most `MAX_KEY_LENGTH` characters. Backends refuse
anything else with `InvalidKey`, so a key can never climb out of a filesystem root. A key must
not also be the `/`-prefix of another key ("a" and "a/b" cannot both exist): a filesystem cannot
represent that, and Lading's key layout (`keys.py`) never needs it.

Every failure is a typed `BackendError`; callers translate them into registry errors.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
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


class BackendError(Exception):
    """Base of every failure a backend reports on purpose."""


class ObjectNotFound(BackendError):
    """The key names no object."""

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


class PartTooSmall(BackendError):
    """A `compose` source other than the last is smaller than the backend's `min_part_size`."""

    def __init__(self, key: str, size: int, min_part_size: int) -> None:
        self.key = key
        self.size = size
        self.min_part_size = min_part_size
        super().__init__(f"compose source {key!r} has {size} bytes; all but the last need {min_part_size}")


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


def check_range(key: str, offset: int, length: int | None, size: int) -> int:
    """Validates a read range against an object of `size` bytes; returns the bytes to read.

    `offset` may equal `size` (an empty read at the end, which is how an empty object is read);
    `length` None, or past the end, reads to the end.
    """
    if offset < 0 or (length is not None and length < 0) or offset > size:
        raise InvalidRange(key, offset, length, size)
    remaining = size - offset
    return remaining if length is None else min(length, remaining)


@runtime_checkable
class BlobBackend(Protocol):
    """A flat store of immutable-once-written objects under string keys.

    Concurrency: every method may be called concurrently, from several processes sharing the
    same storage. Writes of one key are last-writer-wins; a reader sees either the old or the new
    object, never a mix and never a partial one.
    """

    # Smallest size of every `compose` source but the last; 0 when any size works.
    min_part_size: int

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Creates or replaces the object at `key` with the concatenated `chunks`; returns its size.

        Atomic: until `put` returns, readers see the previous object (or none); if `chunks`
        raises, the exception propagates and the previous state is kept, with nothing left behind.
        Empty chunks are fine, and no chunks at all writes an empty object.
        Raises InvalidKey.
        """
        ...

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Opens `[offset, offset+length)` of the object for streaming, in chunks of ≤ READ_CHUNK_BYTES.

        Awaiting the call checks existence and range up front (so callers can fail before they
        start streaming); the returned iterator yields the bytes. `length` None, or reaching past
        the end, reads to the end; `offset == size` yields nothing. The bytes are those of the
        object as it was when opened, even if it is replaced meanwhile (filesystem, memory) — on
        S3 a replace during a long read may fail the read instead, never mix the versions.
        Raises ObjectNotFound, InvalidRange (negative offset or length, offset > size), InvalidKey.
        """
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of the object. Raises ObjectNotFound, InvalidKey."""
        ...

    async def delete(self, key: str) -> None:
        """Removes the object. Idempotent: deleting an absent key succeeds. Raises InvalidKey."""
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

        `modified` is never earlier than when the key was last put in place: a commit may
        hard-link a staged part written long before (filesystem), so that backend reports the
        later of the file's mtime and ctime. Objects written or deleted during the listing may or
        may not appear. Raises InvalidKey (on the first iteration) when `start_after` is neither
        "" nor a valid key.
        """
        ...

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        """Creates or replaces `dest` with the concatenation of `sources`; returns its size.

        Atomic like `put`; the sources are left in place (the caller deletes them). At least one
        source; `dest` must not be one of them. Every source but the last must be at least
        `min_part_size` bytes (S3's multipart rule).
        Raises ObjectNotFound (a source is absent), PartTooSmall, InvalidKey (also for no sources,
        or `dest` among the sources).
        """
        ...

    async def close(self) -> None:
        """Releases the backend's resources (thread pool, connections). Idempotent."""
        ...


def check_compose_args(dest: str, sources: Sequence[str]) -> list[str]:
    """Validates `compose` arguments shared by every backend; returns the sources as a list."""
    validate_key(dest)
    keys = [validate_key(source) for source in sources]
    if not keys:
        raise InvalidKey(dest, "compose needs at least one source")
    if dest in keys:
        raise InvalidKey(dest, "compose destination cannot be one of its sources")
    return keys
