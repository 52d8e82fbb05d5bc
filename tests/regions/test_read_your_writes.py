"""Read-your-writes with a hot standby (issue 15, item 4), with real processes: a PostgreSQL
primary and its hot standby (`pg_basebackup -R`, tests/support/standby.py); two metadata replicas
that write to the primary and read from the standby; two gateways (tests/regions/site.py).

- Push through gateway 1, then at once pull through gateway 2, many times: the manifest by tag
  and by digest, the tag list and a blob HEAD are always there (0 missing reads). Without the wait
  for the standby's replay, these reads race the replication and some miss.
- The reads do come from the standby: a row written on the primary behind the planes' back
  becomes visible through the gateways only once the standby has it (shown by pausing replay).
- The metadata plane's metrics show the replication lag gauge and that writes waited.
- With the standby stopped, the site keeps answering: reads go to the primary, writes do not wait
  for the standby, and once it is back everything goes on as before.

The figure for 1,000 pushes is measured by `python -m bench.coherence --read-your-writes`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.regions.site import Site, site
from tests.support import standby
from tests.support.oci import get_manifest, image, push
from tests.support.stack import free_port

pytestmark = pytest.mark.postgres
PUSHES = 40


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, standby.Pair, str]]:
    with standby.primary_and_standby() as pair:
        pair.primary.psql("CREATE DATABASE lading")
        deadline = time.monotonic() + 30
        while "lading" not in pair.standby.psql("SELECT datname FROM pg_database"):
            assert time.monotonic() < deadline, "the standby did not replicate CREATE DATABASE"
            time.sleep(0.05)
        metrics_port = free_port()
        env = {"LADING_METADATA__READ_REPLICA_URL": pair.standby.database_url("lading")}
        with site(tmp_path_factory.mktemp("ryw"), pair.primary.database_url("lading"), metadata_env=env,
                  metadata_a_env={"LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"},
                  ) as running:
            yield running, pair, f"http://127.0.0.1:{metrics_port}/metrics"


def test_a_push_is_seen_at_once_through_another_gateway(replicated: tuple[Site, standby.Pair, str]) -> None:
    running, _, _ = replicated
    with httpx.Client(base_url=running.gateway_urls[0], timeout=30) as one, \
            httpx.Client(base_url=running.gateway_urls[1], timeout=30) as two:
        repo = f"ryw/{uuid.uuid4().hex[:10]}"
        base = image(layers=1)
        push(one, repo, base, tag="base")
        missing = []
        for n in range(PUSHES):
            manifest = image(layers=1)  # new blobs each time: their links must be seen too
            push(one, repo, manifest, tag=f"t{n}")
            checks = {
                "tag": get_manifest(two, repo, f"t{n}"),
                "digest": get_manifest(two, repo, manifest.digest, method="HEAD"),
                "blob": two.head(f"/v2/{repo}/blobs/{manifest.blobs[-1].digest}"),
            }
            missing += [(n, what, r.status_code) for what, r in checks.items() if r.status_code != 200]
            if checks["tag"].status_code == 200:
                assert checks["tag"].headers["docker-content-digest"] == manifest.digest
        assert missing == []
        tags = two.get(f"/v2/{repo}/tags/list", params={"n": 1000}).json()["tags"]
        assert set(tags) == {"base", *(f"t{n}" for n in range(PUSHES))}


def test_reads_come_from_the_standby(replicated: tuple[Site, standby.Pair, str]) -> None:
    running, pair, metrics_url = replicated
    with httpx.Client(base_url=running.gateway_urls[1], timeout=30) as two, \
            httpx.Client(base_url=running.gateway_urls[0], timeout=30) as one:
        repo = f"ryw/{uuid.uuid4().hex[:10]}"
        manifest = image(layers=1)
        push(one, repo, manifest)
        pair.standby.psql("SELECT pg_wal_replay_pause()")
        try:
            # Written on the primary directly (no plane waits for it): the standby does not have it.
            pair.primary.psql(
                "INSERT INTO tags (repository_id, name, manifest_id, updated_at) "
                f"SELECT m.repository_id, 'sideways', m.id, now() FROM manifests m "
                f"JOIN repositories r ON r.id = m.repository_id WHERE r.name = '{repo}'", database="lading")
            assert get_manifest(two, repo, "sideways").status_code == 404
        finally:
            pair.standby.psql("SELECT pg_wal_replay_resume()")
        deadline = time.monotonic() + 10
        while get_manifest(two, repo, "sideways").status_code != 200:
            assert time.monotonic() < deadline, "the standby did not catch up after replay resumed"
            time.sleep(0.05)
    text = httpx.get(metrics_url, timeout=5).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("lading_region_")}
    assert values["lading_region_replay_waits_total"] > 0
    assert values["lading_region_replication_lag_seconds"] >= 0


def test_with_the_standby_stopped_the_site_reads_from_the_primary(
    replicated: tuple[Site, standby.Pair, str],
) -> None:
    running, pair, _ = replicated
    with httpx.Client(base_url=running.gateway_urls[0], timeout=30) as one, \
            httpx.Client(base_url=running.gateway_urls[1], timeout=30) as two:
        repo = f"ryw/{uuid.uuid4().hex[:10]}"
        before = image(layers=1)
        push(one, repo, before, tag="before")
        pair.standby.stop()
        try:
            assert get_manifest(two, repo, "before").status_code == 200  # read from the primary
            during = image(layers=1)
            push(one, repo, during, tag="during")  # writes do not wait for a standby that is gone
            assert get_manifest(two, repo, "during").headers["docker-content-digest"] == during.digest
            assert two.head(f"/v2/{repo}/blobs/{during.blobs[0].digest}").status_code == 200
        finally:
            pair.standby.start()
        after = image(layers=1)
        push(one, repo, after, tag="after")
        assert get_manifest(two, repo, "after").headers["docker-content-digest"] == after.digest
