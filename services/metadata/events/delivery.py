"""The delivery worker: POSTs pending outbox rows to their endpoints, at least once.

Each round, every endpoint (concurrently, so a slow endpoint does not hold back the others) claims
a batch of due rows (store.py), POSTs them as one envelope with the endpoint's headers and timeout,
and marks them delivered on a 2xx answer, or counts a failed attempt (exponential backoff with a
cap, dead after max_attempts). Redirects are never followed: a 3xx is a failed attempt, since
following one would send the events and the endpoint's headers to wherever the receiver points.
Before each POST the destination is resolved and checked, and the request goes to the checked
address (destinations.py); a refused destination is a failed attempt too. URLs in log lines and in
the errors kept on the rows (`lading events list`) are redacted. An endpoint whose batch was full is
served again at once; otherwise the worker sleeps `delivery_interval_seconds` or until this
process commits a change (`wake()`, called by the servicer), whichever comes first. All state is in the
database: a restarted or another replica's worker carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from services.common.settings import EventEndpointSettings, EventsSettings
from services.common.tasks import cancel_and_wait
from services.metadata.events.destinations import (
    DestinationPolicy,
    DestinationRefused,
    Resolver,
    pinned_request,
    redact_url,
    scrub,
    validate,
)
from services.metadata.events.envelope import MEDIA_TYPES, envelope
from services.metadata.events.store import Claimed, OutboxStore
from services.metadata.store.dialect import is_unavailable

if TYPE_CHECKING:
    import httpx

    from services.metadata.replication.replicator import Replicator

log = logging.getLogger("lading.metadata.events")

# Purge delivered rows at most this often.
_PURGE_EVERY_SECONDS = 3600.0
# How long close() tries to hand back unsettled claims (after that they wait out their lease).
_RELEASE_TIMEOUT_SECONDS = 5.0


class DeliveryWorker:
    def __init__(self, settings: EventsSettings, store: OutboxStore, *, resolve: Resolver | None = None) -> None:
        """Raises EventsConfigError for endpoints or an allow-list that cannot work. `resolve`
        replaces the system resolver (tests)."""
        self._settings = settings
        self._store = store
        self._destinations = validate(settings)
        self._policy = DestinationPolicy(settings.allowed_destinations, resolve)
        self._task: asyncio.Task[None] | None = None
        # One client (connection pool) per endpoint: connections are pooled by the address they
        # were pinned to, so two host names on one address must not share a TLS connection that was
        # checked for only one of them.
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._last_purge = 0.0
        self._wakeup = asyncio.Event()
        # Endpoint name → the batch claimed and not yet settled (close() hands it back).
        self._unsettled: dict[str, list[Claimed]] = {}
        # Endpoints whose events are delivered by copying content (services/metadata/replication).
        self._replicators: Mapping[str, Replicator] = {}
        self.delivered_total = 0
        self.dead_total = 0

    def use_replicators(self, replicators: Mapping[str, Replicator]) -> None:
        """Endpoint name → the replicator that delivers its events instead of a POST."""
        self._replicators = replicators

    def start(self) -> None:
        """Starts the background task (no-op without endpoints)."""
        if self._settings.endpoints and self._task is None:
            self._task = asyncio.create_task(self._run(), name="lading-event-delivery")

    def wake(self) -> None:
        """Called after this process committed events: deliver now instead of at the next poll."""
        self._wakeup.set()

    async def close(self) -> None:
        """Stops the task and hands back the rows it had claimed but not settled, so a restarted
        or another replica's worker sends them at once instead of after the lease (at least once:
        a POST cut short may have arrived). If the database cannot be reached they wait out the lease."""
        await cancel_and_wait(self._task)
        self._task = None
        batches = list(self._unsettled.values())
        self._unsettled.clear()
        if batches:
            try:
                async with asyncio.timeout(_RELEASE_TIMEOUT_SECONDS):
                    for batch in batches:
                        await self._store.release(batch)
            except Exception as exc:  # noqa: BLE001 - stopping must not fail; the lease still runs out
                log.warning("event delivery: %d claimed event(s) wait out their lease: %s",
                            sum(map(len, batches)), exc)
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

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
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.delivery_interval_seconds):
                        await self._wakeup.wait()
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
        self._unsettled[endpoint.name] = batch
        try:
            full = await self._deliver(endpoint, batch)
        except asyncio.CancelledError:
            raise  # still unsettled: close() hands the claim back
        except BaseException:
            self._unsettled.pop(endpoint.name, None)  # e.g. the database went away: the lease runs out
            raise
        self._unsettled.pop(endpoint.name, None)
        return full

    async def _deliver(self, endpoint: EventEndpointSettings, batch: list[Claimed]) -> bool:
        """POSTs a claimed batch and settles it. True when the batch was full and delivered."""
        error = await self._post(endpoint, [row.body for row in batch])
        if error is None:
            await self._store.delivered([row.id for row in batch])
            self.delivered_total += len(batch)
            log.debug("delivered %d event(s) to %s (%s)", len(batch), endpoint.name,
                      self._destinations[endpoint.name].display)
            return len(batch) == self._settings.batch_size
        dead = await self._store.failed(
            batch, error, max_attempts=endpoint.max_attempts,
            base=endpoint.backoff_base_seconds, cap=endpoint.backoff_cap_seconds,
        )
        self.dead_total += dead
        log.warning("event delivery to %s (%s) failed for %d event(s)%s: %s", endpoint.name,
                    self._destinations[endpoint.name].display, len(batch), f", {dead} now dead" if dead else "", error)
        return False

    async def _post(self, endpoint: EventEndpointSettings, bodies: list[str]) -> str | None:
        """None on success, else why it failed (redacted: it is logged and kept on the rows)."""
        replicator = self._replicators.get(endpoint.name)
        if replicator is not None:
            return scrub(await replicator.deliver(bodies), endpoint.url) or None
        return scrub(await self._attempt(endpoint, bodies), endpoint.url) or None

    async def _attempt(self, endpoint: EventEndpointSettings, bodies: list[str]) -> str:
        """"" on success, else why it failed."""
        import httpx  # loaded by the first delivery, not by every metadata plane at start-up

        client = self._clients.get(endpoint.name)
        if client is None:
            # No redirects; no proxy or .netrc from the environment (neither may reroute a delivery
            # or add credentials); the environment's CA bundle (SSL_CERT_FILE) still applies.
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                       verify=httpx.create_ssl_context(trust_env=True))
            self._clients[endpoint.name] = client
        destination = self._destinations[endpoint.name]
        try:
            addresses = await self._policy.addresses_for(destination)
        except DestinationRefused as refused:
            return f"destination refused: {refused}"
        body = envelope(bodies)
        for index, address in enumerate(addresses):
            url, pinned_headers, extensions = pinned_request(destination, address)
            headers = {**endpoint.headers, **pinned_headers, "content-type": MEDIA_TYPES[endpoint.envelope_version]}
            if destination.authorization is not None:
                headers["Authorization"] = destination.authorization
            try:
                response = await client.post(
                    url, content=body, headers=headers, timeout=endpoint.timeout_seconds, extensions=extensions,
                )
                break
            except httpx.ConnectError as exc:
                if index + 1 == len(addresses):  # nothing was sent: the next checked address may answer
                    return f"{type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
        if response.is_redirect or 300 <= response.status_code < 400:
            location = response.headers.get("location", "")
            return (f"HTTP {response.status_code} redirect{' to ' + redact_url(location) if location else ''}, "
                    "not followed: event deliveries never follow redirects; set the endpoint's url to the "
                    "final address")
        if not response.is_success:
            return f"HTTP {response.status_code}"
        return ""
