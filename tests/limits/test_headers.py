"""Request heads over `max_header_bytes` are refused with 431 and the OCI error body, before the
app sees them, whether one header is huge, many add up, or the head never ends."""

from __future__ import annotations

import json

import httpx

from tests.limits.conftest import MAX_HEADER_BYTES
from tests.limits.raw import closed_by_server, connect, read_response, request_head
from tests.support.oci import assert_error
from tests.support.stack import Stack


def assert_431(response_status: int, body: bytes, headers: dict[str, str]) -> None:
    assert response_status == 431
    error = json.loads(body)["errors"][0]
    assert error["code"] == "SIZE_INVALID"
    assert error["detail"] == {"limit": MAX_HEADER_BYTES}
    assert headers["docker-distribution-api-version"] == "registry/2.0"


def test_headers_within_the_limit_are_served(client: httpx.Client) -> None:
    response = client.get("/v2/", headers={"X-Padding": "a" * (MAX_HEADER_BYTES - 1024)})
    assert response.status_code == 200


def test_one_oversized_header_gets_431(client: httpx.Client) -> None:
    response = client.get("/v2/", headers={"X-Padding": "a" * (MAX_HEADER_BYTES + 1)})
    assert_error(response, 431, "SIZE_INVALID")
    assert_431(response.status_code, response.content, dict(response.headers))
    # The connection was closed; the next request gets a fresh one and is served.
    assert client.get("/v2/").status_code == 200


def test_many_small_headers_adding_up_get_431(client: httpx.Client) -> None:
    headers = {f"X-Header-{i}": "v" * 100 for i in range(MAX_HEADER_BYTES // 100)}
    assert_error(client.get("/v2/", headers=headers), 431, "SIZE_INVALID")


def test_an_oversized_request_target_gets_431(client: httpx.Client) -> None:
    assert_error(client.get("/v2/" + "a" * (MAX_HEADER_BYTES + 1) + "/tags/list"), 431, "SIZE_INVALID")


def test_a_head_that_never_ends_is_cut_off(limited_registry: Stack) -> None:
    """A client sending header lines without ever ending its head gets the 431 without the gateway
    waiting for the end, and the connection is closed."""
    with connect(limited_registry.host, limited_registry.port) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Flood: " + b"f" * 1000 + b"\r\n"
        try:
            for _ in range(4 * MAX_HEADER_BYTES // len(line)):
                sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may hang up mid-flood
        # The head is still open (no blank line was sent): only the byte count can end it.
        response = read_response(sock)
        assert_431(response.status, response.body, response.headers)
        assert closed_by_server(sock)


def test_a_stalled_incomplete_head_within_the_limit_is_not_refused(limited_registry: Stack) -> None:
    """The limit is on bytes: a head completed in pieces below it is served."""
    with connect(limited_registry.host, limited_registry.port) as sock:
        head = request_head("GET", "/v2/", "x", {"X-Padding": "p" * 4000, "Connection": "close"})
        for start in range(0, len(head), 500):
            sock.sendall(head[start : start + 500])
        response = read_response(sock)
        assert response.status == 200
