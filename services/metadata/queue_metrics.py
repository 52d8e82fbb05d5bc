"""Queue sizes on the metadata service's `/metrics`: the GC review queues and the event outbox.

Counting them takes SQL (a few COUNT queries), so a scrape never does: a background task refreshes
a snapshot every `observability.queue_metrics_interval_seconds` (default 15), one refresh at a
time, and the gauge callbacks only read that snapshot. Until the first refresh the gauges are
absent; when a refresh fails the previous values stay and
`lading_queue_metrics_refreshed_timestamp_seconds` stops moving (alert on its age).

Gauges (every replica reports the same database-wide numbers; aggregate with max, not sum):
- `lading_gc_collectable{kind}`: what a GC run would remove now (`manifest`: untagged manifests
  nothing keeps, deleted only with gc.delete_untagged_manifests; `link`: repository links no
  manifest there uses; `blob`: blobs no repository links, plus those left `deleting`);
- `lading_gc_review_holds`: items held back until their review delay is over;
- `lading_gc_blobs{state}` and `lading_gc_blob_bytes{state}`: blob rows by state (`active`,
  `pending` = first link being confirmed, `deleting` = claimed by the collector);
- `lading_event_outbox_rows{endpoint,state}`: outbox rows by endpoint and state (`pending`,
  `delivered`, `dead`), with 0 for every configured endpoint and state that has none;
- `lading_queue_metrics_refreshed_timestamp_seconds`: Unix time of the last successful refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.common.metrics import Metrics
from services.common.tasks import cancel_and_wait
from services.metadata.events.tables import STATES
from services.metadata.gc.store import QueueSizes

log = logging.getLogger("lading.metadata.metrics")

GC_KINDS = ("manifest", "link", "blob")


@dataclass(slots=True)
class _Snapshot:
    gc: QueueSizes | None = None
    outbox: dict[tuple[str, str], int] = field(default_factory=dict)
    outbox_known: bool = False
    refreshed_at: float | None = None


class QueueMetrics:
    """Publishes the queue gauges (see the module docstring) from a periodically refreshed snapshot.

    `gc_sizes` is `GcStore.queue_sizes`, `outbox_counts` is `OutboxStore.counts` (None: no events
    configured, no outbox gauge), `endpoints` the configured endpoint names.
    """

    def __init__(self, gc_sizes: Callable[[], Awaitable[QueueSizes]],
                 outbox_counts: Callable[[], Awaitable[dict[tuple[str, str], int]]] | None, *,
                 endpoints: Sequence[str] = (), interval_seconds: float = 15.0) -> None:
        self._gc_sizes = gc_sizes
        self._outbox_counts = outbox_counts
        self._endpoints = list(endpoints)
        self._interval = interval_seconds
        self._snapshot = _Snapshot()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def register(self, metrics: Metrics) -> None:
        snapshot = lambda: self._snapshot  # noqa: E731 - read at each scrape, never replaced here

        def collectable() -> dict[tuple[str, ...], float]:
            sizes = snapshot().gc
            return {} if sizes is None else {(kind,): sizes.collectable.get(kind, 0) for kind in GC_KINDS}

        # Labelless gauges answer None (left out of the scrape) until the first refresh.
        def holds() -> float | None:
            sizes = snapshot().gc
            return None if sizes is None else sizes.held

        def blob_rows(index: int) -> Callable[[], dict[tuple[str, ...], float]]:
            def read() -> dict[tuple[str, ...], float]:
                sizes = snapshot().gc
                return {} if sizes is None else {(state,): pair[index] for state, pair in sizes.blobs_by_state.items()}

            return read

        def outbox() -> dict[tuple[str, ...], float]:
            current = snapshot()
            if not current.outbox_known:
                return {}
            rows: dict[tuple[str, ...], float] = {(name, state): 0 for name in self._endpoints for state in STATES}
            rows.update(current.outbox)
            return rows

        def refreshed() -> float | None:
            return snapshot().refreshed_at

        metrics.register_gauge_callback(
            "lading_gc_collectable", "items a GC run would remove now, by kind (manifest, link, blob)",
            collectable, labels=("kind",))
        metrics.register_gauge_callback(
            "lading_gc_review_holds", "items held back from collection until their review delay is over",
            holds)  # type: ignore[arg-type]
        metrics.register_gauge_callback(
            "lading_gc_blobs", "blob rows by state (active, pending, deleting)", blob_rows(0), labels=("state",))
        metrics.register_gauge_callback(
            "lading_gc_blob_bytes", "bytes of blob rows by state (active, pending, deleting)", blob_rows(1),
            labels=("state",))
        if self._outbox_counts is not None:
            metrics.register_gauge_callback(
                "lading_event_outbox_rows", "event outbox rows by endpoint and state (pending, delivered, dead)",
                outbox, labels=("endpoint", "state"))
        metrics.register_gauge_callback(
            "lading_queue_metrics_refreshed_timestamp_seconds",
            "Unix time of the last successful refresh of the queue gauges", refreshed)  # type: ignore[arg-type]

    async def refresh(self) -> None:
        """Counts every queue once and swaps the snapshot in. Raises what the database raised
        (the previous snapshot stays)."""
        sizes = await self._gc_sizes()
        counts = await self._outbox_counts() if self._outbox_counts is not None else {}
        self._snapshot = _Snapshot(gc=sizes, outbox=dict(counts), outbox_known=self._outbox_counts is not None,
                                   refreshed_at=time.time())

    def start(self) -> None:
        """Refreshes now and then every `interval_seconds` until `close()`."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lading-queue-metrics")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("queue metrics refreshed again")
                self._failing = False
            except Exception as error:  # noqa: BLE001 - a database blip must not end the refresher
                if not self._failing:
                    log.warning("could not refresh the queue metrics (keeping the last values): %s", error)
                self._failing = True
            await asyncio.sleep(self._interval)

