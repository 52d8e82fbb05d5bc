"""Read-your-writes through every gateway's cache: the change feed's subscribers and their
acknowledgements (`change_subscribers`, services/metadata/changes/acks.py).

Revision ID: 0011_ryw
Revises: 0010_governance
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_ryw"
down_revision = "0010_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_subscribers",
        sa.Column("subscriber", sa.String(128), nullable=False),
        sa.Column("acked", sa.BigInteger, nullable=False),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        # The region of the subscriber's gateway (its acknowledgements reach the primary region's
        # database through its region's metadata plane); '' without regions.
        sa.Column("region", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("subscriber", name="pk_change_subscribers"),
    )


def downgrade() -> None:
    op.drop_table("change_subscribers")
