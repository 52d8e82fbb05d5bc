"""Thin typed wrappers over the planes' gRPC stubs.

Every call carries a deadline (`timeout_seconds` for unary calls, `stream_timeout_seconds` for
streams), and every gRPC failure leaves here as a RegistryError (`from_rpc_error`): the registry
error a plane raised, UNAVAILABLE when a plane is down or too slow, INTERNAL otherwise. Nothing
else in the gateway touches grpc.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc, fetch_pb2
from lading.common.v1 import common_pb2, sources_pb2
from lading.metadata.v1 import (
    metadata_pb2,
    metadata_pb2_grpc,
    policies_pb2,
    policies_pb2_grpc,
    proxy_pb2,
    proxy_pb2_grpc,
    region_fetch_pb2,
    region_fetch_pb2_grpc,
)

from gateway import request_context
from services.common.digests import looks_like_digest
from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.wire import (
    already_encoded,
    bytes_field_number,
    encode_bytes_field_pieces,
    only_bytes_field,
)


async def _unary(rpc: Any, request: Any, deadline_seconds: float) -> Any:
    try:
        return await rpc(request, timeout=deadline_seconds)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


class MetadataClient:
    """MetadataService calls; see protos/lading/metadata/v1/metadata.proto for each contract."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = metadata_pb2_grpc.MetadataServiceStub(channel)
        self._proxy = proxy_pb2_grpc.ProxyServiceStub(channel)
        self._policies = policies_pb2_grpc.PolicyServiceStub(channel)
        self._regions = region_fetch_pb2_grpc.RegionFetchServiceStub(channel)
        self._timeout = timeout

    async def begin_region_fetch(self, digest: str, *, missing_here: bool = False
                                 ) -> region_fetch_pb2.BeginRegionFetchResponse:
        """What to do about a linked blob this region's storage lacks (RegionFetchService.BeginRegionFetch):
        waits for another replica's fetch of it for most of this call's deadline."""
        return await _unary(
            self._regions.BeginRegionFetch,
            region_fetch_pb2.BeginRegionFetchRequest(digest=digest, wait_seconds=max(self._timeout - 2.0, 0.5),
                                                     missing_here=missing_here),
            self._timeout,
        )

    async def end_region_fetch(self, digest: str, *, lease_id: str, fetched: bool, size: int) -> None:
        await _unary(
            self._regions.EndRegionFetch,
            region_fetch_pb2.EndRegionFetchRequest(digest=digest, lease_id=lease_id, fetched=fetched, size=size),
            self._timeout,
        )

    async def renew_region_fetch(self, digest: str, *, lease_id: str) -> bool:
        """False once the lease is no longer this caller's (RegionFetchService.RenewRegionFetch)."""
        response = await _unary(
            self._regions.RenewRegionFetch,
            region_fetch_pb2.RenewRegionFetchRequest(digest=digest, lease_id=lease_id),
            self._timeout,
        )
        return bool(response.held)

    async def begin_blob_fetch(self, repository: str, digest: str) -> proxy_pb2.BeginBlobFetchResponse:
        """What to do about a blob not linked in `repository` (ProxyService.BeginBlobFetch): waits
        for another caller's fetch of it for most of this call's deadline."""
        return await _unary(
            self._proxy.BeginBlobFetch,
            proxy_pb2.BeginBlobFetchRequest(repository=repository, digest=digest,
                                            wait_seconds=max(self._timeout - 2.0, 0.5),
                                            context=request_context.current()),
            self._timeout,
        )

    async def end_blob_fetch(self, repository: str, digest: str, *, lease_id: str, fetched: bool,
                             size: int) -> None:
        await _unary(
            self._proxy.EndBlobFetch,
            proxy_pb2.EndBlobFetchRequest(repository=repository, digest=digest, lease_id=lease_id,
                                          fetched=fetched, size=size, context=request_context.current()),
            self._timeout,
        )

    async def renew_blob_fetch(self, digest: str, *, lease_id: str) -> bool:
        """False once the lease is no longer this caller's (ProxyService.RenewBlobFetch)."""
        response = await _unary(
            self._proxy.RenewBlobFetch,
            proxy_pb2.RenewBlobFetchRequest(digest=digest, lease_id=lease_id),
            self._timeout,
        )
        return bool(response.held)

    async def link_blob(self, repository: str, digest: str, size: int, *,
                        stored_seconds_ago: float | None = None) -> None:
        """`stored_seconds_ago`: the blob plane wrote these bytes at most that long ago (a commit
        that answered `stored_now`); the metadata plane may then link them without asking it."""
        await _unary(
            self._stub.LinkBlob,
            metadata_pb2.LinkBlobRequest(repository=repository, digest=digest, size=size,
                                          context=request_context.current(),
                                          stored_seconds_ago=stored_seconds_ago),
            self._timeout,
        )

    async def stat_blob(self, repository: str, digest: str, *, pull: bool = False) -> metadata_pb2.StatBlobResponse:
        """Raises BLOB_UNKNOWN unless the blob is linked to `repository`. `pull`: a blob GET, whose
        request goes along for its pull event (HEADs send none, as for manifests)."""
        return await _unary(
            self._stub.StatBlob,
            metadata_pb2.StatBlobRequest(repository=repository, digest=digest,
                                         context=request_context.current() if pull else None),
            self._timeout,
        )

    async def unlink_blob(self, repository: str, digest: str) -> None:
        await _unary(
            self._stub.UnlinkBlob,
            metadata_pb2.UnlinkBlobRequest(repository=repository, digest=digest, context=request_context.current()),
            self._timeout,
        )

    async def mount_blob(
        self, repository: str, digest: str, from_repository: str
    ) -> metadata_pb2.MountBlobResponse:
        """`from_repository` "" searches every repository; `mounted` is False when none holds it."""
        return await _unary(
            self._stub.MountBlob,
            metadata_pb2.MountBlobRequest(
                repository=repository, digest=digest, from_repository=from_repository,
                context=request_context.current(),
            ),
            self._timeout,
        )

    async def put_manifest(
        self, repository: str, reference: str, media_type: str, payload: bytes
    ) -> metadata_pb2.PutManifestResponse:
        return await _unary(
            self._stub.PutManifest,
            metadata_pb2.PutManifestRequest(
                repository=repository, reference=reference, media_type=media_type, payload=payload,
                context=request_context.current(),
            ),
            self._timeout,
        )

    async def get_manifest(
        self, repository: str, reference: str, *, omit_payload: bool = False,
        held_digests: frozenset[str] = frozenset(),
    ) -> metadata_pb2.GetManifestResponse:
        """`held_digests`: a GET's If-None-Match (gateway.responses.held_digests); the plane
        records no pull event for a GET the gateway will answer 304."""
        return await _unary(
            self._stub.GetManifest,
            metadata_pb2.GetManifestRequest(
                repository=repository, reference=reference, omit_payload=omit_payload,
                # GETs only: pull events (when the metadata plane records them) never come from HEAD.
                context=None if omit_payload else request_context.current(),
                # Only what can be a digest (or "*"): anything else cannot match one.
                held_digests=sorted(held for held in held_digests if held == "*" or looks_like_digest(held)),
            ),
            self._timeout,
        )

    async def delete_manifest(self, repository: str, reference: str) -> None:
        await _unary(
            self._stub.DeleteManifest,
            metadata_pb2.DeleteManifestRequest(repository=repository, reference=reference,
                                               context=request_context.current()),
            self._timeout,
        )

    async def list_tags(self, repository: str, page: common_pb2.PageRequest) -> metadata_pb2.ListTagsResponse:
        return await _unary(
            self._stub.ListTags, metadata_pb2.ListTagsRequest(repository=repository, page=page), self._timeout
        )

    async def list_repositories(self, page: common_pb2.PageRequest) -> metadata_pb2.ListRepositoriesResponse:
        return await _unary(
            self._stub.ListRepositories, metadata_pb2.ListRepositoriesRequest(page=page), self._timeout
        )

    async def list_referrers(
        self, repository: str, subject_digest: str, artifact_type: str, page: common_pb2.PageRequest
    ) -> metadata_pb2.ListReferrersResponse:
        return await _unary(
            self._stub.ListReferrers,
            metadata_pb2.ListReferrersRequest(
                repository=repository, subject_digest=subject_digest, artifact_type=artifact_type, page=page
            ),
            self._timeout,
        )


    async def tag_history(self, repository: str, tag: str, limit: int) -> policies_pb2.GetTagHistoryResponse:
        """PolicyService.GetTagHistory: the tag's moves and deletes, newest first."""
        return await _unary(
            self._policies.GetTagHistory,
            policies_pb2.GetTagHistoryRequest(repository=repository, tag=tag, limit=min(limit, 1000)),
            self._timeout,
        )


