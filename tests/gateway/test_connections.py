"""The gateway's connection guards (issue 11, item 11) and its quiet answer to non-HTTP bytes
(item 19), on its own HTTP server (gateway.connections, gateway.limits), with short timeouts.

See tests/support/connections.py for how time is (not) measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.serving import serving, settings_for
from tests.support.connections import MARGIN, hold, read_until_closed, request, still_open

HEADER_TIMEOUT = 1.5
KEEP_ALIVE = 1.0


@pytest.fixture
async def port(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, gateway={
        "header_timeout_seconds": HEADER_TIMEOUT, "keep_alive_timeout_seconds": KEEP_ALIVE,
    })
    async with serving(settings) as bound:
        yield bound


async def test_a_trickled_head_gets_408_once_its_time_is_up(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    # One byte at a time, well within the keep-alive timeout each, never ending the head.
    while time.monotonic() - started < HEADER_TIMEOUT - 0.5:
        writer.write(b"X")
        await writer.drain()
        assert await still_open(reader, 0.3)
    answer = await read_until_closed(reader, started + HEADER_TIMEOUT + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    writer.close()


async def test_a_half_sent_head_is_closed_even_if_the_client_stops_sending(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /v2/ HTTP/1.1\r\nHo")
    await writer.drain()
    assert await still_open(reader, KEEP_ALIVE + 0.2)  # no idle timeout once a head has begun
    answer = await read_until_closed(reader, started + HEADER_TIMEOUT + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_a_slow_head_that_ends_in_time_is_served(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for start in range(0, len(head), 10):
        writer.write(head[start : start + 10])
        await writer.drain()
        await asyncio.sleep(0.1)
    answer = await read_until_closed(reader, time.monotonic() + MARGIN)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    writer.close()


async def test_a_connection_that_never_sends_is_closed_silently(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    assert await still_open(reader, KEEP_ALIVE - 0.3)
    assert await read_until_closed(reader, started + KEEP_ALIVE + MARGIN) == b""
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                 .split(b":")[1])
    await reader.readexactly(length)
    served = time.monotonic()
    # A second request on the same connection is served (keep-alive works) ...
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    await reader.readexactly(length)
    served = time.monotonic()
    # ... then the idle connection is closed, without a response.
    assert await read_until_closed(reader, served + KEEP_ALIVE + MARGIN) == b""
    writer.close()


async def test_connections_per_client_address_are_capped(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, gateway={
        "max_connections_per_client": 3, "trusted_proxies": ["127.0.0.9"], "header_timeout_seconds": 60,
    })
    async with serving(settings) as port:
        held = [await hold(port, "127.0.0.2") for _ in range(3)]
        over = await request(port, "127.0.0.2", "/v2/")
        assert over.startswith(b"HTTP/1.1 429 "), over
        error = json.loads(over.split(b"\r\n\r\n", 1)[1])["errors"][0]
        assert error["code"] == "TOOMANYREQUESTS" and error["detail"] == {"max_connections_per_client": 3}
        # Other addresses are not affected, nor is a trusted proxy.
        assert (await request(port, "127.0.0.3", "/v2/")).startswith(b"HTTP/1.1 200 ")
        proxied = [await hold(port, "127.0.0.9") for _ in range(4)]
        assert (await request(port, "127.0.0.9", "/v2/")).startswith(b"HTTP/1.1 200 ")
        # Closing one connection frees its place.
        _, writer = held.pop()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            answer = await request(port, "127.0.0.2", "/v2/")
            if not answer.startswith(b"HTTP/1.1 429 "):
                break
            await asyncio.sleep(0.05)  # until the server has seen the close
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        for _, writer in held + proxied:
            writer.close()


async def test_a_tls_probe_is_answered_400_and_logged_at_debug_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What skopeo or podman send first with TLS verification off: a TLS ClientHello.
    hello = bytes.fromhex("160301") + b"\x00\x2f" + b"\x01" + b"\x00" * 46
    async with serving(settings_for(tmp_path)) as port:
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(hello)
            await writer.drain()
            answer = await read_until_closed(reader, time.monotonic() + MARGIN)
            writer.close()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/v2/")).status_code == 200
    assert answer.startswith(b"HTTP/1.1 400 ")
    probes = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(probes) == 1 and probes[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "Invalid HTTP" in r.getMessage()]
