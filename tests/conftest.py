"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresProvider


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProvider]:
    """The test PostgreSQL server (LADING_TEST_DATABASE_URL, or an embedded one)."""
    yield PostgresProvider()
