"""Initial metadata schema: repositories, blob links, manifests, references, tags.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _bytewise(length: int) -> sa.types.TypeEngine:
    # Byte-wise comparison on both dialects (lexical listings): "C" collation on PostgreSQL.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", _bytewise(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repositories"),
        sa.UniqueConstraint("name", name="uq_repositories_name"),
    )
    op.create_table(
        "repository_blobs",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "digest", name="pk_repository_blobs"),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], ondelete="CASCADE",
                                name="fk_repository_blobs_repository_id_repositories"),
    )
    op.create_index("ix_repository_blobs_digest", "repository_blobs", ["digest"])
    op.create_table(
        "manifests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("subject_digest", _bytewise(255), nullable=True),
        sa.Column("artifact_type", sa.String(255), nullable=True),
        sa.Column("config_media_type", sa.String(255), nullable=True),
        sa.Column("annotations", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_manifests"),
        sa.UniqueConstraint("repository_id", "digest", name="uq_manifests_repository_id_digest"),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], ondelete="CASCADE",
                                name="fk_manifests_repository_id_repositories"),
    )
    op.create_index(
        "ix_manifests_repository_id_subject_digest_digest",
        "manifests",
        ["repository_id", "subject_digest", "digest"],
    )
    op.create_table(
        "manifest_references",
        sa.Column("manifest_id", sa.Integer, nullable=False),
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("manifest_id", "digest", "kind", name="pk_manifest_references"),
        sa.ForeignKeyConstraint(["manifest_id"], ["manifests.id"], ondelete="CASCADE",
                                name="fk_manifest_references_manifest_id_manifests"),
    )
    op.create_index("ix_manifest_references_digest", "manifest_references", ["digest"])
    op.create_table(
        "tags",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("name", _bytewise(128), nullable=False),
        sa.Column("manifest_id", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "name", name="pk_tags"),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], ondelete="CASCADE",
                                name="fk_tags_repository_id_repositories"),
        sa.ForeignKeyConstraint(["manifest_id"], ["manifests.id"], ondelete="CASCADE",
                                name="fk_tags_manifest_id_manifests"),
    )
    op.create_index("ix_tags_manifest_id", "tags", ["manifest_id"])


def downgrade() -> None:
    op.drop_table("tags")
    op.drop_table("manifest_references")
    op.drop_table("manifests")
    op.drop_table("repository_blobs")
    op.drop_table("repositories")
