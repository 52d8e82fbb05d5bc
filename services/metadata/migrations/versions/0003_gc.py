"""Garbage collection and admin: global `blobs` rows with a state, review holds, GC run history,
registry flags (maintenance mode). Backfills `blobs` from the existing repository links.

Revision ID: 0003_gc
Revises: 0002_accounts
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_gc"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None


def _bytewise(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_blobs"),
    )
    op.create_index("ix_blobs_state", "blobs", ["state"])
    op.create_table(
        "gc_review",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("review_after", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "digest", name="pk_gc_review"),
    )
    op.create_table(
        "gc_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("manifests_deleted", sa.BigInteger, nullable=False),
        sa.Column("links_removed", sa.BigInteger, nullable=False),
        sa.Column("blobs_deleted", sa.BigInteger, nullable=False),
        sa.Column("bytes_freed", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gc_runs"),
    )
    op.create_table(
        "registry_flags",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_registry_flags"),
    )
    # Every digest linked anywhere has bytes (LinkBlob came after the blob plane's commit): active.
    op.execute(
        "INSERT INTO blobs (digest, size, state, epoch, updated_at) "
        "SELECT digest, MAX(size), 'active', 0, MIN(created_at) FROM repository_blobs GROUP BY digest"
    )


def downgrade() -> None:
    op.drop_table("registry_flags")
    op.drop_table("gc_runs")
    op.drop_table("gc_review")
    op.drop_index("ix_blobs_state", table_name="blobs")
    op.drop_table("blobs")
