"""Resumable upload sessions on top of a BlobBackend.

A session's whole state lives in the backend (`keys.py` has the layout): nothing is kept in
process memory between calls, so any blob-service replica sharing the storage can continue any
upload, and a killed process loses at most the chunk it was receiving.

Appending a chunk stages its bytes as a new part object while hashing them in the same pass
(SHA-256, with a state that `ResumableHash` can save), then rewrites the session state with the
new offset, part list and hash state. On a backend with a minimum part size (S3), chunks smaller
than the minimum stay separate small parts until the trailing run of small parts (plus the chunk
that follows them) reaches the minimum; that run is then merged ONCE into one new part, listed in
the state written next, and the merged parts are deleted after it. So every part before the
trailing run of small parts reaches the minimum, each byte is re-staged at most once (many small
PATCHes cost linear work, not quadratic), and a commit merges a remaining run of several small
parts into its last part before composing. Committing checks the size, checks the digest (SHA-256 from
the saved state; any other algorithm, or a session without saved state, by re-reading the parts),
then composes the parts into `blobs/<alg>/..` unless that blob already exists, and removes the
session.

Two appends racing on the same session and offset (two replicas) each stage a part of their own
and write a complete state; the last state written wins, and the other part becomes an unlisted
leftover that is removed with the session.

In place: on a backend that can grow an object under a lock (`staging.StagesInPlace`, the
filesystem), the session's bytes live in ONE object, `uploads/<id>/data`, listed as the session's
only part. An append locks it, re-reads the state (the truth while the lock is held), drops
whatever a failed append left past the offset, writes and hashes the chunk (the hash runs in the
writing thread), makes it durable, writes the new state and only then unlocks; a commit locks it,
verifies, and renames it to the blob's key. Nothing is copied at commit and no staged bytes are
freed, which a composed commit does with every byte of a chunked upload. A concurrent append or
commit finds the lock taken and gets RANGE_INVALID with the current offset (the spec's answer to
chunks out of order). When the staged object is missing (a part lost, or a commit that renamed
it crashed before removing the session) appends fall back to parts, so the loss shows at commit
as it does for parts.

Bookkeeping in few calls: where the backend batches it (`staging.BatchesBookkeeping`, the
filesystem, where each call is a thread-pool trip) `start` counts the owner's markers and creates
the state and the marker in one call, a session ends in one call, and a state rewrite is one call
too (see `_write_state`).

Durability (a power cut, not only a crash of the process): a chunk is acknowledged once its
bytes and the state that lists them are on the disk, so a session resumes from at least the
offset its client was last told. What a crash may lose is unacknowledged work, and sessions no
chunk was acknowledged for (their first state is written unsynced: see keys.py): the client then
gets BLOB_UPLOAD_UNKNOWN and starts over. A commit answers once the blob is durably in place.

Sessions per owner: a session started with an owner (the gateway passes the account, or the
client's address) gets a marker under `owners/` (keys.py). With `max_sessions_per_owner`, `start`
counts the owner's markers and refuses one more with TOOMANYREQUESTS. The count is read, then the
session written, without a lock: starts racing on several replicas may overshoot the bound by the
number of racers, never by more.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace

from services.blob.backends import keys
from services.blob.backends.base import BackendError, BlobBackend, ObjectNotFound
from services.blob.backends.staging import (
    BatchesBookkeeping,
    CreatesUnsynced,
    PutsIfAbsent,
    StagesInPlace,
    StagingBusy,
    StagingObject,
)
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.hashing import ResumableHash

log = logging.getLogger("lading.blob.uploads")

# The algorithm whose state is saved while appending; commits with another one re-read the parts.
SESSION_HASH = "sha256"
_STATE_VERSION = 1
# Concurrent deletes when removing a session (one call per key on S3).
_DELETE_CONCURRENCY = 16
# Chunks at least this big are hashed in a worker thread; smaller ones are not worth the hop.
_THREADED_HASH_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """What a client may know about a session."""

    upload_id: str
    repository: str
    # Bytes received so far: the offset the next chunk must start at.
    offset: int
    # Unix seconds.
    started_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class CommittedBlob:
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class Part:
    """Staged bytes [start, start+size) of an upload, stored at `key`."""

    key: str
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class SessionState:
    """The contents of `uploads/<id>/state.json`."""

    repository: str
    offset: int
    started_at: float
    updated_at: float
    # OpenSSL SHA-256 context of bytes [0, offset); None when it could not be kept.
    hash_state: bytes | None
    parts: tuple[Part, ...]
    # Who started the session ("" when the caller named nobody); its marker is under owners/.
    owner: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": _STATE_VERSION,
                "repository": self.repository,
                "offset": self.offset,
                "started_at": self.started_at,
                "updated_at": self.updated_at,
                "hash": None
                if self.hash_state is None
                else {"algorithm": SESSION_HASH, "state": base64.b64encode(self.hash_state).decode()},
                "parts": [{"key": p.key, "start": p.start, "size": p.size} for p in self.parts],
                **({"owner": self.owner} if self.owner else {}),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionState:
        """Parses a stored state; raises ValueError (or KeyError/TypeError) when it is malformed."""
        data = json.loads(raw)
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown session state version {data.get('version')!r}")
        hashed = data.get("hash")
        hash_state = None
        if hashed is not None and hashed.get("algorithm") == SESSION_HASH:
            hash_state = base64.b64decode(hashed["state"])
        parts = tuple(Part(str(p["key"]), int(p["start"]), int(p["size"])) for p in data["parts"])
        return cls(
            repository=str(data["repository"]),
            offset=int(data["offset"]),
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            hash_state=hash_state,
            parts=parts,
            owner=str(data.get("owner", "")),
        )


def _session_keys(upload_id: str, owner: str) -> list[str]:
    """What `delete_all` removes to end a session, in order: the state (the session is gone at
    once), the rest of its folder, then the owner's marker."""
    marker = [keys.owner_marker_key(owner, upload_id)] if owner else []
    return [keys.upload_state_key(upload_id), keys.upload_prefix(upload_id), *marker]


