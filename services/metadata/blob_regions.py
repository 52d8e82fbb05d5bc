"""Which regions hold each blob's bytes (issue 15, item 2): the `blob_regions` table (migration
0009_regions) and the request's region.

A blob is stored in the region it was pushed to. When a LinkBlob commits, the store records
(digest, region): the local region's name in the primary region, or the replica region that
forwarded the call (it names itself in the `lading-region` header; services/metadata/regions.py).
Nothing is recorded without regions configured. Fetch on miss between regions reads these rows to
find a region that has the bytes.
"""

from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy import Column, DateTime, PrimaryKeyConstraint, String, Table

from services.metadata.store.schema import DIGEST_LENGTH, bytewise, metadata

REGION_HEADER = "lading-region"
REGION_NAME_LENGTH = 64

blob_regions = Table(
    "blob_regions",
    metadata,
    Column("digest", bytewise(DIGEST_LENGTH), nullable=False),
    Column("region", String(REGION_NAME_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("digest", "region"),
)

# The region a write came from ("" without regions): set per call by the primary region's
# interceptor, read by the store in the same task.
writing_region: ContextVar[str] = ContextVar("lading_writing_region", default="")
