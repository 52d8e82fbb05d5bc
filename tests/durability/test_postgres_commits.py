"""On PostgreSQL, Lading relies on `synchronous_commit=on` (issue 18 item 3): the metadata plane
warns at start-up when the setting its sessions get is off, wherever it was turned off (here: for
the database, and for the role), and says nothing when it is on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from services.common.settings import MetadataSettings
from services.metadata.store.durability import commit_durability_warning
from services.metadata.store.engine import open_database
from tests.support.postgres import PostgresProvider, query
from tests.support.stack import LadingProcess, lading_command

pytestmark = pytest.mark.postgres


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, ""))


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _warning(url: str) -> str | None:
    database = open_database(MetadataSettings(database_url=url))
    try:
        return await commit_durability_warning(database)
    finally:
        await database.dispose()


@pytest.fixture
def database_url(postgres: PostgresProvider) -> Iterator[str]:
    with postgres.database() as url:
        yield url


async def test_no_warning_when_commits_are_durable(database_url: str) -> None:
    assert await _warning(database_url) is None


async def test_a_database_with_synchronous_commit_off_is_reported(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    query(_plain(database_url), f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    warning = await _warning(database_url)
    assert warning is not None and "synchronous_commit=off" in warning and name in warning


async def test_a_role_with_synchronous_commit_off_is_reported(database_url: str) -> None:
    role = f"lading_async_{uuid.uuid4().hex[:8]}"
    query(_plain(database_url), f'CREATE ROLE "{role}" LOGIN')
    try:
        query(_plain(database_url), f'ALTER ROLE "{role}" SET synchronous_commit = off')
        warning = await _warning(_as_user(database_url, role))
        assert warning is not None and f"as role {role}" in warning
        # The same database through the default role is fine.
        assert await _warning(database_url) is None
    finally:
        query(_plain(database_url), f'DROP ROLE IF EXISTS "{role}"')


def test_the_metadata_plane_warns_at_start_up(database_url: str, tmp_path: Path) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    query(_plain(database_url), f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    socket = tmp_path / "metadata.sock"
    plane = LadingProcess("metadata", lading_command("metadata"), log_dir=tmp_path, env={
        "LADING_METADATA__DATABASE_URL": database_url,
        "LADING_METADATA__LISTEN": f"unix:{socket}",
    }).start()
    try:
        assert plane.wait_for_output("synchronous_commit=off"), plane.describe_failure("did not warn")
        assert "Lading relies on synchronous_commit=on" in plane.log()
    finally:
        plane.stop()
