"""The metadata database's one schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Every table of the metadata database is declared on the one `metadata` below: the registry's
tables here, the others next to the code that owns them (`TABLE_MODULES`). `complete_metadata()`
imports them all; it is what Alembic compares the database with (migrations/env.py), and
tests/contracts/metadata_store_suite.py fails when a freshly migrated database differs from it.
A new table goes on `metadata` (which names its constraints and indexes by the convention below,
in migrations too) and its module into `TABLE_MODULES`; a new migration creates it.

Every hot lookup is one indexed query:
- StatBlob                 repository_blobs PK (repository_id, digest), joined to repositories.name
- GetManifest by digest    manifests UNIQUE (repository_id, digest)
- GetManifest by tag       tags PK (repository_id, name) → manifests PK
- ListTags                 tags PK (repository_id, name) range scan
- ListRepositories         repositories UNIQUE (name) range scan
- ListReferrers            manifests INDEX (repository_id, subject_digest, digest)
- MountBlob from anywhere  repository_blobs INDEX (digest)

Names, tags and digests compare byte-wise ("C" collation on PostgreSQL, SQLite's default BINARY),
so listings are in the lexical order the distribution spec asks for on both dialects.

The migrations in `services/metadata/migrations` create the schema without importing the tables
(old revisions stay frozen); only the naming convention reaches them, through Alembic's
target metadata.
"""

from __future__ import annotations

import importlib

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAME_LENGTH = 255
TAG_LENGTH = 128
DIGEST_LENGTH = 255
MEDIA_TYPE_LENGTH = 255


def bytewise(length: int) -> String:
    """A string compared byte-wise on both dialects."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", bytewise(NAME_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("name"),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", bytewise(DIGEST_LENGTH), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("repository_id", "digest"),
    Index(None, "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", bytewise(DIGEST_LENGTH), nullable=False),
    Column("media_type", String(MEDIA_TYPE_LENGTH), nullable=False),
    # The exact bytes the client pushed: the digest is computed over them.
    Column("payload", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("subject_digest", bytewise(DIGEST_LENGTH), nullable=True),
    # The referrers API's artifactType (manifest artifactType, else config media type).
    Column("artifact_type", String(MEDIA_TYPE_LENGTH), nullable=True),
    Column("config_media_type", String(MEDIA_TYPE_LENGTH), nullable=True),
    # The manifest's annotations as JSON object text (the referrers API shows them).
    Column("annotations", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The account that pushed it first (migration 0007); NULL: anonymous, or before 0006.
    Column("pushed_by", String(NAME_LENGTH), nullable=True),
    UniqueConstraint("repository_id", "digest"),
    Index(None, "repository_id", "subject_digest", "digest"),
)

manifest_references = Table(
    "manifest_references",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("digest", bytewise(DIGEST_LENGTH), nullable=False),
    # 'blob' (config, layers) or 'manifest' (an index's children).
    Column("kind", String(16), nullable=False),
    PrimaryKeyConstraint("manifest_id", "digest", "kind"),
    # Garbage collection asks "does anything still reference this digest?".
    Index(None, "digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("name", bytewise(TAG_LENGTH), nullable=False),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The account that last moved the tag (migration 0007); NULL: anonymous, or before 0006.
    Column("pushed_by", String(NAME_LENGTH), nullable=True),
    PrimaryKeyConstraint("repository_id", "name"),
    Index(None, "manifest_id"),
)

ALL_TABLES = (repositories, repository_blobs, manifests, manifest_references, tags)
"""The registry's own tables (this module's), parents first."""

# The modules that declare tables on `metadata`, this one included.
TABLE_MODULES = (
    __name__,
    "services.metadata.accounts.schema",
    "services.metadata.gc.tables",
    "services.metadata.events.tables",
    "services.metadata.changes.tables",
    "services.metadata.console.tables",
    "services.metadata.proxy.tables",
    "services.metadata.blob_regions",
    "services.metadata.policies.tables",
)


def complete_metadata() -> MetaData:
    """The one `metadata` with every table of the database declared on it (imports `TABLE_MODULES`)."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return metadata
