"""The caller's side of bearer-token identity: read a token file, present it on every call.

A client with a token file (`gateway.grpc.token_file`, `gc.blob_token_file`,
`operator.token_file`) sends `authorization: Bearer <token>` with each call of its channel, through
the four client interceptors `token_interceptors` returns (gRPC's own access-token credentials run
a Python plugin on a thread per call and refuse plaintext channels, which a service mesh that ends
TLS in a sidecar needs). The planes check the token (services/common/access.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from services.common.access import AccessConfigError


def read_token(path: Path, setting: str) -> str:
    """The token in `path`: its first non-blank line. Raises AccessConfigError naming `setting`
    when the file cannot be read or holds no token."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise AccessConfigError(f"`{setting}` = {path}: {reason}") from None
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise AccessConfigError(f"`{setting}` = {path} holds no token")
    return token


def _with_token(details: grpc.aio.ClientCallDetails, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_token(client_call_details, self._header), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_token(client_call_details, self._header), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_with_token(client_call_details, self._header), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_with_token(client_call_details, self._header), request_iterator)


def token_interceptors(token: str) -> list[Any]:
    """Client interceptors (one per call shape: grpc.aio files each under one shape only) that
    add `authorization: Bearer <token>` to every call of a channel."""
    header = ("authorization", f"Bearer {token}")
    return [_UnaryUnary(header), _UnaryStream(header), _StreamUnary(header), _StreamStream(header)]


def token_file_interceptors(path: Path | None, setting: str) -> list[Any]:
    """`token_interceptors` for the token in `path`; none when `path` is None. Raises
    AccessConfigError (see `read_token`)."""
    return [] if path is None else token_interceptors(read_token(path, setting))
