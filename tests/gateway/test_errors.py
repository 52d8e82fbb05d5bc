"""The OCI error envelope: every kind renders its code and the status from the one error table."""

from __future__ import annotations

import logging

import grpc
import orjson
import pytest
from grpc_status import rpc_status
from starlette.requests import ClientDisconnect

from gateway.errors import HttpRegistryError, render_error
from services.common.errors import ErrorKind, RegistryError


def body_of(response) -> dict:  # type: ignore[no-untyped-def]
    return orjson.loads(response.body)


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
