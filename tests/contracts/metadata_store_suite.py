"""The MetadataStore contract suite: every test runs unchanged against every store.

The `dialect` fixture is parametrized over SQLite (a temporary file) and PostgreSQL (the `postgres`
fixture from tests/conftest.py); each module run migrates one database per dialect and every test
starts from empty tables. Tests that exercise bad input assert that the failing call left the row
counts of every table unchanged.

The store is driven directly and through `MetadataCore` (which validates input and parses
manifests before calling it), so the input checks are pinned on both dialects too.

pytest collects this file through tests/metadata/test_store_contract.py (a one-line import), the way
Distribution's drivers hand their constructor to the shared suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, inspect, select, text

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import MetadataSettings
from services.metadata import manifests
from services.metadata.core import MetadataCore, MetadataLimits
from services.metadata.migrations import check_schema_current, current_revisions, head_revision, migrate
from services.metadata.store.base import MetadataStore, NewManifest
from services.metadata.store.engine import Database, open_database
from services.metadata.store.schema import ALL_TABLES, complete_metadata
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import empty_database_url, migrate_to, migrated_database, truncate
from tests.support.schema_drift import schema_differences

DIALECTS = ["sqlite", "postgresql"]
LIMITS = MetadataLimits(max_manifest_bytes=64 * 1024, default_page_size=3, max_page_size=50)
TABLE_NAMES = [table.name for table in ALL_TABLES]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a brand-new, never-migrated database of the current dialect."""
    with empty_database_url(dialect, request, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
async def database(dialect: str, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with migrated_database(dialect, request, tmp_path_factory.mktemp(f"store-{dialect}")) as db:
        yield db


async def _truncate(db: Database) -> None:
    await truncate(db, ALL_TABLES)


@pytest.fixture
async def store(database: Database) -> SqlMetadataStore:
    await _truncate(database)
    return SqlMetadataStore(database)


@pytest.fixture
def core(store: MetadataStore) -> MetadataCore:
    return MetadataCore(store, LIMITS)


async def counts(db: Database) -> dict[str, int]:
    async with db.reads.connect() as conn:
        return {t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one() for t in ALL_TABLES}


@contextlib.asynccontextmanager
async def leaves_no_rows(db: Database, kind: ErrorKind) -> AsyncIterator[list[RegistryError]]:
    """Asserts the block raises RegistryError(kind) and changes no table's row count."""
    before = await counts(db)
    caught: list[RegistryError] = []
    with pytest.raises(RegistryError) as info:
        yield caught
    caught.append(info.value)
    assert info.value.kind is kind, info.value
    assert await counts(db) == before


def new_manifest(payload: bytes, *, media_type: str = docs.OCI_MANIFEST, blobs: tuple[str, ...] = (),
                 children: tuple[str, ...] = (), subject: str | None = None, artifact_type: str | None = None,
                 annotations: str | None = None) -> NewManifest:
    return NewManifest(
        digest=docs.sha256(payload), media_type=media_type, payload=payload, subject_digest=subject,
        artifact_type=artifact_type, config_media_type=None, annotations=annotations,
        blob_digests=blobs, manifest_digests=children,
    )


async def push_image(core: MetadataCore, repository: str, reference: str, document: dict[str, Any],
                     *, content_type: str = docs.OCI_MANIFEST) -> tuple[bytes, str]:
    """Links the image's blobs, then pushes it; returns (payload, digest)."""
    for digest, size in docs.blobs_of(document):
        await core.link_blob(repository, digest, size)
    payload = docs.render(document)
    result = await core.put_manifest(repository, reference, content_type, payload)
    return payload, result.digest


# -- migrations -----------------------------------------------------------------------------------


async def test_migrations_run_up_from_empty(empty_url: str, dialect: str) -> None:
    assert await current_revisions(empty_url) == ()
    assert not await check_schema_current(empty_url)
    await migrate(empty_url)
    assert await check_schema_current(empty_url)
    await migrate(empty_url)  # a second run is a no-op
    assert await current_revisions(empty_url) == (head_revision(),)
    db = open_database(MetadataSettings(database_url=empty_url))
    try:
        async with db.reads.connect() as conn:
            names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        assert set(TABLE_NAMES) <= names
        assert db.dialect == dialect
    finally:
        await db.dispose()


async def test_migrated_schema_is_the_declared_one(empty_url: str) -> None:
    """Alembic's autogenerate comparison (and tests/support/schema_drift.py's additions) finds no
    difference between `complete_metadata()` and a database migrated from empty."""
    await migrate(empty_url)
    db = open_database(MetadataSettings(database_url=empty_url))
    try:
        async with db.engine.connect() as conn:
            differences = await conn.run_sync(schema_differences, complete_metadata())
    finally:
        await db.dispose()
    assert differences == [], "the migrations and the models disagree:\n" + "\n".join(differences)


def test_every_table_is_on_the_one_metadata() -> None:
    """Each `Table` any metadata-plane module holds is on `complete_metadata()`, so Alembic and
    the comparison above see it."""
    import importlib
    import pkgutil

    from sqlalchemy import Table

    import services.metadata

    one = complete_metadata()
    tables = {}
    for module_info in pkgutil.walk_packages(services.metadata.__path__, "services.metadata."):
        if module_info.name.endswith(".__main__") or ".migrations" in module_info.name:
            continue  # a program; Alembic's environment and frozen revisions
        module = importlib.import_module(module_info.name)
        tables.update({f"{module_info.name}.{name}": value for name, value in vars(module).items()
                       if isinstance(value, Table)})
    assert {"services.metadata.accounts.schema.accounts", "services.metadata.changes.tables.changes"} <= set(tables)
    elsewhere = sorted(name for name, table in tables.items() if one.tables.get(table.name) is not table)
    assert elsewhere == [], f"tables not declared on services.metadata.store.schema.metadata: {elsewhere}"


async def test_upgrading_keeps_accounts_grants_and_changes(empty_url: str, dialect: str) -> None:
    """From the previous head (0005) up to head, down again and up: every account (ids included),
    grant and change is kept, and the defaults 0005 needed to fill its new columns are gone (an
    account without its own immutable id is refused instead of getting a shared '')."""
    rows_before: dict[str, list[tuple[Any, ...]]] = {}
    queries = {
        "accounts": "SELECT id, name, kind, password_hash, is_admin, description, expires_at, created_at, uid, "
                    "credential_generation, disabled FROM accounts ORDER BY id",
        "grants": "SELECT account_id, pattern, actions FROM grants ORDER BY account_id, pattern",
        "changes": "SELECT position, kind, subject, body FROM changes ORDER BY position",
    }
    db = open_database(MetadataSettings(database_url=empty_url))
    try:
        await migrate_to(db, "0005_credentials")
        async with db.writes.begin() as conn:
            for number, (name, disabled) in enumerate((("alice", False), ("robot$ci", True), ("zed", False))):
                await conn.execute(text(
                    "INSERT INTO accounts (name, kind, password_hash, is_admin, description, expires_at, created_at, "
                    "uid, credential_generation, disabled) VALUES (:name, 'user', 'hash', :admin, 'who', NULL, "
                    "CURRENT_TIMESTAMP, :uid, :generation, :disabled)"),
                    {"name": name, "admin": number == 0, "uid": f"{number:032x}", "generation": number + 1,
                     "disabled": disabled})
                for pattern in ("team/*", f"{name.split('$')[0]}/*"):
                    await conn.execute(text(
                        "INSERT INTO grants (account_id, pattern, actions) SELECT id, :pattern, 'pull,push' "
                        "FROM accounts WHERE name = :name"), {"pattern": pattern, "name": name})
                await conn.execute(text(
                    "INSERT INTO changes (kind, subject, body, created_at) "
                    "VALUES ('account', :uid, '{}', CURRENT_TIMESTAMP)"), {"uid": f"{number:032x}"})
            await conn.execute(text("DELETE FROM accounts WHERE name = 'zed'"))  # a hole in the ids
        async with db.engine.connect() as conn:
            for table, query in queries.items():
                rows_before[table] = [tuple(row) for row in await conn.execute(text(query))]
        assert len(rows_before["grants"]) == 4

        for step in ("up", "down", "up"):
            if step == "up":
                await migrate(db)
            else:
                await migrate_to(db, "0005_credentials", down=True)
            async with db.engine.connect() as conn:
                for table, query in queries.items():
                    assert [tuple(row) for row in await conn.execute(text(query))] == rows_before[table], (step, table)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_differences, complete_metadata()) == []

        with pytest.raises(sa_exc.IntegrityError):
            async with db.writes.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO accounts (name, kind, password_hash, is_admin, description, created_at, "
                    "credential_generation, disabled) VALUES ('no-uid', 'user', 'x', false, '', CURRENT_TIMESTAMP, 1, "
                    "false)"))
        # The cascade still holds after the rebuild: deleting an account deletes its grants.
        async with db.writes.begin() as conn:
            await conn.execute(text("DELETE FROM accounts WHERE name = 'alice'"))
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT COUNT(*) FROM grants"))).scalar_one() == 2
    finally:
        await db.dispose()


