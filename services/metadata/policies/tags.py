"""Tag moves and deletes under immutable-tag rules, each recorded in the tag history.

`TagKeeper`'s methods are synchronous and run inside the store's write transaction (store/sql.py,
gc/store.py): the rules are read in that transaction, so every replica applies the rules that
are committed when it writes, and a refusal leaves nothing behind.

Rules: a tag whose repository matches an `immutable_tag_rules` row's `repository_pattern` and
whose name matches its `tag_pattern` (shell-style globs, `fnmatch.fnmatchcase`: `*` matches any
run of characters, `/` included; `?` one; `[...]` a set) may be CREATED, and pushed again with
the same digest, but never MOVED to another digest nor DELETED (by tag, with its manifest, or by
a restore): `DENIED`, naming the rule. An admin's one-time override (`tag_overrides`, granted with
`lading immutable override`) lets exactly one such change through before it expires; using it is
audited and marked in the history (`push+override`). Deleting a whole repository (an admin
command) is not refused, but its tag deletes are recorded.

Concurrency: a tag row is created with INSERT ... ON CONFLICT DO NOTHING; when it exists, it is
read FOR UPDATE (PostgreSQL) before it is checked and moved, so two pushes racing on one tag
are ordered and the second sees the first's digest (on SQLite the writer holds the database's
one write lock anyway). The check and the move are exact under concurrency.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from services.common.errors import ErrorKind, RegistryError
from services.metadata.events import context as request_context
from services.metadata.events.envelope import RequestInfo
from services.metadata.policies import audit
from services.metadata.policies.tables import immutable_tag_rules, tag_history, tag_overrides
from services.metadata.store.dialect import insert_ignore
from services.metadata.store.schema import manifests, tags


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    name: str
    repository_pattern: str
    tag_pattern: str

    def covers(self, repository: str, tag: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository_pattern) and fnmatch.fnmatchcase(tag, self.tag_pattern)

    def describe(self) -> str:
        return f"rule {self.name!r} (repositories {self.repository_pattern!r}, tags {self.tag_pattern!r})"


def _now() -> datetime:
    return datetime.now(UTC)


class TagKeeper:
    def __init__(self, dialect: str) -> None:
        t, m = tags, manifests
        self._insert_tag = insert_ignore(dialect, t, ["repository_id", "name"])
        self._current = (
            select(t.c.manifest_id, m.c.digest)
            .select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(t.c.repository_id == bindparam("repository_id"), t.c.name == bindparam("tag"))
            .with_for_update(of=t)
        )
        self._move = (
            update(t)
            .where(t.c.repository_id == bindparam("b_repository_id"), t.c.name == bindparam("b_tag"))
            .values(manifest_id=bindparam("b_manifest_id"), updated_at=bindparam("b_updated_at"),
                    pushed_by=bindparam("b_pushed_by"))
        )
        self._rules = select(immutable_tag_rules.c.name, immutable_tag_rules.c.repository_pattern,
                             immutable_tag_rules.c.tag_pattern).order_by(immutable_tag_rules.c.name)
        o = tag_overrides
        self._take_override = delete(o).where(
            o.c.repository == bindparam("repository"), o.c.tag == bindparam("tag"),
            o.c.expires_at > bindparam("now")).returning(o.c.granted_by, o.c.reason)
        self._history = insert(tag_history)
        self._tags_of_manifest = select(t.c.name).where(
            t.c.repository_id == bindparam("repository_id"), t.c.manifest_id == bindparam("manifest_id")
        ).order_by(t.c.name)
        self._tags_of_repository = (
            select(t.c.name, m.c.digest).select_from(t.join(m, m.c.id == t.c.manifest_id))
            .where(t.c.repository_id == bindparam("repository_id")).order_by(t.c.name)
        )

    # -- rules ----------------------------------------------------------------------------------------

    def rules(self, conn: Connection) -> list[ImmutableRule]:
        return [ImmutableRule(*row) for row in conn.execute(self._rules)]

    def _rule_for(self, conn: Connection, repository: str, tag: str) -> ImmutableRule | None:
        for rule in self.rules(conn):
            if rule.covers(repository, tag):
                return rule
        return None

    def _allow(self, conn: Connection, repository: str, tag: str, *, change: str, current: str) -> str:
        """"" when no immutable rule covers the tag; "+override" when one does and an admin's
        one-time override is consumed for it (audited); raises DENIED otherwise."""
        rule = self._rule_for(conn, repository, tag)
        if rule is None:
            return ""
        taken = conn.execute(self._take_override, {"repository": repository, "tag": tag, "now": _now()}).first()
        if taken is not None:
            audit.record(conn, "tag.override-used", f"{repository}:{tag}", repository=repository,
                         detail=f"{change} allowed once by {rule.describe()}; override granted by {taken[0]}: "
                                f"{taken[1]}")
            return "+override"
        raise RegistryError(
            ErrorKind.DENIED,
            f"tag {tag!r} of repository {repository!r} is immutable ({rule.describe()}); it points at "
            f"{current} and cannot be {change}. Push under a new tag, or ask an admin for a one-time override "
            f"(lading immutable override {repository} {tag} --reason ...)",
            {"policy": "immutable-tag", "rule": rule.name, "repository": repository, "tag": tag, "digest": current},
        )

    # -- history --------------------------------------------------------------------------------------

    def _record(self, conn: Connection, repository: str, tag: str, old: str | None, new: str | None,
                action: str, now: datetime, request: RequestInfo | None = None) -> None:
        actor = audit.actor_of(request or request_context.current())
        conn.execute(self._history, {"repository": repository, "tag": tag, "old_digest": old, "new_digest": new,
                                     "action": action, "actor": actor[:255], "at": now})

    # -- changes --------------------------------------------------------------------------------------

    def move(self, conn: Connection, *, repository_id: int, repository: str, tag: str, manifest_id: int,
             digest: str, pusher: str | None, action: str = "push") -> bool:
        """Points `tag` at the manifest (`manifest_id`, `digest`), creating it if needed. False when
        it already pointed there (nothing written). Raises DENIED for an immutable tag that would
        move (see the module docstring)."""
        now = _now()
        row = {"repository_id": repository_id, "name": tag, "manifest_id": manifest_id, "updated_at": now,
               "pushed_by": pusher}
        for _ in range(3):
            if conn.execute(self._insert_tag, row).rowcount > 0:
                self._record(conn, repository, tag, None, digest, action, now)
                return True
            current = conn.execute(self._current, {"repository_id": repository_id, "tag": tag}).first()
            if current is None:
                continue  # deleted between the insert and the read: create it
            if current[1] == digest:
                return False
            suffix = self._allow(conn, repository, tag, change="moved", current=current[1])
            conn.execute(self._move, {"b_repository_id": repository_id, "b_tag": tag, "b_manifest_id": manifest_id,
                                      "b_updated_at": now, "b_pushed_by": pusher})
            self._record(conn, repository, tag, current[1], digest, action + suffix, now)
            return True
        raise RegistryError(ErrorKind.UNAVAILABLE, f"tag {tag!r} keeps changing concurrently; retry the push",
                            {"tag": tag})

    def deleting_tag(self, conn: Connection, *, repository_id: int, repository: str, tag: str,
                     request: RequestInfo | None = None) -> None:
        """Before `tag` is deleted: DENIED when immutable (without an override); records the delete.
        Nothing happens when the tag does not exist (the caller reports MANIFEST_UNKNOWN)."""
        current = conn.execute(self._current, {"repository_id": repository_id, "tag": tag}).first()
        if current is None:
            return
        suffix = self._allow(conn, repository, tag, change="deleted", current=current[1])
        self._record(conn, repository, tag, current[1], None, "delete" + suffix, _now(), request)

    def deleting_manifest(self, conn: Connection, *, repository_id: int, repository: str, manifest_id: int,
                          digest: str) -> None:
        """Before a manifest is deleted with its tags: each tag as in `deleting_tag`."""
        names = list(conn.execute(self._tags_of_manifest, {"repository_id": repository_id,
                                                           "manifest_id": manifest_id}).scalars())
        now = _now()
        for name in names:
            suffix = self._allow(conn, repository, name, change="deleted with its manifest", current=digest)
            self._record(conn, repository, name, digest, None, "delete" + suffix, now)

    def deleting_repository(self, conn: Connection, *, repository_id: int, repository: str,
                            request: RequestInfo) -> int:
        """Before a whole repository is deleted (admin): records each tag's delete. Returns the count."""
        now = _now()
        rows = list(conn.execute(self._tags_of_repository, {"repository_id": repository_id}))
        for name, digest in rows:
            self._record(conn, repository, name, digest, None, "repository-delete", now, request)
        return len(rows)
