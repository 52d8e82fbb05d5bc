"""Fetch on miss with `tail_when_verified` on S3 (services/blob/fetch.py, fetch_spool.py): the
reader gets the whole blob at the source's pace while S3 is held (a SeaweedFS behind a relay that
holds its answers, tests/support/holding_relay.py), `COMMITTED` comes once S3 took it; a wrong
body never reaches the reader whole and stores nothing; a commit that fails after the reader got
its bytes raises after them, stores nothing, and a retry stores the blob; a spent spool budget
falls back to storage's pace, as does a plane without a spool (or with an unusable one); without
the flag the tail still waits for the commit. Served from a direct-read server without local files
(S3): the reader gets the fetch's spool file, its end once verified, and the spool file goes with
the fetch and its reader."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.blob.core import BlobStore
from services.blob.direct_reads import DirectReadServer, SignedBlobUrls
from services.blob.fetch import COMMITTED, Begun, FetchOnMiss
from services.blob.fetch_spool import FetchSpool
from services.blob.main import build_backend, build_store
from services.common.errors import ErrorKind, RegistryError
from services.common.settings import BlobSettings, DirectReadSettings, S3BackendSettings
from tests.support.holding_relay import HoldingRelay
from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.s3

BLOB = os.urandom(12 * 1024 * 1024)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
SOURCE_CHUNK = 256 * 1024


@pytest.fixture
def relay(seaweedfs: SeaweedFS) -> Iterator[HoldingRelay]:
    held = HoldingRelay(int(seaweedfs.endpoint.rsplit(":", 1)[1])).start()
    yield held
    held.stop()


def _settings(seaweedfs: SeaweedFS, endpoint: str, prefix: str) -> BlobSettings:
    return BlobSettings(backend="s3", io_threads=4, s3=S3BackendSettings(
        endpoint=endpoint, region=seaweedfs.region, bucket=seaweedfs.bucket, access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key, secure=False, path_style=True, key_prefix=prefix,
        part_size_bytes=5 * 1024 * 1024, connect_timeout_seconds=1.0, read_timeout_seconds=5.0, max_retries=0))


@contextlib.asynccontextmanager
async def _store(seaweedfs: SeaweedFS, endpoint: str, prefix: str) -> AsyncIterator[BlobStore]:
    settings = _settings(seaweedfs, endpoint, prefix)
    backend = build_backend(settings)
    await backend.prepare()
    try:
        yield build_store(settings, backend)
    finally:
        await backend.close()


def _source(body: bytes):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), SOURCE_CHUNK):
                yield body[start:start + SOURCE_CHUNK]
                await asyncio.sleep(0)

        yield len(BLOB), chunks()

    return opened


async def _confirm() -> None:
    return None


async def _stored(store: BlobStore) -> bool:
    try:
        await store.stat_blob(DIGEST)
    except RegistryError as error:
        assert error.kind is ErrorKind.BLOB_UNKNOWN
        return False
    return True


async def test_reader_gets_the_whole_blob_while_s3_is_held(seaweedfs: SeaweedFS, relay: HoldingRelay,
                                                          tmp_path: Path) -> None:
    prefix = seaweedfs.new_prefix()
    spool = FetchSpool(tmp_path / "spool", 64 * 1024 * 1024)
    async with _store(seaweedfs, f"127.0.0.1:{relay.port}", prefix) as store:
        items = FetchOnMiss(store, spool=spool).fetch(DIGEST, _source(BLOB), describe="test", confirm=_confirm,
                                                      tail_when_verified=True)
        begun = await anext(items)
        assert isinstance(begun, Begun) and begun.commit_follows and begun.size == len(BLOB)
        received = bytearray(await anext(items))  # type: ignore[arg-type]
        relay.hold_after(0)  # S3 answers nothing from now on: the multipart upload stalls
        while len(received) < len(BLOB):
            received += await asyncio.wait_for(anext(items), 10)  # type: ignore[operator]
        assert bytes(received) == BLOB
        committed = asyncio.ensure_future(anext(items))
        await asyncio.sleep(1.0)
        assert not committed.done(), "reported committed while S3 was held"
        assert relay.held()
        relay.release()
        assert await asyncio.wait_for(committed, 30) is COMMITTED
        with pytest.raises(StopAsyncIteration):
            await anext(items)
        assert await _stored(store)
        assert spool.budget.reserved == 0
    assert not list((tmp_path / "spool").iterdir()), "the spool file stayed behind"


async def test_a_wrong_body_never_reaches_the_reader_whole(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    wrong = BLOB[:-1] + bytes([BLOB[-1] ^ 1])
    spool = FetchSpool(tmp_path / "spool", 64 * 1024 * 1024)
    async with _store(seaweedfs, seaweedfs.endpoint, seaweedfs.new_prefix()) as store:
        received = bytearray()
        with pytest.raises(RegistryError) as raised:
            async for item in FetchOnMiss(store, spool=spool).fetch(DIGEST, _source(wrong), describe="test",
                                                                    confirm=_confirm, tail_when_verified=True):
                if isinstance(item, bytes):
                    received += item
                assert item is not COMMITTED
        assert raised.value.kind is ErrorKind.UPSTREAM_FAILED
        assert len(received) < len(BLOB)
        assert not await _stored(store)
        assert spool.budget.reserved == 0


async def test_a_commit_failing_after_the_bytes_stores_nothing_and_a_retry_works(
        seaweedfs: SeaweedFS, relay: HoldingRelay, tmp_path: Path) -> None:
    prefix = seaweedfs.new_prefix()
    spool = FetchSpool(tmp_path / "spool", 64 * 1024 * 1024)
    async with _store(seaweedfs, f"127.0.0.1:{relay.port}", prefix) as store:
        items = FetchOnMiss(store, spool=spool).fetch(DIGEST, _source(BLOB), describe="test", confirm=_confirm,
                                                      tail_when_verified=True)
        await anext(items)
        received = bytearray(await anext(items))  # type: ignore[arg-type]
        relay.hold_after(0)
        while len(received) < len(BLOB):
            received += await asyncio.wait_for(anext(items), 10)  # type: ignore[operator]
        assert bytes(received) == BLOB
        relay.cut()  # S3 gone mid-answer: the upload and its commit fail
        with pytest.raises(RegistryError):
            await asyncio.wait_for(anext(items), 30)
        assert spool.budget.reserved == 0
    async with _store(seaweedfs, seaweedfs.endpoint, prefix) as store:
        assert not await _stored(store)
        again = [item async for item in FetchOnMiss(store, spool=spool).fetch(
            DIGEST, _source(BLOB), describe="test", confirm=_confirm, tail_when_verified=True)]
        assert again[-1] is COMMITTED
        assert b"".join(item for item in again if isinstance(item, bytes)) == BLOB
        assert await _stored(store)


async def test_a_spent_spool_budget_falls_back_to_storage_pace(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    spool = FetchSpool(tmp_path / "spool", 2 * 1024 * 1024)
    async with _store(seaweedfs, seaweedfs.endpoint, seaweedfs.new_prefix()) as store:
        items = [item async for item in FetchOnMiss(store, spool=spool).fetch(
            DIGEST, _source(BLOB), describe="test", confirm=_confirm, tail_when_verified=True)]
        assert items[-1] is COMMITTED
        assert b"".join(item for item in items if isinstance(item, bytes)) == BLOB
        assert spool.budget.waited > 0 and spool.budget.reserved == 0
        assert await _stored(store)


@pytest.mark.parametrize("body", [BLOB, BLOB[:-1]], ids=["whole", "short"])
async def test_without_a_spool_storage_sets_the_pace_with_the_same_guarantees(seaweedfs: SeaweedFS,
                                                                             body: bytes) -> None:
    async with _store(seaweedfs, seaweedfs.endpoint, seaweedfs.new_prefix()) as store:
        received, items = bytearray(), []
        failed: RegistryError | None = None
        try:
            async for item in FetchOnMiss(store).fetch(DIGEST, _source(body), describe="test", confirm=_confirm,
                                                       tail_when_verified=True):
                items.append(item)
                if isinstance(item, bytes):
                    received += item
        except RegistryError as error:
            failed = error
        if body == BLOB:
            assert failed is None, failed
            assert items[-1] is COMMITTED and bytes(received) == BLOB and await _stored(store)
        else:
            # As with a spool: the reader is told (a clean end would pass the short body as whole).
            assert failed is not None and failed.kind is ErrorKind.UPSTREAM_FAILED, failed
            assert COMMITTED not in items and len(received) < len(body) and not await _stored(store)


async def test_an_unusable_spool_folder_costs_speed_not_the_fetch(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    (tmp_path / "spool").write_bytes(b"a file where the folder should be")
    spool = FetchSpool(tmp_path / "spool", 64 * 1024 * 1024)
    async with _store(seaweedfs, seaweedfs.endpoint, seaweedfs.new_prefix()) as store:
        items = [item async for item in FetchOnMiss(store, spool=spool).fetch(
            DIGEST, _source(BLOB), describe="test", confirm=_confirm, tail_when_verified=True)]
        assert items[-1] is COMMITTED and await _stored(store)


async def test_without_the_flag_the_tail_waits_for_the_commit_as_before(seaweedfs: SeaweedFS, relay: HoldingRelay,
                                                                       tmp_path: Path) -> None:
    """What older gateways, mirror runs and region fetches rely on: they record the blob when the
    last chunk comes."""
    spool = FetchSpool(tmp_path / "spool", 64 * 1024 * 1024)
    async with _store(seaweedfs, f"127.0.0.1:{relay.port}", seaweedfs.new_prefix()) as store:
        items = FetchOnMiss(store, spool=spool).fetch(DIGEST, _source(BLOB), describe="test", confirm=_confirm)
        begun = await anext(items)
        assert isinstance(begun, Begun) and not begun.commit_follows
        received = bytearray(await anext(items))  # type: ignore[arg-type]
        relay.hold_after(0)
        pending = asyncio.ensure_future(anext(items))
        while True:
            done, _ = await asyncio.wait([pending], timeout=1.0)
            if not done:
                break  # held: S3 sets the pace
            received += pending.result()  # type: ignore[operator]
            pending = asyncio.ensure_future(anext(items))
        assert len(received) < len(BLOB)
        relay.release()
        received += await asyncio.wait_for(pending, 30)  # type: ignore[operator]
        rest = [item async for item in items]
        assert COMMITTED not in rest
        assert bytes(received) + b"".join(rest) == BLOB  # type: ignore[arg-type]
        assert await _stored(store)


def _spool_files(folder: Path) -> int:
    """Descriptors of this process open on (unlinked) files of the spool `folder`."""
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(entry).startswith(str(folder))
    return count


async def test_a_direct_reader_of_an_s3_fetch_reads_its_spool_file_which_goes_with_them(
        seaweedfs: SeaweedFS, relay: HoldingRelay, tmp_path: Path) -> None:
    prefix = seaweedfs.new_prefix()
    folder = tmp_path / "spool"
    spool = FetchSpool(folder, 64 * 1024 * 1024)
    async with _store(seaweedfs, f"127.0.0.1:{relay.port}", prefix) as store:
        direct = DirectReadServer(DirectReadSettings(enabled=True, listen="127.0.0.1:0"),
                                  SignedBlobUrls(b"test-key", 60), None, stored=store.backend)
        await direct.start()
        try:
            items = FetchOnMiss(store, direct, spool).fetch(DIGEST, _source(BLOB), describe="test",
                                                            confirm=_confirm, redirect=True, tail_when_verified=True)
            begun = await anext(items)
            assert isinstance(begun, Begun) and begun.redirect_url and not begun.commit_follows
            url = begun.redirect_url.replace("http://:", "http://127.0.0.1:")
            relay.hold_after(0)  # S3 answers nothing from now on: the blob cannot be committed

            async def drained() -> list[object]:
                return [item async for item in items]

            fetch = asyncio.create_task(drained())
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
                # The whole blob, its end released once verified, while S3 still has none of it.
                assert response.status_code == 200 and response.content == BLOB
                assert not fetch.done()  # (S3 is held: its commit cannot have happened)
                assert _spool_files(folder) >= 1
                relay.release()
                assert await asyncio.wait_for(fetch, 30) == []  # over once S3 committed it
                assert await _stored(store)
                assert spool.budget.reserved == 0
                # Read again once the fetch is over: S3's own presigned URL.
                late = await client.get(url)
                assert late.status_code == 307, late.text
                assert (await client.get(late.headers["location"])).content == BLOB
            deadline = asyncio.get_running_loop().time() + 10
            while _spool_files(folder):  # the server closes its handle after the last byte went out
                assert asyncio.get_running_loop().time() < deadline, "the spool file outlived its readers"
                await asyncio.sleep(0.05)
        finally:
            relay.release()
            await direct.close()
