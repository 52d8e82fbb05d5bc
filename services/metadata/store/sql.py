"""`SqlMetadataStore`: the MetadataStore contract (see base.py) over SQLite or PostgreSQL.

Statements are built once, at construction, with bind parameters: each call only binds values,
and SQLAlchemy's compiled cache does the rest. Each read is declared with its kind (access.py:
`hot_read` for GetManifest, StatBlob and the listings; `read`/`primary_read` for the health
check) and `Database.access` decides the path it takes: on a SQLite file the hot reads skip the
async engine and run on read-only sqlite3 connections, one thread hop each (the engine path costs
four or five hops per read, which was most of the metadata process's CPU under load); elsewhere
they go through `Database.reads` (the read replica when one is configured). Writes are
synchronous bodies run in one transaction each by the database's writer (writes.py, through
`Access.write`), re-run from the start when PostgreSQL reports a conflict with a concurrent
writer (every write is idempotent, so a re-run is safe): on a SQLite file each transaction is one
hop to the one writer thread of the process (SQLite admits one writer at a time anyway); writers
in other processes are still serialised by BEGIN IMMEDIATE + busy_timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, delete, literal, literal_column, select
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.blob_regions import blob_regions, writing_region
from services.metadata.events import context as event_context
from services.metadata.gc.guard import BlobRowGuard
from services.metadata.gc.tables import blobs as gc_blobs
from services.metadata.policies.quotas import QuotaKeeper
from services.metadata.policies.tags import TagKeeper
from services.metadata.store.access import Read, hot_read, primary_read, read
from services.metadata.store.base import NewManifest, Page, Referrer, StoredManifest
from services.metadata.store.dialect import (
    database_full,
    insert_ignore,
    insert_ignore_from,
    is_retryable,
    is_unavailable,
)
from services.metadata.store.engine import Database
from services.metadata.store.schema import (
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
)

if TYPE_CHECKING:
    from services.metadata.changes.repositories import RepositoryChanges
    from services.metadata.events.outbox import EventOutbox

log = logging.getLogger("lading.metadata.store")

T = TypeVar("T")

# Attempts of one write transaction when PostgreSQL reports a conflict with a concurrent writer.
_WRITE_ATTEMPTS = 5
# Times a manifest push re-inserts a stored copy the collector deleted under it (put_manifest).
_REINSERT_ATTEMPTS = 3
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)


def _now() -> datetime:
    return datetime.now(UTC)


def _translate(error: BaseException) -> BaseException:
    """STORAGE_FULL for a full disk, UNAVAILABLE for connectivity failures; anything else (a bug)
    goes up unchanged."""
    if (full := database_full(error)) is not None:
        log.error("metadata database is full, writes fail until space is freed: %s", error)
        return full
    if is_unavailable(error):
        log.warning("metadata database unavailable: %s", error)
        return RegistryError(
            ErrorKind.UNAVAILABLE,
            "the metadata database is unavailable; retry shortly",
            {"reason": type(error).__name__},
        )
    return error


class SqlMetadataStore:
    """The SQL metadata store. Build it with `SqlMetadataStore(open_database(settings))`."""

    def __init__(self, database: Database, events: EventOutbox | None = None,
                 changes: RepositoryChanges | None = None) -> None:
        self._db = database
        self._access = database.access
        # Event notifications (services/metadata/events): written in each change's transaction.
        self._events = events
        # The change feed (services/metadata/changes): tag and manifest changes, also written in
        # the change's transaction, as its last statement.
        self._changes = changes
        dialect = database.dialect
        r, rb, m, mr, t = repositories, repository_blobs, manifests, manifest_references, tags
        repository = bindparam("repository")

        self._ping = read(select(literal(1)))
        self._ping_primary = primary_read(select(literal(1)))
        self._repository_id = select(r.c.id).where(r.c.name == repository)
        self._repository_id_subquery = self._repository_id.scalar_subquery()
        self._insert_repository = insert_ignore(dialect, r, ["name"])

        # Blobs.
        self._link = insert_ignore(dialect, rb, ["repository_id", "digest"])
        # The same insert naming the repository: one statement instead of two when it exists
        # (every link but a new repository's first); no row when it does not, or the link does.
        self._link_by_name = insert_ignore_from(
            dialect, rb, ["repository_id", "digest"], ["repository_id", "digest", "size", "created_at"],
            select(r.c.id, bindparam("digest", type_=rb.c.digest.type), bindparam("size", type_=rb.c.size.type),
                   bindparam("created_at", type_=rb.c.created_at.type)).where(r.c.name == repository),
        )
        # Regions (services/metadata/blob_regions.py): which region holds the bytes.
        self._held_in = insert_ignore(dialect, blob_regions, ["digest", "region"])
        # GC (services/metadata/gc): a blob whose `blobs` row is not `active` (being deleted) is
        # unknown to HEAD, mount and manifests, checked in the same query/transaction.
        self._blob_guard = BlobRowGuard(dialect)
        blob_active = and_(gc_blobs.c.digest == rb.c.digest, gc_blobs.c.state == literal_column("'active'"))
        self._stat_blob = hot_read(
            select(rb.c.size)
            .select_from(rb.join(r, r.c.id == rb.c.repository_id).join(gc_blobs, blob_active))
            .where(r.c.name == repository, rb.c.digest == bindparam("digest"))
        )
        self._unlink = delete(rb).where(
            rb.c.repository_id == self._repository_id_subquery, rb.c.digest == bindparam("digest")
        )
        self._blob_anywhere = select(rb.c.size).where(rb.c.digest == bindparam("digest")).limit(1)

        # Manifests. FOR SHARE (PostgreSQL; SQLite ignores it and holds the write lock anyway) keeps
        # a concurrent unlink/delete from removing what we checked before we commit.
        self._linked_blobs = (
            select(rb.c.digest)
            .select_from(rb.join(gc_blobs, blob_active))
            .where(rb.c.repository_id == bindparam("repository_id"),
                   rb.c.digest.in_(bindparam("digests", expanding=True)))
            .with_for_update(read=True)
        )
        self._existing_manifests = (
            select(m.c.digest)
            .where(m.c.repository_id == bindparam("repository_id"),
                   m.c.digest.in_(bindparam("digests", expanding=True)))
            .with_for_update(read=True)
        )
        self._insert_manifest = insert_ignore(dialect, m, ["repository_id", "digest"]).returning(m.c.id)
        # FOR SHARE: an existing manifest row a re-push finds stays until the push commits (the
        # collector's FOR UPDATE waits), or, when the collector deleted it first, it is not found
        # and the push inserts it again (see put_manifest).
        self._manifest_id = select(m.c.id).where(
            m.c.repository_id == bindparam("repository_id"), m.c.digest == bindparam("digest")
        ).with_for_update(read=True)
        self._manifest_row = select(m.c.id, m.c.media_type, m.c.size).where(
            m.c.repository_id == bindparam("repository_id"), m.c.digest == bindparam("digest")
        ).with_for_update(read=True)
        self._insert_references = insert_ignore(dialect, mr, ["manifest_id", "digest", "kind"])
        # Tag moves and deletes: immutable-tag rules and the tag history (services/metadata/policies).
        self._tags = TagKeeper(dialect)
        # Storage quotas, counted as links come and go (services/metadata/policies/quotas.py).
        self._quotas = QuotaKeeper(dialect)
        self._delete_manifest = delete(m).where(
            m.c.repository_id == bindparam("repository_id"), m.c.digest == bindparam("digest")
        )
        self._delete_tag = delete(t).where(
            t.c.repository_id == bindparam("repository_id"), t.c.name == bindparam("tag")
        )
        # For the change feed: the digest a tag names before it moves or goes, and the tags a
        # deleted manifest takes with it.
        self._tag_digest = (
            select(m.c.digest).select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(t.c.repository_id == bindparam("repository_id"), t.c.name == bindparam("tag"))
        )
        self._manifest_tags = (
            select(t.c.name).select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(m.c.repository_id == bindparam("repository_id"), m.c.digest == bindparam("digest"))
            .order_by(t.c.name)
        )

        # GetManifest: LEFT JOINs from the repository so that one query tells "no repository"
        # (no row) from "no manifest" (a row with NULL manifest columns).
        def manifest_lookup(joined: Any, with_payload: bool) -> Any:
            columns = [r.c.id, m.c.digest, m.c.media_type, m.c.size]
            if with_payload:
                columns.append(m.c.payload)
            return hot_read(select(*columns).select_from(joined).where(r.c.name == repository))

        by_tag_join = r.outerjoin(t, and_(t.c.repository_id == r.c.id, t.c.name == bindparam("tag"))).outerjoin(
            m, m.c.id == t.c.manifest_id
        )
        by_digest_join = r.outerjoin(m, and_(m.c.repository_id == r.c.id, m.c.digest == bindparam("digest")))
        self._get_by_tag = {flag: manifest_lookup(by_tag_join, flag) for flag in (True, False)}
        self._get_by_digest = {flag: manifest_lookup(by_digest_join, flag) for flag in (True, False)}

        # Listings: fetch limit + 1 rows to know whether more follow.
        limit = bindparam("limit")
        self._list_tags = hot_read(
            select(r.c.id, t.c.name)
            .select_from(r.outerjoin(t, and_(t.c.repository_id == r.c.id, t.c.name > bindparam("last"))))
            .where(r.c.name == repository)
            .order_by(t.c.name)
            .limit(limit)
        )
        self._list_repositories = hot_read(
            select(r.c.name).where(r.c.name > bindparam("last")).order_by(r.c.name).limit(limit)
        )
        referrers = (
            select(m.c.digest, m.c.media_type, m.c.size, m.c.artifact_type, m.c.annotations)
            .select_from(m.join(r, r.c.id == m.c.repository_id))
            .where(r.c.name == repository, m.c.subject_digest == bindparam("subject"),
                   m.c.digest > bindparam("last"))
            .order_by(m.c.digest)
            .limit(limit)
        )
        self._list_referrers = hot_read(referrers)
        self._list_referrers_of_type = hot_read(referrers.where(m.c.artifact_type == bindparam("artifact_type")))

    # -- plumbing ---------------------------------------------------------------------------------

    async def _read_all(self, declared: Read, params: dict[str, Any]) -> list[Any]:
        try:
            return await self._access.rows(declared, params)
        except _DB_ERRORS as exc:
            raise _translate(exc) from None

    async def _read_first(self, declared: Read, params: dict[str, Any]) -> Any:
        try:
            return await self._access.first(declared, params)
        except _DB_ERRORS as exc:
            raise _translate(exc) from None

    async def _write(self, work: Callable[[Connection], T], repository: str | None = None) -> T:
        """Runs the synchronous `work` in one write transaction (one call to the database's
        writer: store/writes.py); rolls back on any exception. With a hot standby as the read
        replica, returns once the standby has replayed the commit, or once reads of `repository`
        go to the primary (store/access.py, store/replay.py)."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                return await self._access.write(work, repository=repository)
            except RegistryError:
                raise
            except _DB_ERRORS as exc:
                if attempt < _WRITE_ATTEMPTS and is_retryable(exc):
                    log.debug("write conflict (attempt %d), retrying: %s", attempt, exc)
                    await asyncio.sleep(0.005 * attempt)
                    continue
                raise _translate(exc) from None
        raise AssertionError("unreachable")

    def _find_repository(self, conn: Connection, name: str) -> int | None:
        return conn.execute(self._repository_id, {"repository": name}).scalar()

    def _ensure_repository(self, conn: Connection, name: str) -> int:
        found = self._find_repository(conn, name)
        if found is not None:
            return found
        conn.execute(self._insert_repository, {"name": name, "created_at": _now()})
        return conn.execute(self._repository_id, {"repository": name}).scalar_one()

    # -- the contract -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raises unless the primary and (when configured) the read replica both answer."""
        await self._read_first(self._ping, {})
        if self._db.replica is not None:
            await self._read_first(self._ping_primary, {})

    async def close(self) -> None:
        await self._db.dispose()

    def require_blob_rows(self) -> None:
        """From now on LinkBlob refuses (BLOB_UNKNOWN) a digest without an `active` blobs row
        instead of creating one: the GC's GuardedStore creates rows after confirming the bytes."""
        self._blob_guard.insert_missing = False

    async def link_blob(self, repository: str, digest: str, size: int, *, activate_epoch: int | None = None,
                        vouched_until: float | None = None) -> None:
        region = writing_region.get()

        def work(conn: Connection) -> None:
            self._blob_guard.claim_for_link(conn, digest, size, activate_epoch=activate_epoch,
                                            vouched_until=vouched_until)
            now = _now()
            inserted = conn.execute(
                self._link_by_name, {"repository": repository, "digest": digest, "size": size, "created_at": now}
            ).rowcount
            if not inserted:  # a new repository, or a link that exists already
                repository_id = self._ensure_repository(conn, repository)
                inserted = conn.execute(
                    self._link, {"repository_id": repository_id, "digest": digest, "size": size, "created_at": now}
                ).rowcount
            if inserted:
                self._quotas.linked(conn, repository, digest, size)
            if region:
                conn.execute(self._held_in, {"digest": digest, "region": region, "created_at": _now()})
            if self._events is not None:
                self._events.blob_pushed(conn, repository, digest, size)

        await self._write(work, repository)

    async def stat_blob(self, repository: str, digest: str) -> int | None:
        row = await self._read_first(self._stat_blob, {"repository": repository, "digest": digest})
        return None if row is None else row[0]

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        def work(conn: Connection) -> bool:
            result = conn.execute(self._unlink, {"repository": repository, "digest": digest})
            if result.rowcount > 0:
                self._quotas.unlinked(conn, repository, digest)
            if result.rowcount > 0 and self._events is not None:
                self._events.blob_deleted(conn, repository, digest)
            return result.rowcount > 0

        return await self._write(work, repository)

    async def mount_blob(self, repository: str, digest: str, from_repository: str | None) -> int | None:
        def work(conn: Connection) -> int | None:
            if from_repository:
                size = conn.execute(self._stat_blob.statement, {"repository": from_repository, "digest": digest}).scalar()
            else:
                size = conn.execute(self._blob_anywhere, {"digest": digest}).scalar()
            if size is None or not self._blob_guard.usable(conn, digest):
                return None
            repository_id = self._ensure_repository(conn, repository)
            inserted = conn.execute(
                self._link, {"repository_id": repository_id, "digest": digest, "size": size, "created_at": _now()}
            ).rowcount
            if inserted:
                self._quotas.linked(conn, repository, digest, int(size))
            if self._events is not None:
                self._events.blob_mounted(conn, repository, digest, int(size), from_repository)
            return int(size)

        return await self._write(work, repository)

    async def put_manifest(self, repository: str, manifest: NewManifest, tag: str | None) -> None:
        def work(conn: Connection) -> int | None:
            repository_id = self._find_repository(conn, repository)
            missing_blobs = [] if manifest.from_upstream else list(manifest.blob_digests)
            missing_manifests = [] if manifest.from_upstream else list(manifest.manifest_digests)
            if repository_id is not None:
                if missing_blobs:
                    found = set(conn.execute(
                        self._linked_blobs, {"repository_id": repository_id, "digests": missing_blobs}
                    ).scalars())
                    missing_blobs = [d for d in missing_blobs if d not in found]
                if missing_manifests:
                    found = set(conn.execute(
                        self._existing_manifests, {"repository_id": repository_id, "digests": missing_manifests}
                    ).scalars())
                    missing_manifests = [d for d in missing_manifests if d not in found]
            if missing_blobs or missing_manifests:
                raise RegistryError(
                    ErrorKind.MANIFEST_BLOB_UNKNOWN,
                    _missing_message(missing_blobs, missing_manifests),
                    _missing_detail(missing_blobs, missing_manifests),
                )
            if repository_id is None:
                repository_id = self._ensure_repository(conn, repository)
            self._quotas.check_manifest(conn, repository, len(manifest.payload))

            now = _now()
            pusher = event_context.current().actor or None
            manifest_id = self._store_manifest(conn, repository_id, manifest, now, pusher)
            previous = None
            if tag is not None:
                if self._changes is not None:
                    previous = conn.execute(self._tag_digest, {"repository_id": repository_id, "tag": tag}).scalar()
                self._tags.move(conn, repository_id=repository_id, repository=repository, tag=tag,
                                manifest_id=manifest_id, digest=manifest.digest, pusher=pusher)
            # A manifest the pull-through cache stored was pulled, not pushed: its pull event says so.
            if self._events is not None and not manifest.from_upstream:
                self._events.manifest_pushed(conn, repository, manifest.digest, manifest.media_type,
                                                   len(manifest.payload), tag)
            if tag is not None and self._changes is not None:
                return self._changes.tag_set(conn, repository, tag, manifest.digest, previous)
            return None

        position = await self._write(work, repository)
        if tag is not None and self._changes is not None:
            self._changes.committed(position)
            # Every gateway's cache has dropped the tag's old digest before the push answers.
            await self._changes.settled(position)

    def _store_manifest(self, conn: Connection, repository_id: int, manifest: NewManifest,
                        now: datetime, pusher: str | None = None) -> int:
        """Inserts the manifest with its references, or finds the stored copy (same bytes, same
        references) and locks it FOR SHARE until the caller commits. Returns its id.

        A stored copy can vanish between the INSERT that found it and the lookup: the collector
        (gc.delete_untagged_manifests) deleted it in between. Then it is inserted again, as new.
        Raises UNAVAILABLE (retry) if that keeps happening, never an internal error.
        """
        row = {
            "repository_id": repository_id,
            "digest": manifest.digest,
            "media_type": manifest.media_type,
            "payload": manifest.payload,
            "size": len(manifest.payload),
            "subject_digest": manifest.subject_digest,
            "artifact_type": manifest.artifact_type,
            "config_media_type": manifest.config_media_type,
            "annotations": manifest.annotations,
            "created_at": now,
            "pushed_by": pusher,
        }
        for _ in range(_REINSERT_ATTEMPTS):
            inserted = conn.execute(self._insert_manifest, row).scalar()
            if inserted is not None:
                references = [{"manifest_id": inserted, "digest": d, "kind": "blob"}
                              for d in manifest.blob_digests]
                references += [{"manifest_id": inserted, "digest": d, "kind": "manifest"}
                               for d in manifest.manifest_digests]
                if references:
                    conn.execute(self._insert_references, references)
                return int(inserted)
            # Already stored (same bytes): its references were written with it.
            found = conn.execute(
                self._manifest_id, {"repository_id": repository_id, "digest": manifest.digest}
            ).scalar()
            if found is not None:
                return int(found)
            log.info("manifest %s was garbage-collected while being pushed again; storing it anew",
                     manifest.digest)
        raise RegistryError(
            ErrorKind.UNAVAILABLE,
            f"manifest {manifest.digest} is being garbage-collected concurrently; retry the push",
            {"digest": manifest.digest},
        )

    async def restore_tag(self, repository: str, tag: str, digest: str) -> bool:
        def work(conn: Connection) -> tuple[bool, int | None]:
            repository_id = self._find_repository(conn, repository)
            if repository_id is None:
                raise _name_unknown(repository)
            found = conn.execute(self._manifest_row, {"repository_id": repository_id, "digest": digest}).first()
            if found is None:
                raise RegistryError(
                    ErrorKind.MANIFEST_UNKNOWN,
                    f"manifest {digest} is no longer stored in repository {repository!r} (garbage-collected "
                    "after the history window, or never pushed there); push it again to restore the tag",
                    {"name": repository, "reference": digest},
                )
            previous = None if self._changes is None else conn.execute(
                self._tag_digest, {"repository_id": repository_id, "tag": tag}).scalar()
            moved = self._tags.move(conn, repository_id=repository_id, repository=repository, tag=tag,
                                    manifest_id=int(found[0]), digest=digest,
                                    pusher=event_context.current().actor or None, action="restore")
            if moved and self._events is not None:
                self._events.manifest_pushed(conn, repository, digest, found[1], int(found[2]), tag)
            # On the feed like a push: the gateways' caches must drop the tag's old digest too.
            position = self._changes.tag_set(conn, repository, tag, digest, previous) \
                if moved and self._changes is not None else None
            return moved, position

        moved, position = await self._write(work, repository)
        if position is not None and self._changes is not None:
            self._changes.committed()
            await self._changes.settled(position)
        return moved

    async def get_manifest(
        self, repository: str, *, tag: str | None = None, digest: str | None = None, with_payload: bool = True
    ) -> StoredManifest:
        if (tag is None) == (digest is None):
            raise ValueError("get_manifest needs exactly one of tag and digest")
        if tag is not None:
            row = await self._read_first(self._get_by_tag[with_payload], {"repository": repository, "tag": tag})
        else:
            row = await self._read_first(
                self._get_by_digest[with_payload], {"repository": repository, "digest": digest}
            )
        if row is None:
            raise _name_unknown(repository)
        if row[1] is None:
            raise _manifest_unknown(repository, tag or digest or "")
        return StoredManifest(
            digest=row[1], media_type=row[2], size=row[3], payload=bytes(row[4]) if with_payload else None
        )

    async def delete_manifest(self, repository: str, digest: str) -> None:
        def work(conn: Connection) -> int | None:
            repository_id = self._find_repository(conn, repository)
            if repository_id is None:
                raise _name_unknown(repository)
            gone_tags = [] if self._changes is None and self._events is None else list(conn.execute(
                self._manifest_tags, {"repository_id": repository_id, "digest": digest}).scalars())
            manifest_id = conn.execute(self._manifest_id, {"repository_id": repository_id, "digest": digest}).scalar()
            if manifest_id is None:
                raise _manifest_unknown(repository, digest)
            self._tags.deleting_manifest(conn, repository_id=repository_id, repository=repository,
                                         manifest_id=int(manifest_id), digest=digest)
            # Tags and references go with it (ON DELETE CASCADE).
            result = conn.execute(self._delete_manifest, {"repository_id": repository_id, "digest": digest})
            if result.rowcount == 0:
                raise _manifest_unknown(repository, digest)
            if self._events is not None:
                self._events.manifest_deleted(conn, repository, digest)
                # As Distribution: its tags go with it, each with a tag delete event after the
                # manifest's (receivers that follow tags would otherwise keep them forever).
                for tag in gone_tags:
                    self._events.tag_deleted(conn, repository, tag)
            if self._changes is not None:
                return self._changes.manifest_deleted(conn, repository, digest, gone_tags)
            return None

        position = await self._write(work, repository)
        if self._changes is not None:
            self._changes.committed()
            await self._changes.settled(position)

    async def delete_tag(self, repository: str, tag: str) -> None:
        def work(conn: Connection) -> int | None:
            repository_id = self._find_repository(conn, repository)
            if repository_id is None:
                raise _name_unknown(repository)
            named = None if self._changes is None else conn.execute(
                self._tag_digest, {"repository_id": repository_id, "tag": tag}).scalar()
            self._tags.deleting_tag(conn, repository_id=repository_id, repository=repository, tag=tag)
            result = conn.execute(self._delete_tag, {"repository_id": repository_id, "tag": tag})
            if result.rowcount == 0:
                raise _manifest_unknown(repository, tag)
            if self._events is not None:
                self._events.tag_deleted(conn, repository, tag)
            if self._changes is not None:
                return self._changes.tag_deleted(conn, repository, tag, named or "")
            return None

        position = await self._write(work, repository)
        if self._changes is not None:
            self._changes.committed()
            await self._changes.settled(position)

    async def list_tags(self, repository: str, *, last: str, limit: int) -> Page[str]:
        rows = await self._read_all(self._list_tags, {"repository": repository, "last": last, "limit": limit + 1})
        if not rows:
            raise _name_unknown(repository)
        names = [row[1] for row in rows if row[1] is not None]
        return Page(items=names[:limit], has_more=len(names) > limit)

    async def list_repositories(self, *, last: str, limit: int) -> Page[str]:
        rows = await self._read_all(self._list_repositories, {"last": last, "limit": limit + 1})
        return Page(items=[row[0] for row in rows[:limit]], has_more=len(rows) > limit)

    async def list_referrers(
        self, repository: str, subject_digest: str, *, artifact_type: str | None, last: str, limit: int
    ) -> Page[Referrer]:
        params: dict[str, Any] = {
            "repository": repository, "subject": subject_digest, "last": last, "limit": limit + 1,
        }
        if artifact_type:
            params["artifact_type"] = artifact_type
            rows = await self._read_all(self._list_referrers_of_type, params)
        else:
            rows = await self._read_all(self._list_referrers, params)
        items = [
            Referrer(digest=row[0], media_type=row[1], size=row[2], artifact_type=row[3], annotations=row[4])
            for row in rows[:limit]
        ]
        return Page(items=items, has_more=len(rows) > limit)


