"""`EventOutbox`: writes events into `event_outbox` inside the caller's transaction.

The store calls one method per change (`manifest_pushed`, `blob_pushed`, `blob_mounted`,
`manifest_deleted`, `tag_deleted`, `repository_deleted`; the collector and the admin repository
delete pass their own `internal_request`) with the (synchronous: store/writes.py) connection of
the transaction that makes the change, so the event commits or rolls back with it: a failed push never produces an event. One row is
written per endpoint whose filters accept the event; with no endpoints nothing is written.
Pull events (manifest and blob GETs) are written in their own transaction (`record_pull`,
`record_blob_pull`), only when enabled and sampled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert

from services.common.settings import EventEndpointSettings, EventsSettings
from services.metadata.events import context
from services.metadata.events.envelope import (
    BLOB_MEDIA_TYPE,
    RequestInfo,
    Source,
    build_event,
    descriptor_target,
    dumps,
    target_url,
)
from services.metadata.events.tables import PENDING, event_outbox

if TYPE_CHECKING:
    from services.metadata.store.access import Access


def accepts(endpoint: EventEndpointSettings, action: str, media_type: str | None) -> bool:
    """The endpoint's filters: actions, then media types (events without one pass those)."""
    if endpoint.include_actions and action not in endpoint.include_actions:
        return False
    if action in endpoint.exclude_actions:
        return False
    if media_type:
        if endpoint.include_media_types and media_type not in endpoint.include_media_types:
            return False
        if media_type in endpoint.exclude_media_types:
            return False
    return True


