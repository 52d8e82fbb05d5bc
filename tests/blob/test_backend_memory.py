"""The in-memory backend passes the backend contract, also with S3's minimum part rule."""

import pytest

from services.blob.backends.memory import MemoryBackend
from tests.contracts.blob_backend_suite import BlobBackendContract, ComposingStoreContract


class TestMemoryBackend(BlobBackendContract, ComposingStoreContract):
    @pytest.fixture
    def make_backend(self):
        return MemoryBackend


class TestMemoryBackendWithMinimumPartSize(BlobBackendContract, ComposingStoreContract):
    @pytest.fixture
    def make_backend(self):
        return lambda: MemoryBackend(min_part_size=64)
