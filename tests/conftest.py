"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

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