class EventOutbox:
    def __init__(self, settings: EventsSettings, source: Source, *,
                 sample: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._endpoints = list(settings.endpoints)
        self._source = source
        self._sample = sample
        self._insert = insert(event_outbox)

    @property
    def enabled(self) -> bool:
        return bool(self._endpoints)

    @property
    def records_pulls(self) -> bool:
        """Pull events are on (an endpoint exists and `events.pull` is not "off"): every GET of a
        manifest must reach this plane to be sampled."""
        return bool(self._endpoints) and self._settings.pull != "off"

    def wants_pull(self) -> bool:
        """True when this pull should be recorded (pull events on, sampled in, an endpoint exists)."""
        if not self._endpoints or self._settings.pull == "off":
            return False
        rate = self._settings.pull_sample_rate
        return rate >= 1.0 or self._sample() < rate

    def _rows(self, action: str, repository: str, target: dict[str, Any], request: RequestInfo | None
              ) -> list[dict[str, Any]]:
        """The outbox rows of one event: one per endpoint whose filters accept it."""
        media_type = target.get("mediaType")
        chosen = [e.name for e in self._endpoints if accepts(e, action, media_type)]
        if not chosen:
            return []
        now = datetime.now(UTC)
        event = build_event(action, target, request or context.current(), self._source, now=now)
        body = dumps(event)
        return [
            {"event_id": event["id"], "endpoint": name, "action": action, "repository": repository,
             "body": body, "state": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
            for name in chosen
        ]

    def _record(self, conn: Connection, action: str, repository: str, target: dict[str, Any],
                request: RequestInfo | None = None) -> None:
        if not self._endpoints:
            return
        rows = self._rows(action, repository, target, request)
        if rows:
            conn.execute(self._insert, rows)

    # -- one method per change (called by the store inside its write transaction) ----------------

    def manifest_pushed(self, conn: Connection, repository: str, digest: str, media_type: str,
                        size: int, tag: str | None) -> None:
        request = context.current()
        self._record(conn, "push", repository, descriptor_target(
            media_type=media_type, digest=digest, size=size, repository=repository,
            url=target_url(request, repository, "manifests", digest), tag=tag,
        ), request)

    def blob_pushed(self, conn: Connection, repository: str, digest: str, size: int) -> None:
        request = context.current()
        self._record(conn, "push", repository, descriptor_target(
            media_type=BLOB_MEDIA_TYPE, digest=digest, size=size, repository=repository,
            url=target_url(request, repository, "blobs", digest),
        ), request)

    def blob_mounted(self, conn: Connection, repository: str, digest: str, size: int,
                     from_repository: str | None) -> None:
        request = context.current()
        self._record(conn, "mount", repository, descriptor_target(
            media_type=BLOB_MEDIA_TYPE, digest=digest, size=size, repository=repository,
            url=target_url(request, repository, "blobs", digest), from_repository=from_repository,
        ), request)

    def manifest_deleted(self, conn: Connection, repository: str, digest: str,
                         request: RequestInfo | None = None) -> None:
        """`request`: the collector's or an admin command's (`internal_request`); default: the call's."""
        self._record(conn, "delete", repository, {"digest": digest, "repository": repository}, request)

    def blob_deleted(self, conn: Connection, repository: str, digest: str) -> None:
        """`DELETE /v2/<name>/blobs/<digest>`: Distribution's blob delete event has the same target
        shape as a manifest delete (digest and repository only)."""
        self._record(conn, "delete", repository, {"digest": digest, "repository": repository}, None)

    def audit_recorded(self, conn: Connection, row: dict[str, Any]) -> None:
        """An audit-log row (services/metadata/policies/audit.py), for the endpoints that ask for
        it by name (`include_actions` lists "audit"): a SIEM feed is opt-in, never a side effect
        of an endpoint that takes every action."""
        chosen = [e for e in self._endpoints if "audit" in e.include_actions]
        if not chosen:
            return
        now = datetime.now(UTC)
        target = {key: (value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value)
                  for key, value in row.items()}
        request = RequestInfo(request_id=row["request_id"], addr=row["client_address"], actor=row["actor"])
        event = build_event("audit", target, request, self._source, now=now)
        body = dumps(event)
        conn.execute(self._insert, [
            {"event_id": event["id"], "endpoint": e.name, "action": "audit", "repository": row["repository"] or "",
             "body": body, "state": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
            for e in chosen])

    def tag_deleted(self, conn: Connection, repository: str, tag: str,
                    request: RequestInfo | None = None) -> None:
        self._record(conn, "delete", repository, {"repository": repository, "tag": tag}, request)

    def repository_deleted(self, conn: Connection, repository: str, manifest_digests: list[str],
                           request: RequestInfo | None = None) -> None:
        """A whole repository deleted: one manifest delete event per manifest it held, then
        Distribution's repository delete event (target: repository only), all with one request."""
        if not self._endpoints:
            return
        request = request or context.current()
        rows = [row for digest in manifest_digests
                for row in self._rows("delete", repository, {"digest": digest, "repository": repository}, request)]
        rows += self._rows("delete", repository, {"repository": repository}, request)
        if rows:
            conn.execute(self._insert, rows)

    async def record_pull(self, access: Access, repository: str, reference_tag: str | None, digest: str,
                          media_type: str, size: int, *, through_cache: str = "") -> None:
        """A manifest GET, in its own transaction (a read has none). Call only when `wants_pull()`.
        `through_cache`: the pull-through cache's upstream that serves the repository (the
        target then says `"throughCache": {"upstream": NAME}`)."""
        request = context.current()
        target = descriptor_target(
            media_type=media_type, digest=digest, size=size, repository=repository,
            url=target_url(request, repository, "manifests", digest), tag=reference_tag,
        )
        if through_cache:
            target["throughCache"] = {"upstream": through_cache}
        async with access.transaction() as conn:
            await conn.run_sync(self._record, "pull", repository, target, request)

    async def record_blob_pull(self, access: Access, repository: str, digest: str, size: int, *,
                               through_cache: str = "") -> None:
        """A blob GET (Distribution's layer pull: the blob's descriptor, as for a push), in its own
        transaction. Call only when `wants_pull()`. `through_cache` as for `record_pull`."""
        request = context.current()
        target = descriptor_target(media_type=BLOB_MEDIA_TYPE, digest=digest, size=size, repository=repository,
                                   url=target_url(request, repository, "blobs", digest))
        if through_cache:
            target["throughCache"] = {"upstream": through_cache}
        async with access.transaction() as conn:
            await conn.run_sync(self._record, "pull", repository, target, request)
