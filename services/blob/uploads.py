"""Resumable upload sessions on top of a BlobBackend: one algorithm for every backend.

A session's whole state lives in the backend (`keys.py` has the layout): nothing is kept in
process memory between calls, so any blob-service replica sharing the storage can continue any
upload, and a killed process loses at most the chunk it was receiving. A session is its state
(`uploads/<id>/state.json`: repository, offset, owner, times, the SHA-256 state of the bytes
received, and the parts that hold them) and the bytes its writer staged under
`uploads/<id>/data` (`BlobBackend.open_writer`; how they are stored is the backend's business).

Appending a chunk: open the session's writer (on the filesystem that takes the lock, so the
state read next is the truth until the writer is closed; on S3 writers share nothing and the
state saved last wins), read the state, check the offset, append the chunk while hashing it
(`ResumableHash`, whose state can be saved), and, as the append's `save` step, rewrite the state
with the new offset, parts and hash state. A concurrent append that finds the writer busy gets
RANGE_INVALID with the current offset (the spec's answer to chunks out of order).

Committing: open the writer, read the state, check the size, check the digest (SHA-256 from the
saved state; any other algorithm, or a session without saved state, by re-reading the staged
bytes), let the writer commit the bytes to `blobs/<alg>/..` (the filesystem renames its file; S3
composes its parts server-side), and remove the session. Nothing is visible under a blob key
before its digest is verified. A small blob sent whole with the commit (POST then PUT) is hashed
in memory and stored with `put_if_absent`, without a writer or a state rewrite.

Durability (a power cut, not only a crash of the process): a chunk is acknowledged once its
bytes and the state that lists them are on the disk (the writer syncs its bytes before `save`,
and the state is `replace`d durably), so a session resumes from at least the offset its client
was last told. What a crash may lose is unacknowledged work, and sessions no chunk was
acknowledged for (their first state is written unsynced: see keys.py): the client then gets
BLOB_UPLOAD_UNKNOWN and starts over. A commit answers once the blob is durably in place.

Sessions per owner: a session started with an owner (the gateway passes the account, or the
client's address) gets a marker under `owners/` (keys.py). With `max_sessions_per_owner`, `start`
counts the owner's markers and refuses one more with TOOMANYREQUESTS. The count is read, then the
session written, without a lock: starts racing on several replicas may overshoot the bound by the
number of racers, never by more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace

from services.blob.backends import keys
from services.blob.backends.base import BlobBackend, BlobWriter, ObjectNotFound, Part, WriterBusy, staged_size
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.hashing import ResumableHash

__all__ = ["CommittedBlob", "Part", "SessionState", "UploadSessions", "UploadStatus"]

log = logging.getLogger("lading.blob.uploads")

# The algorithm whose state is saved while appending; commits with another one re-read the parts.
SESSION_HASH = "sha256"
_STATE_VERSION = 1
# Whole blobs at least this big are hashed in a worker thread; smaller ones are not worth the hop.
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
    # This commit wrote the bytes (they were not stored yet): their modification time is now.
    stored_now: bool = False


@dataclass(frozen=True, slots=True)
class SessionState:
    """The contents of `uploads/<id>/state.json`."""

    repository: str
    offset: int
    started_at: float
    updated_at: float
    # OpenSSL SHA-256 context of bytes [0, offset); None when it could not be kept.
    hash_state: bytes | None
    # Where the writer holds bytes [0, offset) (BlobWriter.append returned them).
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
        state = cls(
            repository=str(data["repository"]),
            offset=int(data["offset"]),
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            hash_state=hash_state,
            parts=parts,
            owner=str(data.get("owner", "")),
        )
        if staged_size(parts) != state.offset:
            raise ValueError(f"parts hold {staged_size(parts)} bytes, the offset says {state.offset}")
        return state


def _session_keys(upload_id: str, owner: str) -> list[str]:
    """What `delete_all` removes to end a session: the state, the rest of its folder, then the
    owner's marker. The filesystem deletes them in that order (the session is gone at once); S3
    deletes them in one DeleteObjects, in no promised order, and a partial failure may leave the
    state with its staged bytes gone (a retried commit finds the blob stored, or answers
    BLOB_UPLOAD_UNKNOWN, as it did once the state was gone) or the marker gone before the state
    (the purge takes the state later)."""
    marker = [keys.owner_marker_key(owner, upload_id)] if owner else []
    return [keys.upload_state_key(upload_id), keys.upload_prefix(upload_id), *marker]


def _unknown(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UPLOAD_UNKNOWN,
        f"upload {upload_id!r} is unknown: it was never started in this repository, or it was "
        "committed, cancelled or purged; start a new upload",
        {"upload_id": upload_id},
    )


def _misplaced(upload_id: str, offset: int, current: int) -> RegistryError:
    return RegistryError(
        ErrorKind.RANGE_INVALID,
        f"chunk starts at offset {offset} but upload {upload_id!r} has received "
        f"{current} bytes; resume from offset {current}",
        {"offset": current},
    )


def _staged_data_lost(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UPLOAD_INVALID,
        f"staged data of upload {upload_id!r} is missing; cancel it and start a new upload",
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

    # -- session state ------------------------------------------------------------------------

    async def _read_state(self, upload_id: str) -> SessionState | None:
        try:
            raw = await self.backend.read_whole(keys.upload_state_key(upload_id))
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

    @contextlib.asynccontextmanager
    async def _opened(self, upload_id: str, repository: str) -> AsyncIterator[tuple[BlobWriter, SessionState]]:
        """The session's writer and its state, read once the writer is open (see the module
        docstring); the writer is closed on the way out. RANGE_INVALID (with the current offset)
        while another request writes the session, BLOB_UPLOAD_UNKNOWN as `_load`."""
        if not keys.is_valid_upload_id(upload_id):
            raise _unknown(upload_id)
        try:
            writer = await self.backend.open_writer(keys.upload_data_key(upload_id))
        except WriterBusy:
            current = await self._load(upload_id, repository)
            raise RegistryError(
                ErrorKind.RANGE_INVALID,
                f"upload {upload_id!r} is being written by another request; resume from offset "
                f"{current.offset} once it is done",
                {"offset": current.offset},
            ) from None
        try:
            yield writer, await self._load(upload_id, repository)
        finally:
            await writer.close()

    async def _write_state(self, upload_id: str, state: SessionState) -> None:
        """Rewrites the state after an append, whose bytes are durable by now, and makes it
        durable before the append is acknowledged: a crash before that leaves the previous
        state, which claims fewer bytes than are stored (the client asks for the offset and
        resumes from it; the next append drops the bytes past it), never one claiming bytes
        that are not stored. `replace`, not `put`: a session removed meanwhile (cancel, purge)
        stays removed."""
        try:
            await self.backend.replace(keys.upload_state_key(upload_id), state.to_json())
        except ObjectNotFound:
            raise _unknown(upload_id) from None

    @staticmethod
    def _status(upload_id: str, state: SessionState) -> UploadStatus:
        return UploadStatus(upload_id, state.repository, state.offset, state.started_at, state.updated_at)

    # -- use cases ----------------------------------------------------------------------------

    async def start(self, repository: str, owner: str = "") -> UploadStatus:
        """Creates an empty session tagged with `repository` (opaque here) and returns it.

        With an `owner`, the session counts against that owner until it is committed, cancelled
        or purged; TOOMANYREQUESTS when the owner already holds `max_sessions_per_owner`.
        The state and the marker are created unsynced (keys.py: nobody knows the session yet,
        and a crash costs its client only a session without acknowledged bytes).
        """
        bounded = bool(owner) and self.max_sessions_per_owner > 0
        upload_id = uuid.uuid4().hex
        now = self._clock()
        hash_state = ResumableHash(SESSION_HASH).state() if ResumableHash.available() else None
        state = SessionState(repository, 0, now, now, hash_state, (), owner)
        created = [(keys.upload_state_key(upload_id), state.to_json())]
        if owner:
            created.append((keys.owner_marker_key(owner, upload_id), b""))
        held = await self.backend.create_unsynced(
            created,
            count_prefix=keys.owner_prefix(owner) if bounded else "",
            limit=self.max_sessions_per_owner if bounded else 0,
        )
        if bounded and held >= self.max_sessions_per_owner:
            raise RegistryError(
                ErrorKind.TOOMANYREQUESTS,
                f"{held} upload sessions are already open for this client (the limit is "
                f"{self.max_sessions_per_owner}); finish or cancel (DELETE) some, or wait for "
                "abandoned ones to expire",
                {"limit": self.max_sessions_per_owner, "open": held},
            )
        return self._status(upload_id, state)

    async def open_sessions(self, owner: str) -> int:
        """How many sessions `owner` holds (started with that owner, not yet ended)."""
        return len([info async for info in self.backend.list(keys.owner_prefix(owner))])

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
        `expected_offset` is not the session's offset, or another request is writing the
        session (the chunks are then not consumed). An append that brings no bytes changes
        nothing. If `chunks` fails midway, nothing of this call is kept and the session stays at
        its previous offset, so the client can retry. BLOB_UPLOAD_INVALID when the staged bytes
        were lost (the session cannot complete).
        """
        async with self._opened(upload_id, repository) as (writer, state):
            if expected_offset != state.offset:
                raise _misplaced(upload_id, expected_offset, state.offset)
            return self._status(upload_id, await self._append(upload_id, writer, state, chunks))

    async def _append(
        self, upload_id: str, writer: BlobWriter, state: SessionState, chunks: AsyncIterable[bytes]
    ) -> SessionState:
        """`append` with the writer open: the state saved after it (`state` for no bytes)."""
        hasher = _resume_hash(state)
        saved = state

        async def save(parts: tuple[Part, ...]) -> None:
            nonlocal saved
            new_state = replace(
                state,
                offset=staged_size(parts),
                updated_at=self._clock(),
                hash_state=None if hasher is None else hasher.state(),
                parts=parts,
            )
            await self._write_state(upload_id, new_state)
            saved = new_state

        try:
            await writer.append(
                state.parts, chunks, observe=None if hasher is None else hasher.update, save=save
            )
        except ObjectNotFound:
            raise await self._lost(upload_id, state) from None
        return saved

    async def _lost(self, upload_id: str, seen: SessionState) -> RegistryError:
        """The error for staged bytes that vanished: a concurrent append on another replica
        replaced them (the client must resume from the new offset), or the session is broken
        (or gone)."""
        current = await self._load(upload_id, seen.repository)
        if current.parts != seen.parts:
            return _misplaced(upload_id, seen.offset, current.offset)
        return _staged_data_lost(upload_id)

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
        in memory and, once their digest checks out, stored straight at the blob's key: no
        writer, no state rewrite.

        Raises DIGEST_INVALID for a malformed or unsupported digest (the session is kept, the
        request was wrong), BLOB_UPLOAD_UNKNOWN; SIZE_INVALID when `expected_size` (None: not
        checked) differs from the bytes received and DIGEST_INVALID when the content does not
        hash to `digest` — in those two cases the session is cancelled, leaving nothing behind.
        Idempotent per blob: when the blob already exists (another session committed the same
        content) it keeps its bytes (or the backend puts this session's identical ones in its
        place) and this session is removed. Durable: the blob is on the disk when this
        returns, whoever wrote it.
        """
        parsed = Digest.parse(digest)
        expected_offset = final_offset
        if final_data:
            # Read before the writer is opened: a session with nothing staged needs no writer.
            seen = await self._load(upload_id, repository)
            expected_offset = seen.offset if final_offset is None else final_offset
            if expected_offset != seen.offset:
                raise _misplaced(upload_id, expected_offset, seen.offset)
            if not seen.parts and seen.offset == 0:
                return await self._commit_whole(upload_id, seen, parsed, expected_size, final_data)
        async with self._opened(upload_id, repository) as (writer, state):
            if final_data:
                if expected_offset != state.offset:
                    raise _misplaced(upload_id, expected_offset, state.offset)
                state = await self._append(upload_id, writer, state, _one(final_data))
            await self._check_size(upload_id, state, state.offset, expected_size)
            await self._check_digest(upload_id, state, parsed, await self._content_digest(state, parsed.algorithm))
            blob = keys.blob_key(parsed)
            try:
                # Verified bytes only ever reach the blob key, atomically and durably.
                await writer.commit(state.parts, blob)
            except ObjectNotFound:
                # The staged bytes are gone. A commit of this session that stored the blob and
                # died before removing the session leaves exactly that (the filesystem renamed
                # its file away): the blob is there, verified, so this retry succeeds. Otherwise
                # (cancelled, purged, or lost) the session cannot complete.
                if not await self._exists(blob):
                    await self._remove_session(upload_id, state.owner)
                    raise _unknown(upload_id) from None
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
        # Verified bytes only ever reach the blob key, atomically: a crash leaves the blob absent
        # (the session remains, for the purge) or complete.
        stored_now = await self.backend.put_if_absent(keys.blob_key(parsed), data)
        await self._remove_session(upload_id, state.owner)
        return CommittedBlob(parsed, size, stored_now)

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
        stale_probes = [info.key async for info in self.backend.list(keys.PROBES_PREFIX) if info.modified < cutoff]
        await self.backend.delete_all([*orphans, *stale_probes])
        if purged:
            log.info("purged %d upload sessions untouched since %.0f", purged, cutoff)
        return purged

    # -- helpers ------------------------------------------------------------------------------

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
        """Deletes the state, every other key of the session and the owner's marker (in that
        order on the filesystem; see `_session_keys` for S3)."""
        await self.backend.delete_all(_session_keys(upload_id, owner))


def _resume_hash(state: SessionState) -> ResumableHash | None:
    """The saved SHA-256 state, or None when there is none to continue (commit re-reads then)."""
    if state.hash_state is None or not ResumableHash.available():
        return None
    return ResumableHash.from_state(SESSION_HASH, state.hash_state)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
