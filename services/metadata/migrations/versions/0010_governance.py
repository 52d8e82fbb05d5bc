"""Governance: immutable tag rules, one-time overrides, tag history, the audit log, quotas, retention, signature and vulnerability policies.

Revision ID: 0010_governance
Revises: 0009_regions
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_governance"
down_revision = "0009_regions"
branch_labels = None
depends_on = None


def _bytewise(length: int) -> sa.types.TypeEngine:
    # Byte-wise comparison on both dialects: "C" collation on PostgreSQL.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _id() -> sa.Column:
    # SQLite only autoincrements INTEGER PRIMARY KEY.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "immutable_tag_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("repository_pattern", sa.String(255), nullable=False),
        sa.Column("tag_pattern", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("name", name="uq_immutable_tag_rules_name"),
    )
    op.create_table(
        "tag_overrides",
        sa.Column("repository", _bytewise(255), nullable=False),
        sa.Column("tag", _bytewise(128), nullable=False),
        sa.Column("granted_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "tag", name="pk_tag_overrides"),
    )
    op.create_table(
        "tag_history",
        _id(),
        sa.Column("repository", _bytewise(255), nullable=False),
        sa.Column("tag", _bytewise(128), nullable=False),
        sa.Column("old_digest", _bytewise(255), nullable=True),
        sa.Column("new_digest", _bytewise(255), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tag_history_repository_tag_id", "tag_history", ["repository", "tag", "id"])
    op.create_index("ix_tag_history_old_digest", "tag_history", ["old_digest"])
    op.create_table(
        "audit_log",
        _id(),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("repository", _bytewise(255), nullable=True),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"])
    op.create_index("ix_audit_log_repository_at", "audit_log", ["repository", "at"])
    op.create_table(
        "quotas",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("repository_pattern", sa.String(255), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger, nullable=False),
        sa.Column("used_bytes", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_quotas"),
    )
    op.create_table(
        "quota_blobs",
        sa.Column("quota", sa.String(128), nullable=False),
        sa.Column("digest", _bytewise(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("refs", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("quota", "digest", name="pk_quota_blobs"),
    )
    op.create_table(
        "retention_policies",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("repository_pattern", sa.String(255), nullable=False),
        sa.Column("keep_last", sa.Integer, nullable=False),
        sa.Column("keep_tags", sa.String(128), nullable=False),
        sa.Column("untagged_after_seconds", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_retention_policies"),
    )
    op.create_table(
        "signature_policies",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("repository_pattern", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("public_keys", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_signature_policies"),
    )
    op.create_table(
        "vulnerability_policies",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("repository_pattern", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("max_age_seconds", sa.BigInteger, nullable=False),
        sa.Column("allow", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_vulnerability_policies"),
    )


def downgrade() -> None:
    op.drop_table("vulnerability_policies")
    op.drop_table("signature_policies")
    op.drop_table("retention_policies")
    op.drop_table("quota_blobs")
    op.drop_table("quotas")
    op.drop_index("ix_audit_log_repository_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_tag_history_old_digest", table_name="tag_history")
    op.drop_index("ix_tag_history_repository_tag_id", table_name="tag_history")
    op.drop_table("tag_history")
    op.drop_table("tag_overrides")
    op.drop_table("immutable_tag_rules")
