"""The one error table: each registry error kind with its OCI code, gRPC status and HTTP status.

Services raise `RegistryError(kind, message, detail)`; the gRPC error interceptor turns it into a
gRPC status carrying a `google.rpc.ErrorInfo` whose `reason` is the kind's name (equal to the OCI
code for every kind but the few that need a second HTTP status for the same code, such as 416 for
an out-of-order chunk). The gateway reads the kind back with `from_rpc_error` and renders the OCI
JSON envelope with `ErrorKind.http_status`. No other module picks a status number.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "lading.registry"

# A status travels in gRPC trailers, which a client refuses past 8 KiB (grpc's default
# max_metadata_size; the call then fails as RESOURCE_EXHAUSTED, which a client would retry as a
# 429). The message goes out twice (grpc-message, percent-encoded: up to 3 bytes per byte; and
# inside grpc-status-details-bin, base64: 4 per 3) and the detail once (base64): with these bounds
# a status stays under ~5.5 KiB whatever it holds.
MAX_MESSAGE_BYTES = 768
MAX_DETAIL_BYTES = 1536
_ELLIPSIS = "…"
# What STORAGE_FULL asks of the operator (and tells the client).
_FREE_SPACE = ("an operator must free or add space, then retry; pulls of what is already stored still work")


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    oci_code: str
    grpc_status: grpc.StatusCode
    http_status: int
    message: str


class ErrorKind(enum.Enum):
    # The OCI distribution spec's codes (code-1 … code-14).
    BLOB_UNKNOWN = ErrorSpec("BLOB_UNKNOWN", grpc.StatusCode.NOT_FOUND, 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ErrorSpec(
        "BLOB_UPLOAD_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "blob upload invalid"
    )
    BLOB_UPLOAD_UNKNOWN = ErrorSpec(
        "BLOB_UPLOAD_UNKNOWN", grpc.StatusCode.NOT_FOUND, 404, "blob upload unknown to registry"
    )
    DIGEST_INVALID = ErrorSpec(
        "DIGEST_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "provided digest did not match uploaded content"
    )
    MANIFEST_BLOB_UNKNOWN = ErrorSpec(
        "MANIFEST_BLOB_UNKNOWN",
        grpc.StatusCode.FAILED_PRECONDITION,
        400,
        "manifest references a manifest or blob unknown to registry",
    )
    MANIFEST_INVALID = ErrorSpec("MANIFEST_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "manifest invalid")
    MANIFEST_UNKNOWN = ErrorSpec(
        "MANIFEST_UNKNOWN", grpc.StatusCode.NOT_FOUND, 404, "manifest unknown to registry"
    )
    NAME_INVALID = ErrorSpec("NAME_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid repository name")
    NAME_UNKNOWN = ErrorSpec(
        "NAME_UNKNOWN", grpc.StatusCode.NOT_FOUND, 404, "repository name not known to registry"
    )
    SIZE_INVALID = ErrorSpec(
        "SIZE_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "provided length did not match content length"
    )
    UNAUTHORIZED = ErrorSpec("UNAUTHORIZED", grpc.StatusCode.UNAUTHENTICATED, 401, "authentication required")
    DENIED = ErrorSpec(
        "DENIED", grpc.StatusCode.PERMISSION_DENIED, 403, "requested access to the resource is denied"
    )
    UNSUPPORTED = ErrorSpec("UNSUPPORTED", grpc.StatusCode.UNIMPLEMENTED, 405, "the operation is unsupported")
    TOOMANYREQUESTS = ErrorSpec(
        "TOOMANYREQUESTS", grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "too many requests"
    )

    # Same OCI codes, other HTTP statuses the spec asks for in particular cases.
    # An out-of-order or overlapping chunk: the spec requires 416.
    RANGE_INVALID = ErrorSpec(
        "BLOB_UPLOAD_INVALID", grpc.StatusCode.OUT_OF_RANGE, 416, "requested range not satisfiable"
    )
    # A manifest over the size limit: the spec recommends 413.
    MANIFEST_TOO_LARGE = ErrorSpec(
        "MANIFEST_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 413, "manifest payload too large"
    )
    # A blob Range request outside the blob (RFC 9110): 416.
    BLOB_RANGE_INVALID = ErrorSpec(
        "BLOB_UNKNOWN", grpc.StatusCode.OUT_OF_RANGE, 416, "requested range not satisfiable"
    )

    # A POST /token form that lacks a required field (`client_id`, `service`, `grant_type`), names
    # a grant type we do not serve, or is not a form: RFC 6749 section 5.2 answers 400
    # (`invalid_request`, `unsupported_grant_type`; gateway/auth/token_endpoint.py).
    TOKEN_REQUEST_INVALID = ErrorSpec(
        "UNSUPPORTED", grpc.StatusCode.INVALID_ARGUMENT, 400, "the token request is invalid"
    )

    # Limits against abuse (the spec has no codes for them: each reuses the closest code, with
    # the HTTP status that says what happened).
    # A blob upload that would exceed `gateway.max_blob_bytes`: 413; the session is cancelled.
    BLOB_TOO_LARGE = ErrorSpec(
        "BLOB_UPLOAD_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 413, "blob exceeds the registry's size limit"
    )
    # A request line plus headers over `gateway.max_header_bytes`: 431 (RFC 6585).
    HEADERS_TOO_LARGE = ErrorSpec(
        "SIZE_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 431, "request header fields too large"
    )
    # A request body that stalled longer than `gateway.body_read_timeout_seconds`: 408. What the
    # request was writing is not kept (an upload session stays at its previous offset).
    BODY_READ_TIMEOUT = ErrorSpec(
        "BLOB_UPLOAD_INVALID", grpc.StatusCode.DEADLINE_EXCEEDED, 408, "request body not received in time"
    )

    # Docker-era codes clients understand.
    TAG_INVALID = ErrorSpec("TAG_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "manifest tag did not match URI")
    PAGINATION_NUMBER_INVALID = ErrorSpec(
        "PAGINATION_NUMBER_INVALID", grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid number of results requested"
    )
    # A backing store (database, bucket) or a plane did not answer: retry later.
    UNAVAILABLE = ErrorSpec(
        "UNAVAILABLE", grpc.StatusCode.UNAVAILABLE, 503, "service unavailable; retry the request shortly"
    )
    # The registry's own storage is full (the blob plane's disk: ENOSPC or EDQUOT; the metadata
    # database: SQLite's SQLITE_FULL, PostgreSQL's disk_full): 507 Insufficient Storage (RFC 4918
    # 11.5, "unable to store the representation needed to complete the request"), not a 503 with
    # Retry-After: no wait cures it, an operator must free or add space, and reads still work;
    # clients that print no body of a 5xx (skopeo, containers/image) still say "Insufficient Storage".
    # RESOURCE_EXHAUSTED is gRPC's status for a full file system; the channels never retry it.
    STORAGE_FULL = ErrorSpec(
        "UNAVAILABLE",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        507,
        f"the registry's storage is full; {_FREE_SPACE}",
    )
    # The pull-through cache's upstream registry failed (down, timing out, 5xx, a body that does not
    # match its digest) and nothing cached can stand in: 502, the message names the upstream.
    UPSTREAM_FAILED = ErrorSpec(
        "UNAVAILABLE", grpc.StatusCode.ABORTED, 502, "the upstream registry of this repository failed"
    )
    # A bug or an unexpected failure; the detail never carries a traceback.
    INTERNAL = ErrorSpec("UNKNOWN", grpc.StatusCode.INTERNAL, 500, "internal server error")

    @property
    def spec(self) -> ErrorSpec:
        return self.value

    @property
    def oci_code(self) -> str:
        return self.value.oci_code

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return self.value.grpc_status


# When a gRPC failure carries no ErrorInfo (a channel error, a deadline), its status picks the kind.
_KIND_BY_BARE_STATUS: dict[grpc.StatusCode, ErrorKind] = {
    grpc.StatusCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.TOOMANYREQUESTS,
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind.UNSUPPORTED,
}

# Bare statuses of the planes' access check (no ErrorInfo): see from_rpc_error.
_ACCESS_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class RegistryError(Exception):
    """A failure a client should see, with the kind that decides its code and statuses.

    `message` says what went wrong and what to do; `detail` is optional JSON-serialisable data
    for the OCI error envelope.
    """

    def __init__(self, kind: ErrorKind, message: str | None = None, detail: Any = None) -> None:
        self.kind = kind
        self.message = message or kind.spec.message
        self.detail = detail
        super().__init__(f"{kind.name}: {self.message}")

    def to_rpc_status(self) -> status_pb2.Status:
        """The gRPC status carrying this error, its message and detail cut to MAX_MESSAGE_BYTES and
        MAX_DETAIL_BYTES so that it always fits in a call's trailers."""
        info = error_details_pb2.ErrorInfo(reason=self.kind.name, domain=ERROR_DOMAIN)
        if self.detail is not None:
            info.metadata["detail"] = _bounded_detail(self.detail)
        packed = any_pb2.Any()
        packed.Pack(info)
        return status_pb2.Status(
            code=self.kind.grpc_status.value[0], message=_bounded_message(self.message), details=[packed]
        )