# -- blobs ------------------------------------------------------------------------------------------


async def test_link_creates_repository_and_is_idempotent(store: SqlMetadataStore, database: Database) -> None:
    digest = docs.random_digest()
    await store.link_blob("team/app", digest, 10)
    await store.link_blob("team/app", digest, 10)
    await store.link_blob("team/app", digest, 99)  # the first recorded size stays
    assert await store.stat_blob("team/app", digest) == 10
    assert (await store.list_repositories(last="", limit=10)).items == ["team/app"]
    assert (await counts(database))["repository_blobs"] == 1


async def test_stat_blob_only_where_linked(store: SqlMetadataStore) -> None:
    digest = docs.random_digest()
    await store.link_blob("a", digest, 5)
    await store.link_blob("b", docs.random_digest(), 5)
    assert await store.stat_blob("a", digest) == 5
    assert await store.stat_blob("b", digest) is None
    assert await store.stat_blob("nobody", digest) is None


async def test_core_stat_and_unlink_of_unlinked_blob_are_blob_unknown(core: MetadataCore, database: Database) -> None:
    digest = docs.random_digest()
    await core.link_blob("a", digest, 1)
    assert await core.stat_blob("a", digest) == 1
    for repository in ("a", "unknown"):
        other = docs.random_digest()
        async with leaves_no_rows(database, ErrorKind.BLOB_UNKNOWN):
            await core.stat_blob(repository, other)
        async with leaves_no_rows(database, ErrorKind.BLOB_UNKNOWN):
            await core.unlink_blob(repository, other)
    await core.unlink_blob("a", digest)
    async with leaves_no_rows(database, ErrorKind.BLOB_UNKNOWN):
        await core.stat_blob("a", digest)
    # The repository stays, empty.
    assert (await core.list_repositories(limit=None, last="")).items == ["a"]


