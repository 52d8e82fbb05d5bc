"""bcrypt hashing and checking, run in worker threads so the event loop never waits on it.

bcrypt only reads the first 72 bytes of a secret (bcrypt 5 refuses longer ones): longer passwords
are refused when set (`PasswordTooLong`) and never match when checked. Checking an unknown name
still runs bcrypt against a dummy hash of the same cost, so the answer takes as long either way.
"""

from __future__ import annotations

import asyncio
import secrets

import bcrypt

MAX_SECRET_BYTES = 72


class PasswordTooLong(ValueError):
    """The secret is longer than bcrypt's 72 bytes."""


class Passwords:
    """bcrypt with a fixed work factor and at most `concurrency` hashes at once."""

    def __init__(self, *, rounds: int, concurrency: int = 4) -> None:
        self._rounds = rounds
        self._slots = asyncio.Semaphore(concurrency)
        # Compared against when the account does not exist (see the module docstring); made on
        # first use, in a worker thread like every other hash.
        self._dummy: str | None = None

    async def hash(self, secret: str) -> str:
        """The bcrypt hash of `secret`. Raises PasswordTooLong past 72 bytes, ValueError when empty."""
        raw = secret.encode()
        if not raw:
            raise ValueError("empty secret")
        if len(raw) > MAX_SECRET_BYTES:
            raise PasswordTooLong(f"passwords are limited to {MAX_SECRET_BYTES} bytes (bcrypt)")
        async with self._slots:
            hashed = await asyncio.to_thread(bcrypt.hashpw, raw, bcrypt.gensalt(self._rounds))
        return hashed.decode()

    async def check(self, secret: str, hashed: str | None) -> bool:
        """True when `secret` matches `hashed`; `hashed=None` (no such account) is checked against
        the dummy hash and is always False."""
        raw = secret.encode()
        if hashed is None and self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        target = (hashed or self._dummy or "").encode()
        if not raw or len(raw) > MAX_SECRET_BYTES:
            raw = b"\x00"  # still pay for one bcrypt, then fail
            hashed = None
        async with self._slots:
            matched = await asyncio.to_thread(_checkpw, raw, target)
        return matched and hashed is not None


def _checkpw(raw: bytes, target: bytes) -> bool:
    try:
        return bcrypt.checkpw(raw, target)
    except ValueError:  # a corrupt stored hash never matches
        return False


def new_robot_secret() -> str:
    """43 URL-safe characters (256 bits), within bcrypt's 72 bytes."""
    return secrets.token_urlsafe(32)


