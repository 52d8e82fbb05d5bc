"""The pull-through cache's cold fetches under the free-space reserve (blob.filesystem.min_free_bytes),
end to end: `lading serve` in front of a real upstream (CNCF Distribution). A cold fetch writes its
blob to the store's upload session and, when it spools (services/blob/fetch_spool.py), to a spool
file under the data folder; neither may take the room the reserve keeps. A fetch that cannot fit
answers 507 naming the reserve and its setting before its first byte, and leaves nothing behind;
blobs already cached are still served; a blob that fits is fetched.

Full disks as the reserve tests make them (tests/durability/test_free_space_reserve.py): on S3
(whose spool is the only local write) the reserve is set above the size of the real disk; on the
filesystem, whose session start already claims room, the data folder is a small tmpfs, the only
disk whose free space nothing else changes (skipped where it cannot be mounted)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.proxy.helpers import PREFIX, proxy_config
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.full_disk import small_disk
from tests.support.seaweedfs import seaweedfs_server
from tests.support.stack import Stack

pytestmark = pytest.mark.clients

RESERVE = "LADING_BLOB__FILESYSTEM__MIN_FREE_BYTES"
MiB = 1024 * 1024


def beyond_the_disk(path: Path) -> int:
    info = os.statvfs(path)
    return 2 * info.f_blocks * info.f_frsize + 1


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def assert_refused_by_the_reserve(response: httpx.Response) -> None:
    assert response.status_code == 507, (response.status_code, response.text[:300])
    message = response.json()["errors"][0]["message"]
    assert "free-space reserve is reached" in message and "blob.filesystem.min_free_bytes" in message, message


def image(upstream: Distribution, repository: str, layer_size: int) -> oci.Manifest:
    """An image of one layer of `layer_size` pushed into the upstream."""
    made = oci.image(layers=1, layer_size=layer_size)
    with httpx.Client(base_url=upstream.url, timeout=60) as client:
        oci.push(client, repository, made, "v1")
    return made


def blob(upstream: Distribution, repository: str, size: int) -> oci.Blob:
    """A blob of `size` random bytes pushed into the upstream."""
    made = oci.random_blob(size)
    with httpx.Client(base_url=upstream.url, timeout=60) as client:
        oci.push_blob(client, repository, made)
    return made


def assert_head_refused(response: httpx.Response) -> None:
    assert response.status_code == 507, response.status_code


def left_behind(data: Path) -> list[Path]:
    """Upload sessions and spooled bytes of the blob plane (the spool's files are unlinked from
    the start: none may be found either way)."""
    return sorted(path for folder in (data / "blobs" / "uploads", data / "fetch-spool")
                  for path in folder.rglob("*") if path.is_file())


@pytest.mark.s3
def test_on_s3_a_cold_fetch_below_the_reserve_answers_507_and_spools_nothing(
        tmp_path: Path, upstream: Distribution) -> None:
    # The spool under the data folder shares its disk with the SQLite database: it took the
    # reserve's room unchecked (the reserve covered only the filesystem backend).
    import urllib3
    from minio import Minio

    warm, cold = image(upstream, "team/warm", 64 * 1024), image(upstream, "team/cold", 3 * MiB)
    layer = cold.blobs[-1]
    config = proxy_config(tmp_path / "lading.toml", upstream.url)
    data = tmp_path / "data"
    with seaweedfs_server() as seaweed:
        env = {"LADING_CONFIG_FILE": str(config), **seaweed.lading_env()}
        prefix = env["LADING_BLOB__S3__KEY_PREFIX"]

        def objects(under: str) -> list[str]:
            http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0), retries=False)
            try:
                client = Minio(seaweed.endpoint, access_key=seaweed.access_key, secret_key=seaweed.secret_key,
                               secure=False, region=seaweed.region, http_client=http)
                return [o.object_name for o in client.list_objects(seaweed.bucket, prefix=prefix + under,
                                                                   recursive=True)]
            finally:
                http.clear()

        with Stack(data, env={**env, RESERVE: "0"}) as stack, \
                httpx.Client(base_url=stack.base_url, timeout=60, follow_redirects=True) as client:
            oci.assert_pulls_back(client, f"{PREFIX}team/warm", "v1", warm)
        stored, sessions = objects("blobs/"), objects("uploads/")

        with Stack(data, env={**env, RESERVE: str(beyond_the_disk(tmp_path))}) as stack, \
                httpx.Client(base_url=stack.base_url, timeout=60, follow_redirects=True) as client:
            # Cached blobs are served below the reserve; the manifest of the cold image needs no blob bytes.
            oci.assert_pulls_back(client, f"{PREFIX}team/warm", "v1", warm)
            assert oci.get_manifest(client, f"{PREFIX}team/cold", "v1").content == cold.payload
            for _ in range(2):  # the fetch lease was handed back: the second is refused the same way
                assert_refused_by_the_reserve(client.get(f"/v2/{PREFIX}team/cold/blobs/{layer.digest}"))
            assert_head_refused(client.head(f"/v2/{PREFIX}team/cold/blobs/{layer.digest}"))
            assert "free-space reserve is reached" in stack.log()
            assert objects("blobs/") == stored and objects("uploads/") == sessions
            assert left_behind(data) == []

        # With room (the default reserve: the disk has it), the same blob is fetched.
        with Stack(data, env=env) as stack, \
                httpx.Client(base_url=stack.base_url, timeout=60, follow_redirects=True) as client:
            oci.assert_pulls_back(client, f"{PREFIX}team/cold", "v1", cold)


@pytest.mark.parametrize("direct_reads", ["on", "off"])
def test_on_the_filesystem_a_cold_fetch_that_would_cross_the_reserve_answers_507_up_front(
        tmp_path: Path, upstream: Distribution, direct_reads: str) -> None:
    # The session start claims only a few bytes, so a big cold fetch began, its answer (a 307 to
    # the direct-read server, or a streamed 200) went out, and its writes were refused midway:
    # the client got a body cut short; its spool (direct reads off) took the reserve's room
    # unchecked besides. Now the whole blob is checked first: on this disk, twice with the spool.
    small, big = image(upstream, "team/small", 2 * MiB), blob(upstream, "team/big", 40 * MiB)
    config = proxy_config(tmp_path / "lading.toml", upstream.url)
    env = {"LADING_CONFIG_FILE": str(config), RESERVE: str(32 * MiB)}
    if direct_reads == "off":
        env["LADING_BLOB__DIRECT_READS__ENABLED"] = "false"
    with small_disk(tmp_path / "disk", size="64m") as disk:
        data = disk / "data"
        with Stack(data, env=env) as stack, \
                httpx.Client(base_url=stack.base_url, timeout=60, follow_redirects=True) as client:
            # About 60 MiB free, 32 kept: the small image fits (twice over), the big layer does not.
            assert 40 * MiB > free_bytes(disk) - 32 * MiB > 2 * 2 * MiB + 8 * MiB
            oci.assert_pulls_back(client, f"{PREFIX}team/small", "v1", small)
            # The small image's fetches, answered already, clear their sessions in the background.
            deadline = time.monotonic() + 30
            while left_behind(data) and time.monotonic() < deadline:
                time.sleep(0.05)
            free, before = free_bytes(disk), left_behind(data)
            assert_refused_by_the_reserve(client.get(f"/v2/{PREFIX}team/big/blobs/{big.digest}"))
            assert_head_refused(client.head(f"/v2/{PREFIX}team/big/blobs/{big.digest}"))
            assert left_behind(data) == before
            assert big.digest.split(":", 1)[1] not in {p.name for p in (data / "blobs").rglob("*")}
            assert free_bytes(disk) >= free - MiB  # nothing kept (the database may grow a little)
            # Cached blobs are still served.
            oci.assert_pulls_back(client, f"{PREFIX}team/small", "v1", small)
