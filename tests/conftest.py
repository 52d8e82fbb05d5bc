"""Fixtures shared by every test folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

# The test process runs gRPC clients and servers and forks children (subprocess.Popen with a
# preexec_fn forks without exec first): gRPC's fork handlers, on by default in grpcio's core,
# then abort those children or break the test process's pollers ("epoll_wait error: Bad file
# descriptor"). Lading's own entry point turns them off too (services/cli.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# With PYTHONDONTWRITEBYTECODE set (some CI images and sandboxes set it), every Python process the
# suite starts (each plane of every `lading serve`, every `lading` command: hundreds of them)
# compiles Lading's sources again, 0.2-0.3 s of CPU each. The children write their bytecode to a
# folder of this session instead: the tree stays as clean as the setting wants it, and the folder
# goes when the session ends. (The test process itself compiled what it imported already.)
if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    _PYCACHE = tempfile.mkdtemp(prefix="lading-test-pycache-")
    atexit.register(shutil.rmtree, _PYCACHE, ignore_errors=True)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE

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
