"""`/v2/<name>/blobs/<digest>`: pull (end-2, with Range), existence check, delete (end-10).

A blob is visible only in repositories it is linked to, so the metadata plane is asked first
(one call for HEAD); GET then asks the blob plane for the bytes.

Redirects: a GET asks the blob plane with `allow_redirect`; when the plane redirects reads (S3
with `blob.s3.redirect_reads`, the default there), the answer is `307 Temporary Redirect` to a
presigned URL, with `Docker-Content-Digest`, so the bytes never pass through Python. Ranged GETs
redirect too: the gateway first validates the Range against the blob's size (416 stays ours), and
the client re-sends its Range header to the presigned URL, which answers 206 itself. HEAD never
redirects, nor does a GET of an empty blob or a conditional GET that matches (304), nor any GET on
a backend that cannot presign: those are answered (or streamed) here. On the filesystem, reads
redirect to the blob plane's direct-read server when `blob.direct_reads` is on (`lading serve`
turns it on): its URL may leave the host out, for the gateway to put in the one the client used.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import params
from gateway.clients import Redirect
from gateway.context import Gateway
from gateway.errors import HttpRegistryError
from gateway.ranges import parse_blob_range
from gateway.responses import empty, etag_matches
from services.common.errors import RegistryError


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


async def head(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.stored_digest(request.path_params["digest"])
    stat = await gateway.metadata.stat_blob(repository, digest)
    return Response(b"", headers=_headers(digest, stat.size))


async def get(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.stored_digest(request.path_params["digest"])
    stat = await gateway.metadata.stat_blob(repository, digest)
    size = stat.size
    if etag_matches(request, f'"{digest}"'):
        headers = _headers(digest, size)
        del headers["content-length"], headers["content-type"]
        return empty(304, headers)
    try:
        byte_range = parse_blob_range(request.headers.get("range"), size)
    except RegistryError as error:
        raise HttpRegistryError.wrap(error, {"content-range": f"bytes */{size}"}) from None
    if byte_range is None:
        offset, length, status = 0, size, 200
        headers = _headers(digest, size)
    else:
        offset, length, status = byte_range.start, byte_range.length, 206
        headers = _headers(digest, length)
        headers["content-range"] = byte_range.content_range()
    if length == 0:
        return Response(b"", status_code=status, headers=headers)
    chunks = await gateway.blob.open_read(digest, offset, length, allow_redirect=True)
    if isinstance(chunks, Redirect):
        return empty(307, {"location": _addressed(chunks.url, request), "docker-content-digest": digest})
    return StreamingResponse(chunks, status_code=status, headers=headers)


async def delete(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    digest = params.digest(request.path_params["digest"])
    await gateway.metadata.unlink_blob(repository, digest)
    return empty(202, {"docker-content-digest": digest})
