"""A pull gate's policy table, kept per process for `governance.policy_cache_seconds`: every pull
asks the gates, and the tables change rarely (a changed policy applies to pulls within that time)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Policy = TypeVar("Policy")


class PolicyCache(Generic[Policy]):
    def __init__(self, load: Callable[[], Awaitable[list[Policy]]], seconds: float) -> None:
        self._load = load
        self._seconds = seconds
        self._cached: tuple[float, list[Policy]] | None = None

    async def get(self, *, fresh: bool = False) -> list[Policy]:
        """The policies, read again when `fresh` or older than the cache time."""
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._cached[0] < self._seconds:
            return self._cached[1]
        found = await self._load()
        self._cached = (now, found)
        return found
