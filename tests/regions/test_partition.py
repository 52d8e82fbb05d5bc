"""Two regions as the issue draws them, each behind its own HAProxy, and the link between them cut
(issue 15: topology, "Faults"). One module-scoped site:

region eu (primary) and region us (replica), each with HAProxy, two gateways, a metadata plane and
a blob plane, every link between them through a relay the test cuts (tests/regions/two_regions.py).
`partition.cut()` resets every open connection on those links and refuses new ones, as a link
going down looks to the planes; `partition.mend()` brings the links back. Nothing is restarted.

- skopeo copies images through each region's HAProxy: pushed in one region, pulled in the other;
- cut off from the primary, region us keeps serving reads (manifests, tags, blobs it holds), its
  writes answer 503 UNAVAILABLE naming the primary region, `lading region status` says the primary
  is unreachable, while region eu takes writes as usual; once the link is back, us replays what eu
  took meanwhile and its writes go through again, without restarts;
- the link dropping packets instead (nothing reset or refused): writes answer 503 once the
  forward timeout has passed, reads go on, writes recover when the link is back;
- us's standby stopped: reads fail over to the primary region (`regions.read_failover =
  "primary"`, set here); with the link cut as well they answer 503 naming the standby and the
  primary region; once the standby is back, reads are answered in the region again;
- GC: blobs whose bytes are in us's storage (fetched there on a miss, or pushed there) and that eu's
  collector deleted are deleted from us's storage by us's collector (gc.interval_seconds in the
  replica region: claims on the primary, bytes in the region), and what is still referenced stays.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from lading.blob.v1 import blob_pb2, blob_pb2_grpc
from lading.metadata.v1 import metadata_pb2, metadata_pb2_grpc

from services.common.errors import ErrorKind, from_rpc_error
from tests.regions.skopeo_trips import skopeo_round_trip
from tests.regions.two_regions import Region, Regions, two_regions
from tests.support.haproxy import haproxy_binary
from tests.support.oci import (
    error_codes,
    get_manifest,
    image,
    push,
    push_manifest_only,
)
from tests.support.stack import LadingProcess, child_env, lading_command, running, wait_until_path_exists

pytestmark = pytest.mark.postgres
# Orphan bytes (and bytes the primary forgot) older than this go; us's collector runs this often.
GRACE_SECONDS = 4
GC_INTERVAL_SECONDS = 1


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    haproxy_binary()  # skip (or fail with LADING_TEST_REQUIRE_CLIENTS=1) before starting anything
    # The primary collects when `lading gc` runs (no review delay here); us's collector runs every
    # second and deletes from us's storage what no region references (past the primary's grace).
    # While us's standby is down, us's reads are answered by eu.
    with two_regions(tmp_path_factory.mktemp("partition"),
                     eu_env={"LADING_GC__REVIEW_DELAY_SECONDS": "0",
                             "LADING_GC__ORPHAN_GRACE_SECONDS": str(GRACE_SECONDS)},
                     us_env={"LADING_GC__INTERVAL_SECONDS": str(GC_INTERVAL_SECONDS),
                             "LADING_REGIONS__READ_FAILOVER": "primary"}) as built:
        yield built


def _repo() -> str:
    return f"regions/{uuid.uuid4().hex[:10]}"


def _status(region: Region) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lading_command("region", "status", "--json", "--metadata", f"unix:{region.metadata_socket}"),
                          capture_output=True, text=True, timeout=60, env=child_env())


def _eventually(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.2)


def _stored(region: Region, digest: str) -> bool:
    """Whether the region's own storage holds the blob (its blob plane's StatBlob)."""
    with grpc.insecure_channel(f"unix:{region.blob_socket}") as channel:
        try:
            blob_pb2_grpc.BlobServiceStub(channel).StatBlob(blob_pb2.StatBlobRequest(digest=digest), timeout=10)
        except grpc.RpcError as error:
            if from_rpc_error(error).kind is ErrorKind.BLOB_UNKNOWN:
                return False
            raise
    return True


def _pull_blob(client: httpx.Client, repo: str, digest: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)


def test_skopeo_copies_through_each_regions_haproxy(regions: Regions, tmp_path: Path) -> None:
    """Pushed through one region's HAProxy, pulled through the other's (round-robin over its two
    gateways): the replica region's own reads, writes forwarded to the primary, and blob bytes
    fetched between regions on a miss, all through the load balancer clients use."""
    for pushed_in, pulled_in in ((regions.eu, regions.us), (regions.us, regions.eu)):
        skopeo_round_trip(tmp_path, f"skopeo/{pushed_in.name}", pushed_in.haproxy.hostport, pulled_in.haproxy.hostport)


def test_a_replica_region_partitioned_from_the_primary_reads_on_refuses_writes_and_recovers(
        regions: Regions) -> None:
    repo = _repo()
    kept, during, after = image(layers=1), image(layers=1), image(layers=1)
    with httpx.Client(base_url=regions.us.url, timeout=30) as us, \
            httpx.Client(base_url=regions.eu.url, timeout=30) as eu:
        push(us, repo, kept, tag="kept")
        elsewhere = image(layers=1)  # pushed in eu, never pulled in us: us's storage lacks it
        push(eu, repo, elsewhere, tag="elsewhere")
        _eventually("us did not replay eu's push", lambda: get_manifest(us, repo, "elsewhere").status_code == 200)
        regions.partition.cut()
        try:
            # Reads go on in us: manifests and tags from its standby, the bytes from its storage.
            for _ in range(4):  # every gateway behind HAProxy, twice
                pulled = get_manifest(us, repo, "kept")
                assert pulled.status_code == 200 and pulled.content == kept.payload, pulled.text
                assert _pull_blob(us, repo, kept.blobs[0].digest).content == kept.blobs[0].data
            assert us.get(f"/v2/{repo}/tags/list").json()["tags"] == ["elsewhere", "kept"]
            # A blob us's storage lacks cannot be fetched from eu meanwhile: 502 UNAVAILABLE naming
            # the region it could not reach (the source failed, as with a pull-through upstream), not a 404.
            lacking = _pull_blob(us, repo, elsewhere.blobs[-1].digest)
            assert lacking.status_code == 502, f"{lacking.status_code} {lacking.text}"
            assert error_codes(lacking) == ["UNAVAILABLE"], lacking.text
            assert "no other region could serve it (eu:" in lacking.json()["errors"][0]["message"]
            # Writes answer 503 UNAVAILABLE naming the primary region, within the forward timeout.
            started = time.monotonic()
            refused = push_manifest_only(us, repo, "refused", kept)
            assert refused.status_code == 503, refused.text
            assert error_codes(refused) == ["UNAVAILABLE"]
            assert "primary region 'eu'" in refused.json()["errors"][0]["message"]
            assert time.monotonic() - started < 10
            deleted = us.delete(f"/v2/{repo}/manifests/{kept.digest}")
            assert deleted.status_code == 503 and "primary region 'eu'" in deleted.text, deleted.text
            status = _status(regions.us)
            assert status.returncode == 1, status.stdout + status.stderr
            assert json.loads(status.stdout)["peers"][0]["reachable"] is False
            # The primary region is not held up by the partition.
            push(eu, repo, during, tag="during")
        finally:
            regions.partition.mend()
        # Once the link is back, without restarting anything: us's standby replays what eu took
        # meanwhile, and us's writes go through again (and are read back at once).
        _eventually("us did not replay the push made in eu during the partition",
                    lambda: get_manifest(us, repo, "during").status_code == 200)
        deadline = time.monotonic() + 30
        while True:
            try:
                push(us, repo, after, tag="after")
                break
            except AssertionError as failed:
                assert time.monotonic() < deadline, f"writes did not recover after the partition: {failed}"
                time.sleep(0.2)
        assert get_manifest(us, repo, "after").headers["docker-content-digest"] == after.digest
        assert get_manifest(eu, repo, "after").headers["docker-content-digest"] == after.digest
        assert us.get(f"/v2/{repo}/tags/list").json()["tags"] == ["after", "during", "elsewhere", "kept"]
        # And what us lacked is fetched from eu again.
        assert _pull_blob(us, repo, elsewhere.blobs[-1].digest).content == elsewhere.blobs[-1].data
    status = _status(regions.us)
    assert status.returncode == 0 and json.loads(status.stdout)["peers"][0]["reachable"] is True


def test_when_the_link_drops_packets_writes_answer_503_within_the_forward_timeout(regions: Regions) -> None:
    """The quiet partition: nothing is reset or refused, bytes vanish. Only deadlines notice: a write
    answers 503 naming the primary region once `regions.forward_timeout_seconds` (3 s here) has
    passed, not when the client gives up; reads go on; after the link is back writes go through."""
    repo = _repo()
    kept, after = image(layers=1), image(layers=1)
    with httpx.Client(base_url=regions.us.url, timeout=60) as us:
        push(us, repo, kept, tag="kept")
        regions.partition.blackhole()
        try:
            started = time.monotonic()
            refused = push_manifest_only(us, repo, "refused", kept)
            waited = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert error_codes(refused) == ["UNAVAILABLE"]
            assert "primary region 'eu'" in refused.json()["errors"][0]["message"]
            assert 2.5 < waited < 15, f"answered after {waited:.1f} s (forward timeout: 3 s)"
            assert us.get(f"/v2/{repo}/tags/list").json()["tags"] == ["kept"]
            assert _pull_blob(us, repo, kept.blobs[0].digest).content == kept.blobs[0].data
        finally:
            regions.partition.mend()
        deadline = time.monotonic() + 30
        while True:
            try:
                push(us, repo, after, tag="after")
                break
            except AssertionError as failed:
                assert time.monotonic() < deadline, f"writes did not recover after the blackhole: {failed}"
                time.sleep(0.2)
        assert get_manifest(us, repo, "after").headers["docker-content-digest"] == after.digest


def test_with_the_standby_stopped_reads_fail_over_to_the_primary_or_answer_503(regions: Regions) -> None:
    repo = _repo()
    pushed, later = image(layers=1), image(layers=1)
    # A second metadata plane of region us with the default regions.read_failover ("none").
    socket = regions.us.metadata_socket.with_name("us-none.sock")
    env = {**regions.us.metadata._env, "LADING_METADATA__LISTEN": f"unix://{socket}",
           "LADING_REGIONS__READ_FAILOVER": "none", "LADING_GC__INTERVAL_SECONDS": "0",
           "LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": ""}
    no_failover = LadingProcess("metadata-us-none", regions.us.metadata.command, log_dir=regions.root / "logs",
                                cwd=regions.root, env=env, exact_env=True)
    with running(no_failover), httpx.Client(base_url=regions.us.url, timeout=30) as us, \
            httpx.Client(base_url=regions.eu.url, timeout=30) as eu:
        wait_until_path_exists(socket, no_failover)
        push(us, repo, pushed, tag="v1")
        regions.pair.standby.stop()
        try:
            # regions.read_failover = "none": 503 naming the region's standby.
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                with pytest.raises(grpc.RpcError) as refused_here:
                    metadata_pb2_grpc.MetadataServiceStub(channel).GetManifest(
                        metadata_pb2.GetManifestRequest(repository=repo, reference="v1"), timeout=30)
            failure = from_rpc_error(refused_here.value)
            assert failure.kind is ErrorKind.UNAVAILABLE, failure
            assert "region 'us' cannot read" in failure.message and "standby" in failure.message, failure.message
            assert "regions.read_failover" in failure.message
            # regions.read_failover = "primary": the primary region answers us's reads meanwhile.
            push(eu, repo, later, tag="v2")
            for tag, manifest in (("v1", pushed), ("v2", later), ("v1", pushed), ("v2", later)):
                answer = get_manifest(us, repo, tag)
                assert answer.status_code == 200, f"{tag}: {answer.status_code} {answer.text}"
                assert answer.headers["docker-content-digest"] == manifest.digest
            assert us.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1", "v2"]
            assert _pull_blob(us, repo, pushed.blobs[0].digest).content == pushed.blobs[0].data
            failed_over = _read_failovers(regions)
            assert failed_over >= 2  # v2 and the tag list at least (the gateways may cache a manifest)
            # `lading region status` counts them too (the same process: nothing read since).
            shown = _status(regions.us)
            assert json.loads(shown.stdout)["readFailovers"] == str(failed_over), shown.stdout + shown.stderr
            # Neither the standby nor the primary region: 503, naming both (references no gateway
            # has cached).
            regions.partition.cut()
            try:
                for refused in (get_manifest(us, repo, "never-read"), us.get(f"/v2/{repo}/tags/list?n=1")):
                    assert refused.status_code == 503, refused.text
                    assert error_codes(refused) == ["UNAVAILABLE"]
                    message = refused.json()["errors"][0]["message"]
                    assert "region 'us'" in message and "standby" in message, message
                    assert "primary region 'eu'" in message, message
            finally:
                regions.partition.mend()
        finally:
            regions.pair.standby.start()
        # The standby back (and caught up with v2): answered in the region again, no failover.
        position = regions.pair.primary.psql("SELECT pg_current_wal_lsn()")
        _eventually("us's standby did not come back and replay v2", lambda: _standby_up(regions) and
                    regions.pair.standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{position}'::pg_lsn") == "t")
        before = _read_failovers(regions)
        for reference in ("v1", "v2", "missing"):
            assert get_manifest(us, repo, reference).status_code == (404 if reference == "missing" else 200)
        assert us.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1", "v2"]
        assert _read_failovers(regions) == before
    port = regions.links["postgres"].port
    _eventually("us's standby did not stream again", lambda: regions.pair.standby.psql(
        "SELECT status || ':' || sender_port FROM pg_stat_wal_receiver") == f"streaming:{port}")


def _standby_up(regions: Regions) -> bool:
    try:
        regions.pair.standby.psql("SELECT 1")
    except subprocess.CalledProcessError:
        return False
    return True


def _read_failovers(regions: Regions) -> int:
    """Reads us answered from the primary region (its metadata plane's metric)."""
    for line in httpx.get(f"http://{regions.us.metrics_address}/metrics", timeout=10).text.splitlines():
        if line.startswith("lading_region_read_failovers_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("lading_region_read_failovers_total is not among us's metrics")


def test_bytes_no_region_references_are_deleted_from_the_replica_regions_storage(regions: Regions) -> None:
    """eu's collector deletes a blob (its rows, eu's bytes); us's storage also holds it (fetched
    there on a miss, or pushed there): us's collector deletes it from us's storage too. A blob still
    referenced keeps its bytes in us."""
    repo = _repo()
    fetched, pushed_in_us, kept = image(layers=1), image(layers=1), image(layers=1)
    with httpx.Client(base_url=regions.us.url, timeout=30) as us, \
            httpx.Client(base_url=regions.eu.url, timeout=30) as eu:
        push(eu, repo, fetched, tag="fetched")
        for blob in fetched.blobs:  # fetched into us's storage on a miss
            assert _pull_blob(us, repo, blob.digest).content == blob.data
        push(us, repo, pushed_in_us, tag="pushed")
        push(us, repo, kept, tag="kept")
        gone = [b.digest for m in (fetched, pushed_in_us) for b in m.blobs]
        assert all(_stored(regions.us, digest) for digest in gone + [b.digest for b in kept.blobs])
        assert not any(_stored(regions.eu, b.digest) for b in pushed_in_us.blobs)  # only in us
        for manifest in (fetched, pushed_in_us):
            assert eu.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    # The primary region's collection: rows and eu's bytes.
    done = subprocess.run(lading_command("gc", "--metadata", f"unix:{regions.eu.metadata_socket}",
                                         "--blob", f"unix:{regions.eu.blob_socket}"),
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(_stored(regions.eu, b.digest) for b in fetched.blobs)
    for digest in gone:
        assert regions.pair.primary.psql(f"SELECT count(*) FROM blobs WHERE digest = '{digest}'",
                                         database="lading") == "0"
    # us's collector (every second, past the grace) deletes them from us's storage.
    _eventually("us's storage still holds bytes no region references",
                lambda: not any(_stored(regions.us, digest) for digest in gone), timeout=GRACE_SECONDS + 30)
    assert all(_stored(regions.us, b.digest) for b in kept.blobs)
    with httpx.Client(base_url=regions.us.url, timeout=30) as us:
        assert get_manifest(us, repo, "kept").status_code == 200
        for blob in kept.blobs:
            assert _pull_blob(us, repo, blob.digest).content == blob.data
        # Gone everywhere: pushed again, it is stored and served again.
        push(us, repo, fetched, tag="again")
        assert _pull_blob(us, repo, fetched.blobs[0].digest).content == fetched.blobs[0].data
    # `lading gc` run in the replica region only looks at that region's storage.
    done = subprocess.run(lading_command("gc", "--metadata", f"unix:{regions.us.metadata_socket}",
                                         "--blob", f"unix:{regions.us.blob_socket}"),
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replica region" in done.stderr
    assert _stored(regions.us, fetched.blobs[0].digest)
