"""`GcStore`: the SQL side of garbage collection, maintenance mode and the admin listings.

Every collecting step is one short transaction per item that first locks the row it will change
(SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers) and then
re-checks, in a new statement, that nothing references it any more. The write paths that add a
reference lock the same rows FOR SHARE (sql.py, guard.py), so either the collector sees the new
reference and skips, or the writer sees the row gone / `deleting` and fails with BLOB_UNKNOWN /
MANIFEST_BLOB_UNKNOWN. See the package docstring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, literal, or_, select, update
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.blob_regions import blob_regions
from services.metadata.events.envelope import ADMIN_ACTOR, GC_ACTOR, internal_request
from services.metadata.gc.guard import ACTIVE, DELETING, PENDING, new_epoch
from services.metadata.gc.tables import blobs, gc_review, gc_runs, registry_flags
from services.metadata.policies.quotas import QuotaKeeper
from services.metadata.policies.tables import tag_history
from services.metadata.policies.tags import TagKeeper
from services.metadata.store.access import Read, Route, push_read, read
from services.metadata.store.dialect import database_full, insert_ignore, is_retryable, is_unavailable, upsert
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

T = TypeVar("T")
GLOBAL = 0  # gc_review.repository_id of a hold on the global blob row
MAINTENANCE_FLAG = "maintenance"
MAINTENANCE_MESSAGE = "registry is in read-only maintenance mode"
_ATTEMPTS = 5
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)
# Digests per IN (...) query when looking for orphans.
_ORPHAN_CHUNK = 500


class _Simulated(Exception):  # noqa: N818 - not an error: carries `simulate`'s answer out of its rollback
    def __init__(self, result: tuple[list[Candidate], list[Candidate], list[Candidate]]) -> None:
        super().__init__("simulated GC run (rolled back)")
        self.result = result


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Candidate:
    """Something the collector would remove: a manifest, a repository link or a blob's bytes."""

    kind: str  # "manifest" | "link" | "blob"
    repository_id: int
    digest: str
    size: int
    # manifests.id for kind "manifest".
    row_id: int = 0
    state: str = ""


@dataclass(slots=True)
class RunTotals:
    manifests_deleted: int = 0
    links_removed: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class QueueSizes:
    """`GcStore.queue_sizes()`: what a run would collect now by kind ("manifest", "link", "blob"),
    items held for review, and blob rows by state as (count, bytes)."""

    collectable: dict[str, int]
    held: int
    blobs_by_state: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    tags: int
    manifests: int
    # Linked blob bytes + manifest bytes (shared blobs count in every repository linking them).
    bytes: int


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    digest: str
    media_type: str
    size: int
    tags: list[str] = field(default_factory=list)


