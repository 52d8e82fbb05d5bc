"""Backends raise typed BackendErrors; the blob plane's core turns the ones no use case handles
into registry errors, once (services/blob/core.py `registry_error`), also in the middle of a
streamed read."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from services.blob.backends import keys
from services.blob.backends.base import (
    BackendAccessDenied,
    BackendError,
    BackendLimitExceeded,
    BackendUnavailable,
    ObjectInfo,
)
from services.blob.backends.instrumented import InstrumentedBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.core import BlobStore
from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from tests.contracts.blob_backend_suite import chunks_of

DATA = b"x" * 3_000_000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Failing(MemoryBackend):
    """A memory backend whose stat, or whose reads after the first chunk, fail with `error`."""

    def __init__(self) -> None:
        super().__init__()
        self.stat_error: BackendError | None = None
        self.read_error: BackendError | None = None

    async def stat(self, key: str) -> ObjectInfo:
        if self.stat_error is not None:
            raise self.stat_error
        return await super().stat(key)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        stream = await super().get(key, offset, length)
        error = self.read_error

        async def breaking() -> AsyncIterator[bytes]:
            async for chunk in stream:
                yield chunk
                if error is not None:
                    raise error

        return breaking()


@pytest.fixture
async def failing() -> Failing:
    backend = Failing()
    await backend.put(keys.blob_key(Digest.parse(DIGEST)), chunks_of(DATA))
    return backend


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (BackendUnavailable("S3 at http://s3 did not answer"), ErrorKind.UNAVAILABLE, "did not answer"),
        (BackendAccessDenied("check LADING_BLOB__S3__SECRET_KEY"), ErrorKind.INTERNAL, "SECRET_KEY"),
        (BackendLimitExceeded("more than 10000 parts"), ErrorKind.UNSUPPORTED, "10000"),
        (BackendError("something odd"), ErrorKind.INTERNAL, "blob service logs"),
    ],
)
async def test_backend_failures_reach_clients_as_registry_errors(
    failing: Failing, error: BackendError, kind: ErrorKind, words: str
) -> None:
    store = BlobStore(InstrumentedBackend(failing, name="memory"), upload_expiry_seconds=60)
    failing.stat_error = error
    upload = await store.start_upload("repo")
    for call in (
        lambda: store.stat_blob(DIGEST),
        lambda: store.delete_blob(DIGEST),
        lambda: store.commit_upload(upload.upload_id, "repo", digest=DIGEST, expected_size=None, final_data=DATA),
    ):
        with pytest.raises(RegistryError) as caught:
            await call()
        assert caught.value.kind is kind and words in caught.value.message


async def test_a_read_that_fails_midway_fails_as_a_registry_error(failing: Failing) -> None:
    store = BlobStore(InstrumentedBackend(failing, name="memory"), upload_expiry_seconds=60)
    failing.read_error = BackendUnavailable("S3 closed the read; retry")
    stream = await store.read_blob(DIGEST)
    with pytest.raises(RegistryError) as caught:
        async for _ in stream:
            pass
    assert caught.value.kind is ErrorKind.UNAVAILABLE
