"""The garbage-collection and admin tables (created by migration 0003_gc).

- `blobs`: one row per digest the registry holds bytes for (or is about to). `state`:
  `pending` (inserted by a LinkBlob that has not yet confirmed the bytes with the blob plane),
  `active` (bytes confirmed; links may point at it), `deleting` (the GC has claimed it; no new link,
  mount, HEAD or manifest may use it). `epoch` is a random number drawn each time the row is
  inserted, so a LinkBlob can tell "the row I created" from "a row re-created after a GC".
- `gc_review`: review holds. `(repository_id, digest)` (repository_id 0 = the global blob row)
  may not be collected before `review_after`. Written when something stops referencing a
  blob or manifest; the collector skips held items and drops expired holds.
- `gc_runs`: one row per collector run (what was freed), for `lading gc stats`.
- `registry_flags`: small key/value switches shared by every replica (maintenance mode).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, String, Table, Text

from services.metadata.store.schema import DIGEST_LENGTH, bytewise, metadata

blobs = Table(
    "blobs",
    metadata,
    Column("digest", bytewise(DIGEST_LENGTH), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "state"),
)

gc_review = Table(
    "gc_review",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("digest", bytewise(DIGEST_LENGTH), primary_key=True),
    Column("review_after", DateTime(timezone=True), nullable=False),
)

gc_runs = Table(
    "gc_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("manifests_deleted", BigInteger, nullable=False),
    Column("links_removed", BigInteger, nullable=False),
    Column("blobs_deleted", BigInteger, nullable=False),
    Column("bytes_freed", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
)

registry_flags = Table(
    "registry_flags",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

GC_TABLES = (blobs, gc_review, gc_runs, registry_flags)
