"""`ConsoleReads`: the console's listings, paginated and filtered in SQL, never in Python lists.

Permissions are part of each query: `pull_patterns` (the repository patterns an account may pull,
None for all) become `name LIKE ...` conditions (`*` → `%`, with `%`, `_` and `\\` escaped), so
a page of 50 names costs one indexed range scan however many repositories exist and whatever the
account may see. Pages are keyset pages (strictly after `last`, in byte-wise name order, `limit`
+ 1 rows fetched to know whether more follow), as the registry API's listings.

Every query is a `READ` (store/access.py: the read replica when configured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.gc.tables import blobs as gc_blobs
from services.metadata.store.access import read
from services.metadata.store.dialect import is_unavailable
from services.metadata.store.engine import Database
from services.metadata.store.schema import manifests, repositories, repository_blobs, tags

_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)
_ESCAPE = "\\"
# Tags listed on a manifest's page.
MANIFEST_TAGS = 100


def like_escape(text: str) -> str:
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


def pattern_to_like(pattern: str) -> str:
    """A grant pattern (`team-a/*`) as a LIKE pattern (`team-a/%`)."""
    return "%".join(like_escape(part) for part in pattern.split("*"))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    name: str
    tags: int


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    digest: str
    media_type: str
    size: int
    pushed_at: datetime | None
    pushed_by: str


@dataclass(frozen=True, slots=True)
class ManifestRow:
    digest: str
    media_type: str
    size: int
    payload: bytes
    pushed_at: datetime | None
    pushed_by: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReferrerRow:
    subject: str
    digest: str
    media_type: str
    size: int
    artifact_type: str
    annotations: str | None
    depth: int


@dataclass(frozen=True, slots=True)
class StorageRow:
    name: str
    tags: int
    manifests: int
    bytes: int


class ConsoleReads:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def _rows(self, statement: Any) -> list[Any]:
        try:
            return await self._db.access.rows(read(statement))
        except _DB_ERRORS as exc:
            if is_unavailable(exc):
                raise RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly") from None
            raise

    @staticmethod
    def _visible(pull_patterns: Sequence[str] | None) -> Any:
        """The condition on `repositories.name` for what may be pulled (None: everything)."""
        if pull_patterns is None:
            return None
        if not pull_patterns:
            return false()
        return or_(*[repositories.c.name.like(pattern_to_like(p), escape=_ESCAPE) for p in pull_patterns])

    async def search_repositories(self, *, query: str, pull_patterns: Sequence[str] | None, last: str,
                                  limit: int) -> tuple[list[RepositoryRow], bool]:
        r, t = repositories, tags
        tag_count = select(func.count()).where(t.c.repository_id == r.c.id).scalar_subquery()
        statement = select(r.c.name, tag_count).where(r.c.name > last).order_by(r.c.name).limit(limit + 1)
        visible = self._visible(pull_patterns)
        if visible is not None:
            statement = statement.where(visible)
        if query:
            statement = statement.where(r.c.name.like(f"%{like_escape(query)}%", escape=_ESCAPE))
        rows = await self._rows(statement)
        return [RepositoryRow(row[0], int(row[1])) for row in rows[:limit]], len(rows) > limit

    async def repository_id(self, name: str) -> int | None:
        rows = await self._rows(select(repositories.c.id).where(repositories.c.name == name))
        return int(rows[0][0]) if rows else None

    async def tags(self, repository_id: int, *, query: str, last: str, limit: int) -> tuple[list[TagRow], bool]:
        t, m = tags, manifests
        statement = (
            select(t.c.name, m.c.digest, m.c.media_type, m.c.size, t.c.updated_at, t.c.pushed_by)
            .select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(t.c.repository_id == repository_id, t.c.name > last)
            .order_by(t.c.name)
            .limit(limit + 1)
        )
        if query:
            statement = statement.where(t.c.name.like(f"%{like_escape(query)}%", escape=_ESCAPE))
        rows = await self._rows(statement)
        items = [TagRow(r[0], r[1], r[2], int(r[3]), _aware(r[4]), r[5] or "") for r in rows[:limit]]
        return items, len(rows) > limit

    async def manifest(self, repository_id: int, *, digest: str | None = None, tag: str | None = None
                       ) -> ManifestRow | None:
        t, m = tags, manifests
        columns = [m.c.id, m.c.digest, m.c.media_type, m.c.size, m.c.payload]
        if tag is not None:
            statement = (select(*columns, t.c.updated_at, t.c.pushed_by)
                         .select_from(t.join(m, m.c.id == t.c.manifest_id))
                         .where(t.c.repository_id == repository_id, t.c.name == tag))
        else:
            statement = select(*columns, m.c.created_at, m.c.pushed_by).where(
                m.c.repository_id == repository_id, m.c.digest == digest)
        rows = await self._rows(statement)
        if not rows:
            return None
        row = rows[0]
        tag_rows = await self._rows(select(t.c.name).where(t.c.repository_id == repository_id,
                                                           t.c.manifest_id == row[0])
                                    .order_by(t.c.name).limit(MANIFEST_TAGS))
        return ManifestRow(row[1], row[2], int(row[3]), bytes(row[4]), _aware(row[5]), row[6] or "",
                           tuple(r[0] for r in tag_rows))

    async def referrer_tree(self, repository_id: int, digest: str, *, max_depth: int, max_nodes: int
                            ) -> tuple[list[ReferrerRow], bool]:
        """Referrers of `digest`, then theirs, breadth first, one query per level."""
        m = manifests
        found: list[ReferrerRow] = []
        seen = {digest}
        frontier = [digest]
        truncated = False
        for depth in range(1, max_depth + 1):
            if not frontier:
                break
            room = max_nodes - len(found)
            rows = await self._rows(
                select(m.c.subject_digest, m.c.digest, m.c.media_type, m.c.size, m.c.artifact_type, m.c.annotations)
                .where(m.c.repository_id == repository_id, m.c.subject_digest.in_(frontier))
                .order_by(m.c.subject_digest, m.c.digest)
                .limit(room + 1)
            )
            if len(rows) > room:
                truncated = True
                rows = rows[:room]
            frontier = []
            for row in rows:
                if row[1] in seen:
                    continue  # a cycle cannot be pushed (a subject must exist first), but be sure
                seen.add(row[1])
                found.append(ReferrerRow(row[0], row[1], row[2], int(row[3]), row[4] or "", row[5], depth))
                frontier.append(row[1])
            if truncated:
                break
        else:
            if frontier:
                # Deeper levels exist only if the last level's manifests have referrers.
                more = await self._rows(select(m.c.digest).where(
                    m.c.repository_id == repository_id, m.c.subject_digest.in_(frontier)).limit(1))
                truncated = bool(more)
        return found, truncated

    async def storage(self, limit: int) -> tuple[list[StorageRow], int, int]:
        """(the `limit` repositories with the most blob bytes, largest first; the bytes of every
        active blob counted once; the number of repositories)."""
        r, rb, t, m = repositories, repository_blobs, tags, manifests
        total_bytes = func.coalesce(func.sum(rb.c.size), 0).label("bytes")
        biggest = (select(rb.c.repository_id, total_bytes).group_by(rb.c.repository_id)
                   .order_by(total_bytes.desc(), rb.c.repository_id).limit(limit).subquery())
        tag_count = select(func.count()).where(t.c.repository_id == r.c.id).scalar_subquery()
        manifest_count = select(func.count()).where(m.c.repository_id == r.c.id).scalar_subquery()
        rows = await self._rows(
            select(r.c.name, tag_count, manifest_count, biggest.c.bytes)
            .select_from(biggest.join(r, r.c.id == biggest.c.repository_id))
            .order_by(biggest.c.bytes.desc(), r.c.name)
        )
        totals = await self._rows(select(
            select(func.coalesce(func.sum(gc_blobs.c.size), 0))
            .where(and_(gc_blobs.c.state == "active")).scalar_subquery(),
            select(func.count()).select_from(r).scalar_subquery(),
        ))
        return ([StorageRow(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows],
                int(totals[0][0]), int(totals[0][1]))
