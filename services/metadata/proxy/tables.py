"""The pull-through cache's tables (created by migration 0008_proxy).

- `proxy_tags`: when a cached tag was last checked against its upstream (and the digest it then
  named); the tag itself is an ordinary `tags` row.
- `proxy_fetch_leases`: one row per blob being fetched from a source; the holder's `lease_id`,
  and when the lease lapses if its holder died.
- `proxy_blobs`: blobs that came from an upstream: which one, size, when fetched and last
  pulled (eviction by age and byte budget, `lading proxy status`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, PrimaryKeyConstraint, String, Table

from services.metadata.store.schema import metadata

proxy_tags = Table(
    "proxy_tags",
    metadata,
    Column("repository", String(255), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("digest", String(160), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("repository", "tag"),
)

proxy_fetch_leases = Table(
    "proxy_fetch_leases",
    metadata,
    Column("digest", String(160), nullable=False),
    Column("lease_id", String(32), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("digest"),
)

proxy_blobs = Table(
    "proxy_blobs",
    metadata,
    Column("digest", String(160), nullable=False),
    Column("upstream", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("last_pulled_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("digest"),
)
