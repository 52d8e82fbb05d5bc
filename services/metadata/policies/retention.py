"""Retention: policies by repository pattern that delete old tags and long-untagged manifests.

A policy (`retention_policies`) says, for the repositories its pattern covers:
- `keep_last` N: keep the N most recently pushed tags (by the time each tag last moved);
  0 keeps every tag;
- `keep_tags`: a glob of tags always kept (e.g. `v*`); immutable tags are always kept too;
- `untagged_after_seconds`: delete a manifest that has had no tag for longer than this (since
  its last tag left it, per the tag history, else since it was pushed); 0 never deletes manifests.
A repository covered by several policies follows the first by name.

What is never deleted: a tagged manifest; a manifest an index in the repository lists (its
child); a referrer (signature, SBOM, scan report) whose subject is still stored; a manifest pushed
or tagged since the plan was made. The first run after an index, subject or tag goes deletes
what only it kept.

`plan()` computes what a run would delete (tags, manifests, and the bytes of blob links only
the deleted manifests used in their repository: what GC then frees there); `run()` executes a
fresh plan, each deletion in its own transaction that locks the row and re-checks the rule
against the committed state, exactly like GC's (services/metadata/gc/store.py): a tag is
deleted only if it still points at the planned manifest, a manifest only if, under its row lock,
no tag points at it, no manifest of the repository lists it and its subject is gone. A
concurrent push that tags or lists the manifest either commits first (the re-check sees it and
skips) or waits for the lock and then finds it gone (a tag push stores the manifest again; an
index push is told the child is unknown, as for any missing child). So a manifest a tag or an
index pointed at when it was deleted is never deleted. Every deletion sends the usual delete
event with actor `lading-retention`, is recorded in the tag history and the audit log, and holds
what it referenced for GC's review delay.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, or_, select

from services.common.errors import RegistryError
from services.metadata.events.envelope import internal_request
from services.metadata.policies import audit
from services.metadata.policies.tables import retention_policies, tag_history
from services.metadata.policies.tags import TagKeeper
from services.metadata.store.schema import manifest_references, manifests, repositories, tags

if TYPE_CHECKING:
    from services.metadata.changes.repositories import RepositoryChanges
    from services.metadata.events.outbox import EventOutbox
    from services.metadata.gc.store import GcStore
    from services.metadata.policies.store import PolicyStore

log = logging.getLogger("lading.metadata.retention")
RETENTION_ACTOR = "lading-retention"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    name: str
    repository_pattern: str
    keep_last: int
    keep_tags: str
    untagged_after_seconds: float

    def covers(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository_pattern)


@dataclass(frozen=True, slots=True)
class PlannedTag:
    repository: str
    repository_id: int
    tag: str
    manifest_id: int
    digest: str
    policy: str


@dataclass(frozen=True, slots=True)
class PlannedManifest:
    repository: str
    repository_id: int
    manifest_id: int
    digest: str
    size: int
    policy: str


@dataclass
class RetentionPlan:
    tags: list[PlannedTag] = field(default_factory=list)
    manifests: list[PlannedManifest] = field(default_factory=list)
    # Manifest bytes plus the blob links only the planned manifests use in their repository.
    bytes: int = 0


@dataclass
class RetentionResult:
    tags_deleted: int = 0
    manifests_deleted: int = 0
    skipped: int = 0


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Retention:
    def __init__(self, store: PolicyStore, gc: GcStore | None, events: EventOutbox | None,
                 changes: RepositoryChanges | None = None) -> None:
        self._store = store
        # The change feed: gateway caches drop what retention deleted, as for any other delete.
        self._changes = changes
        self._db = store.database
        self._gc = gc
        self._events = events if events is not None and events.enabled else None
        self._tags = TagKeeper(self._db.dialect)
        m, t, mr = manifests, tags, manifest_references
        parent, subject = manifests.alias("parent"), manifests.alias("subject")
        self._deletable = and_(
            m.c.id == bindparam("manifest_id"),
            ~exists().where(t.c.manifest_id == m.c.id),
            ~exists().select_from(mr.join(parent, parent.c.id == mr.c.manifest_id)).where(
                parent.c.repository_id == m.c.repository_id, mr.c.digest == m.c.digest, mr.c.kind == "manifest"),
            or_(m.c.subject_digest.is_(None), ~exists().where(subject.c.repository_id == m.c.repository_id,
                                                              subject.c.digest == m.c.subject_digest)),
        )

    # -- policies -------------------------------------------------------------------------------------

    async def policies(self) -> list[RetentionPolicy]:
        r = retention_policies
        rows = await self._store.read(select(r.c.name, r.c.repository_pattern, r.c.keep_last, r.c.keep_tags,
                                             r.c.untagged_after_seconds).order_by(r.c.name))
        return [RetentionPolicy(row[0], row[1], int(row[2]), row[3], float(row[4])) for row in rows]

    # -- the plan -------------------------------------------------------------------------------------

    async def plan(self) -> RetentionPlan:
        policies = await self.policies()
        plan = RetentionPlan()
        if not policies:
            return plan
        rules = await self._store.immutable_rules()
        now = datetime.now(UTC)
        for repository_id, name in await self._store.read(select(repositories.c.id, repositories.c.name)
                                                          .order_by(repositories.c.name)):
            policy = next((p for p in policies if p.covers(name)), None)
            if policy is not None:
                await self._plan_repository(plan, policy, int(repository_id), name, rules, now)
        return plan

    async def _plan_repository(self, plan: RetentionPlan, policy: RetentionPolicy, repository_id: int, name: str,
                               rules: list[Any], now: datetime) -> None:
        m, t = manifests, tags
        tag_rows = await self._store.read(
            select(t.c.name, t.c.manifest_id, m.c.digest, t.c.updated_at)
            .select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(t.c.repository_id == repository_id).order_by(t.c.updated_at.desc(), t.c.name))
        leaving: list[PlannedTag] = []
        if policy.keep_last > 0:
            for tag, manifest_id, digest, _ in tag_rows[policy.keep_last:]:
                if policy.keep_tags and fnmatch.fnmatchcase(tag, policy.keep_tags):
                    continue
                if any(rule.covers(name, tag) for rule in rules):
                    continue
                leaving.append(PlannedTag(name, repository_id, tag, int(manifest_id), digest, policy.name))
        plan.tags += leaving
        if policy.untagged_after_seconds <= 0:
            return
        cutoff = now - timedelta(seconds=policy.untagged_after_seconds)
        # Untagged now (tags the plan deletes still count as tags: they leave now, not long ago).
        rows = await self._store.read(
            select(m.c.id, m.c.digest, m.c.size, m.c.created_at)
            .where(m.c.repository_id == repository_id, ~exists().where(t.c.manifest_id == m.c.id),
                   m.c.created_at <= cutoff))
        if not rows:
            return
        last_left = dict(await self._store.read(
            select(tag_history.c.old_digest, func.max(tag_history.c.at))
            .where(tag_history.c.repository == name, tag_history.c.old_digest.in_([r[1] for r in rows]))
            .group_by(tag_history.c.old_digest)))
        candidates = [r for r in rows if _aware(last_left.get(r[1]) or r[3]) <= cutoff]
        if not candidates:
            return
        kept = {row[0] for row in await self._store.read(
            select(m.c.id).where(m.c.id.in_([r[0] for r in candidates]), ~self._deletable_any()))}
        chosen = [r for r in candidates if r[0] not in kept]
        for manifest_id, digest, size, _ in chosen:
            plan.manifests.append(PlannedManifest(name, repository_id, int(manifest_id), digest, int(size), policy.name))
        if chosen:
            plan.bytes += sum(int(r[2]) for r in chosen) + await self._freed_link_bytes(
                repository_id, [int(r[0]) for r in chosen])

    def _deletable_any(self) -> Any:
        """`_deletable` for every manifest row (no id bound)."""
        m, t, mr = manifests, tags, manifest_references
        parent, subject = manifests.alias("parent2"), manifests.alias("subject2")
        return and_(
            ~exists().where(t.c.manifest_id == m.c.id),
            ~exists().select_from(mr.join(parent, parent.c.id == mr.c.manifest_id)).where(
                parent.c.repository_id == m.c.repository_id, mr.c.digest == m.c.digest, mr.c.kind == "manifest"),
            or_(m.c.subject_digest.is_(None), ~exists().where(subject.c.repository_id == m.c.repository_id,
                                                              subject.c.digest == m.c.subject_digest)),
        )

    async def _freed_link_bytes(self, repository_id: int, manifest_ids: list[int]) -> int:
        """Bytes of the blob links only these manifests use in the repository."""
        from services.metadata.store.schema import repository_blobs

        m, mr, rb = manifests, manifest_references, repository_blobs
        going = {row[0] for row in await self._store.read(
            select(mr.c.digest).where(mr.c.manifest_id.in_(manifest_ids), mr.c.kind == "blob"))}
        if not going:
            return 0
        staying = {row[0] for row in await self._store.read(
            select(mr.c.digest).select_from(mr.join(m, m.c.id == mr.c.manifest_id))
            .where(m.c.repository_id == repository_id, m.c.id.not_in(manifest_ids), mr.c.kind == "blob",
                   mr.c.digest.in_(list(going))))}
        sizes = await self._store.read(select(func.coalesce(func.sum(rb.c.size), 0)).where(
            rb.c.repository_id == repository_id, rb.c.digest.in_(list(going - staying))))
        return int(sizes[0][0] or 0) if going - staying else 0

    # -- the run --------------------------------------------------------------------------------------

    async def run(self) -> tuple[RetentionPlan, RetentionResult]:
        """Executes a fresh plan (see the module docstring); tags first, then manifests."""
        plan = await self.plan()
        result = RetentionResult()
        request = internal_request(RETENTION_ACTOR)
        last_change: int | None = None  # the change feed's position of the last deletion
        for item in plan.tags:
            if self._gc is not None:  # the manifest it leaves is held for GC's review delay, as for any tag delete
                await self._gc.holds_for_tag(item.repository, item.tag)
            try:
                position = await self._store.write(lambda conn, item=item: self._delete_tag(conn, item, request))
            except RegistryError as error:  # an immutable rule appeared meanwhile, ...
                log.info("retention kept %s:%s: %s", item.repository, item.tag, error.message)
                position = None
            done = position is not None
            result.tags_deleted += done
            result.skipped += not done
            last_change = self._committed(position, last_change)
        for item in plan.manifests:
            if self._gc is not None:
                await self._gc.holds_for_manifest(item.repository, item.digest)
            position = await self._store.write(lambda conn, item=item: self._delete_manifest(conn, item, request))
            done = position is not None
            result.manifests_deleted += done
            result.skipped += not done
            last_change = self._committed(position, last_change)
        if self._changes is not None:  # gateway caches dropped what was deleted before the run answers
            await self._changes.settled(last_change)
        return plan, result

    def _committed(self, position: int | None, last: int | None) -> int | None:
        """After a deletion's commit: wake the change feed; the newest position so far."""
        if position is None or self._changes is None:
            return last
        self._changes.committed()
        return max(position, last or 0) or last

    def _delete_tag(self, conn: Connection, item: PlannedTag, request: Any) -> int | None:
        """Deletes the planned tag if it still points where planned: its change feed position (0
        without a feed), None when it was kept."""
        t = tags
        key = and_(t.c.repository_id == item.repository_id, t.c.name == item.tag)
        current = conn.execute(select(t.c.manifest_id).where(key).with_for_update()).scalar()
        if current is None or int(current) != item.manifest_id:
            return None  # deleted or moved since the plan: a new push is the newest, keep it
        self._tags.deleting_tag(conn, repository_id=item.repository_id, repository=item.repository, tag=item.tag,
                                request=request)
        conn.execute(delete(t).where(key))
        if self._events is not None:
            self._events.tag_deleted(conn, item.repository, item.tag, request)
        position = 0
        if self._changes is not None:
            position = self._changes.tag_deleted(conn, item.repository, item.tag, item.digest)
        audit.record(conn, "tag.delete", f"repository={item.repository} tag={item.tag}", repository=item.repository,
                     detail=f"retention policy {item.policy!r}; it pointed at {item.digest}", request=request)
        return position

    def _delete_manifest(self, conn: Connection, item: PlannedManifest, request: Any) -> int | None:
        """Deletes the planned manifest if the rule still holds: as `_delete_tag`."""
        m = manifests
        if conn.execute(select(m.c.id).where(m.c.id == item.manifest_id).with_for_update()).first() is None:
            return None
        if conn.execute(select(m.c.id).where(self._deletable), {"manifest_id": item.manifest_id}).first() is None:
            return None  # tagged, listed by an index, or its subject came back since the plan
        conn.execute(delete(m).where(m.c.id == item.manifest_id))
        if self._events is not None:
            self._events.manifest_deleted(conn, item.repository, item.digest, request)
        position = 0
        if self._changes is not None:
            position = self._changes.manifest_deleted(conn, item.repository, item.digest, [])
        audit.record(conn, "manifest.delete", f"repository={item.repository} reference={item.digest}",
                     repository=item.repository, detail=f"retention policy {item.policy!r}", request=request)
        return position
