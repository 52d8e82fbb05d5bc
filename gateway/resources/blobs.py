"""`/v2/<name>/blobs/<digest>`: pull (end-2, with Range), existence check, delete (end-10).

A blob is visible only in repositories it is linked to, so the metadata plane is asked first
(one call for HEAD); GET then asks the blob plane for the bytes.

Redirects: a GET asks the blob plane with `allow_redirect`; when the plane redirects reads (S3
with `blob.s3.redirect_reads`, the default there), the answer is `307 Temporary Redirect` to a
presigned URL, with `Docker-Content-Digest`, so the bytes never pass through Python. Ranged GETs
redirect too: the gateway first validates the Range against the blob's size (416 stays ours), and
the client re-sends its Range header to the presigned URL, which answers 206 itself. HEAD never
redirects, nor does a GET of an empty blob, a conditional GET that matches (304) or fails (412),
nor any GET on a backend that cannot presign: those are answered (or streamed) here. Nor does a GET
the storage could answer otherwise than the gateway decided (gateway/conditions.py: an If-Match or
If-Range, which S3 compares with its own ETag; an If-Range date, If-Modified-Since or
If-Unmodified-Since, which storage compares with its own Last-Modified; a Range the gateway
ignores, several ranges, or numbers past 64 bits): those are streamed here (RFC 9110's answer on every
backend), a cold pull-through one too. On the filesystem, reads
redirect to the blob plane's direct-read server when `blob.direct_reads` is on (`lading serve`
turns it on): its URL may leave the host out, for the gateway to put in the one the client used.

Several ranges (RFC 9110 section 14.6; zstd:chunked pulls ask for up to 1024 in one GET): `206
multipart/byteranges`, one part per satisfiable range in the order asked, or one 206 when only
one is satisfiable, 416 when none is; ranges that overlap, are out of order or too many
(`gateway.max_ranges`) get the whole blob (gateway/ranges.py, `blob_ranges`). Streamed from here,
span by span (`_spans`): one ReadBlob per run of parts less than `_SPAN_GAP` apart.

Fetch on miss (the pull-through cache): a blob not linked in the repository is not the end of it
when a source serves the repository. The metadata plane decides (ProxyService.BeginBlobFetch:
linked meanwhile, or this request holds the blob's fetch lease), the blob plane fetches, stores
and verifies (FetchService.FetchBlob), and this module only streams its answer to the client and
hands the lease back (EndBlobFetch, which links the blob), renewing it meanwhile (RenewBlobFetch:
a gateway that dies mid-fetch loses it within `proxy.fetch_lease_seconds`, and a waiting request
takes the fetch over). The gateway never talks to a source. A streamed fetch asks for the bytes
at the source's pace (fetch.proto's `tail_when_verified`): the client may get the last of them,
verified, before the blob is committed, and EndBlobFetch links it only once the blob plane reports
the commit (unlinked when it does not).
When the blob plane serves the fetch from its direct-read server (`lading serve`: fetch.proto's
`allow_redirect`), a GET is answered `307` to it at once, like a warm read, and the lease is handed
back when the blob plane reports the fetch over; a HEAD waits for that report. The bytes then
skip gRPC and the gateway. A HEAD, and a GET with a Range, leading a fetch wait for it to end and
are then answered as for a stored blob (a ranged GET: `206`, or `307` to where the range is read).

Fetch on miss between regions: a blob linked in the repository that this region's blob plane does
not hold (pushed in another region; storage replication lagging or absent) is fetched the same way
from a region that has it: RegionFetchService.BeginRegionFetch (the region's lease, which regions
hold it), FetchService.FetchBlob with a RegionSource, EndRegionFetch (records the region).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from lading.common.v1 import sources_pb2
from lading.metadata.v1 import proxy_pb2, region_fetch_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import params
from gateway.clients import Redirect
from gateway.conditions import Conditions, blob_conditions
from gateway.context import Gateway
from gateway.errors import HttpRegistryError
from gateway.ranges import ByteRange, Multipart, blob_ranges
from gateway.responses import empty, not_modified, precondition_failed
from services.common.errors import ErrorKind, RegistryError
from services.common.lease_keeper import LeaseKeeper


def _headers(digest: str, length: int) -> dict[str, str]:
    return {
        "content-type": "application/octet-stream",
        "content-length": str(length),
        "docker-content-digest": digest,
        "accept-ranges": "bytes",
        "etag": f'"{digest}"',
    }


def _addressed(url: str, request: Request) -> str:
    """`url` with the host this client addressed put in, when the blob plane left it out
    (`http://:PORT/...`: its direct-read server without `public_url`)."""
    scheme, separator, rest = url.partition("://:")
    if not separator:
        return url
    host = request.url.hostname or "localhost"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{rest}"


# EndBlobFetch calls (and fetches served by the blob plane) still under way after their request
# ended (a client that went away, or a GET answered with a redirect).
_ENDING: set[asyncio.Future[object]] = set()
# A streamed fetch's body → its end (the lease handed back, the blob linked or not), for bodies
# that end before it: those whose last bytes come before the commit (`tail_when_verified`).
_RECORDED_AFTER: weakref.WeakKeyDictionary[object, asyncio.Future[object]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class _Redirected:
    """A fetch the blob plane serves from its direct-read server: where the client reads it, and
    the fetch's end (the lease handed back by then; raises the fetch's error)."""

    url: str
    over: asyncio.Future[None]


_Fetch = tuple[int, "AsyncIterator[bytes] | _Redirected"]


async def _size_or_fetch(gateway: Gateway, repository: str, digest: str, *, pull: bool = False,
                         allow_redirect: bool = True) -> int | _Fetch:
    """The blob's size when it is linked in `repository`; else, when a source (the pull-through
    cache's upstream) serves the repository, the linked size once another request fetched it,
    or (size or -1, the bytes or where to read them) of a fetch this request leads.
    BLOB_UNKNOWN otherwise. `pull`: a GET (the metadata plane may record a pull event).
    `allow_redirect`: the fetch may be served from the blob plane's direct-read server (False
    for a GET that server would answer otherwise: Conditions.plain)."""
    try:
        return (await gateway.metadata.stat_blob(repository, digest, pull=pull)).size
    except RegistryError as error:
        if error.kind is not ErrorKind.BLOB_UNKNOWN:
            raise
        unknown = error
    try:
        decision = await gateway.metadata.begin_blob_fetch(repository, digest)
    except RegistryError as error:
        # A metadata plane without ProxyService (older, during a rolling upgrade) has no sources.
        if error.kind is ErrorKind.UNSUPPORTED:
            raise unknown from None
        raise
    if decision.outcome == proxy_pb2.BeginBlobFetchResponse.OUTCOME_LINKED:
        return decision.size
    if decision.outcome != proxy_pb2.BeginBlobFetchResponse.OUTCOME_FETCH:
        raise unknown

    def end(fetched: bool, size: int) -> Awaitable[None]:
        return gateway.metadata.end_blob_fetch(repository, digest, lease_id=decision.lease_id, fetched=fetched,
                                               size=size)

    def renew() -> Awaitable[bool]:
        return gateway.metadata.renew_blob_fetch(digest, lease_id=decision.lease_id)

    keeper = _keeper(gateway, renew, decision.lease_seconds, digest)
    return await _fetched(gateway, digest, decision.source, end, keeper, allow_redirect=allow_redirect,
                          tail_when_verified=True)


def _keeper(gateway: Gateway, renew: Callable[[], Awaitable[bool]], lease_seconds: float,
            describe: str) -> LeaseKeeper:
    """Renews the fetch lease while the fetch runs (it cannot run past the stream deadline).
    `lease_seconds` 0 (an older metadata plane, or no lease): not renewed."""
    return LeaseKeeper(renew, lease_seconds, describe=f"the fetch of {describe}",
                       limit_seconds=gateway.settings.grpc.stream_timeout_seconds)


def _detached(awaitable: Awaitable[object]) -> asyncio.Future[object]:
    # A task of its own, out of the request's cancellation: the lease must be released (or the
    # blob linked) even when the client went away.
    task = asyncio.ensure_future(awaitable)
    _ENDING.add(task)
    task.add_done_callback(_settled)
    return task


def _settled(task: asyncio.Future[object]) -> None:
    _ENDING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a fetch nobody awaits may fail (the client saw it cut)


async def _fetched(gateway: Gateway, digest: str, source: sources_pb2.BlobSource,
                   end: Callable[[bool, int], Awaitable[None]], keeper: LeaseKeeper, *,
                   allow_redirect: bool = False, tail_when_verified: bool = False) -> _Fetch:
    """(size or -1, the bytes) of the blob plane's fetch of `digest` from `source`, or with
    `allow_redirect` maybe (size, _Redirected); `keeper` renews the lease until `end(fetched,
    size)` is called once it is over (releases the lease, records the blob), whatever happens.
    `tail_when_verified`: the client may get the last bytes before the blob is stored (fetch.proto);
    it is recorded once the blob plane reports the commit."""

    ended: list[asyncio.Future[object]] = []

    def ending(fetched: bool, size: int) -> asyncio.Future[object]:
        # Once: the fetch's end, however it came (the stream's end, an error, a body dropped).
        if not ended:
            keeper.stop()
            ended.append(_detached(end(fetched, size)))
        return ended[0]

    keeper.start()
    try:
        size, chunks, redirect_url, commit_follows = await gateway.blob.fetch_blob(
            digest, source, allow_redirect=allow_redirect, tail_when_verified=tail_when_verified)
    except BaseException:
        ending(False, 0)
        raise

    if redirect_url:
        async def over() -> None:
            try:
                async for _ in chunks:
                    pass
            except BaseException:
                await ending(False, 0)
                raise
            await ending(True, size)

        return size, _Redirected(redirect_url, _detached(over()))  # type: ignore[arg-type]

    async def committed_then_end(received: int) -> None:
        # Only the commit's report is left of the stream: the blob is recorded once it came.
        committed = False
        try:
            async for _ in chunks:
                pass
            committed = True
        finally:
            await ending(committed, received)

    async def body() -> AsyncIterator[bytes]:
        received, complete = 0, False
        recorded: asyncio.Future[object] | None = None
        try:
            async for chunk in chunks:
                received += len(chunk)
                if commit_follows and received == size:
                    # The last chunk, verified but maybe not yet stored: the client gets it now,
                    # and the commit is awaited apart, so that a client that goes away once it has
                    # its bytes does not cut the fetch short; nor does the response wait for it
                    # (the next request on this connection would). `_read_through` waits.
                    recorded = _detached(committed_then_end(received))
                    _RECORDED_AFTER[chunks_out] = recorded
                    dropped.detach()  # the body may go now: the fetch's end is that task's
                    yield chunk
                    return
                if commit_follows:
                    yield chunk
                    continue
                if received == size:
                    # The blob plane sends the last chunk only once the blob is verified and
                    # committed (services/blob/fetch.py): record it while that chunk goes out, not
                    # after; every byte sent is then a complete fetch even when the client closes
                    # before reading the stream's end.
                    recorded = ending(True, received)
                yield chunk
            else:
                complete = True
        finally:
            if recorded is None:
                recorded = ending(complete, received)
        # Recorded before the stream ends: a client that asks again right after finds the blob.
        await asyncio.shield(recorded)

    chunks_out = body()
    # A body dropped unread (the response never started) ends the fetch too: its lease must be
    # neither renewed on nor held until it lapses.
    dropped = weakref.finalize(chunks_out, _dropped, ending)
    dropped.atexit = False
    return size, chunks_out


def _dropped(ending: Callable[[bool, int], object]) -> None:
    with contextlib.suppress(RuntimeError):  # no event loop any more: the lease lapses on its own
        ending(False, 0)


async def _from_another_region(gateway: Gateway, digest: str, unknown: RegistryError, *,
                               missing_here: bool = False) -> tuple[int, AsyncIterator[bytes]] | None:
    """A linked blob this region's storage lacks (fetch on miss between regions; the metadata
    plane decides: services/metadata/region_fetch.py): None when another replica of the region
    fetched it meanwhile (read it locally again), or (size, the bytes) of the fetch this request
    leads. Raises `unknown` when no other region holds it (or regions are not configured).
    `missing_here`: read again after None and still missing (the region's copy was lost)."""
    try:
        decision = await gateway.metadata.begin_region_fetch(digest, missing_here=missing_here)
    except RegistryError as error:
        # A metadata plane without RegionFetchService (older, during a rolling upgrade).
        if error.kind is ErrorKind.UNSUPPORTED:
            raise unknown from None
        raise
    if decision.outcome == region_fetch_pb2.BeginRegionFetchResponse.OUTCOME_PRESENT:
        return None
    if decision.outcome != region_fetch_pb2.BeginRegionFetchResponse.OUTCOME_FETCH:
        raise unknown

    def end(fetched: bool, size: int) -> Awaitable[None]:
        return gateway.metadata.end_region_fetch(digest, lease_id=decision.lease_id, fetched=fetched, size=size)

    def renew() -> Awaitable[bool]:
        return gateway.metadata.renew_region_fetch(digest, lease_id=decision.lease_id)

    # No lease (the primary region was not reachable): nothing to renew.
    keeper = _keeper(gateway, renew, decision.lease_seconds if decision.lease_id else 0.0, digest)
    source = sources_pb2.BlobSource(region=sources_pb2.RegionSource(regions=decision.regions))
    return await _fetched(gateway, digest, source, end, keeper)


async def _read_through(size: int, fetching: AsyncIterator[bytes] | _Redirected) -> int:
    """Waits for a fetch this request leads to end (the blob is then stored and recorded), out
    of the request's cancellation: a client that gives up does not cut the fetch short. The
    blob's size; raises the fetch's error."""
    if isinstance(fetching, _Redirected):
        await asyncio.shield(fetching.over)
        return size

    async def drain() -> int:
        size = sum([len(chunk) async for chunk in fetching])
        recorded = _RECORDED_AFTER.get(fetching)
        if recorded is not None:
            await recorded  # raises when the blob plane did not report the commit
        return size

    return await asyncio.shield(_detached(drain()))  # type: ignore[return-value]


async def head(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.stored_digest(request.path_params["digest"])
    conditions = blob_conditions(request)
    found = await _size_or_fetch(gateway, repository, digest)
    if not isinstance(found, int):
        # A HEAD of a blob fetched from a source: fetched (and stored) whole, then answered.
        found = await _read_through(*found)
    # The conditions of RFC 9110 apply to HEAD as to GET (as Distribution and manifests answer).
    unmet = _unmet_condition(conditions, digest, found)
    if unmet is not None:
        return unmet
    return Response(b"", headers=_headers(digest, found))


def _unmet_condition(conditions: Conditions, digest: str, size: int) -> Response | None:
    """412 or 304 when the request's conditions say so (RFC 9110 section 13.2.2's order:
    If-Match, then If-None-Match), else None."""
    if conditions.refused(digest):
        return precondition_failed({"docker-content-digest": digest, "etag": f'"{digest}"'})
    if conditions.not_modified(digest):
        headers = _headers(digest, size)
        del headers["content-length"], headers["content-type"]
        return not_modified(headers)
    return None


async def get(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.stored_digest(request.path_params["digest"])
    conditions = blob_conditions(request)
    # A conditional GET of the blob the client holds is answered 304 (one naming another blob in
    # If-Match, 412): no pull (no pull event), no bytes.
    bodiless = conditions.bodiless(digest)
    # A redirected client re-sends its headers to storage, which judges them by its own lights
    # (S3: its own ETag in If-Match and If-Range, its own Last-Modified in If-Range and
    # If-(Un)Modified-Since, its own Range parser; the direct-read server: its file's date): a GET
    # whose answer could differ there from the one decided here is streamed from here, a cold
    # pull-through one too (rare: pull clients send at most a plain Range).
    redirect = conditions.plain
    found = await _size_or_fetch(gateway, repository, digest, pull=not bodiless, allow_redirect=redirect)
    # A Range under an If-Range that does not name this blob is ignored: the whole blob (RFC 9110
    # section 13.1.5), never a 416 for a range the client did not ask to apply.
    wanted = conditions.ranges_for(digest)
    ranged = bool(wanted)
    if not isinstance(found, int) and not ranged and not bodiless:
        length, chunks = found
        if isinstance(chunks, _Redirected):
            # From the blob plane's direct-read server, as it arrives there.
            return empty(307, {"location": _addressed(chunks.url, request), "docker-content-digest": digest})
        # Fetched from a source while this client reads it.
        headers = _headers(digest, length)
        if length < 0:
            del headers["content-length"]
        return StreamingResponse(chunks, status_code=200, headers=headers)
    if not isinstance(found, int):
        # A ranged GET (a client resuming a download) leading the fetch: the range is read once
        # the blob is stored (206, or 307 to where it is read), as a request waiting for
        # another's fetch reads it; a range sent as it arrives could not be taken back if the
        # blob then failed to verify. A conditional one is answered (304, 412) once the blob is
        # stored too, as a HEAD is: the condition is only known to hold for a verified blob.
        found = await _read_through(*found)
    size = found
    unmet = _unmet_condition(conditions, digest, size)
    if unmet is not None:
        return unmet
    try:
        byte_range = blob_ranges(wanted, size, max_ranges=gateway.settings.max_ranges)
    except RegistryError as error:
        raise HttpRegistryError.wrap(error, {"content-range": f"bytes */{size}"}) from None
    multipart: Multipart | None = None
    spans: list[_Span] = []
    if byte_range is None:
        offset, length, status = 0, size, 200
        headers = _headers(digest, size)
    elif isinstance(byte_range, ByteRange):
        offset, length, status = byte_range.start, byte_range.length, 206
        headers = _headers(digest, length)
        headers["content-range"] = byte_range.content_range()
    else:
        # Several ranges (never redirected: Conditions.plain): read span by span (_spans).
        multipart, spans, status = byte_range, _spans(byte_range), 206
        offset, length = spans[0].offset, spans[0].length
        headers = _headers(digest, multipart.length)
        headers["content-type"] = multipart.content_type
    if length == 0:
        return Response(b"", status_code=status, headers=headers)
    try:
        chunks = await gateway.blob.open_read(digest, offset, length, allow_redirect=redirect)
    except RegistryError as error:
        if error.kind is not ErrorKind.BLOB_UNKNOWN:
            raise
        # Linked, but not in this region's storage: fetched from another region.
        fetched = await _from_another_region(gateway, digest, error)
        if fetched is None:  # another replica of the region fetched it meanwhile
            try:
                chunks = await gateway.blob.open_read(digest, offset, length, allow_redirect=redirect)
            except RegistryError as again:
                if again.kind is not ErrorKind.BLOB_UNKNOWN:
                    raise
                # The region is said to hold it and does not (its copy was lost): fetched anyway.
                fetched = await _from_another_region(gateway, digest, again, missing_here=True)
                if fetched is None:
                    raise again from None
        if fetched is not None and not ranged:
            # Fetched while this client reads it.
            return StreamingResponse(fetched[1], status_code=200, headers=_headers(digest, size))
        if fetched is not None:
            # Ranged: read once the fetch stored the blob here (see above).
            await _read_through(*fetched)
            chunks = await gateway.blob.open_read(digest, offset, length, allow_redirect=redirect)
    if isinstance(chunks, Redirect):
        return empty(307, {"location": _addressed(chunks.url, request), "docker-content-digest": digest})
    if multipart is not None:
        return StreamingResponse(_multipart_body(gateway, digest, multipart, spans, chunks), status_code=status,
                                 headers=headers)
    return StreamingResponse(chunks, status_code=status, headers=headers)


# Parts of a multi-range GET closer together than this are read with one ReadBlob, the bytes
# between them read and dropped. Measured with `lading serve`, 1000 ranges of a 64 MiB blob
# (4 workloads: 1-16 KiB ranges, packed or spread): on the filesystem a ReadBlob costs ~1.2 ms, as
# much as streaming ~1 MiB through one (one read per part: 1.2-1.7 s; spans: 30-140 ms); on S3
# (SeaweedFS, loopback) a read is a HEAD and a ranged GET (one per part: 6-11 s; spans: 30-150 ms).
# Wider gaps (4 MiB, unbounded) measured no faster on either, and slower for sparse ranges.
_SPAN_GAP = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Span:
    """One ReadBlob of a multi-range GET: [offset, offset+length) of the blob, covering the parts
    `first` to `last` (indexes into Multipart.parts, inclusive)."""

    offset: int
    length: int
    first: int
    last: int


def _spans(multipart: Multipart) -> list[_Span]:
    """The reads that fetch `multipart`'s parts (ascending and disjoint): consecutive parts less
    than _SPAN_GAP apart share one, so a thousand small neighbouring ranges (a zstd:chunked pull)
    cost a few calls, and parts far apart never read the bytes between them."""
    spans: list[_Span] = []
    parts = multipart.parts
    first = 0
    for index in range(1, len(parts) + 1):
        if index == len(parts) or parts[index].start - parts[index - 1].end - 1 >= _SPAN_GAP:
            start, end = parts[first].start, parts[index - 1].end
            spans.append(_Span(start, end - start + 1, first, index - 1))
            first = index
    return spans


async def _multipart_body(gateway: Gateway, digest: str, multipart: Multipart, spans: list[_Span],
                          first: AsyncIterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """The `multipart/byteranges` body of `multipart`: each span read in turn (`first`: the first
    span's bytes, already opened), its parts cut out of it. Never holds more than one chunk of
    the blob. A read that ends short of its span raises (the connection is cut short of the
    Content-Length, so the client never takes a short body for a complete one)."""
    for number, span in enumerate(spans):
        chunks = first if number == 0 else await gateway.blob.open_read(digest, span.offset, span.length)
        try:
            pending, at = memoryview(b""), span.offset  # bytes in hand, and the offset of the first
            for index in range(span.first, span.last + 1):
                part = multipart.parts[index]
                yield multipart.head(index)
                while at <= part.end:
                    if not pending:
                        chunk = await anext(chunks, None)
                        if chunk is None:
                            raise RegistryError(ErrorKind.INTERNAL,
                                                f"the blob plane's read of {digest} ended at byte {at}, short of "
                                                f"{span.offset + span.length}")
                        pending = memoryview(chunk)
                    if at < part.start:  # between two parts: dropped
                        skip = min(part.start - at, len(pending))
                        pending, at = pending[skip:], at + skip
                        continue
                    take = min(part.end + 1 - at, len(pending))
                    yield pending[:take]
                    pending, at = pending[take:], at + take
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
    yield multipart.tail()


async def delete(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.digest(request.path_params["digest"])
    await gateway.metadata.unlink_blob(repository, digest)
    return empty(202, {"docker-content-digest": digest})
