"""The shared building blocks: the error table, digests, names, resumable hashing."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest

from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.hashing import ResumableHash
from services.common.names import validate_repository, validate_tag

OCI_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
}


def test_every_oci_code_has_a_kind_of_its_own_name() -> None:
    for code in OCI_CODES:
        assert ErrorKind[code].oci_code == code


def test_kind_specs_are_unique() -> None:
    # Two kinds with the same code, gRPC status and HTTP status could not be told apart.
    seen = {(k.oci_code, k.grpc_status, k.http_status) for k in ErrorKind}
    assert len(seen) == len(ErrorKind)


def test_spec_statuses() -> None:
    assert ErrorKind.RANGE_INVALID.http_status == 416
    assert ErrorKind.MANIFEST_TOO_LARGE.http_status == 413
    assert ErrorKind.BLOB_UNKNOWN.http_status == 404
    assert ErrorKind.UNAVAILABLE.grpc_status is grpc.StatusCode.UNAVAILABLE


def test_registry_error_round_trips_through_rpc_status() -> None:
    error = RegistryError(ErrorKind.RANGE_INVALID, "chunk out of order", {"offset": 42})
    status = error.to_rpc_status()
    assert status.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert status.message == "chunk out of order"


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "a" * 64,
        "sha512:" + "b" * 128,
    ],
)
def test_valid_digests(text: str) -> None:
    assert str(Digest.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:xyz",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha512:" + "a" * 64,
        "SHA256:" + "a" * 64,
        ":" + "a" * 64,
    ],
)
def test_invalid_digests(text: str) -> None:
    with pytest.raises(RegistryError) as caught:
        Digest.parse(text)
    assert caught.value.kind is ErrorKind.DIGEST_INVALID


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a-b__c.d/e_f", "x" * 255, "a/b/c/d", "a--b"])
def test_valid_names(name: str) -> None:
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "..", "a/../b", "-a", "a_", "a___b", "x" * 256, "a b", "%2e%2e"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as caught:
        validate_repository(name)
    assert caught.value.kind is ErrorKind.NAME_INVALID


@pytest.mark.parametrize("tag", [".a", "-a", "a" * 129, "", "a/b", "a:b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(RegistryError) as caught:
        validate_tag(tag)
    assert caught.value.kind is ErrorKind.TAG_INVALID


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_resumable_hash_state_round_trip(algorithm: str) -> None:
    data = os.urandom(1_000_003)
    first = ResumableHash(algorithm)
    first.update(data[:12345])
    resumed = ResumableHash.from_state(algorithm, first.state())
    resumed.update(memoryview(data)[12345:])
    assert resumed.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    # hexdigest does not disturb the state
    assert resumed.hexdigest() == hashlib.new(algorithm, data).hexdigest()
