"""`PartsWriter`: a BlobWriter for stores whose objects cannot grow (S3), over their basic calls
and a server-side concatenation (`compose`).

Every append stores its bytes as a new object `<writer key>/<start>-<token>` (`<start>`
zero-padded to 20 digits, so keys sort by position; `<token>` random per write), listed in the
parts it returns; nothing is ever rewritten, so writers of one key share nothing and need no
lock (see BlobWriter). A store with a minimum part size (S3: every part of a multipart upload but
the last ≥ 5 MiB) keeps appends below it as separate small parts until the trailing run of small
parts (with the append that follows them) reaches the minimum; the run is then merged ONCE into one
new part. So every part before the trailing run reaches the minimum, each byte is staged again at
most once (many small appends cost linear work, not quadratic), and a commit merges a remaining
run of several small parts into one before composing. Parts a merge replaced are deleted only
after the caller saved the parts that no longer name them; a crash in between leaves unlisted
objects, removed by `cancel` (with the session) or the purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Protocol

from services.blob.backends.base import (
    BackendError,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    Observer,
    Part,
    SaveParts,
    staged_size,
    validate_key,
)
from services.blob.backends.basic_calls import one

# Appended chunks at least this big are observed (hashed) in a worker thread; smaller ones are
# not worth the hop.
THREADED_OBSERVE_BYTES = 128 * 1024
_OFFSET_DIGITS = 20


class PartTooSmall(BackendError):
    """A `compose` source other than the last is smaller than the store's `min_part_size`
    (a bug in the caller: `PartsWriter` merges small parts first)."""

    def __init__(self, key: str, size: int, min_part_size: int) -> None:
        self.key = key
        self.size = size
        self.min_part_size = min_part_size
        super().__init__(f"compose source {key!r} has {size} bytes; all but the last need {min_part_size}")


class ComposingStore(Protocol):
    """What `PartsWriter` needs of its backend."""

    min_part_size: int

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int: ...

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...

    async def stat(self, key: str) -> ObjectInfo: ...

    async def delete_all(self, targets: Sequence[str]) -> None: ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]: ...

    async def compose(self, dest: str, sources: Sequence[str]) -> int:
        """Creates or replaces `dest` with the concatenation of `sources` (at least one, `dest`
        not among them, all but the last ≥ `min_part_size`: else PartTooSmall); returns its size.
        Atomic like `put`; the sources are left in place. Raises ObjectNotFound."""
        ...


def check_compose_args(dest: str, sources: Sequence[str]) -> list[str]:
    """Validates `compose` arguments shared by every store; returns the sources as a list."""
    validate_key(dest)
    keys = [validate_key(source) for source in sources]
    if not keys:
        raise InvalidKey(dest, "compose needs at least one source")
    if dest in keys:
        raise InvalidKey(dest, "compose destination cannot be one of its sources")
    return keys


class PartsWriter:
    """BlobWriter staging appends as parts of `store` (see the module docstring). No lock."""

    def __init__(self, store: ComposingStore, key: str) -> None:
        self._store = store
        self.key = key

    def _new_part_key(self, start: int) -> str:
        return f"{self.key}/{start:0{_OFFSET_DIGITS}d}-{secrets.token_hex(8)}"

    async def append(
        self,
        parts: Sequence[Part],
        chunks: AsyncIterable[bytes],
        *,
        observe: Observer | None = None,
        save: SaveParts | None = None,
    ) -> tuple[Part, ...]:
        incoming = aiter(chunks)
        first = await _first_non_empty(incoming)
        if first is None:
            return tuple(parts)
        store = self._store
        start = staged_size(parts)
        key = self._new_part_key(start)
        written = await store.put(key, _observed(first, incoming, observe))
        new = [*parts, Part(key, start, written)]
        fresh = [key]
        superseded: list[Part] = []
        run = small_run(new, store.min_part_size)
        try:
            if len(run) > 1 and sum(part.size for part in run) >= store.min_part_size:
                # The small parts and this append now reach the minimum: merge them once.
                merged = await self._merge(run)
                del new[len(new) - len(run):]
                new.append(merged)
                fresh.append(merged.key)
                superseded = run
            if save is not None:
                await save(tuple(new))
        except BaseException:
            await asyncio.shield(_delete_quietly(store, fresh))
            raise
        # Only once the saved parts no longer name them (a crash before this leaves unlisted
        # parts, removed with the rest by `cancel`).
        await _delete_quietly(store, [part.key for part in superseded])
        return tuple(new)

    async def commit(self, parts: Sequence[Part], dest: str) -> None:
        store = self._store
        validate_key(dest)
        try:
            await store.stat(dest)
            return  # stored already (content addressed: the same bytes), and durable on S3
        except ObjectNotFound:
            pass
        chosen = list(parts)
        run = small_run(chosen, store.min_part_size)
        if len(run) > 1:
            # Compose needs every part but the last at the minimum: merge the trailing small ones
            # (less than the minimum in all) into one. Unlisted: `cancel` removes it.
            del chosen[len(chosen) - len(run):]
            chosen.append(await self._merge(run))
        if chosen:
            await store.compose(dest, [part.key for part in chosen])
        else:
            await store.put(dest, one(b""))

    async def cancel(self) -> None:
        await self._store.delete_all([f"{self.key}/"])

    async def close(self) -> None:
        return None

    async def _merge(self, run: list[Part]) -> Part:
        """Stages the concatenation of `run` (consecutive parts) as one new part and returns it.
        Raises ObjectNotFound when one of them vanished; nothing is left behind then."""
        store = self._store

        async def contents() -> AsyncIterator[bytes]:
            for part in run:  # opened one at a time: one open read per merge
                stream = await store.get(part.key, 0, part.size)
                async for chunk in stream:
                    yield chunk

        start = run[0].start
        key = self._new_part_key(start)
        size = await store.put(key, contents())
        expected = sum(part.size for part in run)
        if size != expected:
            await _delete_quietly(store, [key])
            raise ObjectNotFound(run[-1].key)
        return Part(key, start, size)


def small_run(parts: list[Part], min_part_size: int) -> list[Part]:
    """The trailing parts from the first one under `min_part_size` on: every part before them
    reaches the minimum (the invariant `append` keeps), so only these may need merging. Empty
    when the store has no minimum."""
    if min_part_size <= 0:
        return []
    for index, part in enumerate(parts):
        if part.size < min_part_size:
            return parts[index:]
    return []


async def _observed(first: bytes, rest: AsyncIterator[bytes], observe: Observer | None) -> AsyncIterator[bytes]:
    """`first` then the non-empty chunks of `rest`, each shown to `observe` in order. A large
    chunk is observed in a worker thread while the store takes it (libcrypto runs without the
    GIL), the next one only once that is done; all are observed when the stream ends."""
    loop = asyncio.get_running_loop()
    observing: asyncio.Future[None] | None = None
    chunk: bytes | None = first
    try:
        while chunk is not None:
            if chunk and observe is not None:
                if observing is not None:
                    await observing
                    observing = None
                if len(chunk) >= THREADED_OBSERVE_BYTES:
                    observing = loop.run_in_executor(None, observe, chunk)
                else:
                    observe(chunk)
            if chunk:
                yield chunk
            chunk = await anext(rest, None)
        if observing is not None:
            await observing
            observing = None
    finally:
        if observing is not None:
            # The stream failed or was abandoned: let the thread finish before the caller moves on.
            with contextlib.suppress(BaseException):
                await asyncio.shield(observing)


async def _first_non_empty(chunks: AsyncIterator[bytes]) -> bytes | None:
    async for chunk in chunks:
        if chunk:
            return chunk
    return None


async def _delete_quietly(store: ComposingStore, doomed: list[str]) -> None:
    """Best-effort cleanup: a failure only leaves objects for `cancel` or the purge."""
    try:
        await store.delete_all(doomed)
    except (BackendError, OSError):
        pass
