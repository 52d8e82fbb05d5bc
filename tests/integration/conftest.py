"""The registry under test, once per storage profile.

`registry` is ONE session-scoped fixture parametrized by `PROFILES`: every test that uses it runs
once per profile, unchanged. A profile is a name plus a context manager that yields the `LADING_*`
variables for a fresh, empty set of backing stores (and tears them down after). Adding a profile
(for example "postgres-s3", once the blob plane speaks S3) is one more entry in `PROFILES`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import pytest

from tests.support.stack import ExternalRegistry, Stack

EnvFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[dict[str, str]]]


@contextlib.contextmanager
def _sqlite_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    # The embedded default: `lading serve` puts SQLite and the blob files under --data-dir.
    yield {}


@contextlib.contextmanager
def _postgres_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    provider = request.getfixturevalue("postgres")
    with provider.database() as url:
        yield {"LADING_METADATA__DATABASE_URL": url}


@dataclass(frozen=True)
class Profile:
    """A named set of backing stores; `environment()` yields the LADING_* variables for fresh ones."""

    name: str
    make_env: EnvFactory
    request: pytest.FixtureRequest | None = None

    def bind(self, request: pytest.FixtureRequest) -> Profile:
        return Profile(self.name, self.make_env, request)

    def environment(self) -> AbstractContextManager[dict[str, str]]:
        assert self.request is not None, "bind() the profile to a fixture request first"
        return self.make_env(self.request)


PROFILES = [
    pytest.param(Profile("sqlite", _sqlite_env), id="sqlite"),
    pytest.param(Profile("postgres", _postgres_env), id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> Profile:
    """The storage profile of this run; tests that start their own processes use its environment()."""
    return request.param.bind(request)


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
def client(registry: Stack) -> Iterator[httpx.Client]:
    """An HTTP client bound to the registry (no redirects followed: tests look at every answer)."""
    with httpx.Client(base_url=registry.base_url, timeout=60.0, follow_redirects=False) as http:
        yield http


def unique_repo(prefix: str = "e2e") -> str:
    """A repository name no other test uses (valid under the spec's name grammar)."""
    return f"{prefix}/{uuid.uuid4().hex[:16]}"


@pytest.fixture
def repo() -> str:
    return unique_repo()