class GcStore:
    """GC / admin SQL over the metadata `Database`. `delay_seconds` is gc.review_delay_seconds."""

    def __init__(self, database: Database, *, delay_seconds: float, maintenance_cache_seconds: float = 1.0,
                 events: EventOutbox | None = None, changes: RepositoryChanges | None = None,
                 history_window_seconds: float = 0.0) -> None:
        self._db = database
        # A manifest a tag left (moved or deleted: tag_history) this recently is kept, so that
        # `lading tag restore` can bring it back (governance.history_window_seconds).
        self._history_window = timedelta(seconds=max(0.0, history_window_seconds))
        self._tags = TagKeeper(database.dialect)
        self._quotas = QuotaKeeper(database.dialect)
        # Delete events (services/metadata/events) of the collector and the admin repository
        # delete, written in the deleting transaction; None: no endpoints configured.
        self._events = events if events is not None and events.enabled else None
        # The change feed (services/metadata/changes): the same deletes, for gateways' caches.
        self._changes = changes
        # The newest change of a manifest delete not yet settled (`settle_changes`).
        self._unsettled: int | None = None
        self._delay = timedelta(seconds=max(0.0, delay_seconds))
        self._dialect = database.dialect
        self._cache_seconds = maintenance_cache_seconds
        self._maintenance: tuple[float, bool] | None = None
        self._hold = upsert(self._dialect, gc_review, ["repository_id", "digest"], {"review_after": None})
        self._insert_blob = insert_ignore(self._dialect, blobs, ["digest"])
        self._set_flag = upsert(self._dialect, registry_flags, ["name"], {"value": None})
        self._access = database.access
        # LinkBlob's lock-free look at the blob row before it writes (link_epoch).
        self._link_state = push_read(select(blobs.c.state).where(blobs.c.digest == bindparam("digest")))
        # Built once: per call, building the statement cost more than running it.
        self._blob_row = select(blobs.c.state, blobs.c.epoch).where(blobs.c.digest == bindparam("digest"))
        self._tagged = push_read(
            select(repositories.c.id, manifests.c.digest)
            .select_from(tags.join(repositories, repositories.c.id == tags.c.repository_id)
                         .join(manifests, manifests.c.id == tags.c.manifest_id))
            .where(repositories.c.name == bindparam("repository"), tags.c.name == bindparam("tag")))

    # -- plumbing -----------------------------------------------------------------------------------

    async def _write(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        """Runs the synchronous `work` in one write transaction on the database's writer (shared
        with the metadata store: store/writes.py); `durable` as `Writer.run` says."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._access.write(work, durable=durable)
            except RegistryError:
                raise
            except _DB_ERRORS as exc:
                if attempt < _ATTEMPTS and is_retryable(exc):
                    await asyncio.sleep(0.005 * attempt)
                    continue
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    async def _read(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """One read that may scan (store/access.py `READ`): no BEGIN IMMEDIATE on SQLite; may be
        the replica (every collecting step re-checks on the primary under a row lock, so a
        lagging answer is only a hint)."""
        return await self._rows(read(statement), params)

    async def _rows(self, declared: Read, params: dict[str, Any] | None = None) -> list[Any]:
        try:
            return await self._access.rows(declared, params)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None

    def _lock(self, statement: Any) -> Any:
        return statement.with_for_update() if self._dialect == "postgresql" else statement

    # -- maintenance mode ---------------------------------------------------------------------------

    async def maintenance(self, *, fresh: bool = False) -> bool:
        """True when read-only maintenance mode is on. Cached for `maintenance_cache_seconds`, so
        a switch reaches every replica within that time."""
        cached = self._maintenance
        if not fresh and cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        rows = await self._read(select(registry_flags.c.value).where(registry_flags.c.name == MAINTENANCE_FLAG))
        on = bool(rows) and rows[0][0] == "on"
        self._maintenance = (time.monotonic(), on)
        return on

    async def set_maintenance(self, on: bool) -> None:
        def work(conn: Connection) -> None:
            conn.execute(self._set_flag, {"name": MAINTENANCE_FLAG, "value": "on" if on else "off"})

        await self._write(work)
        self._maintenance = (time.monotonic(), on)

    async def refuse_in_maintenance(self) -> None:
        """Raises UNSUPPORTED (HTTP 405) with a clear message while maintenance mode is on."""
        if await self.maintenance():
            raise RegistryError(ErrorKind.UNSUPPORTED, MAINTENANCE_MESSAGE + "; retry when it is over",
                                {"reason": "maintenance"})

    # -- review holds -------------------------------------------------------------------------------

    async def hold(self, items: list[tuple[int, str]]) -> None:
        """Keeps each (repository_id or GLOBAL, digest) from being collected for the review delay."""
        if not items or not self._delay:
            return
        after = _now() + self._delay

        def work(conn: Connection) -> None:
            conn.execute(self._hold, [{"repository_id": r, "digest": d, "review_after": after}
                                            for r, d in items])

        await self._write(work)

    async def holds_for_tag(self, repository: str, tag: str) -> None:
        if not self._delay:
            return
        rows = await self._rows(self._tagged, {"repository": repository, "tag": tag})
        await self.hold([(row[0], row[1]) for row in rows])

    async def holds_for_manifest(self, repository: str, digest: str) -> None:
        """Holds the blobs and child manifests `digest` references in `repository`."""
        if not self._delay:
            return
        rows = await self._rows(push_read(
            select(repositories.c.id, manifest_references.c.digest)
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id)
                         .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id))
            .where(repositories.c.name == repository, manifests.c.digest == digest)))
        await self.hold([(row[0], row[1]) for row in rows])

    async def holds_for_global(self, digests: list[str]) -> None:
        await self.hold([(GLOBAL, d) for d in digests])

    # -- LinkBlob with blob-plane confirmation (GuardedStore) ---------------------------------------

    async def prepare_link(self, digest: str, size: int) -> int | None:
        """Before a LinkBlob: None when the blob row is `active` (bytes known to exist); otherwise
        the epoch of a `pending` row (inserted now when absent) the caller must confirm with the
        blob plane and then `activate`. Raises BLOB_UNKNOWN when the row is `deleting`."""
        def work(conn: Connection) -> int | None:
            conn.execute(self._insert_blob, {
                "digest": digest, "size": size, "state": PENDING, "epoch": new_epoch(), "updated_at": _now()})
            row = conn.execute(self._blob_row, {"digest": digest}).first()
            if row is None or row[0] == DELETING:
                from services.metadata.gc.guard import blob_being_deleted

                raise blob_being_deleted(digest)
            return None if row[0] == ACTIVE else int(row[1])

        # A reservation: nobody is answered until the link's own (durable) transaction commits,
        # which makes this one durable too; lost in a crash before that, nothing was promised.
        return await self._write(work, durable=False)

    async def link_epoch(self, digest: str, size: int) -> int | None:
        """`prepare_link` for a LinkBlob: None when the row is `active`, else the `pending`
        epoch to confirm. Where a push read takes its own path (not the writer), a lock-free read
        comes first, so the re-push of a known blob writes nothing; where it would take the
        writer anyway (a SQLite file: store/access.py), the write transaction alone is one hop,
        cheaper than a read and then a write."""
        if self._access.route(self._link_state) is not Route.WRITER:
            rows = await self._rows(self._link_state, {"digest": digest})
            if rows and rows[0][0] == ACTIVE:
                return None
        return await self.prepare_link(digest, size)

    async def blob_state(self, digest: str) -> str | None:
        """The row's state, or None (one read, no lock: callers re-check under a lock)."""
        rows = await self._read(select(blobs.c.state).where(blobs.c.digest == digest))
        return rows[0][0] if rows else None

    async def activate(self, digest: str, epoch: int) -> bool:
        """Marks the `pending` row of that epoch `active`; False when the GC took it meanwhile."""
        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(blobs).where(blobs.c.digest == digest, blobs.c.epoch == epoch,
                                    blobs.c.state.in_([PENDING, ACTIVE]))
                .values(state=ACTIVE, updated_at=_now()))
            return result.rowcount > 0

        return await self._write(work)

    # -- the collector's queries ----------------------------------------------------------------------

    def _not_held(self, repository_id: Any, digest: Any) -> Any:
        return ~exists().where(gc_review.c.repository_id == repository_id, gc_review.c.digest == digest,
                               gc_review.c.review_after > bindparam("now"))

    def _manifest_deletable(self) -> Any:
        m, m2, mr, t = manifests, manifests.alias("parent"), manifest_references, tags
        referrer, subject, tagged = manifests.alias("referrer"), manifests.alias("subject"), tags.alias("rt")
        is_child = exists().select_from(mr.join(m2, m2.c.id == mr.c.manifest_id)).where(
            m2.c.repository_id == m.c.repository_id, mr.c.digest == m.c.digest, mr.c.kind == "manifest")
        # A tagged referrer keeps its subject (a signed, tagged signature keeps the image).
        kept_by_referrer = exists().select_from(referrer.join(tagged, tagged.c.manifest_id == referrer.c.id)).where(
            referrer.c.repository_id == m.c.repository_id, referrer.c.subject_digest == m.c.digest)
        # A referrer lives as long as its subject.
        subject_alive = exists().where(subject.c.repository_id == m.c.repository_id,
                                       subject.c.digest == m.c.subject_digest)
        # A tag left it within the history window (policies/tags.py records every move and delete).
        in_history = exists().select_from(tag_history.join(repositories, repositories.c.name == tag_history.c.repository)).where(
            repositories.c.id == m.c.repository_id, tag_history.c.old_digest == m.c.digest,
            tag_history.c.at > bindparam("history_cutoff"))
        return and_(
            m.c.created_at <= bindparam("cutoff"),
            ~exists().where(t.c.manifest_id == m.c.id),
            ~in_history,
            ~is_child, ~kept_by_referrer,
            or_(m.c.subject_digest.is_(None), ~subject_alive),
            self._not_held(m.c.repository_id, m.c.digest),
        )

    def _link_unreferenced(self) -> Any:
        rb, m, mr = repository_blobs, manifests, manifest_references
        used = exists().select_from(mr.join(m, m.c.id == mr.c.manifest_id)).where(
            m.c.repository_id == rb.c.repository_id, mr.c.digest == rb.c.digest, mr.c.kind == "blob")
        return and_(rb.c.created_at <= bindparam("cutoff"), ~used, self._not_held(rb.c.repository_id, rb.c.digest))

    def _blob_unlinked(self) -> Any:
        rb = repository_blobs
        return and_(
            blobs.c.updated_at <= bindparam("cutoff"),
            ~exists().where(rb.c.digest == blobs.c.digest),
            self._not_held(literal(GLOBAL), blobs.c.digest),
        )

    def _times(self) -> dict[str, Any]:
        now = _now()
        return {"now": now, "cutoff": now - self._delay, "history_cutoff": now - self._history_window}

    async def manifest_candidates(self) -> list[Candidate]:
        m = manifests
        rows = await self._read(select(m.c.id, m.c.repository_id, m.c.digest, m.c.size)
                                .where(self._manifest_deletable()).order_by(m.c.id), self._times())
        return [Candidate("manifest", r[1], r[2], int(r[3]), row_id=r[0]) for r in rows]

    async def link_candidates(self) -> list[Candidate]:
        rb = repository_blobs
        rows = await self._read(select(rb.c.repository_id, rb.c.digest, rb.c.size)
                                .where(self._link_unreferenced()), self._times())
        return [Candidate("link", r[0], r[1], int(r[2])) for r in rows]

    async def blob_candidates(self) -> list[Candidate]:
        """Blobs no repository links (after the delay), and blobs left `deleting` by a failed run."""
        rows = await self._read(
            select(blobs.c.digest, blobs.c.size, blobs.c.state)
            .where(or_(blobs.c.state == DELETING, and_(blobs.c.state.in_([ACTIVE, PENDING]), self._blob_unlinked())))
            .order_by(blobs.c.digest), self._times())
        return [Candidate("blob", GLOBAL, r[0], int(r[1]), state=r[2]) for r in rows]

    async def blobs_by_digest(self, digests: list[str]) -> list[Candidate]:
        """Collectable rows (active/pending, not globally held) among `digests`, links ignored."""
        found: list[Candidate] = []
        for start in range(0, len(digests), 500):
            rows = await self._read(
                select(blobs.c.digest, blobs.c.size, blobs.c.state)
                .where(blobs.c.digest.in_(bindparam("digests", expanding=True)),
                       blobs.c.state.in_([ACTIVE, PENDING]), blobs.c.updated_at <= bindparam("cutoff"),
                       self._not_held(literal(GLOBAL), blobs.c.digest)),
                {**self._times(), "digests": digests[start:start + 500]})
            found += [Candidate("blob", GLOBAL, r[0], int(r[1]), state=r[2]) for r in rows]
        return found

    async def simulate(self, *, delete_untagged: bool, passes: int
                       ) -> tuple[list[Candidate], list[Candidate], list[Candidate]]:
        """What a run would take now, as (manifests, links, blobs): the sweep's and the mark's
        own conditions, applied in the same order (untagged manifests in up to `passes` passes,
        each pass seeing what the one before removed; then the links no remaining manifest
        references; then the blobs no remaining link holds, and those left `deleting`), inside
        ONE write transaction that is always rolled back. So the dry run counts what only
        becomes collectable once other items go (an index's children, their referrers, the
        blobs only they used), and nothing is changed. It holds the write lock (SQLite) or the
        rows' locks (PostgreSQL) for that one transaction, as a run's steps do for theirs."""
        m, rb = manifests, repository_blobs

        def work(conn: Connection) -> None:
            times = self._times()
            gone: list[Candidate] = []
            if delete_untagged:
                for _ in range(passes):
                    rows = conn.execute(select(m.c.id, m.c.repository_id, m.c.digest, m.c.size)
                                        .where(self._manifest_deletable()).order_by(m.c.id), times).all()
                    if not rows:
                        break
                    gone += [Candidate("manifest", r[1], r[2], int(r[3]), row_id=r[0]) for r in rows]
                    ids = [r[0] for r in rows]
                    for start in range(0, len(ids), _ORPHAN_CHUNK):
                        conn.execute(delete(m).where(m.c.id.in_(ids[start:start + _ORPHAN_CHUNK])))
            rows = conn.execute(select(rb.c.repository_id, rb.c.digest, rb.c.size)
                                .where(self._link_unreferenced()), times).all()
            links = [Candidate("link", r[0], r[1], int(r[2])) for r in rows]
            if links:
                conn.execute(delete(rb).where(rb.c.repository_id == bindparam("r"), rb.c.digest == bindparam("d")),
                             [{"r": c.repository_id, "d": c.digest} for c in links])
            rows = conn.execute(
                select(blobs.c.digest, blobs.c.size, blobs.c.state)
                .where(or_(blobs.c.state == DELETING, and_(blobs.c.state.in_([ACTIVE, PENDING]), self._blob_unlinked())))
                .order_by(blobs.c.digest), times).all()
            raise _Simulated((gone, links, [Candidate("blob", GLOBAL, r[0], int(r[1]), state=r[2]) for r in rows]))

        try:
            # Never commits (the body always raises), so nothing waits for the disk.
            await self._write(work, durable=False)
        except _Simulated as done:
            return done.result
        raise AssertionError("unreachable")

    async def delete_manifest_if_unreferenced(self, candidate: Candidate) -> bool:
        m = manifests

        def work(conn: Connection) -> bool:
            locked = (conn.execute(self._lock(select(m.c.id).where(m.c.id == candidate.row_id)))).first()
            if locked is None:
                return False
            still = (conn.execute(select(m.c.id).where(m.c.id == candidate.row_id, self._manifest_deletable()),
                                        self._times())).first()
            if still is None:
                return False
            conn.execute(delete(m).where(m.c.id == candidate.row_id))
            if self._events is not None:
                name = (conn.execute(select(repositories.c.name)
                                           .where(repositories.c.id == candidate.repository_id))).scalar()
                if name is not None:
                    self._events.manifest_deleted(conn, name, candidate.digest, internal_request(GC_ACTOR))
            if self._changes is not None:
                name = (conn.execute(select(repositories.c.name)
                                     .where(repositories.c.id == candidate.repository_id))).scalar()
                if name is not None:
                    position[0] = self._changes.manifest_deleted(conn, name, candidate.digest, [])
            return True

        position: list[int | None] = [None]
        deleted = await self._write(work)
        if deleted and self._changes is not None:
            self._changes.committed()
            self._unsettled = max(self._unsettled or 0, position[0] or 0) or None
        return deleted

    async def settle_changes(self) -> None:
        """Returns once the gateways' caches applied the manifest deletes made so far (the change
        feed's acknowledgements: changes/acks.py); a sweep calls it before it goes on, so a
        collected manifest is no longer served from a cache once the run answers."""
        position, self._unsettled = self._unsettled, None
        if self._changes is not None and position:
            await self._changes.settled(position)

    async def unlink_if_unreferenced(self, candidate: Candidate) -> bool:
        rb = repository_blobs
        key = and_(rb.c.repository_id == candidate.repository_id, rb.c.digest == candidate.digest)

        def work(conn: Connection) -> bool:
            if (conn.execute(self._lock(select(rb.c.digest).where(key)))).first() is None:
                return False
            if (conn.execute(select(rb.c.digest).where(key, self._link_unreferenced()),
                                   self._times())).first() is None:
                return False
            conn.execute(delete(rb).where(key))
            name = conn.execute(select(repositories.c.name).where(repositories.c.id == candidate.repository_id)).scalar()
            if name is not None:
                self._quotas.unlinked(conn, name, candidate.digest)
            return True

        return await self._write(work)

    async def mark_deleting(self, candidate: Candidate) -> bool:
        """Claims an unlinked blob for deletion: `deleting` from now on (LinkBlob, MountBlob, HEAD
        and PutManifest refuse it). True also when it already was `deleting` (a retry)."""
        def work(conn: Connection) -> bool:
            state = (conn.execute(self._lock(select(blobs.c.state).where(blobs.c.digest == candidate.digest))
                                        )).scalar()
            if state is None:
                return False
            if state == DELETING:
                return True
            if (conn.execute(select(blobs.c.digest).where(blobs.c.digest == candidate.digest,
                                                                self._blob_unlinked()), self._times())).first() is None:
                return False
            conn.execute(update(blobs).where(blobs.c.digest == candidate.digest)
                               .values(state=DELETING, updated_at=_now()))
            return True

        return await self._write(work)

    # -- orphan bytes (stored on the blob plane, no `blobs` row) ------------------------------------

    def _unaccounted(self) -> Any:
        """No `blobs` row and no repository link for bindparam("digest") (the link check only
        guards against data from before rows were kept: every link has an `active` row)."""
        return and_(~exists().where(blobs.c.digest == bindparam("digest")),
                    ~exists().where(repository_blobs.c.digest == bindparam("digest")))

    async def unaccounted_digests(self, digests: list[str]) -> list[str]:
        """Those of `digests` with no `blobs` row and no repository link (a hint: `claim_orphans`
        decides), in the order given."""
        known: set[str] = set()
        for start in range(0, len(digests), _ORPHAN_CHUNK):
            chunk = digests[start:start + _ORPHAN_CHUNK]
            for table in (blobs, repository_blobs):
                known.update(row[0] for row in await self._read(
                    select(table.c.digest).where(table.c.digest.in_(bindparam("digests", expanding=True))),
                    {"digests": chunk}))
        return [digest for digest in digests if digest not in known]

    async def claim_orphans(self, orphans: list[tuple[str, int]]) -> list[str]:
        """Claims each (digest, size) that has no `blobs` row and no link by inserting its row
        `deleting` (insert-if-absent), all in one transaction; returns the digests claimed. From
        then on LinkBlob, MountBlob, HEAD and PutManifest refuse them (BLOB_UNKNOWN: upload it
        again) until `forget_blob`. A digest whose row appeared meanwhile is not an orphan and is
        left alone. (On SQLite BEGIN IMMEDIATE serialises this with every writer; on PostgreSQL a
        LinkBlob racing the insert either finds the row `deleting` or wins the primary key.)"""
        if not orphans:
            return []

        def work(conn: Connection) -> list[str]:
            claimed = []
            for digest, size in orphans:
                if (conn.execute(select(literal(1)).where(self._unaccounted()), {"digest": digest})).first() is None:
                    continue
                inserted = conn.execute(self._insert_blob, {
                    "digest": digest, "size": size, "state": DELETING, "epoch": new_epoch(), "updated_at": _now()})
                if inserted.rowcount > 0:
                    claimed.append(digest)
            return claimed

        return await self._write(work)

    async def forget_blob(self, digest: str) -> bool:
        """Deletes the `deleting` row once the bytes are gone, and which regions held the blob
        (services/metadata/blob_regions.py): a blob pushed again later is recorded anew, so no
        region fetches it on a miss from a region whose copy was collected."""
        def work(conn: Connection) -> bool:
            result = conn.execute(delete(blobs).where(blobs.c.digest == digest, blobs.c.state == DELETING))
            conn.execute(delete(gc_review).where(gc_review.c.repository_id == GLOBAL,
                                                       gc_review.c.digest == digest))
            if result.rowcount > 0:
                conn.execute(delete(blob_regions).where(blob_regions.c.digest == digest))
            return result.rowcount > 0

        return await self._write(work)

    async def drop_expired_holds(self) -> int:
        def work(conn: Connection) -> int:
            return (conn.execute(delete(gc_review).where(gc_review.c.review_after <= _now()))).rowcount

        return await self._write(work)

    async def record_run(self, started_at: datetime, dry_run: bool, totals: RunTotals) -> None:
        def work(conn: Connection) -> None:
            conn.execute(gc_runs.insert().values(
                started_at=started_at, finished_at=_now(), dry_run=dry_run,
                manifests_deleted=totals.manifests_deleted, links_removed=totals.links_removed,
                blobs_deleted=totals.blobs_deleted, bytes_freed=totals.bytes_freed, errors=totals.errors))

        await self._write(work)

    async def stats(self, last_runs: int) -> dict[str, Any]:
        """Queue sizes (what the next run would look at) and the last runs, newest first."""
        by_state = {r[0]: (int(r[1]), int(r[2] or 0)) for r in await self._read(
            select(blobs.c.state, func.count(), func.sum(blobs.c.size)).group_by(blobs.c.state))}
        holds = (await self._read(select(func.count()).select_from(gc_review)
                                  .where(gc_review.c.review_after > bindparam("now")), {"now": _now()}))[0][0]
        return {
            "blobs_by_state": by_state,
            "held": int(holds),
            "link_candidates": len(await self.link_candidates()),
            "blob_candidates": len(await self.blob_candidates()),
            "manifest_candidates": len(await self.manifest_candidates()),
            "runs": await self.recent_runs(last_runs),
        }

    async def recent_runs(self, last_runs: int) -> list[dict[str, Any]]:
        """The last recorded runs, newest first."""
        runs = await self._read(select(gc_runs).order_by(gc_runs.c.id.desc()).limit(last_runs))
        return [dict(r._mapping) for r in runs]

    async def queue_sizes(self) -> QueueSizes:
        """The review queues as counts, for metrics: one COUNT per queue, no rows fetched. The
        predicates are the collector's own (`manifest_candidates` and friends), so the numbers are
        what a run would find now (manifests count whether or not retention deletes them)."""
        times = self._times()
        collectable_blobs = or_(blobs.c.state == DELETING,
                                and_(blobs.c.state.in_([ACTIVE, PENDING]), self._blob_unlinked()))
        counts = {}
        for kind, statement in (
            ("manifest", select(func.count()).select_from(manifests).where(self._manifest_deletable())),
            ("link", select(func.count()).select_from(repository_blobs).where(self._link_unreferenced())),
            ("blob", select(func.count()).select_from(blobs).where(collectable_blobs)),
        ):
            counts[kind] = int((await self._read(statement, times))[0][0])
        by_state, holds = await self.summary()
        return QueueSizes(collectable=counts, held=holds, blobs_by_state=by_state)

    async def summary(self) -> tuple[dict[str, tuple[int, int]], int]:
        """(blob rows by state as (count, bytes), items held for review): two cheap queries, without
        the collectable counts (those scan manifests and links)."""
        holds = (await self._read(select(func.count()).select_from(gc_review)
                                  .where(gc_review.c.review_after > bindparam("now")), {"now": _now()}))[0][0]
        by_state = {state: (0, 0) for state in (ACTIVE, PENDING, DELETING)}
        for row in await self._read(select(blobs.c.state, func.count(), func.sum(blobs.c.size))
                                    .group_by(blobs.c.state)):
            by_state[row[0]] = (int(row[1]), int(row[2] or 0))
        return by_state, int(holds)

    # -- admin --------------------------------------------------------------------------------------

    async def repository_id(self, name: str) -> int:
        rows = await self._read(select(repositories.c.id).where(repositories.c.name == name))
        if not rows:
            raise RegistryError(ErrorKind.NAME_UNKNOWN, f"repository {name!r} is not known to this registry",
                                {"name": name})
        return int(rows[0][0])

    async def list_repositories(self) -> list[RepositorySummary]:
        r, t, m, rb = repositories, tags, manifests, repository_blobs
        tag_count = select(func.count()).where(t.c.repository_id == r.c.id).scalar_subquery()
        manifest_count = select(func.count()).where(m.c.repository_id == r.c.id).scalar_subquery()
        manifest_bytes = select(func.coalesce(func.sum(m.c.size), 0)).where(m.c.repository_id == r.c.id).scalar_subquery()
        blob_bytes = select(func.coalesce(func.sum(rb.c.size), 0)).where(rb.c.repository_id == r.c.id).scalar_subquery()
        rows = await self._read(select(r.c.name, tag_count, manifest_count, manifest_bytes, blob_bytes).order_by(r.c.name))
        return [RepositorySummary(row[0], int(row[1]), int(row[2]), int(row[3]) + int(row[4])) for row in rows]

    async def list_tags(self, repository: str) -> list[tuple[str, str]]:
        repository_id = await self.repository_id(repository)
        rows = await self._read(select(tags.c.name, manifests.c.digest)
                                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                                .where(tags.c.repository_id == repository_id).order_by(tags.c.name))
        return [(row[0], row[1]) for row in rows]

    async def list_manifests(self, repository: str) -> list[ManifestSummary]:
        repository_id = await self.repository_id(repository)
        rows = await self._read(select(manifests.c.id, manifests.c.digest, manifests.c.media_type, manifests.c.size)
                                .where(manifests.c.repository_id == repository_id).order_by(manifests.c.digest))
        names: dict[int, list[str]] = {}
        for tag_row in await self._read(select(tags.c.manifest_id, tags.c.name)
                                        .where(tags.c.repository_id == repository_id).order_by(tags.c.name)):
            names.setdefault(tag_row[0], []).append(tag_row[1])
        return [ManifestSummary(row[1], row[2], int(row[3]), names.get(row[0], [])) for row in rows]

    async def delete_repository(self, repository: str) -> tuple[int, int]:
        """Deletes the repository and everything in it (metadata only). Returns (manifests, links)."""
        repository_id = await self.repository_id(repository)
        digests = [row[0] for row in await self._read(
            select(repository_blobs.c.digest).where(repository_blobs.c.repository_id == repository_id))]
        await self.holds_for_global(digests)

        def work(conn: Connection) -> tuple[int, int]:
            count = (conn.execute(select(func.count()).where(manifests.c.repository_id == repository_id))).scalar()
            request = internal_request(ADMIN_ACTOR)
            self._tags.deleting_repository(conn, repository_id=repository_id, repository=repository, request=request)
            if self._events is not None:
                gone = list((conn.execute(select(manifests.c.digest).where(
                    manifests.c.repository_id == repository_id).order_by(manifests.c.id))).scalars())
                self._events.repository_deleted(conn, repository, gone, internal_request(ADMIN_ACTOR))
            for digest in conn.execute(select(repository_blobs.c.digest)
                                       .where(repository_blobs.c.repository_id == repository_id)).scalars().all():
                self._quotas.unlinked(conn, repository, digest)
            # Children first: SQLite runs the cascades only with foreign_keys=ON (engine.py sets it).
            links = (conn.execute(delete(repository_blobs)
                                        .where(repository_blobs.c.repository_id == repository_id))).rowcount
            conn.execute(delete(tags).where(tags.c.repository_id == repository_id))
            conn.execute(delete(manifests).where(manifests.c.repository_id == repository_id))
            conn.execute(delete(repositories).where(repositories.c.id == repository_id))
            if self._changes is not None:
                position[0] = self._changes.repository_deleted(conn, repository)
            return int(count or 0), int(links)

        position: list[int | None] = [None]
        result = await self._write(work)
        if self._changes is not None:
            self._changes.committed()
            # Answered once the gateways' caches forgot the repository (as a manifest DELETE is).
            await self._changes.settled(position[0])
        return result

    async def where_blob(self, digest: str) -> tuple[str, int, list[str], list[tuple[str, str]]]:
        """(state or "", size, repositories linking it, (repository, manifest digest) referencing it)."""
        row = await self._read(select(blobs.c.state, blobs.c.size).where(blobs.c.digest == digest))
        linked = [r[0] for r in await self._read(
            select(repositories.c.name).select_from(repository_blobs.join(
                repositories, repositories.c.id == repository_blobs.c.repository_id))
            .where(repository_blobs.c.digest == digest).order_by(repositories.c.name))]
        users = [(r[0], r[1]) for r in await self._read(
            select(repositories.c.name, manifests.c.digest).select_from(
                manifest_references.join(manifests, manifests.c.id == manifest_references.c.manifest_id)
                .join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(manifest_references.c.digest == digest).order_by(repositories.c.name, manifests.c.digest))]
        state, size = (row[0][0], int(row[0][1])) if row else ("", 0)
        return state, size, linked, users

    async def referenced_blobs(self, last: str, limit: int) -> list[tuple[str, int]]:
        """Active blob rows after `last`, by digest (for `lading check`)."""
        rows = await self._read(select(blobs.c.digest, blobs.c.size)
                                .where(blobs.c.state == ACTIVE, blobs.c.digest > last)
                                .order_by(blobs.c.digest).limit(limit))
        return [(r[0], int(r[1])) for r in rows]


def _unavailable(error: BaseException) -> BaseException:
    if (full := database_full(error)) is not None:
        return full
    if is_unavailable(error):
        return RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly",
                             {"reason": type(error).__name__})
    return error