async def test_unlink_reports_whether_a_link_existed(store: SqlMetadataStore) -> None:
    digest = docs.random_digest()
    await store.link_blob("a", digest, 1)
    assert await store.unlink_blob("a", digest) is True
    assert await store.unlink_blob("a", digest) is False
    assert await store.unlink_blob("nope", digest) is False


async def test_mount_from_named_repository(store: SqlMetadataStore, database: Database) -> None:
    digest = docs.random_digest()
    await store.link_blob("src", digest, 42)
    assert await store.mount_blob("dst", digest, "src") == 42
    assert await store.stat_blob("dst", digest) == 42
    assert await store.mount_blob("dst", digest, "src") == 42  # idempotent
    assert (await counts(database))["repository_blobs"] == 2


async def test_mount_misses_write_nothing(store: SqlMetadataStore, database: Database) -> None:
    digest = docs.random_digest()
    await store.link_blob("src", digest, 42)
    await store.link_blob("other", docs.random_digest(), 1)
    before = await counts(database)
    assert await store.mount_blob("dst", digest, "other") is None  # not linked there
    assert await store.mount_blob("dst", digest, "ghost") is None  # no such repository
    assert await store.mount_blob("dst", docs.random_digest(), None) is None  # nowhere
    assert await counts(database) == before
    assert await store.stat_blob("dst", digest) is None


async def test_mount_from_any_repository(store: SqlMetadataStore) -> None:
    digest = docs.random_digest()
    await store.link_blob("somewhere/else", digest, 7)
    assert await store.mount_blob("dst", digest, None) == 7
    assert await store.stat_blob("dst", digest) == 7


async def test_core_mount_with_empty_from_means_anywhere(core: MetadataCore) -> None:
    digest = docs.random_digest()
    await core.link_blob("x", digest, 3)
    assert await core.mount_blob("y", digest, "") == 3
    assert await core.mount_blob("z", digest, "unknown") is None


# -- manifests ----------------------------------------------------------------------------------------


async def test_put_and_get_manifest_by_tag_and_digest(core: MetadataCore, database: Database) -> None:
    document = docs.image(layers=2)
    payload, digest = await push_image(core, "lib/app", "v1", document)
    assert digest == docs.sha256(payload)
    by_tag = await core.get_manifest("lib/app", "v1")
    by_digest = await core.get_manifest("lib/app", digest)
    for got in (by_tag, by_digest):
        assert got.payload == payload  # the exact bytes
        assert got.digest == digest
        assert got.media_type == docs.OCI_MANIFEST
        assert got.size == len(payload)
    head = await core.get_manifest("lib/app", "v1", omit_payload=True)
    assert head.payload is None and head.size == len(payload) and head.digest == digest
    rows = await counts(database)
    assert rows["manifests"] == 1 and rows["tags"] == 1 and rows["manifest_references"] == 3


async def test_put_by_digest_stores_without_tag(core: MetadataCore, database: Database) -> None:
    document = docs.image()
    for d, s in docs.blobs_of(document):
        await core.link_blob("r", d, s)
    payload = docs.render(document)
    result = await core.put_manifest("r", docs.sha256(payload), docs.OCI_MANIFEST, payload)
    assert result.digest == docs.sha256(payload) and result.subject_digest is None
    assert (await core.get_manifest("r", result.digest)).payload == payload
    assert (await core.list_tags("r", limit=None, last="")).items == []


async def test_get_manifest_unknowns(core: MetadataCore) -> None:
    await push_image(core, "r", "v1", docs.image())
    with pytest.raises(RegistryError) as caught:
        await core.get_manifest("ghost", "v1")
    assert caught.value.kind is ErrorKind.NAME_UNKNOWN
    with pytest.raises(RegistryError) as caught:
        await core.get_manifest("ghost", docs.random_digest(), omit_payload=True)
    assert caught.value.kind is ErrorKind.NAME_UNKNOWN
    for reference in ("v2", docs.random_digest()):
        for omit in (False, True):
            with pytest.raises(RegistryError) as caught:
                await core.get_manifest("r", reference, omit_payload=omit)
            assert caught.value.kind is ErrorKind.MANIFEST_UNKNOWN


