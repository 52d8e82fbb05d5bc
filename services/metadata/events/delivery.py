"""The delivery worker: POSTs pending outbox rows to their endpoints, at least once.

Each round, every endpoint (concurrently, so a slow endpoint does not hold back the others) claims
a batch of due rows (store.py), POSTs them as one envelope with the endpoint's headers and timeout,
and marks them delivered on any 2xx/3xx answer (redirects followed), or counts a failed attempt
(exponential backoff with a cap, dead after max_attempts). An endpoint whose batch was full is
served again at once; otherwise the worker sleeps `delivery_interval_seconds` or until this
process commits a change (`wake()`, called by the servicer), whichever comes first. All state is in the
database: a restarted or another replica's worker carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from services.common.settings import EventEndpointSettings, EventsSettings
from services.common.tasks import cancel_and_wait
from services.metadata.events.envelope import MEDIA_TYPE, envelope
from services.metadata.events.store import OutboxStore
from services.metadata.store.dialect import is_unavailable

log = logging.getLogger("lading.metadata.events")

# Purge delivered rows at most this often.
_PURGE_EVERY_SECONDS = 3600.0


class DeliveryWorker:
    def __init__(self, settings: EventsSettings, store: OutboxStore) -> None:
        self._settings = settings
        self._store = store
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._last_purge = 0.0
        self._wakeup = asyncio.Event()
        self.delivered_total = 0
        self.dead_total = 0

    def start(self) -> None:
        """Starts the background task (no-op without endpoints)."""
        if self._settings.endpoints and self._task is None:
            self._task = asyncio.create_task(self._run(), name="lading-event-delivery")

    def wake(self) -> None:
        """Called after this process committed events: deliver now instead of at the next poll."""
        self._wakeup.set()

    async def close(self) -> None:
        """Stops the task; rows it had claimed but not settled are sent again after the lease."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a database outage
                if is_unavailable(exc):
                    log.warning("event delivery: database unavailable: %s", exc)
                else:
                    log.exception("event delivery round failed")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._settings.delivery_interval_seconds)
                except TimeoutError:
                    pass
            self._wakeup.clear()

    async def run_once(self) -> bool:
        """One round over every endpoint. Returns True when some endpoint had a full batch."""
        results = await asyncio.gather(*(self._serve(e) for e in self._settings.endpoints))
        retention = self._settings.delivered_retention_seconds
        if retention and time.monotonic() - self._last_purge > _PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            await self._store.purge_delivered(retention)
        return any(results)

    async def _serve(self, endpoint: EventEndpointSettings) -> bool:
        batch = await self._store.claim(endpoint.name, self._settings.batch_size, self._settings.lease_seconds)
        if not batch:
            return False
        error = await self._post(endpoint, [row.body for row in batch])
        if error is None:
            await self._store.delivered([row.id for row in batch])
            self.delivered_total += len(batch)
            return len(batch) == self._settings.batch_size
        dead = await self._store.failed(
            batch, error, max_attempts=endpoint.max_attempts,
            base=endpoint.backoff_base_seconds, cap=endpoint.backoff_cap_seconds,
        )
        self.dead_total += dead
        log.warning("event delivery to %s (%s) failed for %d event(s)%s: %s", endpoint.name, endpoint.url,
                    len(batch), f", {dead} now dead" if dead else "", error)
        return False

    async def _post(self, endpoint: EventEndpointSettings, bodies: list[str]) -> str | None:
        """None on success, else why it failed."""
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        headers = {**endpoint.headers, "content-type": MEDIA_TYPE}
        try:
            response = await self._client.post(
                endpoint.url, content=envelope(bodies), headers=headers, timeout=endpoint.timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code >= 400:
            return f"HTTP {response.status_code}"
        return None