def storage_full(what: str) -> RegistryError:
    """STORAGE_FULL naming the storage that is full (`what`, e.g. "the blob storage's disk is
    full"), with what the operator must do."""
    return RegistryError(ErrorKind.STORAGE_FULL, f"the registry's storage is full ({what}); {_FREE_SPACE}")


def _bounded_message(message: str) -> str:
    encoded = message.encode()
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    cut = encoded[: MAX_MESSAGE_BYTES - len(_ELLIPSIS.encode())].decode(errors="ignore")
    return cut + _ELLIPSIS


def _bounded_detail(detail: Any) -> str:
    """The detail as compact JSON; when too large, a small note of that instead (whoever raises
    an error with a detail that can grow, a list of digests say, bounds it with a count)."""
    text = json.dumps(detail, separators=(",", ":"))
    if len(text.encode()) <= MAX_DETAIL_BYTES:
        return text
    return json.dumps({"truncated": True, "detail_bytes": len(text.encode())}, separators=(",", ":"))


def _carried_registry_error(error: grpc.RpcError) -> RegistryError | None:
    """The RegistryError a failed call carries in its ErrorInfo, if any."""
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    if status is not None:
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                if info.domain == ERROR_DOMAIN and info.reason in ErrorKind.__members__:
                    raw = info.metadata.get("detail")
                    detail = json.loads(raw) if raw else None
                    return RegistryError(ErrorKind[info.reason], status.message, detail)
    return None


def is_access_refusal(error: grpc.RpcError) -> bool:
    """True when a plane refused the caller's own identity (services/common/access.py: a bare
    UNAUTHENTICATED or PERMISSION_DENIED), as opposed to a registry DENIED or UNAUTHORIZED about
    a client's account, which carries its ErrorInfo."""
    code = error.code() if hasattr(error, "code") else None
    return code in _ACCESS_REFUSED and _carried_registry_error(error) is None


def from_rpc_error(error: grpc.RpcError) -> RegistryError:
    """Reads the registry error back out of a failed gRPC call (the gateway's side)."""
    carried = _carried_registry_error(error)
    if carried is not None:
        return carried
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    if code in _ACCESS_REFUSED:
        # A plane refused this process's own identity (services/common/access.py): the
        # deployment's credentials are wrong, not the HTTP client's, so never a 401/403.
        return RegistryError(ErrorKind.INTERNAL, "a registry plane refused this service's credentials; "
                             "the plane's log names the role it needs")
    kind = _KIND_BY_BARE_STATUS.get(code, ErrorKind.INTERNAL)
    if kind is ErrorKind.INTERNAL:
        return RegistryError(kind, "internal server error; the registry logs say more")
    return RegistryError(kind)
