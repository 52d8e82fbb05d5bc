"""A backing store goes away for a few seconds: PostgreSQL (a throwaway server, stopped with
`pg_ctl stop -m fast` and started again on the same socket), then S3 (SeaweedFS frozen with
SIGSTOP, thawed with SIGCONT).

While it is away the registry answers 503 with the OCI error body (code UNAVAILABLE) within the
gRPC deadline, never a 500 and never a hang (every request carries a client timeout a little past
that deadline); once it is back, requests succeed again without restarting anything. Recovery
times are printed (run with `-s`) and recorded with `record_property`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.ha.cluster import (
    GRPC_TIMEOUT_SECONDS,
    Cluster,
    S3Storage,
    blob_storage,
    http_client,
)
from tests.ha.pgserver import ThrowawayPostgres, throwaway_postgres
from tests.ha.traffic import CleanFailure, pull_and_verify, push_image
from tests.support.haproxy import haproxy_binary
from tests.support.oci import ACCEPT_ALL, image

pytestmark = pytest.mark.ha

OUTAGE_SECONDS = 3.0
RECOVERY_LIMIT_SECONDS = 60.0
# A request may take the gateway's gRPC deadline plus this before it counts as a hang.
HANG_MARGIN_SECONDS = 5.0


@dataclass
class Outage:
    cluster: Cluster
    postgres: ThrowawayPostgres


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    haproxy_binary()
    workdir = tmp_path_factory.mktemp("ha-outage")
    with throwaway_postgres() as postgres, blob_storage(workdir) as storage:
        with Cluster(workdir, postgres.url, storage) as cluster:
            yield Outage(cluster, postgres)


@pytest.fixture
def client(outage: Outage) -> Iterator[httpx.Client]:
    with http_client(outage.cluster.base_url, timeout=GRPC_TIMEOUT_SECONDS + HANG_MARGIN_SECONDS) as http:
        yield http


def assert_unavailable(action: Callable[[], object]) -> str:
    """Runs `action` (a push or pull); it must fail with 503 UNAVAILABLE. Returns the reason."""
    with pytest.raises(CleanFailure) as failure:
        action()
    assert failure.value.reason == "503 UNAVAILABLE", failure.value.reason
    return failure.value.reason


def recover(action: Callable[[], object]) -> tuple[float, int]:
    """Retries `action` until it succeeds; returns (seconds it took, failed attempts before)."""
    began = time.monotonic()
    failures = 0
    while True:
        try:
            action()
            return time.monotonic() - began, failures
        except CleanFailure:
            failures += 1
            if time.monotonic() - began > RECOVERY_LIMIT_SECONDS:
                raise
            time.sleep(0.1)


def report(record_property: pytest.RecordProperty, name: str, figures: dict[str, object]) -> None:
    print(f"\nHA outage figures ({name}):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"{name}_{key}", value)


def test_postgres_outage_answers_503_then_recovers_by_itself(
    outage: Outage, client: httpx.Client, record_property: pytest.RecordProperty
) -> None:
    repo = "outage/postgres"
    before = image(2)
    push_image(client, repo, before, "before")

    outage.postgres.stop()
    answered = []
    try:
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            began = time.monotonic()
            response = client.get(f"/v2/{repo}/manifests/before", headers={"accept": ACCEPT_ALL})
            answered.append(time.monotonic() - began)
            assert response.status_code == 503, response.text
            assert [error["code"] for error in response.json()["errors"]] == ["UNAVAILABLE"]
        assert_unavailable(lambda: push_image(client, repo, image(1), "during"))
    finally:
        outage.postgres.start()

    restarted_at = time.monotonic()
    read_recovery, read_failures = recover(lambda: pull_and_verify(client, repo, "before", before))
    after = image(2)
    write_recovery, write_failures = recover(lambda: push_image(client, repo, after, "after"))
    pull_and_verify(client, repo, "after", after)
    report(record_property, "postgres", {
        "answers_during_outage": len(answered),
        "slowest_answer_during_outage_s": round(max(answered), 3),
        "read_recovery_s": round(read_recovery, 3), "read_failures_after_restart": read_failures,
        "write_recovery_s": round(time.monotonic() - restarted_at, 3),
        "write_failures_after_restart": write_failures, "push_after_restart_s": round(write_recovery, 3),
    })


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block, SIGCONT after (always)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_s3_outage_answers_503_then_recovers_by_itself(
    outage: Outage, client: httpx.Client, record_property: pytest.RecordProperty
) -> None:
    storage = outage.cluster.storage
    assert isinstance(storage, S3Storage), "the HA harness stores blobs on SeaweedFS S3"
    repo = "outage/s3"
    before = image(1)
    push_image(client, repo, before, "before")

    attempts = []
    with frozen(storage.seaweed.pid):
        frozen_at = time.monotonic()
        while time.monotonic() - frozen_at < OUTAGE_SECONDS:
            began = time.monotonic()
            assert_unavailable(lambda: push_image(client, repo, image(1), "during"))
            attempts.append(time.monotonic() - began)
        # Manifests live in the metadata plane: they are still served while S3 is away.
        served = client.get(f"/v2/{repo}/manifests/before", headers={"accept": ACCEPT_ALL})
        assert served.status_code == 200 and served.content == before.payload
    after = image(1)
    push_recovery, failures = recover(lambda: push_image(client, repo, after, "after"))
    pull_and_verify(client, repo, "after", after)
    pull_and_verify(client, repo, "before", before)
    report(record_property, "s3", {
        "failed_pushes_during_outage": len(attempts),
        "slowest_failure_during_outage_s": round(max(attempts), 3),
        "push_recovery_s": round(push_recovery, 3), "push_failures_after_thaw": failures,
    })
