"""A production-shaped Lading on loopback: two processes of each plane, HAProxy in front.

    HAProxy (round-robin, health-checked) ─┬─ gateway 0 ─┐   ipv4:127.0.0.1:M0,127.0.0.1:M1
                                           └─ gateway 1 ─┴─> metadata 0, 1 ─> PostgreSQL
                                                ipv4:127.0.0.1:B0,127.0.0.1:B1
                                                         └─> blob 0, 1 ─> S3 (SeaweedFS)

Every process is `lading <plane>` with LADING_* variables, on its own 127.0.0.1 port; the planes
identify their callers by bearer token, one per role (`tokens`, as in a deployment where TLS ends
in a mesh), and refuse anyone else. The
metadata processes run with auto_migrate off after one `lading migrate`, as in production. The
gateways reach each plane through one gRPC target naming both replicas with round_robin (gRPC's
`ipv4:` target syntax takes a comma-separated address list), so both replicas take load.

`Cluster.kill()` SIGKILLs one process (by pid, then its own process group), `restart()` starts it
again on the same port. Everything started is stopped by pid in `stop()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.grpc_tokens import RoleTokens, write_role_tokens
from tests.support.haproxy import HAProxy
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server
from tests.support.stack import (
    START_TIMEOUT_SECONDS,
    LadingProcess,
    child_env,
    free_port,
    lading_command,
    wait_until_http_ok,
)

PLANES = ("metadata", "blob", "gateway")
# Unary calls from a gateway give up after this (the OCI answer is then 503 UNAVAILABLE); short,
# so that an outage answers quickly and the suite stays fast.
GRPC_TIMEOUT_SECONDS = 5.0


# -- storage -------------------------------------------------------------------------------------


class Storage(Protocol):
    """Where the blob plane keeps bytes: its LADING_BLOB__* variables and a way to look inside."""

    name: str

    def env(self) -> dict[str, str]: ...

    def blob_keys(self) -> list[str]:
        """Keys of every stored blob, relative to the backend's root (`blobs/sha256/ab/abcd...`)."""
        ...


@dataclass
class S3Storage:
    seaweed: SeaweedFS
    prefix: str
    name: str = "s3"

    def env(self) -> dict[str, str]:
        return {
            "LADING_BLOB__BACKEND": "s3",
            "LADING_BLOB__S3__ENDPOINT": self.seaweed.endpoint,
            "LADING_BLOB__S3__REGION": self.seaweed.region,
            "LADING_BLOB__S3__BUCKET": self.seaweed.bucket,
            "LADING_BLOB__S3__ACCESS_KEY": self.seaweed.access_key,
            "LADING_BLOB__S3__SECRET_KEY": self.seaweed.secret_key,
            "LADING_BLOB__S3__SECURE": "false",
            "LADING_BLOB__S3__PATH_STYLE": "true",
            "LADING_BLOB__S3__KEY_PREFIX": self.prefix,
            # A stopped S3 must turn into UNAVAILABLE well within the gateway's gRPC deadline.
            "LADING_BLOB__S3__CONNECT_TIMEOUT_SECONDS": "1",
            "LADING_BLOB__S3__READ_TIMEOUT_SECONDS": "2",
            "LADING_BLOB__S3__MAX_RETRIES": "1",
        }

    def blob_keys(self) -> list[str]:
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0), retries=False)
        try:
            client = Minio(self.seaweed.endpoint, access_key=self.seaweed.access_key,
                           secret_key=self.seaweed.secret_key, secure=False, region=self.seaweed.region,
                           http_client=http)
            objects = client.list_objects(self.seaweed.bucket, prefix=f"{self.prefix}blobs/", recursive=True)
            return sorted(obj.object_name[len(self.prefix):] for obj in objects)
        finally:
            http.clear()


@contextlib.contextmanager
def blob_storage(workdir: Path) -> Iterator[S3Storage]:
    """SeaweedFS S3 on its own server (stopped afterwards), under a fresh key prefix: production's
    blob storage. `workdir` is unused (kept for callers that pass one)."""
    with seaweedfs_server() as seaweed:
        yield S3Storage(seaweed, seaweed.new_prefix())


# -- processes -----------------------------------------------------------------------------------


