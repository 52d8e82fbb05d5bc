"""Blob stores over each backend, and 'replicas': several stores over one storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from services.blob.backends.base import BlobBackend
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.memory import MemoryBackend, MemoryObjects
from services.blob.core import BlobStore
from services.blob.uploads import UploadSessions
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server

EXPIRY_SECONDS = 3600


@pytest.fixture(scope="package")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One throwaway SeaweedFS for the blob tests (five modules use it; a start costs 2.5-8 s);
    tests separate themselves by key prefix, and a bucket of their own where they need one."""
    with seaweedfs_server() as server:
        yield server

# Small enough that tests of a few hundred bytes exercise re-staging of small parts.
SMALL_MIN_PART = 64


@dataclass
class Replicas:
    """Builds BlobStores that share one storage, as blob-service replicas share a bucket."""

    new_backend: Callable[[], BlobBackend]
    backends: list[BlobBackend] = field(default_factory=list)

    def store(self, *, clock: Callable[[], float] | None = None) -> BlobStore:
        backend = self.new_backend()
        self.backends.append(backend)
        sessions = UploadSessions(backend, clock=clock) if clock else UploadSessions(backend)
        return BlobStore(backend, upload_expiry_seconds=EXPIRY_SECONDS, sessions=sessions)


@pytest.fixture(params=["filesystem", "memory", "memory-min-part"])
async def replicas(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Replicas]:
    if request.param == "filesystem":
        root = tmp_path / "blobs"
        factory: Callable[[], BlobBackend] = lambda: FilesystemBackend(root, io_threads=4)  # noqa: E731
    else:
        objects: MemoryObjects = {}
        minimum = SMALL_MIN_PART if request.param == "memory-min-part" else 0
        factory = lambda: MemoryBackend(min_part_size=minimum, objects=objects)  # noqa: E731
    made = Replicas(factory)
    yield made
    for backend in made.backends:
        await backend.close()


@pytest.fixture
def store(replicas: Replicas) -> BlobStore:
    return replicas.store()