def _unknown(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UPLOAD_UNKNOWN,
        f"upload {upload_id!r} is unknown: it was never started in this repository, or it was "
        "committed, cancelled or purged; start a new upload",
        {"upload_id": upload_id},
    )


class UploadSessions:
    """Upload session use cases over one backend. Holds no per-session state in memory.

    `clock` returns unix seconds; tests inject one to exercise expiry without sleeping.
    `max_sessions_per_owner` bounds the open sessions of one owner (0: unbounded).
    """

    def __init__(
        self,
        backend: BlobBackend,
        *,
        clock: Callable[[], float] = time.time,
        max_sessions_per_owner: int = 0,
    ) -> None:
        self.backend = backend
        self._clock = clock
        self.max_sessions_per_owner = max_sessions_per_owner
        self._in_place: StagesInPlace | None = backend if isinstance(backend, StagesInPlace) else None
        self._unsynced: CreatesUnsynced | None = backend if isinstance(backend, CreatesUnsynced) else None
        self._batches = backend if isinstance(backend, BatchesBookkeeping) else None
        self._puts_if_absent = backend if isinstance(backend, PutsIfAbsent) else None

    # -- session state ------------------------------------------------------------------------

    async def _read_state(self, upload_id: str) -> SessionState | None:
        try:
            stream = await self.backend.get(keys.upload_state_key(upload_id))
            raw = b"".join([chunk async for chunk in stream])
        except ObjectNotFound:
            return None
        try:
            return SessionState.from_json(raw)
        except (ValueError, KeyError, TypeError) as error:
            log.error("upload %s has a corrupt state object: %s", upload_id, error)
            raise RegistryError(
                ErrorKind.BLOB_UPLOAD_INVALID,
                f"upload {upload_id!r} has unreadable state; cancel it and start a new upload",
                {"upload_id": upload_id},
            ) from None

    async def _load(self, upload_id: str, repository: str) -> SessionState:
        """The session's state; BLOB_UPLOAD_UNKNOWN for a malformed id, an absent session, or a
        session of another repository (indistinguishable on purpose)."""
        if not keys.is_valid_upload_id(upload_id):
            raise _unknown(upload_id)
        state = await self._read_state(upload_id)
        if state is None or state.repository != repository:
            raise _unknown(upload_id)
        return state

    async def _write_state(self, upload_id: str, state: SessionState) -> None:
        """Rewrites the state after an append, whose staged bytes are durable by now, and makes
        it durable before the append is acknowledged: a crash before that leaves the previous
        state, which claims fewer bytes than are stored (the client asks for the offset and
        resumes from it; the next append drops the bytes past it), never one claiming bytes
        that are not stored. (An unsynced rewrite was cheaper, but after a power cut it could
        take the session back to any earlier offset, or leave it unreadable.)"""
        key = keys.upload_state_key(upload_id)
        if self._batches is not None:
            try:
                await self._batches.replace_durably(key, state.to_json())
            except ObjectNotFound:
                # A cancel or purge ended the session (and took the temporary file) meanwhile.
                raise _unknown(upload_id) from None
        else:
            await self.backend.put(key, _one(state.to_json()))

    async def _create_bookkeeping(self, key: str, data: bytes) -> None:
        """Creates a fresh key that a crash may lose without harm (the state of a session with
        no bytes, whose id nobody knows yet; an owner marker) the cheap way where the backend
        allows (`create_unsynced`): a lost or torn state makes the session unknown or unreadable,
        so its client starts a new one, and the purge removes what is left."""
        if self._unsynced is not None:
            await self._unsynced.create_unsynced(key, data)
        else:
            await self.backend.put(key, _one(data))

    @staticmethod
    def _status(upload_id: str, state: SessionState) -> UploadStatus:
        return UploadStatus(upload_id, state.repository, state.offset, state.started_at, state.updated_at)

    # -- use cases ----------------------------------------------------------------------------

    async def start(self, repository: str, owner: str = "") -> UploadStatus:
        """Creates an empty session tagged with `repository` (opaque here) and returns it.

        With an `owner`, the session counts against that owner until it is committed, cancelled
        or purged; TOOMANYREQUESTS when the owner already holds `max_sessions_per_owner`.
        """
        bounded = bool(owner) and self.max_sessions_per_owner > 0
        upload_id = uuid.uuid4().hex
        now = self._clock()
        hash_state = ResumableHash(SESSION_HASH).state() if ResumableHash.available() else None
        state = SessionState(repository, 0, now, now, hash_state, (), owner)
        created = [(keys.upload_state_key(upload_id), state.to_json())]
        if owner:
            created.append((keys.owner_marker_key(owner, upload_id), b""))
        if self._batches is not None:
            # Count, state and marker in one call (one pool trip on the filesystem).
            held = await self._batches.create_unsynced_bounded(
                created,
                count_prefix=keys.owner_prefix(owner) if bounded else "",
                limit=self.max_sessions_per_owner if bounded else 0,
            )
            if bounded:
                self._refuse_when_full(held)
            return self._status(upload_id, state)
        if bounded:
            self._refuse_when_full(await self.open_sessions(owner))
        for key, data in created:
            await self._create_bookkeeping(key, data)
        return self._status(upload_id, state)

    async def open_sessions(self, owner: str) -> int:
        """How many sessions `owner` holds (started with that owner, not yet ended)."""
        return len([info async for info in self.backend.list(keys.owner_prefix(owner))])

    def _refuse_when_full(self, held: int) -> None:
        if held >= self.max_sessions_per_owner:
            raise RegistryError(
                ErrorKind.TOOMANYREQUESTS,
                f"{held} upload sessions are already open for this client (the limit is "
                f"{self.max_sessions_per_owner}); finish or cancel (DELETE) some, or wait for "
                "abandoned ones to expire",
                {"limit": self.max_sessions_per_owner, "open": held},
            )

    async def status(self, upload_id: str, repository: str) -> UploadStatus:
        """The session's status. Raises BLOB_UPLOAD_UNKNOWN."""
        return self._status(upload_id, await self._load(upload_id, repository))

    async def append(
        self,
        upload_id: str,
        repository: str,
        *,
        expected_offset: int,
        chunks: AsyncIterable[bytes],
    ) -> UploadStatus:
        """Appends the bytes of `chunks` at `expected_offset`; returns the new status.

        Raises BLOB_UPLOAD_UNKNOWN, and RANGE_INVALID with detail `{"offset": <current>}` when
        `expected_offset` is not the session's offset (the chunks are then not consumed). An
        append that brings no bytes changes nothing. If `chunks` fails midway, nothing of this
        call is kept and the session stays at its previous offset, so the client can retry.
        """
        state = await self._load(upload_id, repository)
        if expected_offset != state.offset:
            raise _misplaced(upload_id, expected_offset, state.offset)
        incoming = aiter(chunks)
        first = await _first_non_empty(incoming)
        if first is None:
            return self._status(upload_id, state)
        if self._in_place is not None and _stages_in_place(upload_id, state):
            appended = await self._append_in_place(self._in_place, upload_id, state, first, incoming)
            if appended is not None:
                return appended
            # The staged object is gone: stage this chunk as a part (the loss shows at commit).

        hasher = _resume_hash(state)
        received = 0
        loop = asyncio.get_running_loop()

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal received
            chunk: bytes | None = first
            while chunk is not None:
                if chunk:
                    if hasher is not None:
                        if len(chunk) >= _THREADED_HASH_BYTES:
                            # libcrypto runs without the GIL: hashing this chunk in a worker
                            # overlaps with the backend writing the previous one and keeps the
                            # event loop free for other streams.
                            await loop.run_in_executor(None, hasher.update, chunk)
                        else:
                            hasher.update(chunk)
                    received += len(chunk)
                    yield chunk
                chunk = await anext(incoming, None)

        parts = list(state.parts)
        key = keys.upload_part_key(upload_id, state.offset, keys.new_token())
        written = await self.backend.put(key, hashed())
        parts.append(Part(key, state.offset, written))
        fresh = [key]
        superseded: list[Part] = []
        run = _small_run(parts, self.backend.min_part_size)
        if len(run) > 1 and sum(part.size for part in run) >= self.backend.min_part_size:
            # The small parts and this chunk now reach the minimum: merge them ONCE into one part
            # (each byte is re-staged at most once, so many small chunks cost linear work).
            try:
                merged = await self._merge(upload_id, run)
            except ObjectNotFound:
                await _quietly(self.backend.delete(key))
                raise await self._lost_part(upload_id, repository, state) from None
            except BaseException:
                await _quietly(self.backend.delete(key))
                raise
            del parts[len(parts) - len(run):]
            parts.append(merged)
            fresh.append(merged.key)
            superseded = run
        new_state = replace(
            state,
            offset=state.offset + received,
            updated_at=self._clock(),
            hash_state=None if hasher is None else hasher.state(),
            parts=tuple(parts),
        )
        try:
            await self._write_state(upload_id, new_state)
        except BaseException:
            await self._delete_all(fresh)
            raise
        # Only once the state no longer lists them (a crash before this leaves unlisted parts,
        # removed with the session).
        await _quietly(self._delete_all(part.key for part in superseded))
        return self._status(upload_id, new_state)

    async def _append_in_place(
        self,
        backend: StagesInPlace,
        upload_id: str,
        seen: SessionState,
        first: bytes,
        rest: AsyncIterator[bytes],
    ) -> UploadStatus | None:
        """`append` into the session's one staged object (see the module docstring); None, with
        nothing consumed past `first`, when that object vanished."""
        key = keys.upload_data_key(upload_id)
        staged = await self._lock_staged(backend, upload_id, seen, create=not seen.parts)
        if staged is None:
            return None
        try:
            # Under the lock the state cannot change: it is the truth now.
            state = await self._load(upload_id, seen.repository)
            if state.offset != seen.offset or state.parts != seen.parts:
                raise _misplaced(upload_id, seen.offset, state.offset)
            if staged.size < state.offset:
                raise _staged_data_lost(upload_id)
            hasher = _resume_hash(state)
            received = await staged.write_at(
                state.offset, _prepend(first, rest), None if hasher is None else hasher.update
            )
            new_state = replace(
                state,
                offset=state.offset + received,
                updated_at=self._clock(),
                hash_state=None if hasher is None else hasher.state(),
                parts=(Part(key, 0, state.offset + received),),
            )
            await self._write_state(upload_id, new_state)
        finally:
            await staged.close()
        return self._status(upload_id, new_state)

    async def _lock_staged(
        self, backend: StagesInPlace, upload_id: str, seen: SessionState, *, create: bool
    ) -> StagingObject | None:
        """The session's staged object, locked; None when it is missing. RANGE_INVALID (with the
        current offset) while another request holds it, BLOB_UPLOAD_UNKNOWN once the session
        is gone."""
        try:
            return await backend.open_staging(keys.upload_data_key(upload_id), create=create)
        except ObjectNotFound:
            return None
        except StagingBusy:
            current = await self._load(upload_id, seen.repository)
            raise RegistryError(
                ErrorKind.RANGE_INVALID,
                f"upload {upload_id!r} is being written by another request; resume from offset "
                f"{current.offset} once it is done",
                {"offset": current.offset},
            ) from None

    async def _merge(self, upload_id: str, run: list[Part]) -> Part:
        """Stages the concatenation of `run` (consecutive parts) as one new part and returns it.

        Raises ObjectNotFound when one of them vanished (a concurrent append on another replica
        merged it, or the session was removed); nothing is left behind then.
        """
        backend = self.backend

        async def contents() -> AsyncIterator[bytes]:
            for part in run:  # opened one at a time: one open read per merge
                stream = await backend.get(part.key, 0, part.size)
                async for chunk in stream:
                    yield chunk

        start = run[0].start
        key = keys.upload_part_key(upload_id, start, keys.new_token())
        size = await backend.put(key, contents())
        expected = sum(part.size for part in run)
        if size != expected:
            await _quietly(self.backend.delete(key))
            raise BackendError(f"staged parts of upload {upload_id!r} hold {size} bytes, not {expected}")
        return Part(key, start, size)

    async def commit(
        self,
        upload_id: str,
        repository: str,
        *,
        digest: str,
        expected_size: int | None = None,
        final_data: bytes = b"",
        final_offset: int | None = None,
    ) -> CommittedBlob:
        """Verifies the session's bytes and stores them as the blob `digest`; ends the session.

        `final_data` (bounded by the caller, one gRPC message) is appended first, at
        `final_offset` (None: at the session's offset; otherwise RANGE_INVALID like `append`).
        For a session with nothing staged yet (a small blob in POST + PUT) the bytes are hashed
        in memory and, once their digest checks out, written straight to the blob's key: no
        part, no state rewrite, no compose. Otherwise it is `append` then the usual commit.

        Raises DIGEST_INVALID for a malformed or unsupported digest (the session is kept, the
        request was wrong), BLOB_UPLOAD_UNKNOWN; SIZE_INVALID when `expected_size` (None: not
        checked) differs from the bytes received and DIGEST_INVALID when the content does not
        hash to `digest` — in those two cases the session is cancelled, leaving nothing behind.
        Idempotent per blob: when the blob already exists (another session committed the same
        content) it keeps its bytes (a staged copy in place may take the place of the identical
        stored one) and this session is removed. Durable: the blob is on the disk when this
        returns, whoever wrote it.
        """
        parsed = Digest.parse(digest)
        state = await self._load(upload_id, repository)
        if final_data:
            if final_offset is not None and final_offset != state.offset:
                raise _misplaced(upload_id, final_offset, state.offset)
            if state.parts or state.offset:
                await self.append(
                    upload_id, repository, expected_offset=state.offset, chunks=_one(final_data)
                )
                state = await self._load(upload_id, repository)
            else:
                return await self._commit_whole(upload_id, state, parsed, expected_size, final_data)
        if self._in_place is not None and state.parts and _stages_in_place(upload_id, state):
            committed = await self._commit_in_place(self._in_place, upload_id, state, parsed, expected_size)
            if committed is not None:
                return committed
            state = await self._load(upload_id, repository)
        await self._check_size(upload_id, state, state.offset, expected_size)
        await self._check_digest(upload_id, state, parsed, await self._content_digest(state, parsed.algorithm))
        blob = keys.blob_key(parsed)
        # An object there is durable on S3. On the filesystem this path runs only once the staged
        # object is gone: after a crash (all that is left is on the disk), or just after another
        # commit of this same session moved it, while that commit waits for its fsyncs.
        if not await self._exists(blob):
            try:
                parts = list(state.parts)
                run = _small_run(parts, self.backend.min_part_size)
                if len(run) > 1:
                    # Compose needs every part but the last at the minimum: merge the trailing
                    # small ones (less than the minimum in all) into the last part. Not listed in
                    # any state: removed with the session below, or by the purge after a crash.
                    del parts[len(parts) - len(run):]
                    parts.append(await self._merge(upload_id, run))
                if parts:
                    await self.backend.compose(blob, [part.key for part in parts])
                else:
                    await self.backend.put(blob, _one(b""))
            except ObjectNotFound:
                # A part vanished under us: the session was cancelled or purged meanwhile, or
                # its storage lost a part. Either way it cannot complete; clear what is left.
                await self._remove_session(upload_id, state.owner)
                raise _unknown(upload_id) from None
        await self._remove_session(upload_id, state.owner)
        return CommittedBlob(parsed, state.offset)

    async def _commit_in_place(
        self, backend: StagesInPlace, upload_id: str, seen: SessionState, parsed: Digest, expected_size: int | None
    ) -> CommittedBlob | None:
        """`commit` of a session staged in place: the staged object is renamed to the blob's key.
        None when the staged object is missing or the session no longer stages in place (the
        caller then commits from the parts, which reports the loss)."""
        staged = await self._lock_staged(backend, upload_id, seen, create=False)
        if staged is None:
            return None
        try:
            state = await self._load(upload_id, seen.repository)
            if not (state.parts and _stages_in_place(upload_id, state)):
                return None
            await self._check_size(upload_id, state, state.offset, expected_size)
            await self._check_digest(upload_id, state, parsed, await self._content_digest(state, parsed.algorithm))
            if staged.size < state.offset:
                await self._remove_session(upload_id, state.owner)
                raise _unknown(upload_id)
            # Verified bytes only ever reach the blob key, atomically and durably; the staged key
            # is gone once they have, so no later append can touch the blob's file. Even when
            # another commit stored the same blob already: its copy may not be durable yet (it
            # may still be on its way to its fsyncs), this one is once `move_to` returns, and
            # the rename costs no more than asking whether the blob is there.
            await staged.move_to(keys.blob_key(parsed), state.offset)
        finally:
            await staged.close()
        await self._remove_session(upload_id, state.owner)
        return CommittedBlob(parsed, state.offset)

    async def _check_size(
        self, upload_id: str, state: SessionState, size: int, expected_size: int | None
    ) -> None:
        """SIZE_INVALID (and the session cancelled: nothing is left behind) on a size mismatch."""
        if expected_size is not None and expected_size != size:
            await self._remove_session(upload_id, state.owner)
            raise RegistryError(
                ErrorKind.SIZE_INVALID,
                f"upload {upload_id!r} received {size} bytes, not the {expected_size} stated; "
                "the upload was cancelled, push the blob again",
                {"size": size, "expected_size": expected_size},
            )

    async def _check_digest(self, upload_id: str, state: SessionState, parsed: Digest, actual: str) -> None:
        """DIGEST_INVALID (and the session cancelled) when the content hashes to `actual` instead."""
        if actual != parsed.encoded:
            await self._remove_session(upload_id, state.owner)
            raise RegistryError(
                ErrorKind.DIGEST_INVALID,
                f"the uploaded content hashes to {parsed.algorithm}:{actual}, not {parsed}; "
                "the upload was cancelled, push the blob again",
                {"digest": str(parsed), "actual": f"{parsed.algorithm}:{actual}"},
            )

    async def _commit_whole(
        self, upload_id: str, state: SessionState, parsed: Digest, expected_size: int | None, data: bytes
    ) -> CommittedBlob:
        """`commit` of a session with nothing staged whose whole content is `data`."""
        size = len(data)
        await self._check_size(upload_id, state, size, expected_size)
        if parsed.algorithm == SESSION_HASH and state.hash_state is not None and ResumableHash.available():
            hasher = ResumableHash.from_state(SESSION_HASH, state.hash_state)
        else:
            hasher = hashlib.new(parsed.algorithm)  # type: ignore[assignment]
        if size >= _THREADED_HASH_BYTES:
            await asyncio.get_running_loop().run_in_executor(None, hasher.update, data)
        else:
            hasher.update(data)
        await self._check_digest(upload_id, state, parsed, hasher.hexdigest())
        blob = keys.blob_key(parsed)
        # Verified bytes only ever reach the blob key, and `put` is atomic: a crash leaves the
        # blob absent (the session remains, for the purge) or complete.
        if self._puts_if_absent is not None and self._batches is not None:
            # The blob, then the session's removal, in one call (one pool trip on the filesystem).
            await self._puts_if_absent.put_if_absent(
                blob, data, then_delete=_session_keys(upload_id, state.owner)
            )
            return CommittedBlob(parsed, size)
        if self._puts_if_absent is not None:
            await self._puts_if_absent.put_if_absent(blob, data)
        elif not await self._exists(blob):
            await self.backend.put(blob, _one(data))
        await self._remove_session(upload_id, state.owner)
        return CommittedBlob(parsed, size)

    async def cancel(self, upload_id: str, repository: str) -> None:
        """Removes the session and its staged bytes. Raises BLOB_UPLOAD_UNKNOWN."""
        state = await self._load(upload_id, repository)
        await self._remove_session(upload_id, state.owner)

    async def purge(self, older_than: float) -> int:
        """Removes sessions untouched for more than `older_than` seconds; returns how many.

        A session's age is its state's `updated_at` (written with this class's clock after every
        chunk); keys of a session without a readable state are aged by their newest
        modification time. Stale readiness probes go too. Blobs are never touched.
        """
        cutoff = self._clock() - older_than
        newest: dict[str, float] = defaultdict(float)
        with_state: set[str] = set()
        async for info in self.backend.list(keys.UPLOADS_PREFIX):
            upload_id = keys.upload_id_of(info.key)
            if upload_id is None:
                continue
            newest[upload_id] = max(newest[upload_id], info.modified)
            if info.key == keys.upload_state_key(upload_id):
                with_state.add(upload_id)
        purged = 0
        for upload_id, modified in newest.items():
            last_touched = modified
            owner = ""
            if upload_id in with_state:
                try:
                    state = await self._read_state(upload_id)
                except RegistryError:
                    state = None  # unreadable: aged like a leftover
                if state is not None:
                    last_touched = state.updated_at
                    owner = state.owner
            if last_touched < cutoff:
                await self._remove_session(upload_id, owner)
                with_state.discard(upload_id)
                purged += 1
        # Markers of sessions that no longer exist (a crash between removing a state and its
        # marker). Checked again one by one: a session started during this purge has its state
        # written before its marker, so it is never taken for an orphan.
        orphans = []
        async for info in self.backend.list(keys.OWNERS_PREFIX):
            upload_id = keys.upload_id_of_marker(info.key)
            if upload_id in with_state:
                continue
            if upload_id is None or not await self._exists(keys.upload_state_key(upload_id)):
                orphans.append(info.key)
        await self._delete_all(orphans)
        if self._batches is not None:
            # Owner folders are kept while sessions come and go (`delete_all`); idle ones go.
            await self._batches.prune_empty_folders(keys.OWNERS_PREFIX, cutoff)
        stale_probes = [info.key async for info in self.backend.list(keys.PROBES_PREFIX) if info.modified < cutoff]
        await self._delete_all(stale_probes)
        if purged:
            log.info("purged %d upload sessions untouched since %.0f", purged, cutoff)
        return purged

    # -- helpers ------------------------------------------------------------------------------

    async def _lost_part(self, upload_id: str, repository: str, seen: SessionState) -> RegistryError:
        """The error for a listed part that vanished: a concurrent append on another replica
        replaced it (the client must resume from the new offset), or the session is broken."""
        current = await self._load(upload_id, repository)
        if current.parts != seen.parts:
            return RegistryError(
                ErrorKind.RANGE_INVALID,
                f"upload {upload_id!r} changed during this append; resume from offset {current.offset}",
                {"offset": current.offset},
            )
        return RegistryError(
            ErrorKind.BLOB_UPLOAD_INVALID,
            f"staged data of upload {upload_id!r} is missing; cancel it and start a new upload",
            {"upload_id": upload_id},
        )

    async def _exists(self, key: str) -> bool:
        try:
            await self.backend.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def _content_digest(self, state: SessionState, algorithm: str) -> str:
        """Hex digest of the session's bytes: from the saved state when it fits, else re-read."""
        if algorithm == SESSION_HASH and state.hash_state is not None and ResumableHash.available():
            return ResumableHash.from_state(SESSION_HASH, state.hash_state).hexdigest()
        hasher = hashlib.new(algorithm)
        for part in state.parts:
            try:
                stream = await self.backend.get(part.key, 0, part.size)
            except ObjectNotFound:
                raise RegistryError(
                    ErrorKind.BLOB_UPLOAD_UNKNOWN,
                    "a staged part of the upload is missing (purged?); start a new upload",
                ) from None
            async for chunk in stream:
                hasher.update(chunk)
        return hasher.hexdigest()

    async def _remove_session(self, upload_id: str, owner: str = "") -> None:
        """Deletes the state first (the session is gone at once), then every other key, then
        the owner's marker."""
        if self._batches is not None:
            await self._batches.delete_all(_session_keys(upload_id, owner))
            return
        await self.backend.delete(keys.upload_state_key(upload_id))
        await self._delete_all([info.key async for info in self.backend.list(keys.upload_prefix(upload_id))])
        if owner:
            await self.backend.delete(keys.owner_marker_key(owner, upload_id))

    async def _delete_all(self, doomed: Iterable[str]) -> None:
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                await self.backend.delete(key)

        await asyncio.gather(*(delete(key) for key in doomed))


