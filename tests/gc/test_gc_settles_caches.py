"""GC's and repository deletes' changes are settled like any other write: the run (or the delete)
answers only once every gateway cache holding a lease has acknowledged them, so a collected
manifest or a deleted repository is not served from a cache after the answer.

Made deterministic by stopping the gateway (SIGSTOP): it holds a lease but cannot acknowledge, so a
write that settles waits for it (`lading_change_ack_waits_total` grows and the gateway is fenced).
The lease is long (LEASE_SECONDS) so that it is still held when the write commits on a loaded
machine; the gateway is let go once it is fenced, and its acknowledgement ends the wait."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from lading.metadata.v1 import admin_pb2 as pb
from lading.metadata.v1 import admin_pb2_grpc

from tests.gc.stack_support import gc_stack, targets
from tests.support import oci
from tests.support.stack import Stack, free_port

# The gateway renews four times per lease: once stopped it still holds the lease for at least 3/4
# of this, time enough for the write to commit. The write does not wait this long: the gateway is
# let go (and acknowledges) once the write has fenced it.
LEASE_SECONDS = 20.0



@pytest.fixture
def metered(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    address = f"127.0.0.1:{free_port()}"
    with gc_stack("sqlite", request, tmp_path, LADING_OBSERVABILITY__METADATA_METRICS_LISTEN=address,
                  LADING_METADATA__CHANGE_FEED__LEASE_SECONDS=str(LEASE_SECONDS)) as stack:
        yield stack, address


def _counter(address: str, name: str) -> float:
    for line in httpx.get(f"http://{address}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not among the metadata plane's metrics")


def _gateway_pid(stack: Stack) -> int:
    for pid in stack.process.children():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "lading-gateway":
            return pid
    raise AssertionError("no lading-gateway process under lading serve")


def _cached(http: httpx.Client, repo: str, image: oci.Manifest) -> None:
    answer = oci.get_manifest(http, repo, image.digest)
    assert answer.status_code == 200 and answer.content == image.payload, answer.text


def test_gc_and_repository_deletes_wait_for_the_gateway_caches(metered: tuple[Stack, str]) -> None:
    stack, address = metered
    metadata, _ = targets(stack)
    with httpx.Client(base_url=stack.base_url, timeout=30) as http, grpc.insecure_channel(metadata) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        untagged, kept = oci.image(1, layer_size=300), oci.image(1, layer_size=300)
        oci.push(http, "settle/untagged", untagged)  # by digest: collectable
        oci.push(http, "settle/doomed", kept, "v1")
        _cached(http, "settle/untagged", untagged)
        _cached(http, "settle/doomed", kept)
        gateway = _gateway_pid(stack)
        for call in (lambda: admin.GcSweepMetadata(pb.GcSweepMetadataRequest(delete_untagged=True), timeout=60),
                     lambda: admin.DeleteRepository(pb.DeleteRepositoryRequest(repository="settle/doomed"),
                                                    timeout=60)):
            waits = _counter(address, "lading_change_ack_waits_total")
            fenced = _counter(address, "lading_change_ack_fenced_total")
            outcome: list[BaseException | None] = []

            def run(call=call, outcome=outcome) -> None:
                try:
                    call()
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
                    outcome.append(exc)

            os.kill(gateway, signal.SIGSTOP)
            try:
                writer = threading.Thread(target=run)
                writer.start()
                # The write waits for the stopped gateway and fences it after ack_wait_seconds.
                deadline = time.monotonic() + LEASE_SECONDS / 2
                while _counter(address, "lading_change_ack_fenced_total") < fenced + 1:
                    assert writer.is_alive(), f"the write answered without waiting for the gateway: {outcome}"
                    assert time.monotonic() < deadline, "the write never fenced the stopped gateway"
                    time.sleep(0.05)
            finally:
                os.kill(gateway, signal.SIGCONT)
            writer.join(60)
            assert outcome == [None]
            assert _counter(address, "lading_change_ack_waits_total") == waits + 1
        assert oci.get_manifest(http, "settle/untagged", untagged.digest).status_code == 404
        assert oci.get_manifest(http, "settle/doomed", "v1").status_code == 404
