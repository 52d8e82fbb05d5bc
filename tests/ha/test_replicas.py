"""Two of every plane behind HAProxy: real clients, uploads spread over replicas, concurrent pushes
of one image, and replicas killed under load (kill -9) and restarted.

Figures of the chaos run are printed (run with `-s` to see them) and attached to the test report
as `record_property` entries.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ha.cluster import Cluster, http_client
from tests.ha.traffic import DirtyFailure, Traffic, expect, pull_and_verify, push_image, with_retries
from tests.support.clients import require_binary
from tests.support.oci import (
    Layout,
    Manifest,
    image,
    multi_arch_index,
    random_blob,
    sha256,
    write_layout,
)
from tests.support.postgres import query

pytestmark = pytest.mark.ha

BLOB_KEY = re.compile(r"^blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})$")


def stored_digests(cluster: Cluster) -> set[str]:
    """Digests of the blobs in storage; fails on any key under blobs/ that is not a whole blob."""
    digests = set()
    for key in cluster.storage.blob_keys():
        match = BLOB_KEY.match(key)
        assert match and match.group(2).startswith(match.group(1)), f"stray object under blobs/: {key}"
        digests.add("sha256:" + match.group(2))
    return digests


# -- a. skopeo through HAProxy --------------------------------------------------------------------


def skopeo(binary: str, home: Path, *args: str) -> str:
    auth = home / "auth.json"
    auth.write_text("{}")
    command = [binary, "--insecure-policy", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def test_skopeo_round_trips_several_images_through_haproxy(cluster: Cluster, tmp_path: Path) -> None:
    binary = require_binary("skopeo", install_hint="apt-get install skopeo")
    images: dict[str, Manifest] = {
        "one": image(1, layer_size=256 * 1024),
        "three": image(3, layer_size=64 * 1024),
        "multi": multi_arch_index((("amd64", "linux"), ("arm64", "linux")), layers=2),
    }
    source = write_layout(tmp_path / "src", images)
    home = tmp_path / "home"
    home.mkdir()
    for tag, manifest in images.items():
        target = f"docker://{cluster.hostport}/skopeo/ha:{tag}"
        extra = ["--all"] if manifest.children else []
        skopeo(binary, home, "copy", "--dest-tls-verify=false", "--preserve-digests", *extra,
               f"oci:{source}:{tag}", target)
    for tag, manifest in images.items():
        destination = tmp_path / f"dst-{tag}"
        extra = ["--all"] if manifest.children else []
        skopeo(binary, home, "copy", "--src-tls-verify=false", "--preserve-digests", *extra,
               f"docker://{cluster.hostport}/skopeo/ha:{tag}", f"oci:{destination}:{tag}")
        pulled = Layout(destination)
        assert pulled.descriptor_for(tag)["digest"] == manifest.digest
        assert pulled.blob(manifest.digest) == manifest.payload
        for child in manifest.children:
            assert pulled.blob(child.digest) == child.payload
        for blob in manifest.all_blobs():
            assert pulled.blob(blob.digest) == blob.data, f"{tag}: blob {blob.digest} differs"


# -- b. one upload, its chunks through alternating gateways ---------------------------------------


def test_chunked_upload_alternating_between_gateways_completes(cluster: Cluster) -> None:
    repo = "chunked/alternating"
    blob = random_blob(3 * 1024 * 1024 + 12345)
    chunk = 512 * 1024
    gateways = [httpx.Client(base_url=cluster.gateway_url(i), timeout=60.0) for i in range(2)]
    try:
        started = expect(gateways[0].post(f"/v2/{repo}/blobs/uploads/"), 202)
        location = started.headers["location"]
        offset, turn = 0, 1
        while offset < blob.size:
            piece = blob.data[offset:offset + chunk]
            gateway = gateways[turn % 2]
            answer = expect(gateway.patch(location, content=piece, headers={
                "content-type": "application/octet-stream",
                "content-range": f"{offset}-{offset + len(piece) - 1}",
            }), 202)
            offset += len(piece)
            assert answer.headers["range"] == f"0-{offset - 1}"
            location = answer.headers["location"]
            # The other gateway (and whichever blob replica it picks) sees the same session state.
            status = expect(gateways[(turn + 1) % 2].get(location), 204)
            assert status.headers["range"] == f"0-{offset - 1}"
            turn += 1
        done = expect(gateways[turn % 2].put(f"{location}{'&' if '?' in location else '?'}digest={blob.digest}"),
                      201)
        assert done.headers["docker-content-digest"] == blob.digest
    finally:
        for gateway in gateways:
            gateway.close()
    with http_client(cluster.base_url) as client:
        assert expect(client.get(f"/v2/{repo}/blobs/{blob.digest}"), 200).content == blob.data
    assert blob.digest in stored_digests(cluster)


# -- c. eight clients push the same image at once -------------------------------------------------


def test_eight_clients_pushing_the_same_image_store_it_once(cluster: Cluster) -> None:
    repo, tag = "same/image", "v1"
    manifest = image(3, layer_size=256 * 1024)
    clients = 8
    barrier = threading.Barrier(clients)
    errors: list[BaseException] = []

    def client_run() -> None:
        try:
            with http_client(cluster.base_url) as client:
                barrier.wait(timeout=30)
                push_image(client, repo, manifest, tag)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, f"{len(errors)} of {clients} pushes failed: {errors[:3]}"

    stored = stored_digests(cluster)
    keys = cluster.storage.blob_keys()
    for blob in manifest.blobs:
        assert blob.digest in stored
        assert sum(key.endswith(blob.digest.split(":")[1]) for key in keys) == 1
    url = cluster.database_url
    rows = query(url, "SELECT count(*) FROM manifests m JOIN repositories r ON r.id = m.repository_id "
                      "WHERE r.name = $1 AND m.digest = $2", repo, manifest.digest)
    assert rows == [(1,)]
    assert query(url, "SELECT count(*) FROM repositories WHERE name = $1", repo) == [(1,)]
    links = query(url, "SELECT rb.digest, count(*) FROM repository_blobs rb JOIN repositories r "
                       "ON r.id = rb.repository_id WHERE r.name = $1 GROUP BY rb.digest", repo)
    assert sorted(links) == sorted((blob.digest, 1) for blob in manifest.blobs)
    with http_client(cluster.base_url) as client:
        pull_and_verify(client, repo, tag, manifest)


# -- d. kill -9 one replica of each plane under load ----------------------------------------------

CHAOS_SECONDS = 24.0
CHAOS_CLIENTS = 4
# (seconds after the start, plane, replica index): each killed replica restarts 1.5 s later.
KILLS = ((3.0, "gateway", 0), (9.0, "metadata", 1), (15.0, "blob", 0))
RESTART_AFTER_SECONDS = 1.5


def test_kill_minus_nine_of_each_plane_under_load_loses_nothing(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    traffic = Traffic()
    pushed: list[tuple[str, str, Manifest]] = []
    pushed_lock = threading.Lock()
    dirty: list[BaseException] = []
    stop = threading.Event()
    restarts: dict[str, float] = {}

    def worker(number: int) -> None:
        repo = f"chaos/w{number}"
        iteration = 0
        with http_client(cluster.base_url, timeout=30.0) as client:
            while not stop.is_set():
                iteration += 1
                tag = f"t{iteration}"
                manifest = image(2, layer_size=48 * 1024)
                try:
                    with_retries(lambda m=manifest, t=tag: push_image(client, repo, m, t), traffic=traffic,
                                 retried="retried_pushes")
                    traffic.count("pushes")
                    with pushed_lock:
                        pushed.append((repo, tag, manifest))
                    with_retries(lambda m=manifest, t=tag: pull_and_verify(client, repo, t, m), traffic=traffic,
                                 retried="retried_pulls")
                    traffic.count("pulls")
                except BaseException as exc:  # noqa: BLE001 - dirty failures and exhausted retries
                    dirty.append(exc)
                    stop.set()
                    return

    def chaos() -> None:
        began = time.monotonic()
        for at, plane, index in KILLS:
            if stop.wait(max(0.0, began + at - time.monotonic())):
                return
            cluster.kill(plane, index)
            if stop.wait(RESTART_AFTER_SECONDS):
                return
            restarts[f"{plane}{index}"] = round(cluster.restart(plane, index), 2)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(CHAOS_CLIENTS)]
    killer = threading.Thread(target=chaos)
    for thread in [*workers, killer]:
        thread.start()
    stop.wait(CHAOS_SECONDS)  # the load runs this long, unless a worker fails first
    killer.join(timeout=60)  # the last restart is over by now, or the killer gave up on `stop`
    stop.set()
    for thread in workers:
        thread.join(timeout=120)
    assert not dirty, f"dirty failure under chaos: {dirty[0]!r}\n{cluster.logs()}"

    # Every image reported pushed pulls back byte-identical, with a fresh client, first time.
    lost = []
    with http_client(cluster.base_url) as client:
        for repo, tag, manifest in pushed:
            try:
                pull_and_verify(client, repo, tag, manifest)
            except (DirtyFailure, Exception) as exc:  # noqa: BLE001 - counted and reported
                lost.append(f"{repo}:{tag}: {exc}")

    # No manifest references a blob that storage does not hold.
    referenced = {row[0] for row in query(cluster.database_url,
                                          "SELECT DISTINCT digest FROM manifest_references WHERE kind = 'blob'")}
    missing = referenced - stored_digests(cluster)

    figures = {**traffic.figures(), "images_pushed": len(pushed), "images_lost": len(lost),
               "blobs_referenced": len(referenced), "blobs_missing": len(missing),
               "restart_seconds": restarts, "storage": cluster.storage.name}
    print("\nHA chaos figures:", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"chaos_{key}", value)
    assert len(restarts) == len(KILLS), f"not every killed replica came back: {restarts}"
    assert traffic.pushes >= CHAOS_CLIENTS, figures
    assert not lost, lost[:5]
    assert not missing, sorted(missing)[:5]
    assert all(sha256(m.payload) == m.digest for _, _, m in pushed)
