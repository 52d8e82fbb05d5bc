"""Storage quotas, kept exact inside the write transactions that change what they count.

A quota covers the repositories whose name matches its pattern (`fnmatch`, as immutable-tag
rules; a namespace `team-a` is `team-a/*`) and counts the bytes of the DISTINCT blobs linked
into them: `quota_blobs` holds each counted digest once per quota with the number of covered
repositories linking it (`refs`), and `quotas.used_bytes` the sum of their sizes.

- A link that is new (LinkBlob, MountBlob: the link row was inserted) claims the digest in every
  covering quota: `refs + 1` by upsert; when the digest is new to the quota (refs = 1) the usage
  grows by its size with `UPDATE quotas SET used = used + size WHERE used + size <= limit`. No row
  updated: `DENIED` "quota exceeded: used X of Y, this push needs Z", and the link's whole
  transaction (link, claim) rolls back. No scan per push: one read of the (few) quota rows, one
  upsert and at most one update per covering quota.
- A link removed (UnlinkBlob, GC, repository delete) does `refs - 1`, and at 0 removes the row
  and shrinks the usage.
- A manifest push into a repository whose quota is already over its limit (a lowered limit) is
  refused the same way (`needs` the manifest's size, which is not counted).
- `recount` rebuilds one quota from the links (when it is set, and after every GC run).

Exactness under concurrency: the usage update takes the quota row's lock and checks the limit in
the same statement, and the claim upsert takes the (quota, digest) row's lock, so concurrent
pushes are serialised exactly where they touch the same counter: the limit is never exceeded
(overshoot 0, inside the issue's bound of "the pushes in flight"), and a digest pushed into two
repositories at once is counted once. A recount locks `quota_blobs` against writers
(PostgreSQL) so links in flight are either in its read or claim after it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from services.common.errors import ErrorKind, RegistryError
from services.metadata.policies.tables import quota_blobs, quotas
from services.metadata.store.dialect import lock_table_exclusive, upsert
from services.metadata.store.schema import repositories, repository_blobs


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    repository_pattern: str
    limit_bytes: int
    used_bytes: int

    def covers(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository_pattern)


def exceeded(quota: Quota, needs: int) -> RegistryError:
    return RegistryError(
        ErrorKind.DENIED,
        f"quota exceeded: used {size_text(quota.used_bytes)} of {size_text(quota.limit_bytes)}, this push needs "
        f"{size_text(needs)} (quota {quota.name!r}, repositories {quota.repository_pattern!r}); delete unused images "
        f"and run GC, or ask an admin to raise it (lading quota set {quota.name} ...)",
        {"policy": "quota", "quota": quota.name, "used": quota.used_bytes, "limit": quota.limit_bytes,
         "needs": needs},
    )


class QuotaKeeper:
    def __init__(self, dialect: str) -> None:
        q, qb = quotas, quota_blobs
        self._dialect = dialect
        self._all = select(q.c.name, q.c.repository_pattern, q.c.limit_bytes, q.c.used_bytes).order_by(q.c.name)
        self._one = self._all.where(q.c.name == bindparam("name"))
        self._claim = upsert(dialect, qb, ["quota", "digest"], {"refs": qb.c.refs + 1}).returning(qb.c.refs)
        self._grow = (
            update(q)
            .where(q.c.name == bindparam("b_name"), q.c.used_bytes + bindparam("b_size") <= q.c.limit_bytes)
            .values(used_bytes=q.c.used_bytes + bindparam("b_size"), updated_at=bindparam("b_now"))
            .returning(q.c.used_bytes)
        )
        self._release = (
            update(qb).where(qb.c.quota == bindparam("b_quota"), qb.c.digest == bindparam("b_digest"))
            .values(refs=qb.c.refs - 1).returning(qb.c.refs, qb.c.size)
        )
        self._drop = delete(qb).where(qb.c.quota == bindparam("quota"), qb.c.digest == bindparam("digest"))
        self._shrink = (
            update(q).where(q.c.name == bindparam("b_name"))
            .values(used_bytes=q.c.used_bytes - bindparam("b_size"), updated_at=bindparam("b_now"))
        )

    def quotas(self, conn: Connection) -> list[Quota]:
        return [Quota(*row) for row in conn.execute(self._all)]

    def _covering(self, conn: Connection, repository: str) -> list[Quota]:
        return [quota for quota in self.quotas(conn) if quota.covers(repository)]

    def linked(self, conn: Connection, repository: str, digest: str, size: int) -> None:
        """A new link of `digest` into `repository` (call only when the link row was inserted).
        Raises DENIED when a covering quota has no room for a digest new to it."""
        now = datetime.now(UTC)
        for quota in self._covering(conn, repository):
            refs = conn.execute(self._claim, {"quota": quota.name, "digest": digest, "size": size, "refs": 1}).scalar()
            if refs != 1:
                continue  # already counted: shared with another repository of the quota
            if conn.execute(self._grow, {"b_name": quota.name, "b_size": size, "b_now": now}).first() is None:
                current = conn.execute(self._one, {"name": quota.name}).first()
                raise exceeded(Quota(*current) if current is not None else quota, size)

    def unlinked(self, conn: Connection, repository: str, digest: str) -> None:
        """A link of `digest` removed from `repository`."""
        now = datetime.now(UTC)
        for quota in self._covering(conn, repository):
            row = conn.execute(self._release, {"b_quota": quota.name, "b_digest": digest}).first()
            if row is None or row[0] > 0:
                continue
            conn.execute(self._drop, {"quota": quota.name, "digest": digest})
            conn.execute(self._shrink, {"b_name": quota.name, "b_size": row[1], "b_now": now})

    def check_manifest(self, conn: Connection, repository: str, size: int) -> None:
        """DENIED when a covering quota is already over its limit (it was lowered below its usage)."""
        for quota in self._covering(conn, repository):
            if quota.used_bytes > quota.limit_bytes:
                raise exceeded(quota, size)

    def recount(self, conn: Connection, name: str) -> tuple[int, int]:
        """Rebuilds quota `name` from the links; (usage before, usage after). Raises NAME_UNKNOWN."""
        lock_table_exclusive(conn, self._dialect, quota_blobs)
        current = conn.execute(self._one.with_for_update(), {"name": name}).first()
        if current is None:
            raise RegistryError(ErrorKind.NAME_UNKNOWN, f"no quota named {name!r} (see `lading quota show`)",
                                {"quota": name})
        quota = Quota(*current)
        ids = [row[0] for row in conn.execute(select(repositories.c.id, repositories.c.name))
               if quota.covers(row[1])]
        counted: dict[str, tuple[int, int]] = {}
        rb = repository_blobs
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for digest, size, refs in conn.execute(
                    select(rb.c.digest, func.min(rb.c.size), func.count())
                    .where(rb.c.repository_id.in_(chunk)).group_by(rb.c.digest)):
                before = counted.get(digest, (int(size), 0))
                counted[digest] = (before[0], before[1] + int(refs))
        conn.execute(delete(quota_blobs).where(quota_blobs.c.quota == name))
        rows = [{"quota": name, "digest": d, "size": s, "refs": r} for d, (s, r) in counted.items()]
        for start in range(0, len(rows), 1000):
            conn.execute(insert(quota_blobs), rows[start:start + 1000])
        used = sum(s for s, _ in counted.values())
        conn.execute(update(quotas).where(quotas.c.name == name).values(used_bytes=used,
                                                                        updated_at=datetime.now(UTC)))
        return quota.used_bytes, used
