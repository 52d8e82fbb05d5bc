"""Paging through the stored blobs (services/blob/listing.py, BlobService.ListBlobs) over every
backend; and what only one backend needs: the filesystem's time of a hard-linked commit, S3's
walk across listing pages."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import keys, s3
from services.blob.backends.base import BlobBackend
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.s3_factory import create_s3_backend
from services.blob.core import BlobStore
from services.blob.listing import MAX_PAGE_SIZE, list_blobs
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from tests.blob.test_backend_s3 import s3_settings
from tests.contracts.blob_backend_suite import assert_nothing_left, chunks_of
from tests.support.seaweedfs import SeaweedFS


async def commit(backend: BlobBackend, data: bytes) -> Digest:
    digest = Digest.of(data)
    await backend.put(keys.blob_key(digest), chunks_of(data))
    return digest


async def walk(backend: BlobBackend, page_size: int) -> tuple[list[str], int]:
    """Every digest listed, page by page; and the number of calls it took."""
    digests: list[str] = []
    token, calls = "", 0
    while True:
        page = await list_blobs(backend, page_token=token, page_size=page_size)
        calls += 1
        assert len(page.blobs) <= page_size
        digests += [str(b.digest) for b in page.blobs]
        token = page.next_page_token
        if not token:
            return digests, calls


async def test_pages_cover_every_blob_once_in_order_and_skip_strays(store: BlobStore) -> None:
    backend = store.backend
    stored = sorted([str(await commit(backend, f"blob {i}".encode())) for i in range(10)])
    # Strays under blobs/ (not a digest, or in the wrong shard) and keys outside blobs/.
    wrong_shard = f"blobs/sha256/00/{Digest.of(b'misplaced').encoded}"
    strays = ["blobs/sha256/ab/not-a-digest", "blobs/md5/00/0123", wrong_shard, "uploads/x", "probes/y"]
    for key in strays:
        await backend.put(key, chunks_of(b"stray"))
    upload = await store.start_upload("team/app")  # an open session is no blob
    try:
        for page_size in (1, 3, 10, 100):
            digests, calls = await walk(backend, page_size)
            assert digests == stored, page_size
            assert calls >= (len(stored) + 3) // page_size  # strays under blobs/ count towards a page
        page = await list_blobs(backend)
        assert page.next_page_token == "" and [b.size for b in page.blobs] == [len(b"blob 0")] * 10
        now = time.time()
        assert all(now - 60 <= b.modified <= now + 60 for b in page.blobs)
    finally:
        await store.cancel_upload(upload.upload_id, "team/app")
        for key in [*strays, *(keys.blob_key(Digest.parse(d)) for d in stored)]:
            await backend.delete(key)
    await assert_nothing_left(backend)


async def test_bad_page_arguments_are_refused(store: BlobStore) -> None:
    for token in ("uploads/abc", "blobs//x", "../etc", "blobs/sha256/ab/../../x"):
        with pytest.raises(RegistryError) as caught:
            await list_blobs(store.backend, page_token=token)
        assert caught.value.kind is ErrorKind.PAGINATION_NUMBER_INVALID
    with pytest.raises(RegistryError) as caught:
        await list_blobs(store.backend, page_size=-1)
    assert caught.value.kind is ErrorKind.PAGINATION_NUMBER_INVALID
    # A huge page size is capped, not refused; an empty store lists nothing.
    page = await list_blobs(store.backend, page_size=MAX_PAGE_SIZE * 10)
    assert page.blobs == [] and page.next_page_token == ""


async def test_filesystem_time_of_a_renamed_commit_is_the_commit(tmp_path) -> None:
    """A commit renames the staged file, which may have been last written hours before: the
    inode keeps that mtime, but the rename changes its ctime, which `list_blobs` reports."""
    backend = FilesystemBackend(tmp_path / "root", io_threads=2)
    try:
        data = b"staged long ago"
        writer = await backend.open_writer("uploads/u/data")
        parts = await writer.append((), chunks_of(data))
        await writer.close()
        hours_ago = time.time() - 7200
        os.utime(tmp_path / "root" / "uploads" / "u" / "data", (hours_ago, hours_ago))
        before = time.time()
        key = keys.blob_key(Digest.of(data))
        writer = await backend.open_writer("uploads/u/data")
        await writer.commit(parts, key)
        await backend.delete_all(["uploads/u/"])
        (plain,) = [info async for info in backend.list(keys.BLOBS_PREFIX)]
        assert plain.modified < before - 3600, "the premise: the renamed inode keeps the old mtime"
        (listed,) = [info async for info in backend.list_blobs()]
        assert listed.key == key and listed.modified >= before - 1
        await backend.delete(key)
    finally:
        await backend.close()


@pytest.fixture
async def s3_backend(seaweedfs: SeaweedFS) -> AsyncIterator[BlobBackend]:
    backend = create_s3_backend(s3_settings(seaweedfs))
    try:
        yield backend
        await assert_nothing_left(backend)
    finally:
        await backend.close()


@pytest.mark.s3
async def test_s3_walk_crosses_listing_pages(s3_backend: BlobBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """ListObjectsV2 pages of 3 instead of 1000, so that both the shard level and a shard's
    files span several pages, resumed from any point."""
    monkeypatch.setattr(s3, "_LIST_PAGE", 3)
    data = [f"s3 blob {i}".encode() for i in range(40)]
    stored = sorted([str(await commit(s3_backend, item)) for item in data])
    # Several blobs in one shard: names that share their first two hex digits.
    shard: dict[str, list[bytes]] = {}
    counter = 0
    while not any(len(group) >= 5 for group in shard.values()):
        item = f"shard {counter}".encode()
        shard.setdefault(Digest.of(item).encoded[:2], []).append(item)
        counter += 1
    crowded = next(group for group in shard.values() if len(group) >= 5)
    stored = sorted(stored + [str(await commit(s3_backend, item)) for item in crowded])
    try:
        for page_size in (1, 4, 7, 1000):
            digests, _ = await walk(s3_backend, page_size)
            assert digests == stored, page_size
    finally:
        for digest in stored:
            await s3_backend.delete(keys.blob_key(Digest.parse(digest)))