def _name_unknown(repository: str) -> RegistryError:
    return RegistryError(
        ErrorKind.NAME_UNKNOWN,
        f"repository {repository!r} is not known to this registry; push to it first",
        {"name": repository},
    )


def _manifest_unknown(repository: str, reference: str) -> RegistryError:
    return RegistryError(
        ErrorKind.MANIFEST_UNKNOWN,
        f"manifest {reference!r} is not known in repository {repository!r}",
        {"name": repository, "reference": reference},
    )


# Digests named in a MANIFEST_BLOB_UNKNOWN (each kind): a manifest may reference thousands, and
# the error must stay small enough to cross gRPC (services/common/errors.py); the counts say the rest.
_MISSING_SHOWN = 5


def _missing_detail(blobs: list[str], children: list[str]) -> dict[str, object]:
    return {
        "blobs": blobs[:_MISSING_SHOWN], "blob_count": len(blobs),
        "manifests": children[:_MISSING_SHOWN], "manifest_count": len(children),
    }


def _missing_message(blobs: list[str], children: list[str]) -> str:
    parts = []
    if blobs:
        parts.append(f"{len(blobs)} blob(s) not linked in this repository: {', '.join(blobs[:_MISSING_SHOWN])}")
    if children:
        parts.append(
            f"{len(children)} manifest(s) not in this repository: {', '.join(children[:_MISSING_SHOWN])}"
        )
    return "manifest references unknown content (" + "; ".join(parts) + "); push those first"
