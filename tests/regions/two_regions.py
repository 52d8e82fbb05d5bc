"""Two regions as issue 15 draws them, on loopback, for tests/regions/test_partition.py and
`bench.regions`:

- region eu (primary): PostgreSQL primary, metadata plane, blob plane, two gateways, HAProxy;
- region us (replica): the hot standby (`pg_basebackup -R`), metadata plane, blob plane, two
  gateways, HAProxy.

Every link from one region to the other goes through a TCP relay (tests/support/relay.py): us's
standby streams the primary's WAL through one, us's metadata plane forwards writes (and
failed-over reads) through one, each blob plane fetches from the other region's through one, and
eu confirms the first link of a blob pushed through us through one. `partition.cut()` resets every
open connection on those links and refuses new ones; `partition.mend()` brings them back.

Each region's blob plane stores on the filesystem, or on its own SeaweedFS cluster when
`blob_env` gives the variables (no storage replication between them). All processes are stopped
(by pid) when the `with` ends.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support import standby
from tests.support.haproxy import HAProxy
from tests.support.relay import Partition, Relay, relays
from tests.support.stack import LadingProcess, free_port, lading_command, running, wait_until_http_ok


@dataclass
class Region:
    name: str
    haproxy: HAProxy
    metadata: LadingProcess
    metadata_socket: Path
    blob_socket: Path
    gateway_urls: tuple[str, ...]
    metrics_address: str
    # The gateways' metrics endpoints (http://.../metrics), in the order of `gateway_urls`.
    gateway_metrics: tuple[str, ...] = ()
    gateways: tuple[LadingProcess, ...] = ()

    @property
    def url(self) -> str:
        return self.haproxy.base_url


@dataclass
class Regions:
    eu: Region
    us: Region
    pair: standby.Pair
    partition: Partition
    # The relays by link: postgres (us's standby ← eu's primary), eu_metadata, eu_blob, us_metadata, us_blob.
    links: dict[str, Relay]
    root: Path


def wait_for_schema(pair: standby.Pair) -> None:
    """The standby has replayed the migrations the primary region's metadata plane ran."""
    deadline = time.monotonic() + 30
    want = pair.primary.psql("SELECT version_num FROM alembic_version", database="lading")
    while True:
        try:
            if pair.standby.psql("SELECT version_num FROM alembic_version", database="lading") == want:
                return
        except subprocess.CalledProcessError:
            pass
        assert time.monotonic() < deadline, "the standby did not replay the migrations"
        time.sleep(0.05)


def _wait_for_socket(path: Path, process: LadingProcess) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(process.describe_failure(f"did not create {path}"))
        time.sleep(0.05)


