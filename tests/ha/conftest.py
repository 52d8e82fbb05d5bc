"""Fixtures of the HA suite: a two-of-everything Lading behind HAProxy (tests/ha/cluster.py).

Every test here carries the `ha` marker (`make test-ha` runs only these). The blob plane stores
in SeaweedFS over S3 once the build has the S3 backend, else in a filesystem root shared by both
blob processes; the metadata plane in a fresh PostgreSQL database (the `postgres` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.cluster import Cluster, blob_storage
from tests.support.haproxy import haproxy_binary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ha: HA harness (two processes of each plane behind HAProxy)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ha)


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running cluster for one test module, on a fresh database and fresh storage."""
    haproxy_binary()  # skip (or fail in CI) before starting anything when HAProxy is missing
    workdir = tmp_path_factory.mktemp("ha")
    with postgres.database() as url, blob_storage(workdir) as storage:
        with Cluster(workdir, url, storage) as running:
            yield running
