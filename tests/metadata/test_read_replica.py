"""`metadata.read_replica_url`: read-only store calls go to the replica, writes to the primary.

The "replica" is a second PostgreSQL database with the same schema and no replication, so
routing shows: what is written through the store is NOT visible to the store's reads until the
same rows are copied into the replica (here by running the same writes against it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import MetadataSettings
from services.metadata.migrations import check_schema_current, migrate
from services.metadata.store.base import NewManifest
from services.metadata.store.engine import open_database
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs

pytestmark = pytest.mark.postgres

REPO = "replica/app"


@dataclass
class Pair:
    store: SqlMetadataStore  # primary + replica
    copier: SqlMetadataStore  # writes straight into the replica database ("replication")


@pytest.fixture(scope="module")
def urls(postgres) -> Iterator[tuple[str, str]]:
    with postgres.database() as primary, postgres.database() as replica:
        yield primary, replica


@pytest.fixture
async def pair(urls: tuple[str, str]) -> AsyncIterator[Pair]:
    primary_url, replica_url = urls
    await migrate(primary_url)
    await migrate(replica_url)
    routed = open_database(MetadataSettings(database_url=primary_url, read_replica_url=replica_url, pool_size=2))
    direct = open_database(MetadataSettings(database_url=replica_url, pool_size=2))
    try:
        yield Pair(SqlMetadataStore(routed), SqlMetadataStore(direct))
    finally:
        await routed.dispose()
        await direct.dispose()


def _manifest() -> NewManifest:
    document = docs.image(layers=1)
    payload = docs.render(document)
    return NewManifest(
        digest=docs.sha256(payload), media_type=docs.OCI_MANIFEST, payload=payload, subject_digest=None,
        artifact_type=None, config_media_type=None, annotations=None,
        blob_digests=tuple(digest for digest, _ in docs.blobs_of(document)), manifest_digests=(),
    )


async def _write(store: SqlMetadataStore, repository: str, manifest: NewManifest, tag: str) -> None:
    for digest in manifest.blob_digests:
        await store.link_blob(repository, digest, 100)
    await store.put_manifest(repository, manifest, tag)


async def test_reads_use_the_replica_and_writes_the_primary(pair: Pair) -> None:
    repository = f"{REPO}-{docs.random_digest()[-8:]}"
    manifest = _manifest()
    # Writes succeed, and see their own earlier writes (put_manifest checks the links on the primary).
    await _write(pair.store, repository, manifest, "v1")

    # ... but none of it is visible to the read-only calls: they ask the (stale) replica.
    with pytest.raises(RegistryError) as unknown:
        await pair.store.get_manifest(repository, tag="v1")
    assert unknown.value.kind is ErrorKind.NAME_UNKNOWN
    assert await pair.store.stat_blob(repository, manifest.blob_digests[0]) is None
    with pytest.raises(RegistryError) as unknown:
        await pair.store.list_tags(repository, last="", limit=10)
    assert unknown.value.kind is ErrorKind.NAME_UNKNOWN
    assert repository not in (await pair.store.list_repositories(last="", limit=1000)).items
    assert (await pair.store.list_referrers(repository, manifest.digest, artifact_type=None, last="",
                                            limit=10)).items == []

    # "Replication" catches up: the same rows land in the replica, and the reads see them.
    await _write(pair.copier, repository, manifest, "v1")
    found = await pair.store.get_manifest(repository, tag="v1")
    assert found.digest == manifest.digest and found.payload == manifest.payload
    assert await pair.store.stat_blob(repository, manifest.blob_digests[0]) == 100
    assert (await pair.store.list_tags(repository, last="", limit=10)).items == ["v1"]
    assert repository in (await pair.store.list_repositories(last="", limit=1000)).items


async def test_writes_never_go_to_the_replica(pair: Pair) -> None:
    repository = f"{REPO}-{docs.random_digest()[-8:]}"
    manifest = _manifest()
    # Only the replica knows the blobs: a write that checks them must look at the primary, and fail.
    for digest in manifest.blob_digests:
        await pair.copier.link_blob(repository, digest, 100)
    with pytest.raises(RegistryError) as missing:
        await pair.store.put_manifest(repository, manifest, "v1")
    assert missing.value.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN
    # Deleting is a write too: the replica's copy is untouched by it.
    assert await pair.store.unlink_blob(repository, manifest.blob_digests[0]) is False
    assert await pair.store.stat_blob(repository, manifest.blob_digests[0]) == 100


async def test_ping_and_schema_check_need_the_primary(urls: tuple[str, str]) -> None:
    primary_url, replica_url = urls
    await migrate(primary_url)
    database = open_database(MetadataSettings(database_url=primary_url, read_replica_url=replica_url))
    try:
        await SqlMetadataStore(database).ping()
        assert await check_schema_current(database)
    finally:
        await database.dispose()

    # A primary that is down fails the ping even though the replica answers.
    unreachable = open_database(MetadataSettings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nothing", read_replica_url=replica_url,
        statement_timeout_seconds=2,
    ))
    try:
        with pytest.raises(RegistryError) as down:
            await SqlMetadataStore(unreachable).ping()
        assert down.value.kind is ErrorKind.UNAVAILABLE
    finally:
        await unreachable.dispose()


def test_replica_of_another_dialect_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="read replica"):
        open_database(MetadataSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
            read_replica_url="postgresql+asyncpg://postgres@127.0.0.1/x",
        ))
