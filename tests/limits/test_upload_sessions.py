"""The bound on open upload sessions per owner, where the sessions live: the blob plane's
`UploadSessions`, over the filesystem and memory backends."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import keys
from services.blob.backends.base import BlobBackend
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.uploads import UploadSessions
from services.common.errors import ErrorKind, RegistryError
from tests.contracts.blob_backend_suite import chunks_of, keys_of
from tests.support.clock import FakeClock

REPO = "limits/app"
LIMIT = 2


@pytest.fixture(params=["filesystem", "memory"])
async def backend(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[BlobBackend]:
    made: BlobBackend = FilesystemBackend(tmp_path / "blobs", io_threads=2) if request.param == "filesystem" else MemoryBackend()
    yield made
    await made.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sessions(backend: BlobBackend, clock: FakeClock) -> UploadSessions:
    return UploadSessions(backend, clock=clock, max_sessions_per_owner=LIMIT)


async def assert_refused(sessions: UploadSessions, owner: str) -> None:
    with pytest.raises(RegistryError) as refused:
        await sessions.start(REPO, owner)
    assert refused.value.kind is ErrorKind.TOOMANYREQUESTS
    assert refused.value.kind.http_status == 429
    assert refused.value.detail == {"limit": LIMIT, "open": LIMIT}


async def test_an_owner_gets_the_limit_and_no_more(sessions: UploadSessions) -> None:
    for _ in range(LIMIT):
        await sessions.start(REPO, "account:alice")
    await assert_refused(sessions, "account:alice")
    assert await sessions.open_sessions("account:alice") == LIMIT
    # Others are not affected, nor are sessions started without an owner.
    await sessions.start(REPO, "account:bob")
    for _ in range(LIMIT + 1):
        await sessions.start(REPO)


@pytest.mark.parametrize("ending", ["commit", "cancel", "failed commit"])
async def test_ending_a_session_frees_its_place(sessions: UploadSessions, ending: str) -> None:
    first = await sessions.start(REPO, "ip:192.0.2.1")
    await sessions.start(REPO, "ip:192.0.2.1")
    await assert_refused(sessions, "ip:192.0.2.1")
    data = b"some bytes"
    await sessions.append(first.upload_id, REPO, expected_offset=0, chunks=chunks_of(data))
    if ending == "commit":
        await sessions.commit(first.upload_id, REPO, digest="sha256:" + hashlib.sha256(data).hexdigest())
    elif ending == "cancel":
        await sessions.cancel(first.upload_id, REPO)
    else:
        with pytest.raises(RegistryError) as caught:
            await sessions.commit(first.upload_id, REPO, digest="sha256:" + "0" * 64)
        assert caught.value.kind is ErrorKind.DIGEST_INVALID
    assert await sessions.open_sessions("ip:192.0.2.1") == 1
    await sessions.start(REPO, "ip:192.0.2.1")


async def test_purged_sessions_free_their_places(sessions: UploadSessions, clock: FakeClock) -> None:
    for _ in range(LIMIT):
        await sessions.start(REPO, "account:alice")
    clock.now += 7200
    assert await sessions.purge(3600) == LIMIT
    assert await sessions.open_sessions("account:alice") == 0
    await sessions.start(REPO, "account:alice")


async def test_purge_removes_markers_left_without_a_session(sessions: UploadSessions, backend: BlobBackend) -> None:
    kept = await sessions.start(REPO, "account:alice")
    gone = await sessions.start(REPO, "account:alice")
    # A process died after removing a session's state but before its marker.
    for key in await keys_of(backend, keys.upload_prefix(gone.upload_id)):
        await backend.delete(key)
    assert await sessions.open_sessions("account:alice") == 2
    assert await sessions.purge(3600) == 0  # nothing expired...
    assert await sessions.open_sessions("account:alice") == 1  # ...but the orphan marker went
    assert (await sessions.status(kept.upload_id, REPO)).offset == 0


async def test_no_limit_means_no_refusal(backend: BlobBackend) -> None:
    unbounded = UploadSessions(backend, max_sessions_per_owner=0)
    for _ in range(LIMIT * 3):
        await unbounded.start(REPO, "account:alice")
    assert await unbounded.open_sessions("account:alice") == LIMIT * 3


async def test_owner_survives_in_the_session_state(backend: BlobBackend, sessions: UploadSessions) -> None:
    """Another replica (a fresh UploadSessions over the same storage) frees the right owner's place."""
    started = await sessions.start(REPO, "account:carol")
    other_replica = UploadSessions(backend, max_sessions_per_owner=LIMIT)
    await other_replica.cancel(started.upload_id, REPO)
    assert await sessions.open_sessions("account:carol") == 0
    assert await keys_of(backend, keys.OWNERS_PREFIX) == []
