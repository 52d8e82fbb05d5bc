"""The pull-through cache: tag revalidation times, blob fetch leases, cached blobs.

- `proxy_tags`: when each cached tag was last checked against its upstream;
- `proxy_fetch_leases`: one fetch per blob at a time across replicas (services/metadata/proxy);
- `proxy_blobs`: blobs that came from an upstream, for eviction and `lading proxy status`.

Revision ID: 0008_proxy
Revises: 0007_console
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_proxy"
down_revision = "0007_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_tags",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "tag", name="pk_proxy_tags"),
    )
    op.create_table(
        "proxy_fetch_leases",
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("lease_id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_proxy_fetch_leases"),
    )
    op.create_table(
        "proxy_blobs",
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_proxy_blobs"),
    )


def downgrade() -> None:
    op.drop_table("proxy_blobs")
    op.drop_table("proxy_fetch_leases")
    op.drop_table("proxy_tags")
