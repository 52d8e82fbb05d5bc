"""Upload sessions and blob use cases, against every backend (filesystem, memory, memory with a
minimum part size), including continuation by another store over the same storage."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import keys
from services.blob.core import BlobStore
from services.blob.uploads import SessionState
from services.common.errors import ErrorKind, RegistryError
from services.common.hashing import ResumableHash
from tests.blob.conftest import SMALL_MIN_PART, Replicas
from tests.contracts.blob_backend_suite import chunks_of, keys_of, pattern

REPO = "library/alpine"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


async def read_all(store: BlobStore, digest: str, offset: int = 0, length: int | None = None) -> bytes:
    stream = await store.read_blob(digest, offset=offset, length=length)
    return b"".join([chunk async for chunk in stream])


async def append(store: BlobStore, upload_id: str, offset: int, *chunks: bytes, repository: str = REPO) -> int:
    status = await store.append_upload(upload_id, repository, expected_offset=offset, chunks=chunks_of(*chunks))
    return status.offset


async def upload_keys(store: BlobStore) -> list[str]:
    return await keys_of(store.backend, "uploads/")


def kind_of(caught: pytest.ExceptionInfo[RegistryError]) -> ErrorKind:
    return caught.value.kind


async def test_chunked_upload_commits_and_reads_back(store: BlobStore) -> None:
    data = pattern(300_000, seed=1)
    started = await store.start_upload(REPO)
    assert started.offset == 0 and started.repository == REPO
    assert keys.is_valid_upload_id(started.upload_id)
    offset = await append(store, started.upload_id, 0, data[:1000], data[1000:5000])
    assert offset == 5000
    offset = await append(store, started.upload_id, offset, data[5000:5001])
    offset = await append(store, started.upload_id, offset, data[5001:200_000], b"", data[200_000:])
    assert offset == len(data)
    status = await store.upload_status(started.upload_id, REPO)
    assert status.offset == len(data)
    assert status.started_at == started.started_at

    committed = await store.commit_upload(started.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert (str(committed.digest), committed.size) == (sha256(data), len(data))
    assert await read_all(store, sha256(data)) == data
    assert (await store.stat_blob(sha256(data))).size == len(data)
    assert await upload_keys(store) == []
    with pytest.raises(RegistryError) as caught:
        await store.upload_status(started.upload_id, REPO)
    assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN


async def test_out_of_order_chunk_is_refused_with_the_current_offset(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"0123456789")
    for wrong in (0, 5, 11, -1):
        with pytest.raises(RegistryError) as caught:
            await append(store, upload.upload_id, wrong, b"zzz")
        assert kind_of(caught) is ErrorKind.RANGE_INVALID
        assert caught.value.detail == {"offset": 10}
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 10
    await append(store, upload.upload_id, 10, b"abc")
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"0123456789abc"), expected_size=13)
    assert await read_all(store, sha256(b"0123456789abc")) == b"0123456789abc"


async def test_wrong_repository_or_unknown_id_is_an_unknown_upload(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"abc")
    other = "library/other"
    calls = [
        lambda uid, repo: store.upload_status(uid, repo),
        lambda uid, repo: store.append_upload(uid, repo, expected_offset=3, chunks=chunks_of(b"d")),
        lambda uid, repo: store.commit_upload(uid, repo, digest=sha256(b"abc"), expected_size=3),
        lambda uid, repo: store.cancel_upload(uid, repo),
    ]
    bad_ids = ["../../etc/passwd", "", "x", upload.upload_id.upper(), "0" * 32, upload.upload_id + "/state.json"]
    for call in calls:
        for upload_id, repository in [(upload.upload_id, other), *((bad, REPO) for bad in bad_ids)]:
            with pytest.raises(RegistryError) as caught:
                await call(upload_id, repository)
            assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN, (upload_id, repository)
    # The real session is untouched by all of that.
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 3
    await store.cancel_upload(upload.upload_id, REPO)
    assert await keys_of(store.backend) == []


async def test_size_mismatch_cancels_and_leaves_nothing(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"hello")
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"hello"), expected_size=6)
    assert kind_of(caught) is ErrorKind.SIZE_INVALID
    assert await keys_of(store.backend) == []
    with pytest.raises(RegistryError) as caught:
        await store.upload_status(upload.upload_id, REPO)
    assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN


async def test_digest_mismatch_cancels_and_leaves_nothing(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, pattern(1000), pattern(500))
    wrong = sha256(b"something else")
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=wrong, expected_size=1500)
    assert kind_of(caught) is ErrorKind.DIGEST_INVALID
    assert await keys_of(store.backend) == []
    with pytest.raises(RegistryError) as caught:
        await store.stat_blob(wrong)
    assert kind_of(caught) is ErrorKind.BLOB_UNKNOWN


async def test_malformed_digest_is_refused_and_keeps_the_session(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"abc")
    for digest in ("sha256:xyz", "md5:" + "a" * 32, "", "sha256:" + "A" * 64):
        with pytest.raises(RegistryError) as caught:
            await store.commit_upload(upload.upload_id, REPO, digest=digest, expected_size=None)
        assert kind_of(caught) is ErrorKind.DIGEST_INVALID
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 3
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"abc"), expected_size=None)
    assert await read_all(store, sha256(b"abc")) == b"abc"


async def test_sha512_blob_is_verified_by_rereading(store: BlobStore) -> None:
    data = pattern(200_000, seed=5)
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, data[:70_000])
    await append(store, upload.upload_id, 70_000, data[70_000:])
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha512(data + b"!"), expected_size=None)
    assert kind_of(caught) is ErrorKind.DIGEST_INVALID

    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, data)
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha512(data), expected_size=len(data))
    assert committed.digest.algorithm == "sha512"
    assert await keys_of(store.backend) == [keys.blob_key(committed.digest)]
    assert await read_all(store, sha512(data)) == data


async def test_sha256_without_saved_hash_state_rereads_the_parts(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine where libcrypto cannot be loaded.
    monkeypatch.setattr(ResumableHash, "available", staticmethod(lambda: False))
    data = pattern(150_000, seed=9)
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, data[:100])
    await append(store, upload.upload_id, 100, data[100:])
    raw = await _state_bytes(store, upload.upload_id)
    assert SessionState.from_json(raw).hash_state is None
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(data[:-1] + b"?"), expected_size=None)
    assert kind_of(caught) is ErrorKind.DIGEST_INVALID

    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, data)
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert await read_all(store, sha256(data)) == data


async def test_two_sessions_committing_the_same_blob_both_succeed_with_one_copy(store: BlobStore) -> None:
    data = pattern(80_000, seed=3)
    first = await store.start_upload(REPO)
    second = await store.start_upload("library/other")
    await append(store, first.upload_id, 0, data)
    await append(store, second.upload_id, 0, data[:10], repository="library/other")
    await append(store, second.upload_id, 10, data[10:], repository="library/other")
    one = await store.commit_upload(first.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    two = await store.commit_upload(second.upload_id, "library/other", digest=sha256(data), expected_size=len(data))
    assert one == two
    assert await keys_of(store.backend) == [keys.blob_key(one.digest)]
    assert await read_all(store, sha256(data)) == data


async def test_empty_blob(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    assert await append(store, upload.upload_id, 0) == 0
    assert await append(store, upload.upload_id, 0, b"", b"") == 0
    assert await upload_keys(store) == [keys.upload_state_key(upload.upload_id)]
    committed = await store.commit_upload(upload.upload_id, REPO, digest=sha256(b""), expected_size=0)
    assert committed.size == 0
    assert (await store.stat_blob(sha256(b""))).size == 0
    assert await read_all(store, sha256(b"")) == b""


async def test_a_failed_chunk_stream_keeps_the_previous_offset(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"first-")

    async def broken() -> AsyncIterator[bytes]:
        yield b"lost bytes"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.append_upload(upload.upload_id, REPO, expected_offset=6, chunks=broken())
    assert (await store.upload_status(upload.upload_id, REPO)).offset == 6
    await append(store, upload.upload_id, 6, b"second")
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"first-second"), expected_size=12)
    assert await read_all(store, sha256(b"first-second")) == b"first-second"
    assert await upload_keys(store) == []


async def test_unlisted_parts_from_a_crash_are_removed_with_the_session(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"kept")
    # Bytes staged by a process that died before writing the state.
    orphan = f"{keys.upload_prefix(upload.upload_id)}orphan-{keys.new_token()}"
    await store.backend.put(orphan, chunks_of(b"never acknowledged"))
    await append(store, upload.upload_id, 4, b"+more")
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"kept+more"), expected_size=9)
    assert await read_all(store, sha256(b"kept+more")) == b"kept+more"
    assert await upload_keys(store) == []


async def test_cancel_removes_everything(store: BlobStore) -> None:
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, pattern(5000))
    await store.cancel_upload(upload.upload_id, REPO)
    assert await keys_of(store.backend) == []
    with pytest.raises(RegistryError) as caught:
        await store.cancel_upload(upload.upload_id, REPO)
    assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN


async def test_purge_removes_only_expired_sessions_and_leftovers(replicas: Replicas) -> None:
    now = [time.time()]
    store = replicas.store(clock=lambda: now[0])
    blob = await store.start_upload(REPO)
    await append(store, blob.upload_id, 0, b"a blob")
    await store.commit_upload(blob.upload_id, REPO, digest=sha256(b"a blob"), expected_size=6)
    stale = await store.start_upload(REPO)
    await append(store, stale.upload_id, 0, pattern(1000))
    # Parts whose state is gone (a process died while removing a session).
    leftover_id = "0" * 12 + "4" + "0" * 3 + "8" + "0" * 15
    await store.backend.put(f"{keys.upload_prefix(leftover_id)}orphan-{keys.new_token()}", chunks_of(b"x"))
    await store.backend.put(keys.probe_key(keys.new_token()), chunks_of(b"ok"))

    assert await store.purge_uploads() == 0
    assert len(await upload_keys(store)) == 3  # the stale session's state and part, the leftover part
    now[0] += 2 * 3600
    assert await store.purge_uploads(3 * 3600) == 0
    fresh = await store.start_upload(REPO)
    assert await store.purge_uploads() == 2
    assert await upload_keys(store) == [keys.upload_state_key(fresh.upload_id)]
    assert await keys_of(store.backend, "probes/") == []
    with pytest.raises(RegistryError) as caught:
        await append(store, stale.upload_id, 1000, b"late")
    assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN
    assert await read_all(store, sha256(b"a blob")) == b"a blob"


async def test_another_replica_continues_and_commits_the_upload(replicas: Replicas) -> None:
    first, second, third = replicas.store(), replicas.store(), replicas.store()
    data = pattern(250_000, seed=11)
    upload = await first.start_upload(REPO)
    offset = await append(first, upload.upload_id, 0, data[:100_000])
    assert (await second.upload_status(upload.upload_id, REPO)).offset == offset
    offset = await append(second, upload.upload_id, offset, data[100_000:100_010])
    with pytest.raises(RegistryError) as caught:
        await append(first, upload.upload_id, 100_000, b"stale view")
    assert caught.value.detail == {"offset": 100_010}
    offset = await append(first, upload.upload_id, offset, data[100_010:])
    committed = await third.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert committed.size == len(data)
    assert await read_all(first, sha256(data)) == data
    assert await read_all(second, sha256(data)) == data
    assert await upload_keys(first) == []


async def test_small_trailing_parts_are_restaged_to_the_minimum(replicas: Replicas) -> None:
    store = replicas.store()
    minimum = store.backend.min_part_size
    data = pattern(10 * SMALL_MIN_PART + 7, seed=21)
    upload = await store.start_upload(REPO)
    offset = 0
    for size in (5, 5, 5, 60, 1, 130, 3, 300):  # small chunks, one at a time
        offset = await append(store, upload.upload_id, offset, data[offset : offset + size])
    offset = await append(store, upload.upload_id, offset, data[offset:])
    assert offset == len(data)
    state = SessionState.from_json(await _state_bytes(store, upload.upload_id))
    assert sum(part.size for part in state.parts) == len(data)
    assert [part.start for part in state.parts] == sorted(part.start for part in state.parts)
    assert all(part.size >= minimum for part in state.parts[:-1])
    if minimum:
        # Re-staged parts replaced the small ones: no superseded part is left staged.
        assert len(await keys_of(store.backend, keys.upload_data_key(upload.upload_id) + "/")) == len(state.parts)
        assert len(state.parts) < 9
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert await read_all(store, sha256(data)) == data


async def test_read_blob_ranges_and_errors(store: BlobStore) -> None:
    data = pattern(3000, seed=2)
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, data)
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=None)
    digest = sha256(data)
    assert await read_all(store, digest, 0, None) == data
    assert await read_all(store, digest, 2999, None) == data[2999:]
    assert await read_all(store, digest, 100, 50) == data[100:150]
    assert await read_all(store, digest, 2990, 500) == data[2990:]
    for offset, length in [(3000, None), (5000, 1), (-1, None), (0, -5)]:
        with pytest.raises(RegistryError) as caught:
            await store.read_blob(digest, offset=offset, length=length)
        assert kind_of(caught) is ErrorKind.BLOB_RANGE_INVALID
    for missing in (sha256(b"absent"), sha512(b"absent")):
        for call in (store.stat_blob(missing), store.read_blob(missing)):
            with pytest.raises(RegistryError) as caught:
                await call
            assert kind_of(caught) is ErrorKind.BLOB_UNKNOWN
    for bad in ("sha256:short", "nonsense", "sha256:../../etc"):
        with pytest.raises(RegistryError) as caught:
            await store.stat_blob(bad)
        assert kind_of(caught) is ErrorKind.DIGEST_INVALID
    assert (await store.delete_blob(digest)).deleted is True
    assert (await store.delete_blob(digest)).deleted is False
    assert await keys_of(store.backend) == []


async def test_readiness_check_leaves_nothing(store: BlobStore) -> None:
    await store.check()
    assert await keys_of(store.backend) == []


async def _state_bytes(store: BlobStore, upload_id: str) -> bytes:
    stream = await store.backend.get(keys.upload_state_key(upload_id))
    return b"".join([chunk async for chunk in stream])


async def test_a_vanished_part_is_reported_and_the_session_cleared(replicas: Replicas) -> None:
    store = replicas.store()
    upload = await store.start_upload(REPO)
    await append(store, upload.upload_id, 0, b"tiny")
    state = SessionState.from_json(await _state_bytes(store, upload.upload_id))
    await store.backend.delete(state.parts[0].key)
    # The filesystem's writer sees at once that its file is gone; S3's never re-reads staged
    # parts below the minimum (they are merged once, when the run reaches it, or at commit), so
    # there the loss shows at commit. Either way the session cannot complete.
    content = b"tiny"
    try:
        await append(store, upload.upload_id, 4, b"more")
        content = b"tinymore"
    except RegistryError as error:
        assert error.kind is ErrorKind.BLOB_UPLOAD_INVALID
        assert (await store.upload_status(upload.upload_id, REPO)).offset == 4
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(content), expected_size=len(content))
    assert kind_of(caught) is ErrorKind.BLOB_UPLOAD_UNKNOWN
    assert await keys_of(store.backend) == []


async def test_small_chunks_are_staged_apart_and_merged_once(replicas: Replicas) -> None:
    """Chunks under the minimum stay separate parts (nothing re-read) until the run reaches the
    minimum; the run is then merged once. A commit merges a trailing run of small parts."""
    store = replicas.store()
    minimum = store.backend.min_part_size
    data = pattern(3 * SMALL_MIN_PART + 50, seed=31)
    upload = await store.start_upload(REPO)
    offset = 0
    sizes = [10] * (SMALL_MIN_PART // 10) + [SMALL_MIN_PART + 5] + [7, 7, 7]
    for index, size in enumerate(sizes):
        offset = await append(store, upload.upload_id, offset, data[offset : offset + size])
        state = SessionState.from_json(await _state_bytes(store, upload.upload_id))
        assert sum(part.size for part in state.parts) == offset
        if minimum and index < SMALL_MIN_PART // 10:
            assert len(state.parts) == index + 1  # nothing merged below the minimum
    state = SessionState.from_json(await _state_bytes(store, upload.upload_id))
    if minimum:
        # One merged part (the small run + the large chunk), then three small ones left apart.
        assert [part.size for part in state.parts] == [offset - 21, 7, 7, 7]
        assert len(await keys_of(store.backend, keys.upload_data_key(upload.upload_id) + "/")) == 4
    offset = await append(store, upload.upload_id, offset, data[offset:])
    await store.commit_upload(upload.upload_id, REPO, digest=sha256(data), expected_size=len(data))
    assert await read_all(store, sha256(data)) == data
    assert await upload_keys(store) == []


async def test_commit_with_final_data(replicas: Replicas) -> None:
    """CommitUpload's final chunk: the whole blob in one call, after earlier chunks, at a stated
    or implied offset; a wrong offset is RANGE_INVALID (session kept), a wrong digest cancels."""
    store = replicas.store()
    small = pattern(5000, seed=41)
    upload = await store.start_upload(REPO)
    committed = await store.commit_upload(
        upload.upload_id, REPO, digest=sha256(small), expected_size=len(small), final_data=small
    )
    assert committed.size == len(small)
    assert await read_all(store, sha256(small)) == small
    assert await upload_keys(store) == []

    data = pattern(3 * SMALL_MIN_PART + 9, seed=42)
    upload = await store.start_upload(REPO)
    offset = await append(store, upload.upload_id, 0, data[:100])
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(
            upload.upload_id, REPO, digest=sha256(data), expected_size=None, final_data=data[100:], final_offset=5
        )
    assert kind_of(caught) is ErrorKind.RANGE_INVALID and caught.value.detail == {"offset": 100}
    committed = await store.commit_upload(
        upload.upload_id, REPO, digest=sha256(data), expected_size=None, final_data=data[offset:], final_offset=offset
    )
    assert committed.size == len(data) and await read_all(store, sha256(data)) == data

    upload = await store.start_upload(REPO)
    with pytest.raises(RegistryError) as caught:
        await store.commit_upload(upload.upload_id, REPO, digest=sha256(b"other"), expected_size=5, final_data=b"bytes")
    assert kind_of(caught) is ErrorKind.DIGEST_INVALID
    assert await upload_keys(store) == []
    with pytest.raises(RegistryError) as caught:
        await store.stat_blob(sha256(b"bytes"))
    assert kind_of(caught) is ErrorKind.BLOB_UNKNOWN
