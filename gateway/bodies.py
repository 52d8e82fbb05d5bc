"""Request bodies: streamed in bounded messages for blobs, read whole under a hard cap for manifests.

Limits against abuse applied here:
- `BodyReadTimeoutMiddleware`: a client that leaves its body stalled for longer than
  `body_read_timeout_seconds` between two reads gets 408 (BODY_READ_TIMEOUT, connection closed).
  The error surfaces inside whatever was consuming the body, so what that request was writing is
  abandoned: an upload chunk is not kept (the blob plane keeps an append only once its stream
  ends normally) and the session stays at its previous offset, ready for a PATCH from there.
- `in_messages(limit=...)` and `check_blob_room`: an upload that would make a blob larger than
  `max_blob_bytes` gets 413 (BLOB_TOO_LARGE), from its Content-Length before any byte is read,
  else as soon as the streamed bytes pass the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import HttpRegistryError
from services.common.errors import ErrorKind, RegistryError
from services.common.numbers import MAX_INT64, wire_int


class BodyReadTimeoutMiddleware:
    """Bounds the wait for each piece of a request body to `timeout_seconds` (0: unbounded).

    Only reads of the body are timed: once the last piece (or a disconnect) has arrived, later
    `receive()` calls (a streaming response listening for a disconnect) pass through untimed. A
    handler that never reads the body is never timed. On expiry the pending `receive()` raises
    an HttpRegistryError(BODY_READ_TIMEOUT) that asks for the connection to be closed.
    """

    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_seconds <= 0:
            await self.app(scope, receive, send)
            return
        timeout = self.timeout_seconds
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                body_done = True
                raise body_timeout(timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


def body_timeout(timeout_seconds: float) -> HttpRegistryError:
    return HttpRegistryError(
        ErrorKind.BODY_READ_TIMEOUT,
        f"no request body data arrived for {timeout_seconds:g} seconds; the request was abandoned "
        "and nothing of its body was kept (resume an upload from the offset GET on its location reports)",
        {"timeout_seconds": timeout_seconds},
        # The client is stalled mid-body: the connection cannot carry another request.
        headers={"connection": "close"},
    )


def blob_too_large(max_blob_bytes: int, size: int) -> HttpRegistryError:
    return HttpRegistryError(
        ErrorKind.BLOB_TOO_LARGE,
        f"this upload would make the blob at least {size} bytes, over the registry's limit of "
        f"{max_blob_bytes} bytes; the upload was cancelled",
        {"limit": max_blob_bytes, "size": size},
        # The rest of the body is not wanted: closing beats reading (and discarding) it all.
        headers={"connection": "close"},
    )


def check_blob_room(max_blob_bytes: int, *, offset: int, adding: int | None) -> int | None:
    """Bytes an upload at `offset` may still receive (None: no limit, `max_blob_bytes` 0).

    Raises BLOB_TOO_LARGE when `adding` (a declared length, None when unknown) does not fit.
    """
    if max_blob_bytes <= 0:
        return None
    if adding is not None and offset + adding > max_blob_bytes:
        raise blob_too_large(max_blob_bytes, offset + adding)
    return max(max_blob_bytes - offset, 0)


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or None when absent (chunked). SIZE_INVALID when it is not a
    decimal number within 64 bits."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    length = wire_int(raw)
    if length is None or length > MAX_INT64:
        raise RegistryError(
            ErrorKind.SIZE_INVALID,
            f"invalid Content-Length {raw!r}: send the body's size in bytes, a decimal number below 2^63",
            {"content_length": raw},
        )
    return length


async def peek_body(request: Request) -> AsyncIterator[bytes] | None:
    """None when the request has no body bytes at all; else an iterator over all of its pieces.

    Only the first non-empty piece is read here, so an empty PUT costs no upload call.
    """
    if declared_length(request) == 0:
        return None
    stream = request.stream()
    async for piece in stream:
        if piece:
            return _prepend(piece, stream)
    return None


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for piece in rest:
        if piece:
            yield piece


async def in_messages(
    pieces: AsyncIterator[bytes],
    message_bytes: int,
    *,
    exact_length: int | None = None,
    limit: int | None = None,
    max_blob_bytes: int = 0,
) -> AsyncIterator[bytes]:
    """Regroups body pieces (whatever size the server read) into messages of ≤ `message_bytes`:
    `in_message_pieces`, each message joined (one copy) unless it is a single whole piece."""
    async for message in in_message_pieces(
        pieces, message_bytes, exact_length=exact_length, limit=limit, max_blob_bytes=max_blob_bytes
    ):
        only = message[0]
        yield only if len(message) == 1 and isinstance(only, bytes) else b"".join(message)


async def in_message_pieces(
    pieces: AsyncIterator[bytes],
    message_bytes: int,
    *,
    exact_length: int | None = None,
    limit: int | None = None,
    max_blob_bytes: int = 0,
) -> AsyncIterator[list[bytes | memoryview]]:
    """Regroups body pieces (whatever size the server read) into messages of ≤ `message_bytes`,
    each given as the pieces (or views of pieces) it is made of, uncopied: the caller joins them
    once, with whatever framing it needs (gateway.clients frames gRPC messages that way).

    Small pieces are grouped so the blob plane gets few, large messages; a piece that crosses a
    message boundary is split (views, no copy). With `exact_length`, raises SIZE_INVALID as soon
    as the body is longer, or at the end when it is shorter, than the length the client
    declared. With `limit` (from `check_blob_room`), raises BLOB_TOO_LARGE (naming
    `max_blob_bytes`) as soon as the body passes `limit` bytes.
    """
    pending: list[bytes | memoryview] = []
    pending_size = 0
    total = 0
    async for piece in pieces:
        total += len(piece)
        if exact_length is not None and total > exact_length:
            raise _size_mismatch(exact_length, total, "more")
        if limit is not None and total > limit:
            raise blob_too_large(max_blob_bytes, max_blob_bytes - limit + total)
        if not piece:
            continue
        room = message_bytes - pending_size
        if len(piece) <= room:
            pending.append(piece)
            pending_size += len(piece)
        else:
            view = memoryview(piece)
            while view:
                take = view[:room]
                pending.append(take)
                pending_size += len(take)
                view = view[room:]
                if pending_size >= message_bytes:
                    yield pending
                    pending, pending_size = [], 0
                room = message_bytes
        if pending_size >= message_bytes:
            yield pending
            pending, pending_size = [], 0
    if exact_length is not None and total != exact_length:
        raise _size_mismatch(exact_length, total, "fewer")
    if pending:
        yield pending


def _size_mismatch(expected: int, got: int, which: str) -> RegistryError:
    return RegistryError(
        ErrorKind.SIZE_INVALID,
        f"the chunk has {which} bytes than its Content-Range/Content-Length declare ({expected})",
        {"expected": expected, "received": got},
    )


async def read_capped(request: Request, cap: int, too_large: ErrorKind) -> bytes:
    """The whole body, refusing more than `cap` bytes with `too_large`.

    Checks Content-Length first so an oversized body is refused before it is read; a chunked body
    is counted as it arrives and never held beyond `cap` bytes.
    """
    raw = request.headers.get("content-length")
    declared = wire_int(raw) if raw is not None else None
    if declared is not None and declared > cap:
        # Past 64 bits too: that body is too large, whatever else is wrong with it.
        raise _too_large(too_large, cap, declared)
    declared_length(request)  # SIZE_INVALID when it is no number at all
    parts: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > cap:
            raise _too_large(too_large, cap, size)
        parts.append(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(kind: ErrorKind, cap: int, size: int) -> RegistryError:
    return RegistryError(
        kind, f"payload of {size} bytes exceeds the limit of {cap} bytes", {"limit": cap, "size": size}
    )
