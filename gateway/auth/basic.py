"""`Authorization: Basic` parsing, and a short memory of successful checks.

bcrypt costs ~0.25 s by design, far too much per request: a successful check is remembered for
`auth.basic_cache_seconds` (10 s by default), keyed by the SHA-256 of the whole header value, so the
cache never holds a password. A password change or account deletion takes effect within that
TTL. Failures are never cached (each costs the attacker a bcrypt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time

_MAX_ENTRIES = 4096


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(username, password) from a Basic header value, or None when it is not one."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        return None
    return name, password


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TtlCache:
    """Values kept for `ttl` seconds (monotonic clock), at most 4096 of them."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._items: dict[object, tuple[float, object]] = {}

    def get(self, key: object) -> object | None:
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: object, value: object) -> None:
        if self._ttl <= 0:
            return
        if len(self._items) >= _MAX_ENTRIES:
            self._items.clear()
        self._items[key] = (time.monotonic() + self._ttl, value)


def credential_key(header: str) -> str:
    return hashlib.sha256(header.encode()).hexdigest()
