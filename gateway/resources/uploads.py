"""Blob uploads: `/v2/<name>/blobs/uploads/` (end-4a/4b start, monolithic; end-11 mount) and
`/v2/<name>/blobs/uploads/<id>` (end-5 PATCH chunk, end-6 PUT close, end-13 GET status, DELETE cancel).

Chunks follow the spec (`Content-Range: <start>-<end>`, in order, else 416) and Docker's habit of
one streamed PATCH without Content-Range (appended at the session's current offset). Bodies are
streamed to the blob plane in messages of at most `settings.chunk_bytes`; nothing is buffered whole.
With `settings.max_blob_bytes`, an upload that would grow past it gets 413 and its session is
cancelled (see gateway.bodies). In read-only maintenance mode POST, PATCH and PUT get 405
UNSUPPORTED before anything reaches the blob plane (gateway.maintenance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from lading.blob.v1 import blob_pb2
from starlette.requests import Request
from starlette.responses import Response

from gateway import params, urls
from gateway.auth.gate import upload_state_query
from gateway.bodies import check_blob_room, declared_length, in_message_pieces, in_messages, peek_body
from gateway.context import Gateway
from gateway.errors import HttpRegistryError
from gateway.limits import upload_owner
from gateway.ranges import parse_chunk_range, upload_range
from gateway.responses import empty
from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.gateway.uploads")


def _session_headers(request: Request, repository: str, status: blob_pb2.UploadStatus) -> dict[str, str]:
    return {
        "location": urls.absolute(
            request.scope,
            urls.upload_path(repository, status.upload_id)
            + upload_state_query(request.scope, repository, status.upload_id),
        ),
        "range": upload_range(status.offset),
        "docker-upload-uuid": status.upload_id,
    }


def _created(request: Request, repository: str, digest: str) -> Response:
    return empty(
        201,
        {
            "location": urls.absolute(request.scope, urls.blob_path(repository, digest)),
            "docker-content-digest": digest,
        },
    )


async def start(request: Request, gateway: Gateway) -> Response:
    """POST: mount (`?mount=&from=`), monolithic upload (`?digest=` with a body), or a new session."""
    repository = params.repository(request)
    await _refuse_in_maintenance(gateway)
    query = request.query_params
    mount = query.get("mount")
    if mount is not None:
        digest = params.digest(mount)
        source = query.get("from", "")
        if source:
            params.repository_name(source)
        # With auth on, only repositories the caller may pull are mount sources (else: a session).
        sources = [source] if gateway.auth is None else await gateway.auth.mount_sources(request, repository, source)
        for candidate in sources:
            if (await gateway.metadata.mount_blob(repository, digest, candidate)).mounted:
                return _created(request, repository, digest)
        # Not mountable from there: the spec says to fall back to a new upload session.
    elif query.get("digest") is not None:
        return await _monolithic(request, gateway, repository, params.digest(query["digest"]))
    started = await gateway.blob.start_upload(repository, upload_owner(request.scope))
    headers = _session_headers(request, repository, started.status)
    if started.min_chunk_size > 0:
        headers["oci-chunk-min-length"] = str(started.min_chunk_size)
    return empty(202, headers)


async def _monolithic(request: Request, gateway: Gateway, repository: str, digest: str) -> Response:
    """Start + append + commit + link in one request; a failed attempt leaves no session behind."""
    expected_size = declared_length(request)
    max_blob_bytes = gateway.settings.max_blob_bytes
    room = check_blob_room(max_blob_bytes, offset=0, adding=expected_size)
    started = await gateway.blob.start_upload(repository, upload_owner(request.scope))
    upload_id = started.status.upload_id
    try:
        body = await peek_body(request)
        final = b""
        if body is not None and expected_size is not None and expected_size <= gateway.settings.chunk_bytes:
            # Small enough for one message: it travels with the commit (one call fewer).
            final = await _whole(body, gateway, expected_size, room)
            body = None
        if body is not None:
            await gateway.blob.append_upload(
                upload_id=upload_id,
                repository=repository,
                expected_offset=0,
                chunks=in_message_pieces(
                    body,
                    gateway.settings.chunk_bytes,
                    exact_length=expected_size,
                    limit=room,
                    max_blob_bytes=max_blob_bytes,
                ),
            )
        committing = time.monotonic()
        committed = await gateway.blob.commit_upload(
            upload_id, repository, digest, -1 if expected_size is None else expected_size,
            final_data=final, final_offset=0,
        )
    except Exception:
        await _cancel_quietly(gateway, upload_id, repository)
        raise
    await _link(gateway, repository, committed, committing)
    return _created(request, repository, committed.digest)


async def _refuse_in_maintenance(gateway: Gateway) -> None:
    """405 UNSUPPORTED while read-only maintenance mode is on (gateway.maintenance): a session
    would only be refused at its closing PUT. Status (GET) and cancel (DELETE) stay open."""
    if gateway.maintenance is not None:
        await gateway.maintenance.refuse_writes()


async def _cancel_quietly(gateway: Gateway, upload_id: str, repository: str) -> None:
    try:
        await gateway.blob.cancel_upload(upload_id, repository)
    except RegistryError as error:
        if error.kind is ErrorKind.BLOB_UPLOAD_UNKNOWN:
            return  # the plane already ended the session (it does so on a digest mismatch)
        # The plane purges abandoned sessions anyway; the original failure is what the client needs.
        log.warning("could not cancel upload %s after a failed monolithic push: %s", upload_id, error)


async def status(request: Request, gateway: Gateway) -> Response:
    """GET <location>: 204 with the session's Range (how clients resume after a 416)."""
    repository = params.repository(request)
    upload_id = params.upload_id(request)
    current = await gateway.blob.get_upload_status(upload_id, repository)
    return empty(204, _session_headers(request, repository, current))


