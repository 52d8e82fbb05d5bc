"""Rendering failures as the OCI error envelope: `{"errors": [{"code", "message", "detail"}]}`.

This is the gateway's one exception handler (`render_error`); the HTTP status always comes from
`ErrorKind.http_status` in the shared error table, never from the call site. Anything that is not a
RegistryError becomes UNAVAILABLE (a gRPC failure without registry detail) or INTERNAL (a bug,
logged here with its traceback, never sent to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc
import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from services.common.errors import ErrorKind, RegistryError, from_rpc_error

log = logging.getLogger("lading.gateway")


class HttpRegistryError(RegistryError):
    """A RegistryError that also carries response headers the spec asks for (e.g. the current
    `Range` and `Location` with a 416 on an upload, `Content-Range: bytes */<size>` for a blob),
    and top-level members of the body next to `errors` (`fields`: RFC 6749's `error` and
    `error_description` on POST /token, which OAuth2 clients read)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str | None = None,
        detail: Any = None,
        *,
        headers: Mapping[str, str],
        fields: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(kind, message, detail)
        self.headers = dict(headers)
        self.fields = dict(fields or {})

    @classmethod
    def wrap(cls, error: RegistryError, headers: Mapping[str, str]) -> HttpRegistryError:
        return cls(error.kind, error.message, error.detail, headers=headers)


def error_body(error: RegistryError) -> bytes:
    body: dict[str, Any] = {"errors": [{"code": error.kind.oci_code, "message": error.message, "detail": error.detail}]}
    if isinstance(error, HttpRegistryError):
        body.update(error.fields)
    return orjson.dumps(body)


def as_registry_error(exc: BaseException) -> RegistryError:
    """Any exception as the RegistryError a client should see."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc)
    if isinstance(exc, ClientDisconnect):
        # Nobody will read this response; the upload call was cancelled with the request.
        return RegistryError(
            ErrorKind.BLOB_UPLOAD_INVALID, "the client went away before the body was complete"
        )
    log.error("unhandled error in the gateway", exc_info=exc)
    return RegistryError(ErrorKind.INTERNAL, "internal server error; the gateway logs say more")


def render_error(exc: BaseException) -> Response:
    """The OCI error response for `exc` (status from the error table, JSON body, extra headers)."""
    error = as_registry_error(exc)
    headers = {"content-type": "application/json"}
    if isinstance(error, HttpRegistryError):
        headers.update(error.headers)
    if error.kind.http_status >= 500 and error is exc:
        # A plane is down, slow or failing (bugs in the gateway itself were logged above with their
        # traceback): worth a line, never a traceback in the response.
        log.warning("%s: %s", error.kind.name, error.message)
    return Response(error_body(error), status_code=error.kind.http_status, headers=headers)
