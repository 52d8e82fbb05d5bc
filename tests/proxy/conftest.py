"""Fixtures of the pull-through cache tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.distribution import Distribution


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """A CNCF Distribution of the test module's own, as the cache's upstream."""
    with Distribution(tmp_path_factory.mktemp("distribution")) as registry:
        yield registry