async def test_missing_blobs_are_listed_and_leave_no_rows(core: MetadataCore, database: Database) -> None:
    document = docs.image(layers=2)
    (config, _), (layer0, size0), (layer1, _) = docs.blobs_of(document)
    payload = docs.render(document)
    # A brand-new repository: not even the repository row may appear.
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN) as caught:
        await core.put_manifest("fresh", "v1", docs.OCI_MANIFEST, payload)
    assert set(caught[0].detail["blobs"]) == {config, layer0, layer1}
    await core.link_blob("fresh", layer0, size0)
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN) as caught:
        await core.put_manifest("fresh", "v1", docs.OCI_MANIFEST, payload)
    assert caught[0].detail == {"blobs": [config, layer1], "blob_count": 2, "manifests": [], "manifest_count": 0}


async def test_a_manifest_from_an_upstream_needs_no_references_yet(core: MetadataCore) -> None:
    # The pull-through cache stores what its upstream served; blobs and children come on demand.
    document = docs.image(layers=2)
    payload = docs.render(document)
    result = await core.put_manifest("cached/app", "v1", docs.OCI_MANIFEST, payload, from_upstream=True)
    stored = await core.get_manifest("cached/app", "v1")
    assert stored.digest == result.digest and stored.payload == payload
    index = docs.render(docs.index([docs.render(docs.image())]))
    by_digest = docs.sha256(index)
    await core.put_manifest("cached/app", by_digest, docs.OCI_INDEX, index, from_upstream=True)
    assert (await core.get_manifest("cached/app", by_digest)).payload == index
    # Without the flag the same manifest is still refused in a repository lacking its blobs.
    with pytest.raises(RegistryError) as caught:
        await core.put_manifest("pushed/app", "v1", docs.OCI_MANIFEST, payload)
    assert caught.value.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN


async def test_many_missing_blobs_are_counted_and_a_few_named(core: MetadataCore, database: Database) -> None:
    # The error must stay small enough to cross gRPC however many are missing.
    document = docs.image(layers=300)
    missing = [digest for digest, _ in docs.blobs_of(document)]
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN) as caught:
        await core.put_manifest("many", "v1", docs.OCI_MANIFEST, docs.render(document))
    detail = caught[0].detail
    assert detail["blob_count"] == len(missing) == 301 and detail["manifest_count"] == 0
    assert 0 < len(detail["blobs"]) <= 5 and set(detail["blobs"]) <= set(missing)
    assert str(len(missing)) in caught[0].message


async def test_blobs_linked_elsewhere_do_not_count(core: MetadataCore, database: Database) -> None:
    document = docs.image(layers=1)
    for d, s in docs.blobs_of(document):
        await core.link_blob("elsewhere", d, s)
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN):
        await core.put_manifest("here", "v1", docs.OCI_MANIFEST, docs.render(document))


async def test_foreign_layers_need_no_link(core: MetadataCore) -> None:
    foreign = [docs.descriptor(docs.DOCKER_FOREIGN, urls=["https://example.com/x"])]
    document = docs.image(layers=1, media_type=docs.DOCKER_MANIFEST, extra_layers=foreign)
    for d, s in docs.blobs_of(document)[:-1]:
        await core.link_blob("win", d, s)
    result = await core.put_manifest("win", "ltsc", docs.DOCKER_MANIFEST, docs.render(document))
    assert (await core.get_manifest("win", "ltsc")).digest == result.digest


async def test_index_needs_its_children(core: MetadataCore, database: Database) -> None:
    child_a, _ = await push_image(core, "multi", "amd64", docs.image())
    child_b = docs.render(docs.image())
    document = docs.index([child_a, child_b])
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN) as caught:
        await core.put_manifest("multi", "latest", docs.OCI_INDEX, docs.render(document))
    assert caught[0].detail == {"blobs": [], "blob_count": 0, "manifests": [docs.sha256(child_b)], "manifest_count": 1}
    await push_image(core, "multi", docs.sha256(child_b), json.loads(child_b))
    result = await core.put_manifest("multi", "latest", docs.OCI_INDEX, docs.render(document))
    got = await core.get_manifest("multi", "latest")
    assert got.digest == result.digest and got.media_type == docs.OCI_INDEX


async def test_docker_manifest_list(core: MetadataCore) -> None:
    child, _ = await push_image(core, "d", "amd64", docs.image(media_type=docs.DOCKER_MANIFEST),
                                content_type=docs.DOCKER_MANIFEST)
    document = docs.index([child], media_type=docs.DOCKER_LIST, child_type=docs.DOCKER_MANIFEST)
    await core.put_manifest("d", "latest", docs.DOCKER_LIST, docs.render(document))
    assert (await core.get_manifest("d", "latest")).media_type == docs.DOCKER_LIST
    assert (await core.get_manifest("d", "amd64")).media_type == docs.DOCKER_MANIFEST


