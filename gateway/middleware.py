"""Pure ASGI middleware (no BaseHTTPMiddleware: it breaks ContextVar propagation and copies bodies).

- `ApiVersionMiddleware` stamps `Docker-Distribution-API-Version: registry/2.0` on every response.
- `ForwardedHeadersMiddleware` trusts `X-Forwarded-Proto` / `X-Forwarded-Host` only from the
  configured proxies and records the external base URL for Location headers (see `gateway.urls`).
  From those proxies it also takes the client's address out of `X-Forwarded-For` (the right-most
  entry that is not itself a trusted proxy: entries left of it were written by the client and
  prove nothing), for the login throttle (gateway/auth/throttle.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")

# Scope key holding the external "scheme://host" base when a trusted proxy supplied one.
BASE_URL_SCOPE_KEY = "lading.base_url"
# Scope key holding the client's address when a trusted proxy named it in X-Forwarded-For.
CLIENT_ADDRESS_SCOPE_KEY = "lading.client_address"

# Bound on the per-peer cache of proxy-trust verdicts (clients behind NAT are few; scanners are not).
_MAX_REMEMBERED_PEERS = 4096


class ApiVersionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: the response's own header list is left as it was.
                message["headers"] = [*message.get("headers", ()), API_VERSION_HEADER]
            await send(message)

        await self.app(scope, receive, send_with_version)


class TrustedProxies:
    """A set of proxy addresses: exact IPs, CIDR networks, or "*" for any peer."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                # Non-IP peers, such as "unix:" for a unix-socket listener.
                self.names.add(entry)

        # Verdicts per peer address: parsing an IP on every request is measurable on the hot path.
        self._verdicts: dict[str, bool] = {}

    def __contains__(self, host: str | None) -> bool:
        if self.any:
            return True
        if host is None:
            return "unix:" in self.names
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._decide(host)
            if len(self._verdicts) >= _MAX_REMEMBERED_PEERS:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        if host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def _first_value(raw: bytes) -> str:
    # With several proxies the left-most value is the one the client spoke to.
    return raw.decode("latin-1").split(",", 1)[0].strip()


class ForwardedHeadersMiddleware:
    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if (client[0] if client else None) in self.trusted:
                self._apply(scope)
                self._apply_forwarded_for(scope)
        await self.app(scope, receive, send)

    def _apply_forwarded_for(self, scope: Scope) -> None:
        entries: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                entries.extend(e.strip() for e in value.decode("latin-1").split(","))
        for entry in reversed(entries):
            if entry and entry not in self.trusted:
                scope[CLIENT_ADDRESS_SCOPE_KEY] = entry
                return

    def _apply(self, scope: Scope) -> None:
        proto = host = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = _first_value(value)
            elif name == b"x-forwarded-host":
                host = _first_value(value)
        if proto is None and host is None:
            return
        if proto not in (None, "http", "https"):
            proto = None  # anything else would produce an unusable URL
        if proto:
            scope["scheme"] = proto
        if host is None:
            host = _header(scope, b"host")
        if host:
            scope[BASE_URL_SCOPE_KEY] = f"{proto or scope.get('scheme', 'http')}://{host}"


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None
