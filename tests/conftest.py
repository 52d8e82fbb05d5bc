"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator

# The test process runs gRPC clients and servers and forks children (subprocess.Popen with a
# preexec_fn forks without exec first): gRPC's fork handlers, on by default in grpcio's core,
# then abort those children or break the test process's pollers ("epoll_wait error: Bad file
# descriptor"). Lading's own entry point turns them off too (services/cli.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

from tests.support.postgres import PostgresProvider
from tests.support.wheelhouse import Wheelhouses


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProvider]:
    """The test PostgreSQL server (LADING_TEST_DATABASE_URL, or an embedded one)."""
    yield PostgresProvider()


@pytest.fixture(scope="session")
def wheelhouses(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouses:
    """Lading's dependencies as wheels, fetched once per session and target (tests/image, tests/packaging)."""
    return Wheelhouses(tmp_path_factory.mktemp("wheelhouses"))