@contextlib.contextmanager
def parses_on_this_thread() -> Iterator[list[str]]:
    """The media types `parse_manifest` was called with on this thread (the event loop's) while
    the block ran, seen by a profile hook: the parser itself is not touched."""
    seen: list[str] = []
    code = manifests.parse_manifest.__code__

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is code:
            seen.append(frame.f_locals["content_type"])

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def big_image(approximate_bytes: int) -> dict[str, Any]:
    """An image manifest of about `approximate_bytes`, made of thousands of non-distributable
    layers (each parsed and validated as a descriptor, none needing a blob link): the shape that
    costs its parse the most CPU per byte."""
    def layer() -> dict[str, Any]:
        return docs.descriptor(docs.OCI_NONDISTRIBUTABLE, urls=[f"https://layers.example/{os.urandom(8).hex()}"],
                               annotations={"org.opencontainers.image.title": "layer.tar.gz"})

    count = approximate_bytes // len(docs.render(layer()))
    return docs.image(layers=0, extra_layers=[layer() for _ in range(count)])


async def test_a_big_manifest_is_parsed_off_the_event_loop_and_a_small_one_on_it(store: MetadataStore) -> None:
    """Parsing a manifest near the 4 MiB limit takes the CPU for 10-100 ms, during which every
    other call of the metadata plane would wait: above `parse_inline_max_bytes` (256 KiB by
    default) it runs in a worker thread. Below, it stays on the loop (the hop would cost more).
    A 3 MiB one round trips on every store."""
    core = MetadataCore(store, dataclasses.replace(LIMITS, max_manifest_bytes=4 * 1024 * 1024))
    assert LIMITS.parse_inline_max_bytes == MetadataSettings().manifest_parse_inline_max_bytes == 256 * 1024
    big = big_image(3 * 1024 * 1024)
    small = docs.image()
    for document in (big, small):
        await core.link_blob("lib/big", document["config"]["digest"], document["config"]["size"])
    for digest, size in docs.blobs_of(small):
        await core.link_blob("lib/big", digest, size)
    big_payload = docs.render(big)
    assert 2.5 * 1024 * 1024 < len(big_payload) < 3.5 * 1024 * 1024
    with parses_on_this_thread() as on_the_loop:
        big_digest = (await core.put_manifest("lib/big", "big", docs.OCI_MANIFEST, big_payload)).digest
    assert on_the_loop == [], "the 3 MiB manifest was parsed on the event loop"
    with parses_on_this_thread() as on_the_loop:
        await core.put_manifest("lib/big", "small", docs.OCI_MANIFEST, docs.render(small))
    assert on_the_loop == [docs.OCI_MANIFEST], "the small manifest was not parsed on the event loop"
    for reference in ("big", big_digest):
        got = await core.get_manifest("lib/big", reference)
        assert got.payload == big_payload and got.digest == docs.sha256(big_payload)
        assert got.media_type == docs.OCI_MANIFEST
    # Its parse ran (somewhere): its one distributable blob, the config, is its only reference.
    with pytest.raises(RegistryError) as caught:
        await core.put_manifest("elsewhere", "big", docs.OCI_MANIFEST, big_payload)
    assert caught.value.kind is ErrorKind.MANIFEST_BLOB_UNKNOWN
    assert caught.value.detail["blobs"] == [big["config"]["digest"]]
    # A stored manifest read back for its references (the proxy's mirror, replication) the same way.
    with parses_on_this_thread() as on_the_loop:
        parsed = await core.parse_stored(big_payload, docs.OCI_MANIFEST)
    assert on_the_loop == [] and list(parsed.blob_digests) == [big["config"]["digest"]]
    with parses_on_this_thread() as on_the_loop:
        await core.parse_stored(docs.render(small), docs.OCI_MANIFEST)
    assert on_the_loop == [docs.OCI_MANIFEST]


async def test_repush_is_idempotent_and_tag_moves(core: MetadataCore, database: Database) -> None:
    first = docs.image()
    payload_a, digest_a = await push_image(core, "r", "latest", first)
    await core.put_manifest("r", "latest", docs.OCI_MANIFEST, payload_a)
    await core.put_manifest("r", digest_a, docs.OCI_MANIFEST, payload_a)
    rows = await counts(database)
    assert rows["manifests"] == 1 and rows["tags"] == 1
    payload_b, digest_b = await push_image(core, "r", "latest", docs.image())
    assert (await core.get_manifest("r", "latest")).digest == digest_b
    assert (await core.get_manifest("r", digest_a)).payload == payload_a  # untagged, still there
    assert (await counts(database))["tags"] == 1
    await core.put_manifest("r", "stable", docs.OCI_MANIFEST, payload_a)
    assert (await core.list_tags("r", limit=None, last="")).items == ["latest", "stable"]


async def test_delete_manifest_by_digest_removes_tags_and_references(core: MetadataCore, database: Database) -> None:
    payload, digest = await push_image(core, "r", "v1", docs.image(layers=2))
    await core.put_manifest("r", "v2", docs.OCI_MANIFEST, payload)
    keep, _ = await push_image(core, "r", "keep", docs.image(layers=1))
    await core.delete_manifest("r", digest)
    rows = await counts(database)
    assert rows["manifests"] == 1 and rows["tags"] == 1 and rows["manifest_references"] == 2
    assert rows["repository_blobs"] == 5  # blob links are untouched
    for reference in ("v1", "v2", digest):
        with pytest.raises(RegistryError) as caught:
            await core.get_manifest("r", reference)
        assert caught.value.kind is ErrorKind.MANIFEST_UNKNOWN
    assert (await core.get_manifest("r", "keep")).payload == keep
    async with leaves_no_rows(database, ErrorKind.MANIFEST_UNKNOWN):
        await core.delete_manifest("r", digest)
    async with leaves_no_rows(database, ErrorKind.NAME_UNKNOWN):
        await core.delete_manifest("ghost", digest)


