"""Read-only maintenance mode and blob uploads: through a real `lading serve` stack the upload
endpoints answer 405 UNSUPPORTED with the maintenance message, and the gateway's cached view of the
flag (gateway.maintenance.MaintenanceGate) against a real in-process gRPC AdminService."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from lading.metadata.v1 import admin_pb2, admin_pb2_grpc

from gateway.maintenance import MESSAGE, MaintenanceGate
from services.common.errors import ErrorKind, RegistryError
from tests.gc.stack_support import gc_stack, targets
from tests.support import oci
from tests.support.stack import Stack, child_env, lading_command


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Ask the metadata plane on every upload request, so a switch shows on the very next request.
    with gc_stack("sqlite", request, tmp_path_factory.mktemp("maintenance"),
                  LADING_GATEWAY__MAINTENANCE_CHECK_SECONDS="0") as running:
        yield running


def maintenance(stack: Stack, state: str) -> str:
    metadata, blob = targets(stack)
    done = subprocess.run(lading_command("maintenance", state, "--metadata", metadata, "--blob", blob),
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(response: httpx.Response) -> None:
    oci.assert_error(response, 405, "UNSUPPORTED")
    assert "read-only maintenance mode" in response.json()["errors"][0]["message"]


def test_uploads_are_refused_in_maintenance_mode(stack: Stack) -> None:
    repo = "maint/app"
    data = os.urandom(3000)
    digest = oci.sha256(data)
    mountable = os.urandom(100)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        assert oci.push_blob(client, repo, mountable).status_code == 201
        # A session opened before the switch, with a first chunk in it.
        opened = client.post(f"/v2/{repo}/blobs/uploads/")
        assert opened.status_code == 202
        location = oci.absolute(client, opened.headers["Location"])
        first = client.patch(location, content=data[:1000], headers={"Content-Range": "0-999"})
        assert first.status_code == 202
        location = oci.absolute(client, first.headers["Location"])

        assert "on (read-only)" in maintenance(stack, "on")
        try:
            refused(client.post(f"/v2/{repo}/blobs/uploads/"))
            refused(client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data,
                                headers={"Content-Type": "application/octet-stream"}))
            refused(client.post("/v2/other/blobs/uploads/",
                                params={"mount": oci.sha256(mountable), "from": repo}))
            refused(client.patch(location, content=data[1000:2000], headers={"Content-Range": "1000-1999"}))
            refused(client.put(oci.with_digest(location, digest), content=data[1000:],
                               headers={"Content-Range": f"1000-{len(data) - 1}"}))
            # Reads still work, including the session's status: nothing was appended.
            status = client.get(location)
            assert status.status_code == 204 and status.headers["Range"] == "0-999"
            assert client.head(f"/v2/{repo}/blobs/{oci.sha256(mountable)}").status_code == 200
            assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        finally:
            assert "off" in maintenance(stack, "off")

        # Back to normal: the same session continues where it stood.
        second = client.patch(location, content=data[1000:2000], headers={"Content-Range": "1000-1999"})
        assert second.status_code == 202, second.text
        closed = client.put(oci.with_digest(oci.absolute(client, second.headers["Location"]), digest),
                            content=data[2000:], headers={"Content-Range": f"2000-{len(data) - 1}"})
        assert closed.status_code == 201, closed.text
        assert client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True).content == data


def test_cancelling_a_session_stays_allowed(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        opened = client.post("/v2/maint/cancel/blobs/uploads/")
        assert opened.status_code == 202
        maintenance(stack, "on")
        try:
            assert client.delete(oci.absolute(client, opened.headers["Location"])).status_code == 204
        finally:
            maintenance(stack, "off")


# -- the gateway's cached flag, against a real gRPC server ----------------------------------------


class CountingAdmin(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self) -> None:
        self.on = False
        self.calls = 0
        self.release: asyncio.Event | None = None
        self.asked = asyncio.Event()

    async def GetMaintenance(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.calls += 1
        self.asked.set()
        if self.release is not None:
            await self.release.wait()
        return admin_pb2.MaintenanceStatus(on=self.on)


@pytest.fixture
async def admin_server() -> AsyncIterator[tuple[CountingAdmin, str, grpc.aio.Server]]:
    server = grpc.aio.server()
    servicer = CountingAdmin()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}", server
    finally:
        await server.stop(None)


async def test_the_gate_caches_and_shares_one_question(admin_server) -> None:  # type: ignore[no-untyped-def]
    servicer, target, _ = admin_server
    async with grpc.aio.insecure_channel(target) as channel:
        gate = MaintenanceGate(channel, ttl_seconds=3600)
        # Twenty requests at once while the answer is on its way: one call.
        servicer.release = asyncio.Event()
        waiting = [asyncio.create_task(gate.on()) for _ in range(20)]
        await servicer.asked.wait()
        servicer.release.set()
        assert await asyncio.gather(*waiting) == [False] * 20
        assert servicer.calls == 1
        # Within the TTL the answer is reused, even after the flag changed.
        servicer.on = True
        assert await gate.on() is False and servicer.calls == 1

        fresh = MaintenanceGate(channel, ttl_seconds=0)
        with pytest.raises(RegistryError) as info:
            await fresh.refuse_writes()
        assert info.value.kind is ErrorKind.UNSUPPORTED and info.value.message == MESSAGE
        servicer.on = False
        await fresh.refuse_writes()  # TTL 0: asked again, now off
        assert servicer.calls == 3


async def test_the_gate_keeps_the_last_answer_when_the_plane_is_down(admin_server) -> None:  # type: ignore[no-untyped-def]
    servicer, target, server = admin_server
    servicer.on = True
    async with grpc.aio.insecure_channel(target) as channel:
        gate = MaintenanceGate(channel, ttl_seconds=0, timeout_seconds=1.0)
        assert await gate.on() is True
        await server.stop(None)
        calls = servicer.calls
        # The metadata plane is gone: the last answer stands (the closing PUT would meet the
        # plane's own check anyway).
        assert await gate.on() is True
        assert servicer.calls == calls
