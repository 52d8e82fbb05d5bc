"""`lading.blob.v1.BlobService` over gRPC: translates messages to `BlobStore` calls and back.

Errors are raised as RegistryError and mapped to rich statuses by the server's interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from services.blob.core import BlobStore
from services.blob.uploads import UploadStatus
from services.common.errors import ErrorKind, RegistryError
from services.common.wire import already_encoded, bytes_field_number, encode_bytes_field, only_bytes_field

# ReadBlob messages carry at most this much (the backends already yield chunks of this size).
# Measured: 4 MiB messages did not pull faster (the per-byte gRPC work dominates), and cost memory.
MAX_MESSAGE_DATA = 1024 * 1024


_SERVICE = "lading.blob.v1.BlobService"
_READ_DATA_FIELD = bytes_field_number(blob_pb2.ReadBlobResponse, "data")
_APPEND_DATA_FIELD = bytes_field_number(blob_pb2.AppendUploadRequest, "data")


@dataclass(frozen=True, slots=True)
class _Redirect:
    url: str


def add_to_server(servicer: BlobServiceServicer, server: grpc.aio.Server) -> None:
    """Registers `servicer` on `server`: the generated handlers, with ReadBlob's replaced by one
    that yields messages already encoded (byte-identical wire format), and AppendUpload's by one
    whose data-only messages are decoded by hand (`decode_append_request`).

    Why: building a fresh upb ReadBlobResponse around 1 MiB and serialising it costs ~1.4 ms per
    MiB on this machine (its arena blocks go back to the kernel each time and fault in again),
    ten times a plain framing copy, and it was most of the blob plane's CPU on pulls. Parsing an
    AppendUploadRequest copies its data twice (into the arena, then out as `.data`). Registered
    handlers take precedence over generic ones, and interceptors keep the (de)serializers.
    """
    blob_pb2_grpc.add_BlobServiceServicer_to_server(servicer, server)
    server.add_registered_method_handlers(
        _SERVICE,
        {
            "ReadBlob": grpc.unary_stream_rpc_method_handler(
                servicer.read_blob_encoded,
                request_deserializer=blob_pb2.ReadBlobRequest.FromString,
                response_serializer=already_encoded,
            ),
            "AppendUpload": grpc.stream_unary_rpc_method_handler(
                servicer.AppendUpload,
                request_deserializer=decode_append_request,
                response_serializer=blob_pb2.AppendUploadResponse.SerializeToString,
            ),
        },
    )


def decode_append_request(raw: bytes) -> bytes | blob_pb2.AppendUploadRequest:
    """An AppendUploadRequest that carries only `data` (every message of a chunk stream but the
    first): those bytes, copied once. Anything else: the parsed message."""
    start = only_bytes_field(raw, _APPEND_DATA_FIELD)
    if start is not None:
        return raw[start:]
    return blob_pb2.AppendUploadRequest.FromString(raw)


def _status(status: UploadStatus) -> blob_pb2.UploadStatus:
    return blob_pb2.UploadStatus(
        upload_id=status.upload_id,
        repository=status.repository,
        offset=status.offset,
        started_at=int(status.started_at),
    )


class BlobServiceServicer(blob_pb2_grpc.BlobServiceServicer):
    def __init__(self, store: BlobStore, *, refuse_writes: Callable[[str], None] | None = None) -> None:
        self.store = store
        # UNSUPPORTED for uploads into a pull-through cache's prefix (services/common/upstream.py).
        self._refuse_writes = refuse_writes or (lambda repository: None)

    async def StatBlob(self, request: blob_pb2.StatBlobRequest, context: grpc.aio.ServicerContext
                       ) -> blob_pb2.StatBlobResponse:
        info = await self.store.stat_blob(request.digest)
        return blob_pb2.StatBlobResponse(digest=str(info.digest), size=info.size)

    async def ReadBlob(self, request: blob_pb2.ReadBlobRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[blob_pb2.ReadBlobResponse]:
        async for item in self._read(request):
            if isinstance(item, _Redirect):
                yield blob_pb2.ReadBlobResponse(redirect_url=item.url)
            else:
                yield blob_pb2.ReadBlobResponse(data=bytes(item))

    async def read_blob_encoded(self, request: blob_pb2.ReadBlobRequest, context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[bytes]:
        """ReadBlob yielding each ReadBlobResponse already in wire form (see `add_to_server`)."""
        async for item in self._read(request):
            if isinstance(item, _Redirect):
                yield blob_pb2.ReadBlobResponse(redirect_url=item.url).SerializeToString()
            else:
                yield encode_bytes_field(_READ_DATA_FIELD, item)

    async def _read(self, request: blob_pb2.ReadBlobRequest) -> AsyncIterator[_Redirect | bytes | memoryview]:
        length = request.length if request.length else None
        if request.allow_redirect:
            url = await self.store.read_redirect(request.digest, offset=request.offset, length=length)
            if url is not None:
                yield _Redirect(url)
                return
        stream = await self.store.read_blob(request.digest, offset=request.offset, length=length)
        try:
            async for chunk in stream:
                if len(chunk) <= MAX_MESSAGE_DATA:
                    yield chunk
                    continue
                view = memoryview(chunk)
                for start in range(0, len(chunk), MAX_MESSAGE_DATA):
                    yield view[start : start + MAX_MESSAGE_DATA]
        finally:
            # Releases the open file at once when the client goes away mid-stream.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def DeleteBlob(self, request: blob_pb2.DeleteBlobRequest, context: grpc.aio.ServicerContext
                         ) -> blob_pb2.DeleteBlobResponse:
        done = await self.store.delete_blob(request.digest, listed_modified_at=request.listed_modified_at)
        return blob_pb2.DeleteBlobResponse(deleted=done.deleted, kept_newer=done.kept_newer)

    async def ListBlobs(self, request: blob_pb2.ListBlobsRequest, context: grpc.aio.ServicerContext
                        ) -> blob_pb2.ListBlobsResponse:
        page = await self.store.list_blobs(page_token=request.page_token, page_size=request.page_size)
        return blob_pb2.ListBlobsResponse(
            blobs=[blob_pb2.StoredBlob(digest=str(b.digest), size=b.size, modified_at=b.modified)
                   for b in page.blobs],
            next_page_token=page.next_page_token,
        )

    async def StartUpload(self, request: blob_pb2.StartUploadRequest, context: grpc.aio.ServicerContext
                          ) -> blob_pb2.StartUploadResponse:
        self._refuse_writes(request.repository)
        status = await self.store.start_upload(request.repository, request.owner)
        return blob_pb2.StartUploadResponse(status=_status(status), min_chunk_size=self.store.min_chunk_size)

    async def AppendUpload(self, request_iterator: AsyncIterator[bytes | blob_pb2.AppendUploadRequest],
                           context: grpc.aio.ServicerContext) -> blob_pb2.AppendUploadResponse:
        # Messages arrive parsed (generated deserializer) or, when they carry only data, as those
        # bytes (`decode_append_request`).
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise RegistryError(
                ErrorKind.BLOB_UPLOAD_INVALID, "AppendUpload needs a first message naming the upload"
            )
        if isinstance(first, bytes):
            first = blob_pb2.AppendUploadRequest(data=first)  # names no upload: refused below
        head = first.data

        async def chunks() -> AsyncIterator[bytes]:
            if head:
                yield head
            async for message in request_iterator:
                data = message if isinstance(message, bytes) else message.data
                if data:
                    yield data

        try:
            status = await self.store.append_upload(
                first.upload_id, first.repository, expected_offset=first.expected_offset, chunks=chunks()
            )
        except RegistryError:
            # Refused before the client finished writing (a chunk in the wrong place, an unknown
            # session): read the rest first. Ending the call under a write in flight makes the
            # client's grpc core fail that write with a bare INTERNAL ("Internal error from Core")
            # that can replace this status, and the HTTP client got 500 instead of 416 or 404.
            # The rest is at most the one chunk the client is sending, within the call's deadline.
            async for _ in request_iterator:
                pass
            raise
        return blob_pb2.AppendUploadResponse(status=_status(status))

    async def GetUploadStatus(self, request: blob_pb2.GetUploadStatusRequest, context: grpc.aio.ServicerContext
                              ) -> blob_pb2.GetUploadStatusResponse:
        status = await self.store.upload_status(request.upload_id, request.repository)
        return blob_pb2.GetUploadStatusResponse(status=_status(status))

    async def CommitUpload(self, request: blob_pb2.CommitUploadRequest, context: grpc.aio.ServicerContext
                           ) -> blob_pb2.CommitUploadResponse:
        committed = await self.store.commit_upload(
            request.upload_id,
            request.repository,
            digest=request.digest,
            expected_size=request.expected_size if request.expected_size >= 0 else None,
            final_data=request.final_data,
            final_offset=request.final_offset if request.final_offset >= 0 else None,
        )
        return blob_pb2.CommitUploadResponse(digest=str(committed.digest), size=committed.size,
                                             stored_now=committed.stored_now)

    async def CancelUpload(self, request: blob_pb2.CancelUploadRequest, context: grpc.aio.ServicerContext
                           ) -> blob_pb2.CancelUploadResponse:
        await self.store.cancel_upload(request.upload_id, request.repository)
        return blob_pb2.CancelUploadResponse()

    async def PurgeUploads(self, request: blob_pb2.PurgeUploadsRequest, context: grpc.aio.ServicerContext
                           ) -> blob_pb2.PurgeUploadsResponse:
        if request.older_than_seconds < 0:
            raise RegistryError(ErrorKind.BLOB_UPLOAD_INVALID, "older_than_seconds cannot be negative")
        purged = await self.store.purge_uploads(request.older_than_seconds or None)
        return blob_pb2.PurgeUploadsResponse(purged=purged)
