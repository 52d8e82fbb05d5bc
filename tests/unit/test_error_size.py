"""A registry error crosses gRPC intact whatever its size (issue 11, item 10).

A status travels in the call's trailers, which a gRPC client refuses past 8 KiB: an error whose
detail listed 10,000 digests reached the gateway as RESOURCE_EXHAUSTED (then a 429 that clients
retry) or INTERNAL (500). The one error table bounds what it sends, so the kind always arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from services.common.errors import (
    MAX_DETAIL_BYTES,
    MAX_MESSAGE_BYTES,
    ErrorKind,
    RegistryError,
    from_rpc_error,
)
from services.common.grpc_server import ErrorMappingInterceptor

DIGESTS = [f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(10_000)]


def _through_grpc(error: RegistryError, tmp_path: Path) -> RegistryError:
    """What a gateway reads back when a service method raised `error` (over a real channel)."""

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise error

    async def scenario() -> RegistryError:
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "test.Failing", {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
        )])
        address = f"unix:{tmp_path}/failing.sock"
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                with pytest.raises(grpc.RpcError) as caught:
                    await channel.unary_unary("/test.Failing/Fail")(b"", timeout=10)
                return from_rpc_error(caught.value)
        finally:
            await server.stop(None)

    return asyncio.run(scenario())


def test_a_detail_listing_10000_digests_keeps_its_kind(tmp_path: Path) -> None:
    error = RegistryError(ErrorKind.MANIFEST_BLOB_UNKNOWN, "manifest references unknown content",
                          {"blobs": DIGESTS, "manifests": []})
    received = _through_grpc(error, tmp_path)
    assert received.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN
    assert received.message == "manifest references unknown content"
    assert received.detail["truncated"] is True  # the oversized detail is replaced by a note


def test_a_huge_message_is_cut_not_lost(tmp_path: Path) -> None:
    message = "é" + "x" * 100_000
    received = _through_grpc(RegistryError(ErrorKind.NAME_INVALID, message, {"name": "n"}), tmp_path)
    assert received.kind is ErrorKind.NAME_INVALID
    assert received.detail == {"name": "n"}
    assert len(received.message.encode()) <= MAX_MESSAGE_BYTES
    assert received.message.startswith("éxxx") and received.message.endswith("…")


def test_small_errors_travel_unchanged() -> None:
    detail = {"blobs": DIGESTS[:5], "blob_count": 10_000}
    status = RegistryError(ErrorKind.MANIFEST_BLOB_UNKNOWN, "short", detail).to_rpc_status()
    assert status.message == "short"
    assert len(status.SerializeToString()) < MAX_DETAIL_BYTES + MAX_MESSAGE_BYTES + 200