class BlobClient:
    """BlobService calls; see protos/lading/blob/v1/blob.proto for each contract."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float, stream_timeout: float) -> None:
        self._stub = blob_pb2_grpc.BlobServiceStub(channel)
        # ReadBlob with a hand-written decoder for its hot message (see `_decode_read_response`):
        # same wire format and method, without two copies of every chunk.
        self._read_blob = channel.unary_stream(
            _READ_BLOB_METHOD,
            request_serializer=blob_pb2.ReadBlobRequest.SerializeToString,
            response_deserializer=_decode_read_response,
        )
        # AppendUpload with messages encoded here (see `_bytes_field`).
        self._append_upload = channel.stream_unary(
            _APPEND_UPLOAD_METHOD,
            request_serializer=already_encoded,
            response_deserializer=blob_pb2.AppendUploadResponse.FromString,
        )
        self._timeout = timeout
        self._stream_timeout = stream_timeout
        # FetchBlob with the same hand-written decoding as ReadBlob (`_decode_fetch_response`).
        self._fetch_blob = channel.unary_stream(
            _FETCH_BLOB_METHOD,
            request_serializer=fetch_pb2.FetchBlobRequest.SerializeToString,
            response_deserializer=_decode_fetch_response,
        )

    async def fetch_blob(self, digest: str, source: sources_pb2.BlobSource, *, allow_redirect: bool = False,
                         tail_when_verified: bool = False) -> tuple[int, AsyncIterator[bytes], str, bool]:
        """Starts FetchService.FetchBlob: (size or -1, the bytes, a redirect URL or ""). The
        first message is awaited here, so a source that fails at once fails before any response
        header; a failure later (the source broke off, a wrong digest) ends the iterator with the
        error, before its last chunk. With `allow_redirect`, the plane may answer a URL of its
        direct-read server instead (fetch.proto): the iterator then yields nothing and ends when
        the fetch is over (raising its error).

        With `tail_when_verified`, a plane that knows it says so (the last item, True): the last
        chunk may come before the blob is committed, and the iterator ends without error only
        once the plane reported the commit (it raises when the stream ends without that report)."""
        call = self._fetch_blob(fetch_pb2.FetchBlobRequest(digest=digest, source=source,
                                                           allow_redirect=allow_redirect,
                                                           tail_when_verified=tail_when_verified),
                                timeout=self._stream_timeout)
        try:
            first = await call.read()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if first is grpc.aio.EOF or isinstance(first, memoryview):
            call.cancel()
            raise RegistryError(ErrorKind.INTERNAL, "the blob plane began a fetch without the blob's size")

        commit_follows = first.commit_follows

        async def rest() -> AsyncIterator[bytes | memoryview]:
            committed = False
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    if isinstance(message, memoryview):
                        yield message
                    elif message.committed:
                        committed = True
                    else:
                        yield message.data
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            finally:
                call.cancel()
            if commit_follows and not committed:
                raise RegistryError(ErrorKind.INTERNAL, f"the blob plane's fetch of {digest} ended without "
                                    "reporting its commit")

        return first.size, rest(), first.redirect_url, commit_follows

    async def start_upload(self, repository: str, owner: str = "") -> blob_pb2.StartUploadResponse:
        """Raises TOOMANYREQUESTS when `owner` already holds the blob plane's maximum of sessions."""
        return await _unary(
            self._stub.StartUpload, blob_pb2.StartUploadRequest(repository=repository, owner=owner), self._timeout
        )

    async def get_upload_status(self, upload_id: str, repository: str) -> blob_pb2.UploadStatus:
        response = await _unary(
            self._stub.GetUploadStatus,
            blob_pb2.GetUploadStatusRequest(upload_id=upload_id, repository=repository),
            self._timeout,
        )
        return response.status

    async def append_upload(
        self,
        *,
        upload_id: str,
        repository: str,
        expected_offset: int,
        chunks: AsyncIterable[bytes | Sequence[bytes | memoryview]],
    ) -> blob_pb2.UploadStatus:
        """Streams `chunks` (each ≤ the plane's 1 MiB message limit) into the session. A chunk
        may be given as the pieces it is made of (`bodies.in_message_pieces`): they are joined
        straight into the gRPC message, one copy instead of two.

        Raises RANGE_INVALID when `expected_offset` is not the session's offset (the plane puts
        the current offset in the error's detail) and BLOB_UPLOAD_UNKNOWN for an unknown session.
        An exception raised by `chunks` (a client that went away, a size check) cancels the call
        and propagates unchanged.
        """
        call = self._append_upload(timeout=self._stream_timeout)
        header = blob_pb2.AppendUploadRequest(
            upload_id=upload_id, repository=repository, expected_offset=expected_offset
        ).SerializeToString()
        try:
            first = True
            async for data in chunks:
                # Wire form of AppendUploadRequest: the first message is the header's fields
                # followed by `data`, the others `data` alone (protobuf fields concatenate).
                pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
                message = encode_bytes_field_pieces(header if first else b"", _APPEND_DATA_FIELD, pieces)
                first = False
                await call.write(message)
            if first:
                # No bytes at all: the session is still named, so the plane answers with its status.
                await call.write(header)
            await call.done_writing()
            response = await call
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except asyncio.InvalidStateError:
            # The plane ended the call while we were still writing; its final status says why.
            # It reads the rest of the stream before refusing a chunk (services/blob/servicer.py),
            # so this is an unexpected failure or a plane from before that change.
            raise await _final_error(call) from None
        except BaseException:
            call.cancel()
            raise
        return response.status

    async def commit_upload(
        self,
        upload_id: str,
        repository: str,
        digest: str,
        expected_size: int = -1,
        *,
        final_data: bytes = b"",
        final_offset: int = -1,
    ) -> blob_pb2.CommitUploadResponse:
        """Verifies and stores the session's bytes, after appending `final_data` (≤ one message)
        at `final_offset` (-1: the session's offset; RANGE_INVALID with the current offset in the
        detail when it differs)."""
        return await _unary(
            self._stub.CommitUpload,
            blob_pb2.CommitUploadRequest(
                upload_id=upload_id,
                repository=repository,
                digest=digest,
                expected_size=expected_size,
                final_data=final_data,
                final_offset=final_offset,
            ),
            self._stream_timeout,  # commit may move or verify a large blob
        )

    async def cancel_upload(self, upload_id: str, repository: str) -> None:
        await _unary(
            self._stub.CancelUpload,
            blob_pb2.CancelUploadRequest(upload_id=upload_id, repository=repository),
            self._timeout,
        )

    async def open_read(
        self, digest: str, offset: int, length: int, *, allow_redirect: bool = False
    ) -> AsyncIterator[bytes | memoryview] | Redirect:
        """Starts reading [offset, offset+length) of a blob and returns its chunks, or, when
        `allow_redirect` and the blob plane redirects reads (S3), a `Redirect` to a presigned URL
        that serves the whole blob and honours HTTP Range (the plane has checked the blob and
        the range first).

        The first message is awaited here, so a missing blob or a plane that is down fails
        before the caller sends any response header. The returned iterator cancels the call if
        it is closed early (client gone).
        """
        call = self._read_blob(
            blob_pb2.ReadBlobRequest(digest=digest, offset=offset, length=length, allow_redirect=allow_redirect),
            timeout=self._stream_timeout,
        )
        try:
            first = await call.read()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if isinstance(first, blob_pb2.ReadBlobResponse) and first.redirect_url:
            # The redirect is the stream's only message: read its (immediate) end so the call
            # finishes cleanly instead of being cancelled.
            try:
                await call.read()
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            finally:
                call.cancel()  # a no-op once the stream has ended
            return Redirect(first.redirect_url)
        return _rest_of(call, first)