async def test_delete_tag_keeps_manifest(core: MetadataCore, database: Database) -> None:
    payload, digest = await push_image(core, "r", "v1", docs.image())
    await core.delete_manifest("r", "v1")
    assert (await core.get_manifest("r", digest)).payload == payload
    assert (await core.list_tags("r", limit=None, last="")).items == []
    async with leaves_no_rows(database, ErrorKind.MANIFEST_UNKNOWN):
        await core.delete_manifest("r", "v1")
    async with leaves_no_rows(database, ErrorKind.NAME_UNKNOWN):
        await core.delete_manifest("ghost", "v1")


# -- bad input through the core: the right error, and nothing written --------------------------------


@pytest.mark.parametrize(
    ("repository", "reference", "content_type", "payload", "kind"),
    [
        ("r", "v1", docs.OCI_MANIFEST, b"{not json", ErrorKind.MANIFEST_INVALID),
        ("r", "v1", docs.OCI_MANIFEST, b"[]", ErrorKind.MANIFEST_INVALID),
        ("r", "v1", "application/vnd.docker.distribution.manifest.v1+prettyjws",
         b'{"schemaVersion": 1}', ErrorKind.MANIFEST_INVALID),
        ("r", "v1", "text/plain", docs.render(docs.image()), ErrorKind.MANIFEST_INVALID),
        ("r", "v1", docs.OCI_INDEX, docs.render(docs.image()), ErrorKind.MANIFEST_INVALID),
        ("r", "v1", docs.OCI_MANIFEST, b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:1",'
         b' "size": 1}, "layers": []}', ErrorKind.DIGEST_INVALID),
        ("r", "sha256:" + "0" * 64, docs.OCI_MANIFEST, docs.render(docs.image()), ErrorKind.DIGEST_INVALID),
        ("r", "sha256:short", docs.OCI_MANIFEST, docs.render(docs.image()), ErrorKind.DIGEST_INVALID),
        ("r", "-bad-tag", docs.OCI_MANIFEST, docs.render(docs.image()), ErrorKind.TAG_INVALID),
        ("Bad/Name", "v1", docs.OCI_MANIFEST, docs.render(docs.image()), ErrorKind.NAME_INVALID),
        ("r", "v1", docs.OCI_MANIFEST, b" " * (LIMITS.max_manifest_bytes + 1), ErrorKind.MANIFEST_TOO_LARGE),
    ],
    ids=["not-json", "not-object", "schema1", "unknown-type", "type-mismatch", "bad-descriptor-digest",
         "digest-mismatch", "bad-reference-digest", "bad-tag", "bad-name", "too-large"],
)
async def test_bad_manifests_leave_no_rows(core: MetadataCore, database: Database, repository: str, reference: str,
                                           content_type: str, payload: bytes, kind: ErrorKind) -> None:
    await push_image(core, "r", "existing", docs.image())
    async with leaves_no_rows(database, kind):
        await core.put_manifest(repository, reference, content_type, payload)
    assert (await core.list_tags("r", limit=None, last="")).items == ["existing"]


async def test_bad_blob_input_leaves_no_rows(core: MetadataCore, database: Database) -> None:
    async with leaves_no_rows(database, ErrorKind.NAME_INVALID):
        await core.link_blob("UPPER", docs.random_digest(), 1)
    async with leaves_no_rows(database, ErrorKind.DIGEST_INVALID):
        await core.link_blob("r", "sha256:nothex", 1)
    async with leaves_no_rows(database, ErrorKind.SIZE_INVALID):
        await core.link_blob("r", docs.random_digest(), -1)
    async with leaves_no_rows(database, ErrorKind.NAME_INVALID):
        await core.mount_blob("r", docs.random_digest(), "Bad Source")
    async with leaves_no_rows(database, ErrorKind.PAGINATION_NUMBER_INVALID):
        await core.list_repositories(limit=-1, last="")


# -- listings -----------------------------------------------------------------------------------------


async def _tag_all(core: MetadataCore, repository: str, tags: list[str]) -> None:
    payload, _ = await push_image(core, repository, tags[0], docs.image(layers=1))
    for tag in tags[1:]:
        await core.put_manifest(repository, tag, docs.OCI_MANIFEST, payload)


