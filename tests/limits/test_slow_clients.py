"""Slow clients cannot hold a registry's connections (issue 11, item 11), end to end on `lading
serve`: 500 connections to the gateway and 500 to the blob plane's direct-read server, half of
them trickling one header byte a second, half having sent half a head and gone quiet. While they
are held a normal client pushes and pulls (its pull redirected to the direct-read server), and
every slow connection is closed once its head's time is up.

The slow connections come from 127.0.0.2 … 127.0.0.6, 100 each, within the per-address cap; the
normal client from 127.0.0.1. See tests/support/connections.py for how time is (not) measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import oci
from tests.support.connections import MARGIN
from tests.support.stack import Stack

HEADER_TIMEOUT_SECONDS = 4
KEEP_ALIVE_TIMEOUT_SECONDS = 3
SLOW_PER_SERVER = 500
SOURCES = [f"127.0.0.{n}" for n in range(2, 7)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {}
    for section in ("GATEWAY", "BLOB__DIRECT_READS"):
        env[f"LADING_{section}__HEADER_TIMEOUT_SECONDS"] = str(HEADER_TIMEOUT_SECONDS)
        env[f"LADING_{section}__KEEP_ALIVE_TIMEOUT_SECONDS"] = str(KEEP_ALIVE_TIMEOUT_SECONDS)
    data_dir = tmp_path_factory.mktemp("lading-slow-clients") / "data"
    with Stack(data_dir, env=env, name="lading-serve-slow-clients") as running:
        yield running


class Connected:
    """Counts slow connections as they are made; `all` is set once `expected` are."""

    def __init__(self, expected: int) -> None:
        self.expected, self.count, self.all = expected, 0, asyncio.Event()

    def one_more(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all.set()


class SlowClient:
    """One connection that sends half a request head, then (if `trickle`) a byte a second."""

    def __init__(self, port: int, source: str, *, trickle: bool) -> None:
        self.port, self.source, self.trickle = port, source, trickle
        self.answer = b""
        self.closed_at: float | None = None
        self.started_at = 0.0
        self.open = False

    async def run(self, deadline: float, connected: Connected) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source, 0))
        self.started_at = time.monotonic()
        self.open = True
        connected.one_more()
        writer.write(b"GET /v2/ HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        try:
            while time.monotonic() < deadline:
                try:
                    piece = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    if self.trickle:
                        writer.write(b"z")
                    continue
                if not piece:
                    break
                self.answer += piece
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            self.open = False
            self.closed_at = time.monotonic() if time.monotonic() < deadline else None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _direct_read_port(client: httpx.Client, repo: str, blob: oci.Blob) -> int:
    response = client.get(f"/v2/{repo}/blobs/{blob.digest}", follow_redirects=False)
    assert response.status_code == 307, "lading serve redirects blob GETs to its direct-read server"
    port = urlsplit(response.headers["location"]).port
    assert port is not None
    return port


async def _normal_client(client: httpx.AsyncClient, repo: str, seeded: oci.Manifest) -> list[str]:
    """A pull (its blob through the direct-read server) and a push by a well-behaved client; what
    went wrong."""
    problems = []
    manifest = await client.get(f"/v2/{repo}/manifests/seed", headers={"Accept": oci.ACCEPT_ALL})
    if manifest.content != seeded.payload:
        problems.append(f"manifest pull: {manifest.status_code}")
    for blob in seeded.blobs:
        pulled = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
        if pulled.status_code != 200 or pulled.content != blob.data:
            problems.append(f"blob pull: {pulled.status_code}")
    image = oci.image(layers=1, layer_size=2048)
    for blob in image.blobs:
        pushed = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data)
        if pushed.status_code != 201:
            problems.append(f"blob push: {pushed.status_code} {pushed.text}")
    tagged = await client.put(f"/v2/{repo}/manifests/v2", content=image.payload,
                              headers={"Content-Type": image.media_type})
    if tagged.status_code != 201:
        problems.append(f"manifest push: {tagged.status_code} {tagged.text}")
    return problems


def test_500_slow_connections_per_server_are_closed_on_time_and_starve_no_one(stack: Stack) -> None:
    repo = "slow/clients"
    seeded = oci.image(layers=1, layer_size=1024)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        oci.push(client, repo, seeded, tag="seed")
        direct_port = _direct_read_port(client, repo, seeded.blobs[0])

    async def scenario() -> tuple[list[SlowClient], list[SlowClient], list[str]]:
        deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + MARGIN + 20
        slow = {
            port: [SlowClient(port, SOURCES[i % len(SOURCES)], trickle=i % 2 == 0) for i in range(SLOW_PER_SERVER)]
            for port in (stack.port, direct_port)
        }
        everyone = [c for clients in slow.values() for c in clients]
        connected = Connected(len(everyone))
        tasks = [asyncio.create_task(c.run(deadline, connected)) for c in everyone]
        await asyncio.wait_for(connected.all.wait(), MARGIN)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, follow_redirects=True) as client:
            # The first answers come while every slow connection is held (they live for seconds).
            first = await client.get("/v2/")
            held = sum(c.open for c in everyone)
            problems = [] if first.status_code == 200 else [f"GET /v2/: {first.status_code}"]
            if held < len(everyone):
                problems.append(f"only {held} of {len(everyone)} slow connections were held when /v2/ answered")
            problems += await _normal_client(client, repo, seeded)
        await asyncio.gather(*tasks)
        return slow[stack.port], slow[direct_port], problems

    gateway_slow, direct_slow, problems = asyncio.run(scenario())
    assert problems == []
    for name, clients in (("gateway", gateway_slow), ("direct reads", direct_slow)):
        still_open = [c for c in clients if c.closed_at is None]
        assert not still_open, f"{name}: {len(still_open)} slow connections were never closed"
        late = [c for c in clients if c.closed_at - c.started_at > HEADER_TIMEOUT_SECONDS + MARGIN]
        assert not late, f"{name}: {len(late)} slow connections were closed late"
    # The gateway says why (408); the direct-read server closes a head still arriving when its
    # keep-alive time (shorter here) runs out, or answers 408 at the header timeout.
    assert all(c.answer.startswith(b"HTTP/1.1 408 ") for c in gateway_slow), {c.answer[:40] for c in gateway_slow}
    assert all(c.answer in (b"",) or c.answer.startswith(b"HTTP/1.1 408 ") for c in direct_slow)
