"""GC review-queue and event-outbox gauges on the metadata service's `/metrics`.

End to end: a `lading serve` stack (zero review delay, queue gauges refreshed every 0.1 s, two
event endpoints that refuse everything: one parks its events as pending, one dead-letters them)
scraped with Prometheus' own text parser while work is queued and collected. Unit: the gauges are
read from the refreshed snapshot, so a scrape never runs the counting queries.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.metrics import Metrics
from services.metadata.gc.store import QueueSizes
from services.metadata.gc.worker import run_gc
from services.metadata.queue_metrics import QueueMetrics
from tests.events.receiver import Receiver
from tests.gc.stack_support import image_of, layer, stubs, try_push
from tests.support import oci
from tests.support.stack import Stack, free_port

WAIT_SECONDS = 30.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} from the Prometheus text format."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Scraper:
    def __init__(self, url: str) -> None:
        self.url = url

    def scrape(self) -> Samples:
        return parse(httpx.get(self.url, timeout=10).text)

    def wait(self, check: Callable[[Samples], bool], what: str) -> Samples:
        """Scrapes until `check` holds (the gauges refresh every 0.1 s)."""
        deadline = time.monotonic() + WAIT_SECONDS
        samples = self.scrape()
        while not check(samples):
            if time.monotonic() > deadline:
                queues = {k: v for k, v in samples.items() if k[0].startswith(("lading_gc", "lading_event"))}
                raise AssertionError(f"{what}: not seen within {WAIT_SECONDS}s; last scrape: {queues}")
            time.sleep(0.05)
            samples = self.scrape()
        return samples


def queues(samples: Samples) -> dict[str, float | None]:
    return {
        "manifest": value(samples, "lading_gc_collectable", kind="manifest"),
        "link": value(samples, "lading_gc_collectable", kind="link"),
        "blob": value(samples, "lading_gc_collectable", kind="blob"),
        "deleting": value(samples, "lading_gc_blobs", state="deleting"),
        "parked": value(samples, "lading_event_outbox_rows", endpoint="parked", state="pending"),
        "dead": value(samples, "lading_event_outbox_rows", endpoint="doomed", state="dead"),
    }


def expect(**wanted: float) -> Callable[[Samples], bool]:
    return lambda samples: all(queues(samples)[key] == number for key, number in wanted.items())


@pytest.fixture
def refusing_receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    server.status = 503
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def observed(tmp_path, refusing_receiver: Receiver) -> Iterator[tuple[Stack, Scraper]]:  # type: ignore[no-untyped-def]
    port = free_port()
    common = {"url": refusing_receiver.url, "timeout_seconds": 2, "backoff_base_seconds": 3600,
              "backoff_cap_seconds": 3600}
    endpoints = [{"name": "parked", "max_attempts": 1000, **common}, {"name": "doomed", "max_attempts": 1, **common}]
    env = {
        "LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": f"127.0.0.1:{port}",
        "LADING_OBSERVABILITY__QUEUE_METRICS_INTERVAL_SECONDS": "0.1",
        "LADING_GC__REVIEW_DELAY_SECONDS": "0",
        "LADING_EVENTS__ENDPOINTS": json.dumps(endpoints),
        "LADING_EVENTS__DELIVERY_INTERVAL_SECONDS": "0.05",
    }
    with Stack(tmp_path / "data", env=env) as stack:
        yield stack, Scraper(f"http://127.0.0.1:{port}/metrics")


async def test_queue_gauges_follow_queued_and_collected_work(observed: tuple[Stack, Scraper]) -> None:
    stack, metrics = observed
    # Before anything happened: every queue reported, and empty (0 for each endpoint and state).
    first = await asyncio.to_thread(metrics.wait, lambda s: value(
        s, "lading_queue_metrics_refreshed_timestamp_seconds") is not None, "a first refresh")
    assert queues(first) == {"manifest": 0, "link": 0, "blob": 0, "deleting": 0, "parked": 0, "dead": 0}
    assert value(first, "lading_event_outbox_rows", endpoint="doomed", state="delivered") == 0
    assert value(first, "lading_gc_review_holds") == 0

    image = image_of([layer(2048)])
    stray = os.urandom(512)

    def push_then_orphan() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            ok, why = try_push(client, "q/app", image, "v1")
            assert ok, why
            # The tag goes: the manifest is untagged (collectable with retention on).
            assert client.delete("/v2/q/app/manifests/v1").status_code == 202
            # A blob no manifest uses: its link is collectable.
            assert oci.push_blob(client, "q/app", stray).status_code == 201

    await asyncio.to_thread(push_then_orphan)
    # Events: 2 blob pushes + manifest push + tag delete + stray blob push, per endpoint; the
    # refusing receiver parks them on one endpoint and dead-letters them on the other.
    queued = await asyncio.to_thread(metrics.wait, expect(manifest=1, link=1, blob=0, deleting=0, parked=5, dead=5),
                                     "queued work")
    assert value(queued, "lading_gc_blobs", state="active") == 3
    assert value(queued, "lading_gc_blob_bytes", state="active") == sum(b.size for b in image.blobs) + len(stray)

    during: dict[str, float | None] = {}

    async def between_mark_and_delete(marked: list) -> None:  # type: ignore[type-arg]
        # Claimed by the collector, bytes not yet deleted: they show as `deleting`.
        samples = await asyncio.to_thread(metrics.wait, expect(deleting=len(marked)), "blobs being deleted")
        during.update(queues(samples), marked=len(marked))

    async with stubs(stack) as (admin, blob):
        report = await run_gc(admin, blob, delete_untagged=True, after_mark=between_mark_and_delete)
    assert report.manifests_deleted == 1 and report.blobs_deleted == 3
    assert during["marked"] == 3 and during["deleting"] == 3
    # Collected: every queue empty again; the collector's manifest delete is one more event.
    done = await asyncio.to_thread(metrics.wait, expect(manifest=0, link=0, blob=0, deleting=0, parked=6, dead=6),
                                   "collected work")
    assert value(done, "lading_gc_blobs", state="active") == 0


async def test_a_scrape_reads_the_snapshot_and_never_counts() -> None:
    calls = {"gc": 0, "outbox": 0}
    second_refresh = asyncio.Event()
    sizes = QueueSizes(collectable={"manifest": 2, "link": 5, "blob": 1}, held=4,
                       blobs_by_state={"active": (10, 1000), "pending": (0, 0), "deleting": (1, 50)})

    async def gc_sizes() -> QueueSizes:
        calls["gc"] += 1
        if calls["gc"] == 2:
            second_refresh.set()
        return sizes

    async def outbox_counts() -> dict[tuple[str, str], int]:
        calls["outbox"] += 1
        return {("hook", "pending"): 7}

    metrics = Metrics("metadata")
    gauges = QueueMetrics(gc_sizes, outbox_counts, endpoints=["hook", "other"], interval_seconds=3600)
    gauges.register(metrics)
    # Before the first refresh the queue gauges are absent (not zero: unknown).
    empty = parse((await metrics.render())[0].decode())
    assert not [key for key in empty if key[0].startswith(("lading_gc", "lading_event", "lading_queue"))]

    await gauges.refresh()
    for _ in range(3):
        samples = parse((await metrics.render())[0].decode())
    assert calls == {"gc": 1, "outbox": 1}
    assert value(samples, "lading_gc_collectable", kind="link") == 5
    assert value(samples, "lading_gc_review_holds") == 4
    assert value(samples, "lading_gc_blobs", state="deleting") == 1
    assert value(samples, "lading_gc_blob_bytes", state="active") == 1000
    assert value(samples, "lading_event_outbox_rows", endpoint="hook", state="pending") == 7
    assert value(samples, "lading_event_outbox_rows", endpoint="other", state="dead") == 0

    # The background task refreshes on its own; stopping it ends the counting.
    gauges.start()
    await second_refresh.wait()
    await gauges.close()
    assert calls["gc"] == 2
