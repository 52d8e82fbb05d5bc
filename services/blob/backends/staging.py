"""An optional backend capability: staging an upload's bytes in ONE object that grows in place.

An S3 object cannot grow, so upload sessions stage each chunk as a part and compose the parts at
commit (`BlobBackend.compose`, a server-side copy). A filesystem can do better: append every chunk
to one file and rename that file into place at commit, which copies nothing and frees nothing
(CNCF Distribution stores its uploads the same way). On a filesystem without reflinks (ext4) the
composed copy of a chunked 256 MiB push costs a second 256 MiB write and fsync, and deleting the
parts afterwards frees as much (a TRIM per extent with the `discard` mount option). `StagesInPlace`
is that capability; `services.blob.uploads` uses it when the backend has it, parts otherwise.

Writers of one staging object exclude each other with an exclusive lock held from `open_staging`
until `StagingObject.close` (or the end of `move_to`). The filesystem uses `flock`, which Linux's
NFS client maps to whole-file POSIX locks, so replicas sharing a directory exclude each other
too. Readers take no lock: they only read below a size recorded after a completed write.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from typing import Protocol, runtime_checkable

from services.blob.backends.base import BackendError


class StagingBusy(BackendError):
    """Another writer holds the staging object's lock (or renamed it away meanwhile)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"staging object {key!r} is being written by another request")


class StagingObject(Protocol):
    """An open, exclusively locked staging object."""

    # Bytes the object held when it was opened: possibly more than its owner recorded, when a
    # write failed midway (`write_at` drops them).
    size: int

    async def write_at(
        self, offset: int, chunks: AsyncIterable[bytes], observe: Callable[[bytes], None] | None = None
    ) -> int:
        """Drops every byte at or past `offset`, writes the non-empty `chunks` from there and
        makes them durable before returning how many bytes it wrote.

        `observe` is called with the bytes of each write, in order, just before they are
        written and in the thread that writes them, so a CPU-bound observer (a hash) runs off
        the event loop without a hop of its own. If `chunks` (or a write) fails, the exception
        propagates once nothing is being written any more; bytes past `offset` may remain.
        Raises ValueError for an offset past the end.
        """
        ...

    async def move_to(self, dest: str, size: int) -> None:
        """Cuts the object to `size` bytes and renames it over the key `dest` (atomically, like
        `BlobBackend.put`, and durably), then releases the lock: the staging key is gone.
        Raises InvalidKey for a bad `dest`, ValueError when the object holds fewer than `size`
        bytes."""
        ...

    async def close(self) -> None:
        """Releases the lock. Idempotent; a no-op after `move_to`."""
        ...


@runtime_checkable
class CreatesUnsynced(Protocol):
    """A backend that can create a small object cheaply, without `put`'s temporary file, rename
    and fsyncs (each costs a journal commit or an inode allocation on a filesystem).

    For upload bookkeeping that nobody reads before it is complete and that a crash may lose
    without harm: the state of a session just started (its id is not handed out yet), the owner
    markers. Every byte of a blob, and every state that lists staged bytes, is still `put`.
    """

    async def create_unsynced(self, key: str, data: bytes) -> None:
        """Creates the object `key`, which does not exist yet, holding `data`. Not atomic and
        not synced: until this returns, and after a crash (of the process or the machine), the
        key may be absent or hold only part of `data`. Raises InvalidKey, ObjectExists."""
        ...


class ObjectExists(BackendError):
    """`create_unsynced` found the key already taken."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"an object already exists at key {key!r}")


@runtime_checkable
class PutsIfAbsent(Protocol):
    """A backend that checks for an object and writes it in one call (one pool trip instead of
    two on the filesystem): how a commit stores a small blob that may already be there."""

    async def put_if_absent(self, key: str, data: bytes, *, then_delete: Sequence[str] = ()) -> bool:
        """Stores `data` at `key` exactly as `BlobBackend.put` does (atomic, durable) unless an
        object is already there; True when it wrote. Then, in the same call and only if that
        succeeded, deletes `then_delete` as `BatchesBookkeeping.delete_all` does (a commit ends
        its session this way). Raises InvalidKey (before any write)."""
        ...


@runtime_checkable
class BatchesBookkeeping(Protocol):
    """A backend that runs a session's small bookkeeping steps (count, create, rewrite, remove
    a few small objects) in one call each: on a filesystem every call is a trip to a thread pool
    that costs more than the file operations it runs. Only the rewrite is synced (every fsync is
    a journal commit): creations and removals are what a crash may lose without harm (keys.py).
    Blob bytes, and staged bytes, never go through these calls.
    """

    async def create_unsynced_bounded(
        self, objects: Sequence[tuple[str, bytes]], *, count_prefix: str = "", limit: int = 0
    ) -> int:
        """Counts the objects under `count_prefix` (none counted when it is ""), then, unless
        `limit` > 0 and the count reached it, creates each of `objects` in order, each as
        `CreatesUnsynced.create_unsynced` does (not atomic, not synced). Returns the count.
        The count and the creation are not atomic: another writer may create under the prefix
        meanwhile. Raises InvalidKey, ObjectExists (the objects before it stay created)."""
        ...

    async def replace_durably(self, key: str, data: bytes) -> None:
        """Creates or replaces `key` with `data` atomically (readers see the old object or the
        new one) and durably (like `put`: a crash after it returns leaves the new object), in
        a folder that must exist already: ObjectNotFound when `key`'s folder is gone (a
        concurrent removal of the session), which it never makes again. Raises InvalidKey."""
        ...

    async def delete_all(self, targets: Sequence[str]) -> None:
        """Deletes each target in order: a key (absent: nothing to do), or a prefix ending in
        `/` (every object under it, and the folder). Unlike `delete`, folders a key leaves
        empty are kept, so the next object created there needs no new folder (see
        `prune_empty_folders`). Not synced. Raises InvalidKey."""
        ...

    async def prune_empty_folders(self, prefix: str, older_than: float) -> int:
        """Removes the empty folders directly under `prefix` (ending in `/`) that nothing was
        created in or deleted from since `older_than` (unix seconds); returns how many.
        A creation racing with the removal makes its folder again. Raises InvalidKey."""
        ...


@runtime_checkable
class StagesInPlace(Protocol):
    """A backend whose objects can grow in place under a lock (see the module docstring)."""

    async def open_staging(self, key: str, *, create: bool) -> StagingObject:
        """Opens `key` for in-place writes and locks it, creating an empty object when it is
        absent and `create` is set. Raises ObjectNotFound (absent, not `create`), StagingBusy,
        InvalidKey."""
        ...
