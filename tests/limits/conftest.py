"""One embedded registry (`lading serve`) with small limits, shared by the limits tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import Stack

# Small on purpose: each limit is reached with a few bytes, and a stall is noticed in seconds.
MAX_HEADER_BYTES = 8192
BODY_READ_TIMEOUT_SECONDS = 2
MAX_BLOB_BYTES = 1000
# Per owner (anonymous here: the client's address, shared by every test of this package).
MAX_UPLOAD_SESSIONS_PER_OWNER = 20


@pytest.fixture(scope="package")
def limited_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "LADING_GATEWAY__MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "LADING_GATEWAY__BODY_READ_TIMEOUT_SECONDS": str(BODY_READ_TIMEOUT_SECONDS),
        "LADING_GATEWAY__MAX_BLOB_BYTES": str(MAX_BLOB_BYTES),
        "LADING_BLOB__MAX_UPLOAD_SESSIONS_PER_OWNER": str(MAX_UPLOAD_SESSIONS_PER_OWNER),
    }
    data_dir = tmp_path_factory.mktemp("lading-limits") / "data"
    with Stack(data_dir, env=env, name="lading-serve-limits") as stack:
        yield stack


@pytest.fixture
def client(limited_registry: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited_registry.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def repo() -> str:
    return f"limits/{uuid.uuid4().hex[:12]}"