def _misplaced(upload_id: str, offset: int, current: int) -> RegistryError:
    return RegistryError(
        ErrorKind.RANGE_INVALID,
        f"chunk starts at offset {offset} but upload {upload_id!r} has received "
        f"{current} bytes; resume from offset {current}",
        {"offset": current},
    )


def _stages_in_place(upload_id: str, state: SessionState) -> bool:
    """True when the session keeps its bytes in its one staged object (or has none yet)."""
    return not state.parts or state.parts == (Part(keys.upload_data_key(upload_id), 0, state.offset),)


def _staged_data_lost(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UPLOAD_INVALID,
        f"staged data of upload {upload_id!r} is missing; cancel it and start a new upload",
        {"upload_id": upload_id},
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _resume_hash(state: SessionState) -> ResumableHash | None:
    """The saved SHA-256 state, or None when there is none to continue (commit re-reads then)."""
    if state.hash_state is None or not ResumableHash.available():
        return None
    return ResumableHash.from_state(SESSION_HASH, state.hash_state)


def _small_run(parts: list[Part], min_part_size: int) -> list[Part]:
    """The trailing parts from the first one under `min_part_size` on: every part before them
    reaches the minimum (the invariant `append` keeps), so only these may need merging. Empty
    when the backend has no minimum."""
    if min_part_size <= 0:
        return []
    for index, part in enumerate(parts):
        if part.size < min_part_size:
            return parts[index:]
    return []


async def _first_non_empty(chunks: AsyncIterator[bytes]) -> bytes | None:
    async for chunk in chunks:
        if chunk:
            return chunk
    return None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _concat(*streams: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    for stream in streams:
        async for chunk in stream:
            yield chunk


async def _quietly(call: object) -> None:
    """Awaits a best-effort cleanup call; a failure only leaves a key for the purge."""
    try:
        await call  # type: ignore[misc]
    except (BackendError, OSError) as error:
        log.warning("cleanup failed, the purge will retry: %s", error)

