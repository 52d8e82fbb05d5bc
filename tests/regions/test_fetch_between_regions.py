"""Fetch on miss between regions (issue 15, item 3), with real parts: two regions, each with its own
SeaweedFS cluster and no storage replication between them (until the last test); a PostgreSQL primary ("eu") and its hot
standby made with `pg_basebackup -R` ("us"); region eu: metadata, blob plane, gateway; region us:
two metadata replicas on the standby, one blob plane, two gateways (gateway 1 → replica A,
gateway 2 → replica B).

- A blob pushed in eu is pulled through us byte-identical (also by skopeo), is afterwards in us's
  own bucket (the next GET redirects to us's bucket and serves the same bytes) and the metadata
  records that us holds it; when that copy is lost, the next pull fetches it again.
- Concurrent pulls of a blob us lacks, through both gateways of us: one fetch from eu (the
  region's lease, across its metadata replicas), counted by `lading region status` and the
  metrics; every client gets the same bytes.
- With eu's metadata plane stopped, us still fetches (without the lease).
- kill -9 of each region's blob plane and gateway while clients push through both regions:
  nothing acknowledged is lost, and it is all pulled through the other region too.
- The other way round: a blob pushed through us is pulled through eu.
- With `weed filer.sync` replicating eu's cluster into us's: pulls through us right after a push
  in eu are byte-identical (replication and fetch on miss race); a replicated blob is served from
  us's bucket without a fetch. eu confirms the first link
  of a blob pushed through us with us's blob plane (its own bucket does not have it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ha.test_replicas import skopeo
from tests.regions.two_regions import wait_for_schema
from tests.support import standby
from tests.support.clients import require_binary
from tests.support.oci import Layout, Manifest, get_manifest, image, push, write_layout
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server, weed_binary
from tests.support.stack import (
    LadingProcess,
    child_env,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)

pytestmark = pytest.mark.postgres
CONCURRENT_PULLS = 8


@dataclass
class TwoRegions:
    eu_gateway: str
    us_gateways: tuple[str, str]
    us_metadata_sockets: tuple[Path, Path]
    primary_socket: Path
    processes: dict[str, LadingProcess]
    eu_seaweed: SeaweedFS
    us_seaweed: SeaweedFS
    key_prefix: str
    pair: standby.Pair


def _bucket_env(seaweed: SeaweedFS, prefix: str) -> dict[str, str]:
    # Reads redirect to presigned URLs of the region's own cluster.
    return seaweed.lading_env(LADING_BLOB__S3__KEY_PREFIX=prefix, LADING_BLOB__S3__REDIRECT_READS="true")


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoRegions]:
    root = tmp_path_factory.mktemp("fetch-regions")
    run, logs = root / "run", root / "logs"
    run.mkdir()
    s = {name: run / f"{name}.sock" for name in ("eu", "eu-blob", "us-a", "us-b", "us-blob")}
    eu_peer = {"name": "eu", "metadata_target": f"unix://{s['eu']}", "blob_target": f"unix://{s['eu-blob']}"}
    us_peer = {"name": "us", "metadata_target": f"unix://{s['us-a']}", "blob_target": f"unix://{s['us-blob']}"}
    in_eu = {"LADING_REGIONS__LOCAL": "eu", "LADING_REGIONS__PRIMARY": "eu",
             "LADING_REGIONS__PEERS": json.dumps([us_peer])}
    in_us = {"LADING_REGIONS__LOCAL": "us", "LADING_REGIONS__PRIMARY": "eu",
             "LADING_REGIONS__PEERS": json.dumps([eu_peer]), "LADING_REGIONS__FORWARD_TIMEOUT_SECONDS": "5"}
    # One SeaweedFS cluster per region (the same bucket and key prefix in both, as storage
    # replication would have them), not replicated until the filer.sync test starts it.
    with standby.primary_and_standby() as pair, seaweedfs_server() as eu_seaweed, seaweedfs_server() as us_seaweed:
        pair.primary.psql("CREATE DATABASE lading")
        prefix = eu_seaweed.new_prefix()
        # Picked once PostgreSQL and SeaweedFS listen (they take ports of their own).
        ports = {name: free_port() for name in ("eu", "us1", "us2")}

        def metadata(name: str, socket: Path, database_url: str, region: dict[str, str]) -> LadingProcess:
            return LadingProcess(name, lading_command("metadata"), log_dir=logs, cwd=root, env={
                "LADING_METADATA__LISTEN": f"unix://{socket}", "LADING_METADATA__DATABASE_URL": database_url,
                "LADING_METADATA__CHANGE_FEED__POLL_SECONDS": "0.2",
                "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
                "LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": f"127.0.0.1:{free_port()}", **region})

        def blob(name: str, socket: Path, seaweed: SeaweedFS, region: dict[str, str]) -> LadingProcess:
            return LadingProcess(name, lading_command("blob"), log_dir=logs, cwd=root, env={
                "LADING_BLOB__LISTEN": f"unix://{socket}", **_bucket_env(seaweed, prefix), **region})

        def gateway(name: str, port: int, metadata_socket: Path, blob_socket: Path) -> LadingProcess:
            return LadingProcess(name, lading_command("gateway"), log_dir=logs, cwd=root, env={
                "LADING_GATEWAY__HOST": "127.0.0.1", "LADING_GATEWAY__PORT": str(port),
                "LADING_GATEWAY__METADATA_TARGET": f"unix://{metadata_socket}",
                "LADING_GATEWAY__BLOB_TARGET": f"unix://{blob_socket}",
                "LADING_GATEWAY__GRPC__TIMEOUT_SECONDS": "10", "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "1"})

        # eu confirms a blob's first link with a blob plane (gc.blob_target): its own for its own
        # pushes, us's for those forwarded from us (their bytes are only in us's bucket).
        eu_gc = {"LADING_GC__BLOB_TARGET": f"unix://{s['eu-blob']}", "LADING_GC__INTERVAL_SECONDS": "0"}
        processes = [
            metadata("metadata-eu", s["eu"], pair.primary.database_url("lading"), {**in_eu, **eu_gc}),
            blob("blob-eu", s["eu-blob"], eu_seaweed, in_eu),
            gateway("gateway-eu", ports["eu"], s["eu"], s["eu-blob"]),
            metadata("metadata-us-a", s["us-a"], pair.standby.database_url("lading"), in_us),
            metadata("metadata-us-b", s["us-b"], pair.standby.database_url("lading"), in_us),
            blob("blob-us", s["us-blob"], us_seaweed, in_us),
            gateway("gateway-us1", ports["us1"], s["us-a"], s["us-blob"]),
            gateway("gateway-us2", ports["us2"], s["us-b"], s["us-blob"]),
        ]
        with running(processes[0]):
            wait_until_path_exists(s["eu"], processes[0])
            wait_for_schema(pair)
            with running(*processes[1:]):
                for process, socket in zip(processes, (s["eu"], s["eu-blob"], None, s["us-a"], s["us-b"],
                                                       s["us-blob"]), strict=False):
                    if socket is not None:
                        wait_until_path_exists(socket, process)
                urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
                for process, name in ((processes[2], "eu"), (processes[6], "us1"), (processes[7], "us2")):
                    wait_until_http_ok(f"{urls[name]}/v2/", process)
                yield TwoRegions(urls["eu"], (urls["us1"], urls["us2"]), (s["us-a"], s["us-b"]), s["eu"],
                                 {p.name: p for p in processes}, eu_seaweed, us_seaweed, prefix, pair)


def _status(socket: Path) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(lading_command("region", "status", "--json", "--metadata", f"unix:{socket}"),
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _fetch_counts(regions: TwoRegions) -> dict[str, int]:
    """Fetch-on-miss counters of region us, summed over its two metadata replicas."""
    totals: dict[str, int] = {}
    for socket in regions.us_metadata_sockets:
        reply = _status(socket)
        for key in ("blobFetchesStarted", "blobFetchesCompleted", "blobFetchesFailed", "blobFetchesShared",
                    "blobFetchBytes"):
            totals[key] = totals.get(key, 0) + int(reply.get(key, 0))
    return totals


def _eventually_completed(regions: TwoRegions, expected: int) -> None:
    """Region us's completed fetches reach `expected` (and not more) within 20 s; `lading region
    status` also waits for eu's metadata plane to answer (a restarted one)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            counts = _fetch_counts(regions)
        except AssertionError:  # eu not answering yet: status exits 1
            counts = {"blobFetchesCompleted": -1}
        completed = counts["blobFetchesCompleted"]
        if completed == expected:
            return
        assert completed < expected and time.monotonic() < deadline, f"{counts}: not {expected} completed"
        time.sleep(0.2)


def _pull_blob(client: httpx.Client, repo: str, digest: str) -> bytes:
    answer = client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}"
    return answer.content


def test_a_blob_pushed_in_eu_is_fetched_once_into_us_and_served_from_us_bucket(two_regions: TwoRegions) -> None:
    repo = f"fetch/{uuid.uuid4().hex[:10]}"
    manifest = image(layers=1, layer_size=3 * 1024 * 1024)
    layer = manifest.blobs[0]
    with httpx.Client(base_url=two_regions.eu_gateway, timeout=60) as eu:
        push(eu, repo, manifest, tag="v1")
    before = _fetch_counts(two_regions)
    results: list[bytes | BaseException] = []
    start = threading.Barrier(CONCURRENT_PULLS)

    def pull(n: int) -> None:
        with httpx.Client(base_url=two_regions.us_gateways[n % 2], timeout=60) as us:
            start.wait(10)
            try:
                results.append(_pull_blob(us, repo, layer.digest))
            except BaseException as error:  # noqa: BLE001 - reported below
                results.append(error)

    threads = [threading.Thread(target=pull, args=(n,)) for n in range(CONCURRENT_PULLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == CONCURRENT_PULLS
    for result in results:
        assert result == layer.data, f"a pull through us did not get the pushed bytes: {result!r:.300}"
    after = _fetch_counts(two_regions)
    # One fetch for all of them, across both metadata replicas and both gateways of region us.
    assert after["blobFetchesStarted"] - before["blobFetchesStarted"] == 1
    assert after["blobFetchesCompleted"] - before["blobFetchesCompleted"] == 1
    assert after["blobFetchBytes"] - before["blobFetchBytes"] == len(layer.data)
    assert after["blobFetchesFailed"] == before["blobFetchesFailed"]
    # Now in us's own bucket: the GET redirects there (presigned), and the bytes are the same.
    with httpx.Client(base_url=two_regions.us_gateways[0], timeout=60) as us:
        redirect = us.get(f"/v2/{repo}/blobs/{layer.digest}")
        assert redirect.status_code == 307, redirect.text
        assert redirect.headers["location"].startswith(f"http://{two_regions.us_seaweed.endpoint}/")
        assert httpx.get(redirect.headers["location"], timeout=60).content == layer.data
    held = two_regions.pair.primary.psql(
        f"SELECT string_agg(region, ',' ORDER BY region) FROM blob_regions WHERE digest = '{layer.digest}'",
        database="lading")
    assert held == "eu,us"
    # us's copy lost (deleted behind Lading's back): the next pull through us fetches it again.
    _delete_copy(two_regions.us_seaweed, two_regions.key_prefix, layer.digest)
    lost = _fetch_counts(two_regions)
    with httpx.Client(base_url=two_regions.us_gateways[1], timeout=60) as us:
        assert _pull_blob(us, repo, layer.digest) == layer.data
    # The fetch is ended (and counted) by the gateway just after the client has the last byte.
    _eventually_completed(two_regions, lost["blobFetchesCompleted"] + 1)
    # `lading region status` in us shows the fetches and eu's own lag (0: eu reads its primary).
    reply = _status(two_regions.us_metadata_sockets[0])
    assert reply["peers"][0]["name"] == "eu" and reply["peers"][0]["replicationLagSeconds"] == 0
    # The metric of the replica that fetched (or the other): summed, one completed fetch.
    metrics = ""
    for process in ("metadata-us-a", "metadata-us-b"):
        address = two_regions.processes[process]._env["LADING_OBSERVABILITY__METADATA_METRICS_LISTEN"]
        metrics += httpx.get(f"http://{address}/metrics", timeout=10).text
    assert 'lading_region_blob_fetches_total{outcome="completed",region="us"}' in metrics or \
        'lading_region_blob_fetches_total{region="us",outcome="completed"}' in metrics


def test_a_blob_pushed_in_us_is_pulled_through_eu(two_regions: TwoRegions) -> None:
    repo = f"fetch/{uuid.uuid4().hex[:10]}"
    manifest = image(layers=1, layer_size=256 * 1024)
    with httpx.Client(base_url=two_regions.us_gateways[1], timeout=60) as us:
        push(us, repo, manifest, tag="v1")
    # Recorded as held by us, although eu's own pushes linked blobs before (the region is read per call).
    held = two_regions.pair.primary.psql(
        f"SELECT string_agg(region, ',') FROM blob_regions WHERE digest = '{manifest.blobs[0].digest}'",
        database="lading")
    assert held == "us"
    with httpx.Client(base_url=two_regions.eu_gateway, timeout=60) as eu:
        for blob in manifest.blobs:
            assert _pull_blob(eu, repo, blob.digest) == blob.data


def test_skopeo_pulls_through_us_what_was_pushed_in_eu(two_regions: TwoRegions, tmp_path: Path) -> None:
    binary = require_binary("skopeo", install_hint="apt-get install skopeo")
    manifest = image(2, layer_size=128 * 1024)
    source = write_layout(tmp_path / "src", {"one": manifest})
    home = tmp_path / "home"
    home.mkdir()
    eu, us = (url.removeprefix("http://") for url in (two_regions.eu_gateway, two_regions.us_gateways[0]))
    skopeo(binary, home, "copy", "--dest-tls-verify=false", "--preserve-digests",
           f"oci:{source}:one", f"docker://{eu}/skopeo/fetch:one")
    destination = tmp_path / "dst"
    skopeo(binary, home, "copy", "--src-tls-verify=false", "--preserve-digests",
           f"docker://{us}/skopeo/fetch:one", f"oci:{destination}:one")
    pulled = Layout(destination)
    assert pulled.descriptor_for("one")["digest"] == manifest.digest
    for blob in manifest.all_blobs():
        assert pulled.blob(blob.digest) == blob.data


def test_with_the_primary_regions_metadata_plane_down_us_still_fetches_without_a_lease(
        two_regions: TwoRegions) -> None:
    """The lease and the rows live on the primary; while its metadata plane does not answer, us
    fetches from the regions its own standby's rows name (eu's blob plane still answers)."""
    repo = f"fetch/{uuid.uuid4().hex[:10]}"
    manifest = image(layers=1, layer_size=256 * 1024)
    with httpx.Client(base_url=two_regions.eu_gateway, timeout=60) as eu:
        push(eu, repo, manifest, tag="v1")
    before = _fetch_counts(two_regions)
    primary = two_regions.processes["metadata-eu"]
    primary.stop()
    try:
        with httpx.Client(base_url=two_regions.us_gateways[0], timeout=60) as us:
            assert _pull_blob(us, repo, manifest.blobs[0].digest) == manifest.blobs[0].data
    finally:
        primary.start()
    wait_until_path_exists(two_regions.primary_socket, primary)
    _eventually_completed(two_regions, before["blobFetchesCompleted"] + 1)


def test_kill_9_of_each_regions_blob_plane_and_gateway_mid_push_loses_nothing_acknowledged(
        two_regions: TwoRegions) -> None:
    """Clients push through eu's gateway and through us's gateway 1 while us's blob plane and
    gateway 1, then eu's blob plane and gateway, are killed with SIGKILL (each pair at once) and
    started again. Every push that was acknowledged (201) is afterwards pulled byte-identical
    through the other region (so across regions, by fetch on miss) and through its own."""
    repo = f"fetch/{uuid.uuid4().hex[:10]}"
    acknowledged: dict[str, dict[str, Manifest]] = {"eu": {}, "us": {}}
    stop = threading.Event()

    def pusher(region: str, url: str) -> None:
        with httpx.Client(base_url=url, timeout=15) as client:
            n = 0
            while not stop.is_set():
                manifest = image(layers=1, layer_size=8 * 1024)
                try:
                    push(client, repo, manifest, tag=f"{region}{n}")
                    acknowledged[region][f"{region}{n}"] = manifest
                except (AssertionError, httpx.HTTPError):
                    time.sleep(0.05)  # refused while a plane was down: never acknowledged
                n += 1

    threads = [threading.Thread(target=pusher, args=("eu", two_regions.eu_gateway), daemon=True),
               threading.Thread(target=pusher, args=("us", two_regions.us_gateways[0]), daemon=True)]
    for thread in threads:
        thread.start()

    def wait_for_more(what: str) -> None:
        before = {region: len(done) for region, done in acknowledged.items()}
        deadline = time.monotonic() + 30
        while any(len(acknowledged[region]) < before[region] + 2 for region in before):
            assert time.monotonic() < deadline, f"pushes did not go on {what}"
            time.sleep(0.05)

    try:
        for region in (("blob-us", "gateway-us1"), ("blob-eu", "gateway-eu")):  # both of a region at once
            wait_for_more(f"before killing {' and '.join(region)}")
            for name in region:
                os.killpg(two_regions.processes[name].pid, signal.SIGKILL)
            for name in region:
                two_regions.processes[name].stop(timeout=5)
                two_regions.processes[name].start()
        wait_for_more("after the kills")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert all(len(done) >= 6 for done in acknowledged.values())
    with httpx.Client(base_url=two_regions.eu_gateway, timeout=60) as eu, \
            httpx.Client(base_url=two_regions.us_gateways[1], timeout=60) as us:
        for region, done in acknowledged.items():
            for tag, manifest in done.items():
                for client in (us, eu) if region == "eu" else (eu, us):  # the other region first
                    pulled = get_manifest(client, repo, tag)
                    assert pulled.status_code == 200, f"{tag} was acknowledged and is gone: {pulled.text}"
                    assert pulled.headers["docker-content-digest"] == manifest.digest
                    for blob in manifest.blobs:
                        assert _pull_blob(client, repo, blob.digest) == blob.data, f"{tag}: {blob.digest}"


def _delete_copy(seaweed: SeaweedFS, prefix: str, digest: str) -> None:
    from minio import Minio

    client = Minio(seaweed.endpoint, seaweed.access_key, seaweed.secret_key, secure=False, region=seaweed.region)
    hex_digest = digest.split(":", 1)[1]
    names = [o.object_name for o in client.list_objects(seaweed.bucket, prefix=prefix, recursive=True)
             if hex_digest in (o.object_name or "")]
    assert names, f"{digest} is not in {seaweed.endpoint}"
    for name in names:
        client.remove_object(seaweed.bucket, name)
    deadline = time.monotonic() + 10
    while any(hex_digest in (o.object_name or "")
              for o in client.list_objects(seaweed.bucket, prefix=prefix, recursive=True)):
        assert time.monotonic() < deadline, f"SeaweedFS still lists {digest} after deleting it"
        time.sleep(0.1)
    for name in names:  # gone for reads too, not only from the listing
        while True:
            try:
                client.stat_object(seaweed.bucket, name)
            except Exception:  # noqa: BLE001 - NoSuchKey: gone
                break
            assert time.monotonic() < deadline, f"SeaweedFS still serves {name} after deleting it"
            time.sleep(0.1)


def _synced(seaweed: SeaweedFS, prefix: str, digest: str) -> bool:
    from minio import Minio

    client = Minio(seaweed.endpoint, seaweed.access_key, seaweed.secret_key, secure=False, region=seaweed.region)
    hex_digest = digest.split(":", 1)[1]
    return any(hex_digest in (o.object_name or "") for o in client.list_objects(seaweed.bucket, prefix=prefix,
                                                                                 recursive=True))


def test_with_weed_filer_sync_between_the_clusters(two_regions: TwoRegions, tmp_path: Path) -> None:
    """`weed filer.sync` replicates eu's cluster into us's (active-passive). A blob pulled through us
    right after its push in eu is served byte-identical whether the replication or a fetch on miss
    got it there first; once replicated, a blob is served from us's bucket without a fetch."""
    eu, us = two_regions.eu_seaweed, two_regions.us_seaweed
    bucket_path = f"/buckets/{eu.bucket}"
    with open(tmp_path / "filer-sync.log", "wb") as log:
        sync = subprocess.Popen([str(weed_binary()), "filer.sync", f"-a={eu.filer}", f"-b={us.filer}",
                                 "-isActivePassive", f"-a.path={bucket_path}", f"-b.path={bucket_path}"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    repo = f"fetch/{uuid.uuid4().hex[:10]}"
    try:
        with httpx.Client(base_url=two_regions.eu_gateway, timeout=60) as eu_client, \
                httpx.Client(base_url=two_regions.us_gateways[1], timeout=60) as us_client:
            raced = image(layers=1, layer_size=512 * 1024)
            push(eu_client, repo, raced, tag="raced")
            for blob in raced.blobs:  # at once: replication and fetch on miss race
                assert _pull_blob(us_client, repo, blob.digest) == blob.data
            replicated = image(layers=1, layer_size=512 * 1024)
            push(eu_client, repo, replicated, tag="replicated")
            layer = replicated.blobs[0]
            deadline = time.monotonic() + 30
            while not _synced(us, two_regions.key_prefix, layer.digest):
                assert time.monotonic() < deadline, f"weed filer.sync did not copy {layer.digest} (log: {tmp_path})"
                time.sleep(0.1)
            before = _fetch_counts(two_regions)
            redirect = us_client.get(f"/v2/{repo}/blobs/{layer.digest}")
            assert redirect.status_code == 307, redirect.text
            assert redirect.headers["location"].startswith(f"http://{us.endpoint}/")
            assert httpx.get(redirect.headers["location"], timeout=60).content == layer.data
            assert _fetch_counts(two_regions)["blobFetchesStarted"] == before["blobFetchesStarted"]
    finally:
        os.killpg(sync.pid, signal.SIGTERM)
        sync.wait(10)
