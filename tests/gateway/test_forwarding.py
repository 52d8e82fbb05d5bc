"""Location URLs: relative by default, absolute from a trusted proxy's X-Forwarded-Proto/-Host;
and the API version header on every response."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import urls
from gateway.middleware import ApiVersionMiddleware, ForwardedHeadersMiddleware, TrustedProxies


async def _through(middleware_factory: Any, scope: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    seen: dict[str, Any] = {}
    sent: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    await middleware_factory(app)(scope, receive, send)
    return seen, sent


def _scope(client: str | None, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": "http",
        "client": (client, 1234) if client else None,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def _forwarded(trusted: list[str]) -> Any:
    return lambda app: ForwardedHeadersMiddleware(app, TrustedProxies(trusted))


async def test_location_is_relative_without_a_proxy() -> None:
    seen, _ = await _through(_forwarded(["127.0.0.1"]), _scope("127.0.0.1", {"host": "registry:5000"}))
    assert urls.absolute(seen, urls.blob_path("a/b", "sha256:x")) == "/v2/a/b/blobs/sha256:x"


async def test_trusted_proxy_makes_locations_absolute() -> None:
    headers = {
        "host": "gateway:5000",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "registry.example.org",
    }
    seen, _ = await _through(_forwarded(["10.0.0.0/8"]), _scope("10.1.2.3", headers))
    assert seen["scheme"] == "https"
    assert (
        urls.absolute(seen, urls.upload_path("a", "u-1"))
        == "https://registry.example.org/v2/a/blobs/uploads/u-1"
    )


async def test_forwarded_proto_alone_uses_the_host_header() -> None:
    headers = {"host": "registry.example.org:8443", "x-forwarded-proto": "https"}
    seen, _ = await _through(_forwarded(["*"]), _scope("192.0.2.9", headers))
    assert urls.absolute(seen, "/v2/a/manifests/x") == "https://registry.example.org:8443/v2/a/manifests/x"


async def test_first_of_several_forwarded_values_wins() -> None:
    headers = {"x-forwarded-proto": "https, http", "x-forwarded-host": "outer.example, inner.example"}
    seen, _ = await _through(_forwarded(["127.0.0.1"]), _scope("127.0.0.1", headers))
    assert urls.absolute(seen, "/v2/") == "https://outer.example/v2/"


@pytest.mark.parametrize("client", ["203.0.113.5", None])
async def test_untrusted_peers_cannot_forge_locations(client: str | None) -> None:
    headers = {"host": "gateway", "x-forwarded-proto": "https", "x-forwarded-host": "evil.example"}
    seen, _ = await _through(_forwarded(["127.0.0.1", "::1"]), _scope(client, headers))
    assert seen["scheme"] == "http"
    assert urls.absolute(seen, "/v2/a/blobs/sha256:x") == "/v2/a/blobs/sha256:x"


async def test_nonsense_proto_is_ignored() -> None:
    headers = {"host": "registry", "x-forwarded-proto": "javascript"}
    seen, _ = await _through(_forwarded(["127.0.0.1"]), _scope("127.0.0.1", headers))
    assert seen["scheme"] == "http"
    assert urls.absolute(seen, "/v2/") == "http://registry/v2/"


def test_trusted_proxies_forms() -> None:
    trusted = TrustedProxies(["127.0.0.1", "::1", "10.0.0.0/8", "unix:"])
    assert "127.0.0.1" in trusted and "::1" in trusted and "10.200.0.1" in trusted
    assert None in trusted  # a unix-socket peer, when "unix:" is listed
    assert "11.0.0.1" not in trusted and "not-an-ip" not in trusted
    assert None not in TrustedProxies(["127.0.0.1"])
    # verdicts are remembered per peer and stay right on repeat
    assert "10.200.0.1" in trusted and "11.0.0.1" not in trusted


def test_upload_ids_are_escaped_in_locations() -> None:
    assert urls.upload_path("a", "x/y") == "/v2/a/blobs/uploads/x%2Fy"


async def test_api_version_header_is_added() -> None:
    _, sent = await _through(ApiVersionMiddleware, _scope("127.0.0.1", {}))
    assert (b"docker-distribution-api-version", b"registry/2.0") in sent[0]["headers"]
    assert (b"x", b"1") in sent[0]["headers"]
