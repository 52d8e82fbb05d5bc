"""`RepositoryChanges`: puts tag and manifest changes on the change feed (issue 15, item 5).

The store calls one method per change inside its write transaction, as the transaction's last
statements (ChangeLog.append_sync), so a change is on the feed exactly when it committed; after the
commit the store calls `committed()` to wake this process's streams (other replicas hear of it
by PostgreSQL NOTIFY, or their poll). Subject: the repository's name, so a watcher of one
repository reads only its rows.

What is recorded is what a cache of manifests, tags and tag lists must forget, and what a user
following a repository wants to know: a tag pushed (new) or moved (with the digest it left), a
tag deleted, a manifest deleted (with the tags that went with it), a repository deleted. A push
that leaves a tag where it was records nothing.

Each method returns the change's position (None: nothing recorded); after the commit the store
calls `settled(position)` before it answers, which waits for the gateways' caches to acknowledge
the change (changes/acks.py: read-your-writes through every gateway).
"""

from __future__ import annotations

from sqlalchemy import Connection

from services.metadata.changes.acks import ChangeAcks
from services.metadata.changes.log import ChangeLog

REPOSITORY_KIND = "repository"

TAG_PUSHED = "tag_pushed"
TAG_MOVED = "tag_moved"
TAG_DELETED = "tag_deleted"
MANIFEST_DELETED = "manifest_deleted"
REPOSITORY_DELETED = "repository_deleted"


class RepositoryChanges:
    def __init__(self, changes: ChangeLog, acks: ChangeAcks | None = None) -> None:
        self._log = changes
        self._acks = acks

    def committed(self, position: int | None = None) -> None:
        """After the commit; `position`: what the transaction appended (lets the hub skip a read)."""
        self._log.committed(position)

    async def settled(self, position: int | None) -> None:
        """Returns once every gateway cache holding a lease has applied the change at `position`
        (bounded: changes/acks.py). Call after `committed()`, before answering the write."""
        if self._acks is not None and position:
            await self._acks.settle(position)

    def _append(self, conn: Connection, repository: str, what: str, **fields: object) -> int:
        return self._log.append_sync(conn, REPOSITORY_KIND, repository,
                                     {"repository": repository, "kind": what, **fields})

    def tag_set(self, conn: Connection, repository: str, tag: str, digest: str, previous: str | None) -> int | None:
        """`tag` now names `digest`; it named `previous` before (None: it did not exist)."""
        if previous == digest:
            return None
        if previous is None:
            return self._append(conn, repository, TAG_PUSHED, tag=tag, digest=digest)
        return self._append(conn, repository, TAG_MOVED, tag=tag, digest=digest, previous_digest=previous)

    def tag_deleted(self, conn: Connection, repository: str, tag: str, digest: str) -> int:
        return self._append(conn, repository, TAG_DELETED, tag=tag, digest=digest)

    def manifest_deleted(self, conn: Connection, repository: str, digest: str, tags: list[str]) -> int:
        return self._append(conn, repository, MANIFEST_DELETED, digest=digest, tags=tags)

    def repository_deleted(self, conn: Connection, repository: str) -> int:
        return self._append(conn, repository, REPOSITORY_DELETED)