async def test_list_tags_pagination_edges(core: MetadataCore) -> None:
    await _tag_all(core, "r", ["e", "c", "a", "d", "b"])

    async def page(limit: int | None, last: str = "") -> tuple[list[str], bool]:
        result = await core.list_tags("r", limit=limit, last=last)
        return result.items, result.has_more

    assert await page(0) == ([], True)
    assert await page(2) == (["a", "b"], True)
    assert await page(2, "b") == (["c", "d"], True)
    assert await page(2, "d") == (["e"], False)
    assert await page(5) == (["a", "b", "c", "d", "e"], False)  # exact boundary
    assert await page(4) == (["a", "b", "c", "d"], True)
    assert await page(1, "d") == (["e"], False)  # exact boundary after a cursor
    assert await page(10, "zzz") == ([], False)  # cursor beyond the end
    assert await page(0, "e") == ([], False)
    assert await page(None) == (["a", "b", "c"], True)  # the default page size
    assert await page(1000) == (["a", "b", "c", "d", "e"], False)  # capped at max, still all


async def test_list_tags_is_bytewise_lexical(core: MetadataCore) -> None:
    tags = ["b", "B", "a", "_x", "A1", "a.b", "a-b", "a_b", "10", "9"]
    await _tag_all(core, "r", tags)
    assert (await core.list_tags("r", limit=100, last="")).items == sorted(tags, key=str.encode)


async def test_list_tags_unknown_and_empty_repository(core: MetadataCore, database: Database) -> None:
    for limit in (None, 0, 5):
        async with leaves_no_rows(database, ErrorKind.NAME_UNKNOWN):
            await core.list_tags("ghost", limit=limit, last="")
    await core.link_blob("blobs-only", docs.random_digest(), 1)
    page = await core.list_tags("blobs-only", limit=5, last="")
    assert page.items == [] and page.has_more is False


async def test_list_repositories_pagination_and_order(core: MetadataCore) -> None:
    assert (await core.list_repositories(limit=5, last="")).items == []
    names = ["b", "a/b", "a-b", "a_b", "a", "a.b"]
    for name in names:
        await core.link_blob(name, docs.random_digest(), 1)
    ordered = sorted(names, key=str.encode)
    everything = await core.list_repositories(limit=50, last="")
    assert everything.items == ordered and everything.has_more is False
    first = await core.list_repositories(limit=2, last="")
    assert first.items == ordered[:2] and first.has_more
    second = await core.list_repositories(limit=4, last=first.items[-1])
    assert second.items == ordered[2:] and second.has_more is False  # exact boundary
    zero = await core.list_repositories(limit=0, last="")
    assert zero.items == [] and zero.has_more
    assert (await core.list_repositories(limit=3, last="zzz")).items == []


# -- referrers -------------------------------------------------------------------------------------------


async def test_referrers(core: MetadataCore) -> None:
    subject_payload, subject = await push_image(core, "r", "v1", docs.image())
    subject_descriptor = docs.descriptor(docs.OCI_MANIFEST, subject, len(subject_payload))
    sbom = docs.image(layers=1, config_type=docs.OCI_EMPTY, artifact_type="application/spdx+json",
                      subject=subject_descriptor, annotations={"org.example.kind": "sbom"})
    signature = docs.image(layers=1, config_type="application/vnd.example.sig.config", subject=subject_descriptor)
    _, sbom_digest = await push_image(core, "r", "sbom", sbom)
    for d, s in docs.blobs_of(signature):
        await core.link_blob("r", d, s)
    sig_payload = docs.render(signature)
    result = await core.put_manifest("r", docs.sha256(sig_payload), docs.OCI_MANIFEST, sig_payload)
    assert result.subject_digest == subject
    sig_digest = result.digest
    # An index can refer too; its artifactType is its own (none here).
    index_payload = docs.render(docs.index([subject_payload], subject=subject_descriptor))
    index_digest = (await core.put_manifest("r", "idx", docs.OCI_INDEX, index_payload)).digest

    page = await core.list_referrers("r", subject, artifact_type="", limit=None, last="")
    everything = await core.list_referrers("r", subject, artifact_type="", limit=10, last="")
    assert [item.digest for item in everything.items] == sorted([sbom_digest, sig_digest, index_digest])
    assert page.items == everything.items[:3]
    by_digest = {item.digest: item for item in everything.items}
    assert by_digest[sbom_digest].artifact_type == "application/spdx+json"
    assert json.loads(by_digest[sbom_digest].annotations) == {"org.example.kind": "sbom"}
    assert by_digest[sbom_digest].media_type == docs.OCI_MANIFEST
    assert by_digest[sbom_digest].size == len(docs.render(sbom))
    assert by_digest[sig_digest].artifact_type == "application/vnd.example.sig.config"  # config media type
    assert by_digest[index_digest].artifact_type is None and by_digest[index_digest].media_type == docs.OCI_INDEX

    filtered = await core.list_referrers("r", subject, artifact_type="application/spdx+json", limit=10, last="")
    assert [item.digest for item in filtered.items] == [sbom_digest]

    ordered = [item.digest for item in everything.items]
    first = await core.list_referrers("r", subject, artifact_type="", limit=2, last="")
    assert [i.digest for i in first.items] == ordered[:2] and first.has_more
    rest = await core.list_referrers("r", subject, artifact_type="", limit=1, last=ordered[1])
    assert [i.digest for i in rest.items] == ordered[2:] and rest.has_more is False


