"""`/readyz` and graceful shutdown of a real `lading gateway` process.

The planes here are real grpc.aio servers in the test's event loop on 127.0.0.1 ports: a health
service whose status the test sets, and (for shutdown) a MetadataService whose ListTags takes a
while, so a request is in flight when the gateway gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lading.metadata.v1 import metadata_pb2, metadata_pb2_grpc

from tests.support.stack import LadingProcess, free_port, lading_command, wait_until_http_ok

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
METADATA_SERVICE = "lading.metadata.v1.MetadataService"
BLOB_SERVICE = "lading.blob.v1.BlobService"
SLOW_SECONDS = 2.0


class SlowMetadata(metadata_pb2_grpc.MetadataServiceServicer):
    """ListTags answers after SLOW_SECONDS (a request the gateway must let finish on shutdown)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def ListTags(self, request, context):  # noqa: N802 - gRPC method name
        self.started.set()
        await asyncio.sleep(SLOW_SECONDS)
        return metadata_pb2.ListTagsResponse(tags=["slow"])


@dataclass
class Plane:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service: str

    async def set(self, status: int) -> None:
        for name in ("", self.service):
            await self.health.set(name, status)


async def start_plane(service: str, *, metadata: SlowMetadata | None = None) -> Plane:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if metadata is not None:
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(metadata, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    plane = Plane(server, servicer, port, service)
    await plane.set(SERVING)
    return plane


@dataclass
class Planes:
    metadata: Plane
    blob: Plane
    slow: SlowMetadata


@pytest.fixture
async def planes() -> AsyncIterator[Planes]:
    slow = SlowMetadata()
    metadata = await start_plane(METADATA_SERVICE, metadata=slow)
    blob = await start_plane(BLOB_SERVICE)
    try:
        yield Planes(metadata, blob, slow)
    finally:
        await metadata.server.stop(None)
        await blob.server.stop(None)


def gateway_process(tmp_path: Path, planes: Planes, port: int, **env: str) -> LadingProcess:
    return LadingProcess(
        "gateway",
        lading_command("gateway"),
        log_dir=tmp_path,
        env={
            "LADING_GATEWAY__HOST": "127.0.0.1",
            "LADING_GATEWAY__PORT": str(port),
            "LADING_GATEWAY__METADATA_TARGET": f"127.0.0.1:{planes.metadata.port}",
            "LADING_GATEWAY__BLOB_TARGET": f"127.0.0.1:{planes.blob.port}",
            **env,
        },
    )


async def wait_started(base: str, process: LadingProcess) -> None:
    await asyncio.to_thread(wait_until_http_ok, f"{base}/healthz", process)


async def test_readyz_follows_both_planes_and_healthz_stays_alive(planes: Planes, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = gateway_process(tmp_path, planes, port).start()
    try:
        await wait_started(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"metadata": "SERVING", "blob": "SERVING"}

            await planes.blob.set(NOT_SERVING)
            blob_down = await http.get("/readyz")
            assert blob_down.status_code == 503
            error = blob_down.json()["errors"][0]
            assert error["code"] == "UNAVAILABLE"
            assert "blob plane NOT_SERVING" in error["message"]
            assert error["detail"] == {"planes": {"metadata": "SERVING", "blob": "NOT_SERVING"}, "draining": False}
            assert (await http.head("/readyz")).status_code == 503

            await planes.blob.set(SERVING)
            await planes.metadata.server.stop(None)  # the plane is gone, not merely NOT_SERVING
            metadata_down = await http.get("/readyz")
            assert metadata_down.status_code == 503
            detail = metadata_down.json()["errors"][0]["detail"]
            assert detail["planes"]["blob"] == "SERVING"
            assert detail["planes"]["metadata"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")

            # Liveness does not depend on the planes.
            alive = await http.get("/healthz")
            assert alive.status_code == 200
    finally:
        process.stop()


async def test_sigterm_flips_readyz_then_lets_in_flight_requests_finish(planes: Planes, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = gateway_process(
        tmp_path, planes, port,
        LADING_GATEWAY__SHUTDOWN_DRAIN_SECONDS="1.0",
        LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS="10",
    ).start()
    try:
        await wait_started(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as slow_client, \
                httpx.AsyncClient(base_url=base, timeout=10.0) as probe:
            assert (await probe.get("/readyz")).status_code == 200
            in_flight = asyncio.create_task(slow_client.get("/v2/some/repo/tags/list"))
            await asyncio.wait_for(planes.slow.started.wait(), timeout=10)

            process._popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            # During the drain window the gateway still accepts, but says it is not ready.
            draining = None
            for _ in range(50):
                draining = await probe.get("/readyz", headers={"connection": "close"})
                if draining.status_code == 503:
                    break
                await asyncio.sleep(0.02)
            assert draining is not None and draining.status_code == 503, draining.text if draining else None
            assert draining.json()["errors"][0]["detail"]["draining"] is True
            assert "shutting down" in draining.json()["errors"][0]["message"]

            finished = await in_flight
            assert finished.status_code == 200
            assert finished.json() == {"name": "some/repo", "tags": ["slow"]}

        code = await asyncio.to_thread(process._popen.wait, 20)  # type: ignore[union-attr]
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert code in (0, -signal.SIGTERM), process.log()
        assert "Application shutdown complete" in process.log()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=base, timeout=5.0) as late:
                await late.get("/healthz")
    finally:
        process.stop()
