"""`Authorization: Basic` parsing, and a short memory of successful checks.

bcrypt costs ~0.3 s by design, far too much per request: a successful check is remembered for
`auth.basic_cache_seconds` (10 s by default), keyed by the SHA-256 of the whole header value, so the
cache never holds a password. Each remembered check carries the account's immutable id and
credential generation and is checked against the revocation set on every use, so a password
change, a deletion or a disable counts within the 2 s the change feed needs, not the TTL
(gateway/auth/logins.py). Failures are never cached (each costs the attacker a bcrypt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable

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


# What containers/image (podman, skopeo, buildah, CRI-O) sends on a Basic challenge when it has no
# credentials for the registry: `Basic ` + base64(":"), an empty user and an empty password. Docker
# and containerd send no header at all; both mean "anonymous".
_EMPTY_CREDENTIALS = frozenset({"Og=="})


def credentials_header(header: str | None) -> str | None:
    """`header` when it offers credentials, None when the caller is anonymous: no header, or a
    Basic header whose user and password are both empty (containers/image's anonymous request).
    Any other header, well formed or not, is returned for the login check to judge."""
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded.strip() in _EMPTY_CREDENTIALS:
        return None
    return header


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TtlCache:
    """Values kept for `ttl` seconds (monotonic clock), at most `max_entries` of them."""

    def __init__(self, ttl: float, *, max_entries: int = _MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        # key → (expires, stored at, value)
        self._items: dict[object, tuple[float, float, object]] = {}

    def get(self, key: object, *, max_age: float | None = None) -> object | None:
        """The value, unless expired or (with `max_age`) stored longer ago than that."""
        found = self._items.get(key)
        if found is None:
            return None
        expires, stored, value = found
        now = time.monotonic()
        if expires < now:
            self._items.pop(key, None)
            return None
        if max_age is not None and now - stored > max_age:
            return None
        return value

    def put(self, key: object, value: object, *, ttl: float | None = None) -> None:
        """Stores `value` for the cache's TTL (or the shorter `ttl`)."""
        lifetime = self._ttl if ttl is None else min(ttl, self._ttl)
        if lifetime <= 0:
            return
        if len(self._items) >= self._max_entries:
            self._items.clear()
        now = time.monotonic()
        self._items[key] = (now + lifetime, now, value)

    def pop(self, key: object) -> None:
        self._items.pop(key, None)

    def drop_where(self, predicate: Callable[[object, object], bool]) -> None:
        """Drops every entry for which `predicate(key, value)` is true."""
        self._items = {k: v for k, v in self._items.items() if not predicate(k, v[2])}

    def clear(self) -> None:
        self._items.clear()


def credential_key(header: str) -> str:
    return hashlib.sha256(header.encode()).hexdigest()