async def test_referrers_of_missing_subject_and_unknowns(core: MetadataCore, database: Database) -> None:
    ghost = docs.random_digest()
    artifact = docs.image(layers=1, artifact_type="application/x-note",
                          subject=docs.descriptor(docs.OCI_MANIFEST, ghost, 123))
    _, digest = await push_image(core, "r", "note", artifact)  # a subject that does not exist is accepted
    page = await core.list_referrers("r", ghost, artifact_type="", limit=None, last="")
    assert [item.digest for item in page.items] == [digest]
    before = await counts(database)
    assert (await core.list_referrers("ghost-repo", ghost, artifact_type="", limit=None, last="")).items == []
    assert (await core.list_referrers("r", docs.random_digest(), artifact_type="", limit=None, last="")).items == []
    assert (await core.list_referrers("r", ghost, artifact_type="other", limit=None, last="")).items == []
    assert await counts(database) == before
    # Deleting the referrer removes it from the list; deleting a subject would not remove referrers.
    await core.delete_manifest("r", digest)
    assert (await core.list_referrers("r", ghost, artifact_type="", limit=None, last="")).items == []


# -- concurrency ---------------------------------------------------------------------------------------


async def test_concurrent_identical_pushes_converge(core: MetadataCore, database: Database) -> None:
    document = docs.image(layers=2)
    blobs = docs.blobs_of(document)
    # Many clients link the same blobs into a new repository at once...
    await asyncio.gather(*(core.link_blob("race", d, s) for _ in range(10) for d, s in blobs))
    payload = docs.render(document)
    # ...then push the same manifest under the same tag at once.
    results = await asyncio.gather(
        *(core.put_manifest("race", "latest", docs.OCI_MANIFEST, payload) for _ in range(25))
    )
    assert {r.digest for r in results} == {docs.sha256(payload)}
    rows = await counts(database)
    assert rows == {"repositories": 1, "repository_blobs": 3, "manifests": 1, "manifest_references": 3, "tags": 1}


async def test_concurrent_tag_moves_leave_one_tag(core: MetadataCore, database: Database) -> None:
    payloads = []
    for _ in range(12):
        document = docs.image(layers=1)
        for d, s in docs.blobs_of(document):
            await core.link_blob("moves", d, s)
        payloads.append(docs.render(document))
    results = await asyncio.gather(
        *(core.put_manifest("moves", "latest", docs.OCI_MANIFEST, p) for p in payloads for _ in range(2))
    )
    digests = {r.digest for r in results}
    assert len(digests) == 12
    current = await core.get_manifest("moves", "latest")
    assert current.digest in digests and current.payload == payloads[[docs.sha256(p) for p in payloads].index(
        current.digest)]
    rows = await counts(database)
    assert rows["tags"] == 1 and rows["manifests"] == 12


async def test_concurrent_first_pushes_create_one_repository(store: SqlMetadataStore, database: Database) -> None:
    digests = [docs.random_digest() for _ in range(20)]
    await asyncio.gather(*(store.link_blob("brand/new", d, 1) for d in digests))
    await asyncio.gather(*(store.mount_blob("brand/other", d, "brand/new") for d in digests))
    rows = await counts(database)
    assert rows["repositories"] == 2 and rows["repository_blobs"] == 40


async def test_put_manifest_store_level_references(store: SqlMetadataStore, database: Database) -> None:
    blob = docs.random_digest()
    await store.link_blob("r", blob, 1)
    payload = docs.render(docs.image())
    await store.put_manifest("r", new_manifest(payload, blobs=(blob,)), "t")
    child = docs.sha256(payload)
    index_payload = docs.render(docs.index([payload]))
    await store.put_manifest("r", new_manifest(index_payload, media_type=docs.OCI_INDEX, children=(child,)), None)
    async with leaves_no_rows(database, ErrorKind.MANIFEST_BLOB_UNKNOWN) as caught:
        await store.put_manifest("r", new_manifest(b"{}", blobs=(blob, "sha256:" + "1" * 64),
                                                   children=(child, "sha256:" + "2" * 64)), "t")
    assert caught[0].detail == {"blobs": ["sha256:" + "1" * 64], "blob_count": 1,
                                "manifests": ["sha256:" + "2" * 64], "manifest_count": 1}
    assert (await store.get_manifest("r", tag="t")).digest == child


# -- unavailability ------------------------------------------------------------------------------------


async def test_unreachable_database_is_unavailable(dialect: str, tmp_path: Path) -> None:
    if dialect == "sqlite":
        folder = tmp_path / "a-folder"
        folder.mkdir()
        url = f"sqlite+aiosqlite:///{folder}"  # a folder cannot be opened as a database
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    db = open_database(MetadataSettings(database_url=url, statement_timeout_seconds=2))
    store = SqlMetadataStore(db)
    try:
        for call in (store.ping(), store.stat_blob("r", docs.random_digest()),
                     store.link_blob("r", docs.random_digest(), 1), store.list_repositories(last="", limit=1)):
            with pytest.raises(RegistryError) as caught:
                await call
            assert caught.value.kind is ErrorKind.UNAVAILABLE
            assert "traceback" not in caught.value.message.lower()
    finally:
        await store.close()