@dataclass(frozen=True, slots=True)
class Redirect:
    """The blob plane's answer to a read it prefers clients to fetch elsewhere."""

    url: str


_READ_BLOB_METHOD = "/lading.blob.v1.BlobService/ReadBlob"
_APPEND_UPLOAD_METHOD = "/lading.blob.v1.BlobService/AppendUpload"
_APPEND_DATA_FIELD = bytes_field_number(blob_pb2.AppendUploadRequest, "data")
_READ_DATA_FIELD = bytes_field_number(blob_pb2.ReadBlobResponse, "data")
_FETCH_BLOB_METHOD = "/lading.blob.v1.FetchService/FetchBlob"
_FETCH_DATA_FIELD = bytes_field_number(fetch_pb2.FetchBlobResponse, "data")


def _decode_fetch_response(raw: bytes) -> memoryview | fetch_pb2.FetchBlobResponse:
    """As `_decode_read_response`, for FetchBlobResponse: a data-only message is a view of its
    bytes in `raw`; the first (the size) and anything else are parsed."""
    start = only_bytes_field(raw, _FETCH_DATA_FIELD)
    if start is not None:
        return memoryview(raw)[start:]
    return fetch_pb2.FetchBlobResponse.FromString(raw)


def _decode_read_response(raw: bytes) -> memoryview | blob_pb2.ReadBlobResponse:
    """A ReadBlobResponse that carries only `data` (every message of a byte stream): a view of
    those bytes inside `raw`, no copy. Anything else (a redirect, an unknown field): the parsed
    message. Protobuf's own parser would copy each chunk twice (parse, then the `.data` access).
    """
    start = only_bytes_field(raw, _READ_DATA_FIELD)
    if start is not None:
        return memoryview(raw)[start:]
    return blob_pb2.ReadBlobResponse.FromString(raw)


async def _rest_of(call: Any, first: Any) -> AsyncIterator[bytes | memoryview]:
    try:
        message = first
        while message is not grpc.aio.EOF:
            yield message if isinstance(message, memoryview) else message.data
            message = await call.read()
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    finally:
        call.cancel()  # a no-op once the stream has ended


async def _final_error(call: Any) -> RegistryError:
    try:
        await call
    except grpc.RpcError as error:
        return from_rpc_error(error)
    except asyncio.CancelledError:
        return RegistryError(ErrorKind.UNAVAILABLE, "the blob plane cancelled the upload stream")
    return RegistryError(ErrorKind.INTERNAL, "the blob plane ended the upload stream early without an error")
