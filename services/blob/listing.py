"""Paging through the stored blobs (BlobService.ListBlobs), free of gRPC.

The metadata plane's garbage collection walks these pages to find orphan bytes: blobs stored here
that no `blobs` row accounts for (an upload committed whose link never happened, leftovers).
A page lists committed blobs in key order (`blobs/<alg>/<2 hex>/<hex>`, so by algorithm, then
digest) with their size and the time their key was last put in place; its token is the last key
looked at, so the walk resumes where it stopped on any replica, and blobs written or deleted
meanwhile may or may not appear. Keys under `blobs/` that do not name a digest (strays) are
skipped, but count against the page size so that every call does bounded work.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from services.blob.backends import keys
from services.blob.backends.base import BlobBackend, InvalidKey, validate_key
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    size: int
    # Unix seconds: when the bytes were last put in place under their key (BlobBackend.list_blobs).
    modified: float


@dataclass(frozen=True, slots=True)
class BlobPage:
    blobs: list[StoredBlob]
    # "" when the listing is complete; otherwise pass it back to get the next page.
    next_page_token: str


def _checked_token(page_token: str) -> str:
    """The token (a key under `blobs/`, or ""); PAGINATION_NUMBER_INVALID for anything else."""
    if page_token:
        try:
            valid = page_token.startswith(keys.BLOBS_PREFIX) and bool(validate_key(page_token))
        except InvalidKey:
            valid = False
        if not valid:
            raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID,
                                f"page_token {page_token!r} is not one this listing handed out")
    return page_token


async def list_blobs(backend: BlobBackend, *, page_token: str = "", page_size: int = 0) -> BlobPage:
    """One page of the stored blobs after `page_token` ("" from the start). `page_size` 0 uses
    DEFAULT_PAGE_SIZE; above MAX_PAGE_SIZE it is capped. Raises PAGINATION_NUMBER_INVALID for a
    negative size or a token this listing did not hand out; UNAVAILABLE when storage does not answer."""
    if page_size < 0:
        raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID, "page_size cannot be negative")
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    found: list[StoredBlob] = []
    looked_at = 0
    last = _checked_token(page_token)
    listing = backend.list_blobs(last)
    async with contextlib.aclosing(listing):  # type: ignore[type-var]
        async for info in listing:
            looked_at += 1
            last = info.key
            digest = keys.digest_of_blob_key(info.key)
            if digest is not None:
                found.append(StoredBlob(digest, info.size, info.modified))
            if looked_at >= limit:
                return BlobPage(found, last)
    return BlobPage(found, "")
