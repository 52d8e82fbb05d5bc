"""Keeps a fetch lease (services/metadata/fetch_leases.py) alive while its holder works.

A lease lapses after its lifetime (`proxy.fetch_lease_seconds`) so that waiters take over from a
holder that died; a live holder therefore renews it, every third of the lifetime, so a fetch
longer than the lifetime keeps it and one missed renewal (a slow database) does not lose it.
Used by the gateway (through ProxyService.RenewBlobFetch / RegionFetchService.RenewRegionFetch)
and by the metadata plane's mirror runs (directly).

`renew()` returns False once the lease is no longer the holder's (it lapsed and another took it
over, or it was released): the keeper then stops, and the holder no longer claims it (ending the
fetch releases nothing: release matches the lease id). A renewal that fails (the metadata plane
unreachable for a moment) is tried again at the next tick; one the peer does not implement (an
older metadata plane: UNSUPPORTED) stops the keeper quietly, and the lease lapses as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.leases")


class LeaseKeeper:
    def __init__(self, renew: Callable[[], Awaitable[bool]], lifetime_seconds: float, *, describe: str,
                 limit_seconds: float | None = None) -> None:
        """`limit_seconds`: stop renewing after this long whatever happens (the longest the work
        holding the lease may run), so a holder that forgot to stop cannot hold it forever."""
        self._renew = renew
        self._every = lifetime_seconds / 3
        self._describe = describe
        self._limit = limit_seconds
        self._task: asyncio.Task[None] | None = None
        self.lost = False

    def start(self) -> LeaseKeeper:
        if self._every > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lading-lease-{self._describe}")
        return self

    def stop(self) -> None:
        """Stops renewing (the holder is done, or ends the lease itself)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def __aenter__(self) -> LeaseKeeper:
        return self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self.stop()

    async def _run(self) -> None:
        until = None if self._limit is None else time.monotonic() + self._limit
        while until is None or time.monotonic() < until:
            await asyncio.sleep(self._every)
            try:
                held = await self._renew()
            except RegistryError as error:
                if error.kind is ErrorKind.UNSUPPORTED:
                    return  # an older metadata plane: the lease lapses on its own
                log.warning("could not renew the lease of %s (tried again): %s", self._describe, error.message)
                continue
            except Exception as error:  # noqa: BLE001 - a renewal that failed is tried again
                log.warning("could not renew the lease of %s (tried again): %s", self._describe, error)
                continue
            if not held:
                self.lost = True
                log.warning("the lease of %s lapsed and was taken over; no longer renewed", self._describe)
                return