def wait_grpc_serving(port: int, process: LadingProcess, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Polls grpc.health Check on 127.0.0.1:`port` until SERVING; fails with the process's output."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    # Short reconnect backoff: the default (1 s, growing) would make this poll see a fresh
    # process seconds after it started listening.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200),
               ("grpc.min_reconnect_backoff_ms", 100)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(process.describe_failure("exited before serving"))
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as error:
                last = str(error.code())
            time.sleep(0.1)
    raise RuntimeError(process.describe_failure(f"was not SERVING on port {port} within {timeout:.0f}s ({last})"))


def kill_hard(process: LadingProcess) -> None:
    """SIGKILL to the process and its own process group (nothing else), and reap it."""
    pid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process._popen.wait(timeout=10)  # type: ignore[union-attr]


@dataclass
class Cluster:
    """See the module docstring. Build, `start()`, use, `stop()` (or use as a context manager)."""

    workdir: Path
    database_url: str
    storage: Storage
    replicas: int = 2
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ports: dict[str, list[int]] = field(init=False)
    processes: dict[str, list[LadingProcess]] = field(init=False)
    haproxy: HAProxy | None = field(init=False, default=None)
    tokens: RoleTokens = field(init=False)
    _generation: int = field(init=False, default=0)
    _retired: list[LadingProcess] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.ports = {plane: [free_port() for _ in range(self.replicas)] for plane in PLANES}
        self.processes = {plane: [] for plane in PLANES}
        self.tokens = write_role_tokens(self.workdir / "tokens")

    # -- addresses -------------------------------------------------------------------------------

    def target(self, plane: str) -> str:
        """gRPC target naming every replica of `plane` (balanced by round_robin)."""
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in self.ports[plane])

    def gateway_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports['gateway'][index]}"

    @property
    def base_url(self) -> str:
        """Where clients go: HAProxy's frontend."""
        assert self.haproxy is not None
        return self.haproxy.base_url

    @property
    def hostport(self) -> str:
        assert self.haproxy is not None
        return self.haproxy.hostport

    # -- one process -----------------------------------------------------------------------------

    def _env(self, plane: str, index: int) -> dict[str, str]:
        port = self.ports[plane][index]
        env: dict[str, str] = {"LADING_METADATA__DATABASE_URL": self.database_url}
        if plane == "metadata":
            env.update({
                "LADING_METADATA__LISTEN": f"127.0.0.1:{port}",
                "LADING_METADATA__AUTO_MIGRATE": "false",
                "LADING_METADATA__POOL_SIZE": "5",
                "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "2",
                **self.tokens.metadata_env(),
            })
        elif plane == "blob":
            env.update({
                "LADING_BLOB__LISTEN": f"127.0.0.1:{port}",
                "LADING_BLOB__SHUTDOWN_GRACE_SECONDS": "2",
                **self.storage.env(),
                **self.tokens.plane_env(),
            })
        else:
            env.update({
                "LADING_GATEWAY__HOST": "127.0.0.1",
                "LADING_GATEWAY__PORT": str(port),
                "LADING_GATEWAY__METADATA_TARGET": self.target("metadata"),
                "LADING_GATEWAY__BLOB_TARGET": self.target("blob"),
                "LADING_GATEWAY__GRPC__TIMEOUT_SECONDS": str(GRPC_TIMEOUT_SECONDS),
                "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "2",
                **self.storage.env(),  # the gateway presigns S3 redirects with the same settings
                **self.tokens.gateway_env(),
            })
        env.update(self.extra_env)
        return env

    def _launch(self, plane: str, index: int) -> LadingProcess:
        self._generation += 1
        process = LadingProcess(
            f"{plane}{index}-{self._generation}", lading_command(plane),
            log_dir=self.workdir / "logs", env=self._env(plane, index), cwd=self.workdir,
        ).start()
        return process

    def _wait_ready(self, plane: str, index: int, process: LadingProcess) -> None:
        if plane == "gateway":
            wait_until_http_ok(f"{self.gateway_url(index)}/readyz", process)
        else:
            wait_grpc_serving(self.ports[plane][index], process)

    def kill(self, plane: str, index: int) -> None:
        """SIGKILL replica `index` of `plane` (no graceful anything)."""
        process = self.processes[plane][index]
        kill_hard(process)
        self._retired.append(process)

    def restart(self, plane: str, index: int) -> float:
        """Starts replica `index` of `plane` again on its port; returns seconds until it was ready."""
        started = time.monotonic()
        process = self._launch(plane, index)
        self.processes[plane][index] = process
        self._wait_ready(plane, index, process)
        return time.monotonic() - started

    # -- the whole cluster -----------------------------------------------------------------------

    def migrate(self) -> None:
        result = subprocess.run(
            lading_command("migrate"), env=child_env({"LADING_METADATA__DATABASE_URL": self.database_url}),
            cwd=self.workdir, capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"lading migrate failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def start(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.migrate()
            for plane in PLANES:
                for index in range(self.replicas):
                    self.processes[plane].append(self._launch(plane, index))
                # Planes before the gateways; replicas of a plane start together.
                for index, process in enumerate(self.processes[plane]):
                    self._wait_ready(plane, index, process)
            self.haproxy = HAProxy(
                self.workdir / "haproxy",
                [(f"gateway{index}", port) for index, port in enumerate(self.ports["gateway"])],
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops HAProxy, then the gateways, blob and metadata processes, each by pid."""
        if self.haproxy is not None:
            self.haproxy.stop()
        for plane in reversed(PLANES):
            for process in self.processes[plane]:
                process.stop(timeout=10)
        for process in self._retired:
            process.stop(timeout=5)

    def logs(self, tail: int = 3000) -> str:
        """The tail of every process's output (for failure messages)."""
        return "\n".join(
            f"--- {process.name}\n{process.log(tail)}" for plane in PLANES for process in self.processes[plane]
        )

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def http_client(base_url: str, *, timeout: float = 60.0) -> Iterator[httpx.Client]:
    """A client that follows redirects (S3-backed blob reads answer 307 to a presigned URL)."""
    with httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=True) as client:
        yield client