@contextlib.contextmanager
def two_regions(root: Path, *, eu_env: Mapping[str, str] | None = None, us_env: Mapping[str, str] | None = None,
                blob_env: Mapping[str, Mapping[str, str]] | None = None, relayed: bool = True,
                gateway_env: Mapping[str, str] | None = None) -> Iterator[Regions]:
    """`eu_env` / `us_env`: more variables for that region's metadata plane; `gateway_env`: for
    every gateway (e.g. a long fallback TTL for the cache tests); `blob_env`: by region,
    the blob plane's storage variables (default: a folder under `root`). `relayed=False`: the
    regions reach each other directly (no relay to cut, nothing in the way of a measurement;
    `partition` and `links` are then empty)."""
    run, logs = root / "run", root / "logs"
    run.mkdir(parents=True, exist_ok=True)
    s = {name: run / f"{name}.sock" for name in ("eu", "eu-blob", "us", "us-blob")}
    with standby.primary_and_standby() as pair, relays(
            postgres=("127.0.0.1", pair.primary.port), eu_metadata=s["eu"], eu_blob=s["eu-blob"],
            us_metadata=s["us"], us_blob=s["us-blob"]) as link:
        pair.primary.psql("CREATE DATABASE lading")
        if relayed:
            pair.standby.stream_through(link["postgres"].port)
            target = {name: relay.address for name, relay in link.items()}
        else:
            for relay in link.values():
                relay.stop()
            link = {}
            target = {"eu_metadata": f"unix://{s['eu']}", "eu_blob": f"unix://{s['eu-blob']}",
                      "us_metadata": f"unix://{s['us']}", "us_blob": f"unix://{s['us-blob']}"}
        eu_peer = {"name": "eu", "metadata_target": target["eu_metadata"], "blob_target": target["eu_blob"]}
        us_peer = {"name": "us", "metadata_target": target["us_metadata"], "blob_target": target["us_blob"]}
        region_env = {
            "eu": {"LADING_REGIONS__LOCAL": "eu", "LADING_REGIONS__PRIMARY": "eu",
                   "LADING_REGIONS__PEERS": json.dumps([us_peer])},
            "us": {"LADING_REGIONS__LOCAL": "us", "LADING_REGIONS__PRIMARY": "eu",
                   "LADING_REGIONS__PEERS": json.dumps([eu_peer]), "LADING_REGIONS__FORWARD_TIMEOUT_SECONDS": "3"},
        }
        databases = {"eu": pair.primary.database_url("lading"), "us": pair.standby.database_url("lading")}
        extra = {"eu": dict(eu_env or {}), "us": dict(us_env or {})}
        metrics = {region: f"127.0.0.1:{free_port()}" for region in ("eu", "us")}
        metadata = {region: LadingProcess(f"metadata-{region}", lading_command("metadata"), log_dir=logs, cwd=root,
                                          env={
            "LADING_METADATA__LISTEN": f"unix://{s[region]}", "LADING_METADATA__DATABASE_URL": databases[region],
            "LADING_METADATA__CHANGE_FEED__POLL_SECONDS": "0.2", "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
            "LADING_GC__BLOB_TARGET": f"unix://{s[f'{region}-blob']}",
            "LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": metrics[region],
            **region_env[region], **extra[region]}) for region in ("eu", "us")}
        blobs = [LadingProcess(f"blob-{region}", lading_command("blob"), log_dir=logs, cwd=root, env={
            "LADING_BLOB__LISTEN": f"unix://{s[f'{region}-blob']}",
            **((blob_env or {}).get(region) or {"LADING_BLOB__FILESYSTEM__ROOT": str(root / f"blobs-{region}")}),
            **region_env[region]}) for region in ("eu", "us")]
        ports = {region: (free_port(), free_port()) for region in ("eu", "us")}
        gateway_metrics = {region: (free_port(), free_port()) for region in ("eu", "us")}
        gateways = {region: [LadingProcess(f"gateway-{region}{n + 1}", lading_command("gateway"), log_dir=logs,
                                           cwd=root, env={
            "LADING_GATEWAY__HOST": "127.0.0.1", "LADING_GATEWAY__PORT": str(port),
            "LADING_GATEWAY__METADATA_TARGET": f"unix://{s[region]}",
            "LADING_GATEWAY__BLOB_TARGET": f"unix://{s[f'{region}-blob']}",
            "LADING_GATEWAY__GRPC__TIMEOUT_SECONDS": "10", "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "1",
            "LADING_OBSERVABILITY__GATEWAY_METRICS_LISTEN": f"127.0.0.1:{gateway_metrics[region][n]}",
            **(gateway_env or {})})
            for n, port in enumerate(ports[region])] for region in ("eu", "us")}
        with running(metadata["eu"]):
            _wait_for_socket(s["eu"], metadata["eu"])
            wait_for_schema(pair)
            with running(metadata["us"], *blobs, *gateways["eu"], *gateways["us"]):
                for socket, process in ((s["us"], metadata["us"]), (s["eu-blob"], blobs[0]), (s["us-blob"], blobs[1])):
                    _wait_for_socket(socket, process)
                urls = {region: tuple(f"http://127.0.0.1:{port}" for port in ports[region]) for region in ports}
                for region in ("eu", "us"):
                    for gateway, url in zip(gateways[region], urls[region], strict=True):
                        wait_until_http_ok(f"{url}/v2/", gateway)
                with contextlib.ExitStack() as proxies:
                    front = {}
                    for region in ("eu", "us"):
                        proxy = HAProxy(root / f"haproxy-{region}",
                                        [(f"gateway{n + 1}", port) for n, port in enumerate(ports[region])])
                        proxies.callback(proxy.stop)
                        front[region] = proxy.start()
                    scrape = {region: tuple(f"http://127.0.0.1:{p}/metrics" for p in gateway_metrics[region])
                              for region in ("eu", "us")}
                    yield Regions(
                        eu=Region("eu", front["eu"], metadata["eu"], s["eu"], s["eu-blob"], urls["eu"], metrics["eu"],
                                  scrape["eu"], tuple(gateways["eu"])),
                        us=Region("us", front["us"], metadata["us"], s["us"], s["us-blob"], urls["us"], metrics["us"],
                                  scrape["us"], tuple(gateways["us"])),
                        pair=pair, partition=Partition(list(link.values())), links=link, root=root)