async def patch(request: Request, gateway: Gateway) -> Response:
    """PATCH <location>: append one chunk (with or without Content-Range) → 202 with the new Range."""
    repository = params.repository(request)
    upload_id = params.upload_id(request)
    await _refuse_in_maintenance(gateway)
    body = await peek_body(request)
    current = await _append(request, gateway, repository, upload_id, body)
    return empty(202, _session_headers(request, repository, current))


async def put(request: Request, gateway: Gateway) -> Response:
    """PUT <location>?digest=: append an optional final chunk, verify and store, link → 201."""
    repository = params.repository(request)
    upload_id = params.upload_id(request)
    await _refuse_in_maintenance(gateway)
    raw_digest = request.query_params.get("digest")
    if not raw_digest:
        raise RegistryError(
            ErrorKind.DIGEST_INVALID,
            "closing an upload needs ?digest=<digest of the whole blob> on the PUT",
            {"digest": raw_digest or ""},
        )
    digest = params.digest(raw_digest)
    body = await peek_body(request)
    if body is not None:
        final = await _small_final_chunk(request, gateway, body)
        if final is not None:
            data, offset = final
            committing = time.monotonic()
            try:
                committed = await gateway.blob.commit_upload(
                    upload_id, repository, digest, final_data=data, final_offset=offset
                )
            except RegistryError as error:
                if error.kind is ErrorKind.RANGE_INVALID:
                    raise await _with_session_headers(request, gateway, repository, upload_id, error) from None
                raise
            await _link(gateway, repository, committed, committing)
            return _created(request, repository, committed.digest)
        await _append(request, gateway, repository, upload_id, body)
    committing = time.monotonic()
    committed = await gateway.blob.commit_upload(upload_id, repository, digest)
    await _link(gateway, repository, committed, committing)
    return _created(request, repository, committed.digest)


async def _link(gateway: Gateway, repository: str, committed: blob_pb2.CommitUploadResponse,
                committing: float) -> None:
    """LinkBlob after a commit that began at `committing` (time.monotonic()). When the commit wrote
    the bytes itself, the link vouches for them with an upper bound of their age, which spares
    the metadata plane asking the blob plane whether they exist (services/metadata/gc)."""
    stored_seconds_ago = time.monotonic() - committing if committed.stored_now else None
    await gateway.metadata.link_blob(repository, committed.digest, committed.size,
                                     stored_seconds_ago=stored_seconds_ago)


async def cancel(request: Request, gateway: Gateway) -> Response:
    """DELETE <location>: abandon the session → 204."""
    repository = params.repository(request)
    upload_id = params.upload_id(request)
    await gateway.blob.cancel_upload(upload_id, repository)
    return empty(204, {})


