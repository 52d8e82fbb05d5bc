"""Regions: which regions hold each blob's bytes (`blob_regions`, services/metadata/blob_regions.py).

Revision ID: 0009_regions
Revises: 0008_proxy
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_regions"
down_revision = "0008_proxy"
branch_labels = None
depends_on = None


def _bytewise(length: int) -> sa.String:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "blob_regions",
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", "region", name="pk_blob_regions"),
    )


def downgrade() -> None:
    op.drop_table("blob_regions")
