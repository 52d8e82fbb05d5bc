"""Request bodies: streamed in bounded messages for blobs, read whole under a hard cap for manifests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from services.common.errors import ErrorKind, RegistryError


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or None when absent (chunked). SIZE_INVALID when not a number."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise RegistryError(
            ErrorKind.SIZE_INVALID, f"invalid Content-Length {raw!r}", {"content_length": raw}
        )
    return int(raw)


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
    pieces: AsyncIterator[bytes], message_bytes: int, *, exact_length: int | None = None
) -> AsyncIterator[bytes]:
    """Regroups body pieces (whatever size the server read) into messages of ≤ `message_bytes`.

    Small pieces are joined (one copy) so the blob plane gets few, large messages; a piece that
    crosses a message boundary is split. With `exact_length`, raises SIZE_INVALID as soon as the
    body is longer, or at the end when it is shorter, than the length the client declared.
    """
    pending: list[bytes] = []
    pending_size = 0
    total = 0
    async for piece in pieces:
        total += len(piece)
        if exact_length is not None and total > exact_length:
            raise _size_mismatch(exact_length, total, "more")
        view = memoryview(piece)
        while view:
            room = message_bytes - pending_size
            take = view[:room]
            pending.append(bytes(take) if len(take) < len(piece) else piece)
            pending_size += len(take)
            view = view[room:]
            if pending_size >= message_bytes:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, pending_size = [], 0
    if exact_length is not None and total != exact_length:
        raise _size_mismatch(exact_length, total, "fewer")
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


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
    declared = declared_length(request)
    if declared is not None and declared > cap:
        raise _too_large(too_large, cap, declared)
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
