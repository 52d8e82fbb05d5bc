"""The OCI error envelope: every kind renders its code and the status from the one error table,
and that table agrees with the OCI distribution spec v1.1.1.

The spec's code table ("Error Codes", code-1 … code-14) and the statuses its text ties to errors
are transcribed below, each with the section it comes from, so these tests run anywhere; when the
spec itself is at hand (/work/shared/reference, or LADING_TEST_SPEC_FILE), the transcription is
checked against it too.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_status import rpc_status
from starlette.requests import ClientDisconnect

from gateway.errors import HttpRegistryError, render_error
from services.common.errors import ErrorKind, RegistryError


def body_of(response) -> dict:  # type: ignore[no-untyped-def]
    return orjson.loads(response.body)


# OCI distribution spec v1.1.1, "Error Codes": code -> description.
SPEC_CODES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "manifest references a manifest or blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown to registry",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "the operation is unsupported",
    "TOOMANYREQUESTS": "too many requests",
}

# Codes the registry sends beyond the spec's table, and why each exists.
EXTENSION_CODES = {
    # "Legacy Docker support error codes": clients may meet TAG_INVALID.
    "TAG_INVALID": "a pushed tag breaks the tag grammar",
    # CNCF Distribution's code for a bad `n` (the spec's pagination text names none).
    "PAGINATION_NUMBER_INVALID": "a page size that is not a number",
    # CNCF Distribution's codes for a failing server (5xx).
    "UNAVAILABLE": "a plane or its store did not answer",
    "UNKNOWN": "a bug",
}

# OCI distribution spec v1.1.1, "Endpoints": the failure statuses of each endpoint.
SPEC_ENDPOINT_FAILURES = {
    "end-1": {404, 401}, "end-2": {404}, "end-3": {404}, "end-4a": {404}, "end-4b": {404, 400},
    "end-5": {404, 416}, "end-6": {404, 400}, "end-7": {404, 413}, "end-8a": {404}, "end-8b": {404},
    "end-9": {404, 400, 405}, "end-10": {404, 400, 405}, "end-11": {404}, "end-12a": {404, 400},
    "end-12b": {404, 400}, "end-13": {404},
}

# Statuses the spec's text (or the token spec it defers to) gives an error: kind -> (statuses,
# where it says so). Each quoted sentence must be in the spec file when it is at hand.
SPEC_STATUSES: dict[str, tuple[set[int], str]] = {
    "BLOB_UNKNOWN": ({404}, "If the blob is not found in the repository, the response code MUST be `404 Not Found`."),
    "MANIFEST_UNKNOWN": (
        {404}, "If the manifest is not found in the repository, the response code MUST be `404 Not Found`."
    ),
    "NAME_UNKNOWN": ({404}, "An attempt to pull a nonexistent repository MUST return response code `404 Not Found`."),
    "BLOB_UPLOAD_UNKNOWN": ({404}, "end-13: its only failure status"),
    "RANGE_INVALID": (
        {416}, "If a chunk is uploaded out of order, the registry MUST respond with a `416 Requested Range Not "
        "Satisfiable` code."
    ),
    "MANIFEST_TOO_LARGE": (
        {413}, "A registry that enforces this limit SHOULD respond to a request to push a manifest over this "
        "limit with a response code `413 Payload Too Large`."
    ),
    "DIGEST_INVALID": (
        {400}, "If the request is invalid, such as a `<digest>` with an invalid syntax, a `400 Bad Request` MUST "
        "be returned."
    ),
    "UNSUPPORTED": (
        {400, 405}, "If tag deletion is disabled, the registry MUST respond with either a `400 Bad Request` or "
        "a `405 Method Not Allowed`."
    ),
    # The spec names the code but no status; Docker Registry HTTP API V2 (its apdx-1) gives 400.
    "MANIFEST_BLOB_UNKNOWN": ({400}, "apdx-1"),
    "UNAUTHORIZED": ({401}, "docker-auth-token.md: If the registry requires authorization it will return a "
                             "`401 Unauthorized`"),
}

# Statuses outside the endpoint table that some kinds need: 401/403 (token auth), 429 (RFC 6585,
# TOOMANYREQUESTS), and the limits against abuse (408 body timeout, 413 blob too large, 431 headers).
EXTRA_STATUSES = {401, 403, 408, 413, 429, 431}


def _spec_file() -> Path | None:
    configured = os.environ.get("LADING_TEST_SPEC_FILE")
    candidates = [Path(configured)] if configured else []
    root = Path(__file__).resolve().parents[2]
    candidates += [root.parent / "shared/reference", root.parent.parent / "shared/reference",
                   Path("/work/shared/reference")]
    for candidate in candidates:
        path = candidate if candidate.suffix == ".md" else candidate / "oci-distribution-spec-v1.1.1.md"
        if path.is_file():
            return path
    return None


def test_every_spec_code_is_in_the_table_with_the_spec_description() -> None:
    for code, description in SPEC_CODES.items():
        kind = ErrorKind[code]
        assert kind.oci_code == code
        assert kind.spec.message == description, f"{code}: {kind.spec.message!r} is not the spec's {description!r}"


def test_every_code_sent_is_the_spec_s_or_a_known_extension() -> None:
    for kind in ErrorKind:
        assert kind.oci_code in SPEC_CODES or kind.oci_code in EXTENSION_CODES, (
            f"{kind.name} sends {kind.oci_code}, which is neither in the spec's table nor a known extension"
        )
        assert re.fullmatch("[A-Z_]+", kind.oci_code), "the spec: codes are uppercase letters and underscores"


def test_statuses_follow_the_spec() -> None:
    for name, (statuses, where) in SPEC_STATUSES.items():
        assert ErrorKind[name].http_status in statuses, f"{name}: {ErrorKind[name].http_status}, the spec: {where}"
    allowed = set().union(*SPEC_ENDPOINT_FAILURES.values()) | EXTRA_STATUSES
    for kind in ErrorKind:
        if kind.oci_code in SPEC_CODES:
            assert kind.http_status in allowed, f"{kind.name}: {kind.http_status} is no status the spec uses"
        else:
            # 502: the pull-through cache's upstream failed (UPSTREAM_FAILED, code UNAVAILABLE);
            # 507: the registry's storage is full (STORAGE_FULL, code UNAVAILABLE).
            assert kind.http_status in allowed | {500, 502, 503, 507}, kind.name


def test_the_transcription_matches_the_spec_file() -> None:
    path = _spec_file()
    if path is None:
        pytest.skip("the OCI distribution spec is not at hand (set LADING_TEST_SPEC_FILE); the transcription "
                    "above is still checked by the other tests")
    text = path.read_text()
    codes = dict(re.findall(r"^\| code-\d+\s*\| `([A-Z_]+)`\s*\| (.+?)\s*\|$", text, re.MULTILINE))
    assert codes == SPEC_CODES
    endpoints = {
        identifier: {int(status) for status in re.findall(r"`(\d{3})`", failure)}
        for identifier, failure in re.findall(r"^\| (end-\w+)\s*\|.*\|.*\|.*\| (.+?)\s*\|$", text, re.MULTILINE)
    }
    assert endpoints == SPEC_ENDPOINT_FAILURES
    for name, (statuses, where) in SPEC_STATUSES.items():
        if where.startswith("end-"):
            assert SPEC_ENDPOINT_FAILURES[where.split(":")[0]] == statuses
        elif where.startswith("docker-"):
            document, _, sentence = where.partition(": ")
            other = path.with_name(document)
            assert not other.is_file() or sentence in other.read_text(), f"{name}: {document} no longer says it"
        elif where != "apdx-1":
            assert where in text, f"{name}: the spec no longer says {where!r}"


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_every_kind_renders_its_code_and_status(kind: ErrorKind) -> None:
    response = render_error(RegistryError(kind, f"message for {kind.name}", {"k": kind.name}))
    assert response.status_code == kind.http_status
    assert response.headers["content-type"] == "application/json"
    assert body_of(response) == {
        "errors": [{"code": kind.oci_code, "message": f"message for {kind.name}", "detail": {"k": kind.name}}]
    }


def test_default_message_and_null_detail() -> None:
    body = body_of(render_error(RegistryError(ErrorKind.BLOB_UNKNOWN)))
    assert body == {
        "errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": None}]
    }


def test_extra_headers_travel_with_the_error() -> None:
    error = HttpRegistryError.wrap(
        RegistryError(ErrorKind.RANGE_INVALID, "out of order", {"offset": 5}),
        {"range": "0-4", "location": "/v2/a/blobs/uploads/u"},
    )
    response = render_error(error)
    assert response.status_code == 416
    assert response.headers["range"] == "0-4"
    assert response.headers["location"] == "/v2/a/blobs/uploads/u"
    assert body_of(response)["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


def _rpc_error_from(error: RegistryError) -> grpc.aio.AioRpcError:
    """What a grpc.aio client receives when a servicer raised `error` (via the shared interceptor)."""
    status = rpc_status.to_status(error.to_rpc_status())
    return grpc.aio.AioRpcError(
        status.code, None, grpc.aio.Metadata(*status.trailing_metadata), status.details
    )


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_registry_errors_survive_the_grpc_hop(kind: ErrorKind) -> None:
    response = render_error(_rpc_error_from(RegistryError(kind, "from a plane", {"offset": 7})))
    assert response.status_code == kind.http_status
    assert body_of(response)["errors"][0] == {
        "code": kind.oci_code,
        "message": "from a plane",
        "detail": {"offset": 7},
    }


@pytest.mark.parametrize(
    ("code", "status", "oci"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503, "UNAVAILABLE"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503, "UNAVAILABLE"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "TOOMANYREQUESTS"),
        (grpc.StatusCode.INTERNAL, 500, "UNKNOWN"),
    ],
)
def test_bare_grpc_failures(code: grpc.StatusCode, status: int, oci: str) -> None:
    response = render_error(grpc.aio.AioRpcError(code, None, None, "connection refused: /secret/path"))
    assert response.status_code == status
    assert body_of(response)["errors"][0]["code"] == oci
    assert b"/secret/path" not in response.body


def test_bugs_are_500_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="lading.gateway"):
        response = render_error(ZeroDivisionError("secret internals"))
    assert response.status_code == 500
    assert body_of(response)["errors"][0]["code"] == "UNKNOWN"
    assert b"secret internals" not in response.body and b"Traceback" not in response.body
    assert any(record.exc_info for record in caplog.records)  # but the log has it


def test_a_client_that_went_away_is_not_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lading.gateway"):
        response = render_error(ClientDisconnect())
    assert response.status_code == 400
    assert body_of(response)["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    assert not caplog.records