async def _append(
    request: Request,
    gateway: Gateway,
    repository: str,
    upload_id: str,
    body: AsyncIterator[bytes] | None,
) -> blob_pb2.UploadStatus:
    """Appends the request body at the offset its Content-Range names, or at the session's offset.

    Raises RANGE_INVALID (416, with the session's current Range and Location) for a malformed,
    out-of-order or overlapping Content-Range, SIZE_INVALID when Content-Range and Content-Length
    disagree, BLOB_TOO_LARGE (413, the session cancelled) when the chunk would take the blob past
    `max_blob_bytes`.
    """
    content_range = request.headers.get("content-range")
    try:
        exact_length: int | None = None
        if content_range is not None:
            start, end = parse_chunk_range(content_range)
            exact_length = end - start + 1
            declared = declared_length(request)
            if declared is not None and declared != exact_length:
                raise RegistryError(
                    ErrorKind.SIZE_INVALID,
                    f"Content-Range {content_range!r} covers {exact_length} bytes but Content-Length is {declared}",
                    {"content_range": content_range, "content_length": declared},
                )
            expected_offset = start
        else:
            # Docker streams a whole layer in one PATCH without Content-Range: append where the
            # session stands.
            expected_offset = (await gateway.blob.get_upload_status(upload_id, repository)).offset
        max_blob_bytes = gateway.settings.max_blob_bytes
        room = check_blob_room(
            max_blob_bytes,
            offset=expected_offset,
            adding=exact_length if exact_length is not None else declared_length(request),
        )
        chunks = in_message_pieces(
            body if body is not None else _nothing(),
            gateway.settings.chunk_bytes,
            exact_length=exact_length,
            limit=room,
            max_blob_bytes=max_blob_bytes,
        )
        return await gateway.blob.append_upload(
            upload_id=upload_id, repository=repository, expected_offset=expected_offset, chunks=chunks
        )
    except RegistryError as error:
        if error.kind is ErrorKind.RANGE_INVALID:
            raise await _with_session_headers(request, gateway, repository, upload_id, error) from None
        if error.kind is ErrorKind.BLOB_TOO_LARGE:
            # The blob can never fit: leave nothing behind.
            await _cancel_quietly(gateway, upload_id, repository)
        raise


async def _small_final_chunk(
    request: Request, gateway: Gateway, body: AsyncIterator[bytes]
) -> tuple[bytes, int] | None:
    """The whole body of a closing PUT and the offset it goes at (-1: the session's), when it is
    declared small enough to travel inside CommitUpload; None (body untouched) otherwise.

    Without Content-Range and with `max_blob_bytes` set, the session's offset is needed to check
    the bound, so such bodies take the `_append` path.
    """
    declared = declared_length(request)
    if declared is None or declared > gateway.settings.chunk_bytes:
        return None
    content_range = request.headers.get("content-range")
    max_blob_bytes = gateway.settings.max_blob_bytes
    if content_range is None:
        if max_blob_bytes > 0:
            return None
        return await _whole(body, gateway, declared, None), -1
    try:
        start, end = parse_chunk_range(content_range)
    except RegistryError:
        return None  # `_append` answers it (416 with the session's Range)
    if end - start + 1 != declared:
        return None  # `_append` answers it (SIZE_INVALID)
    try:
        room = check_blob_room(max_blob_bytes, offset=start, adding=declared)
    except RegistryError:
        return None  # `_append` answers it and cancels the session
    return await _whole(body, gateway, declared, room), start


async def _whole(body: AsyncIterator[bytes], gateway: Gateway, length: int, room: int | None) -> bytes:
    """The body of `length` (≤ chunk_bytes) bytes in one piece; SIZE_INVALID when it differs."""
    max_blob_bytes = gateway.settings.max_blob_bytes
    messages = [
        message
        async for message in in_messages(
            body, gateway.settings.chunk_bytes, exact_length=length, limit=room, max_blob_bytes=max_blob_bytes
        )
    ]
    return messages[0] if len(messages) == 1 else b"".join(messages)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _with_session_headers(
    request: Request, gateway: Gateway, repository: str, upload_id: str, error: RegistryError
) -> RegistryError:
    """The 416 for a chunk in the wrong place, carrying where the session really is."""
    offset = error.detail.get("offset") if isinstance(error.detail, dict) else None
    if not isinstance(offset, int):
        try:
            offset = (await gateway.blob.get_upload_status(upload_id, repository)).offset
        except RegistryError:
            return error
    current = blob_pb2.UploadStatus(upload_id=upload_id, repository=repository, offset=offset)
    return HttpRegistryError.wrap(error, _session_headers(request, repository, current))
