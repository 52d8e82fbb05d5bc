"""Fixtures of the event tests: a real HTTP receiver, and migrated SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.metadata.store.engine import Database
from tests.events.receiver import Receiver
from tests.support.metadata_db import migrated_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request, tmp_path) as db:
        yield db


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()
