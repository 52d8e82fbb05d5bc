"""ChangeService: the change feed over a server-streaming call (protobuf <-> ChangeLog and ChangeHub).

A stream sends what is retained after the caller's position in batches, then waits on the hub for
newer changes, and sends an empty answer (a heartbeat) whenever `heartbeat_ms` passes without one.
It ends when the caller cancels or the process starts shutting down (`ChangeHub.close`); callers
subscribe again from their last position, on this replica or another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lading.metadata.v1 import change_acks_pb2 as apb
from lading.metadata.v1 import change_acks_pb2_grpc, changes_pb2_grpc
from lading.metadata.v1 import changes_pb2 as pb
from lading.metadata.v1 import repository_changes_pb2 as rpb

from services.metadata.blob_regions import REGION_HEADER, REGION_NAME_LENGTH
from services.metadata.changes.acks import ChangeAcks
from services.metadata.changes.hub import ChangeHub
from services.metadata.changes.log import ChangeLog, StoredChange
from services.metadata.changes.repositories import REPOSITORY_KIND

# Changes per answer.
BATCH = 500
# Bounds on the heartbeat interval a caller may ask for (milliseconds).
_MIN_HEARTBEAT_MS, _MAX_HEARTBEAT_MS, _DEFAULT_HEARTBEAT_MS = 100, 60_000, 1000

ACCOUNT_KIND = "account"
_REASONS = {
    "deleted": pb.ACCOUNT_CHANGE_REASON_DELETED,
    "disabled": pb.ACCOUNT_CHANGE_REASON_DISABLED,
    "enabled": pb.ACCOUNT_CHANGE_REASON_ENABLED,
    "tokens_revoked": pb.ACCOUNT_CHANGE_REASON_TOKENS_REVOKED,
    "password_changed": pb.ACCOUNT_CHANGE_REASON_PASSWORD_CHANGED,
    "secret_rotated": pb.ACCOUNT_CHANGE_REASON_SECRET_ROTATED,
    "grants_changed": pb.ACCOUNT_CHANGE_REASON_GRANTS_CHANGED,
}

_REPOSITORY_KINDS = {
    "tag_pushed": rpb.REPOSITORY_CHANGE_KIND_TAG_PUSHED,
    "tag_moved": rpb.REPOSITORY_CHANGE_KIND_TAG_MOVED,
    "tag_deleted": rpb.REPOSITORY_CHANGE_KIND_TAG_DELETED,
    "manifest_deleted": rpb.REPOSITORY_CHANGE_KIND_MANIFEST_DELETED,
    "repository_deleted": rpb.REPOSITORY_CHANGE_KIND_REPOSITORY_DELETED,
}
# ChangeKind (what a caller may ask for) → the `kind` column.
_KIND_NAMES = {rpb.CHANGE_KIND_ACCOUNT: ACCOUNT_KIND, rpb.CHANGE_KIND_REPOSITORY: REPOSITORY_KIND}


def change_message(change: StoredChange) -> pb.Change:
    message = pb.Change(position=change.position, changed_at_ms=int(change.created_at.timestamp() * 1000))
    if change.kind == ACCOUNT_KIND:
        body = change.body
        message.account.CopyFrom(pb.AccountChange(
            account_id=str(body.get("account_id", "")), name=str(body.get("name", "")),
            credential_generation=int(body.get("generation", 0)), active=bool(body.get("active", False)),
            reason=_REASONS.get(str(body.get("reason", "")), pb.ACCOUNT_CHANGE_REASON_UNSPECIFIED),
        ))
    elif change.kind == REPOSITORY_KIND:
        body = change.body
        message.repository.CopyFrom(rpb.RepositoryChange(
            repository=str(body.get("repository", change.subject)),
            kind=_REPOSITORY_KINDS.get(str(body.get("kind", "")), rpb.REPOSITORY_CHANGE_KIND_UNSPECIFIED),
            tag=str(body.get("tag", "")), digest=str(body.get("digest", "")),
            previous_digest=str(body.get("previous_digest", "")), tags=[str(t) for t in body.get("tags", [])],
        ))
    return message


class ChangeServicer(changes_pb2_grpc.ChangeServiceServicer):
    def __init__(self, changes: ChangeLog, hub: ChangeHub) -> None:
        self._log = changes
        self._hub = hub

    async def WatchChanges(self, request: pb.WatchChangesRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.WatchChangesResponse]:
        heartbeat_ms = request.heartbeat_ms or _DEFAULT_HEARTBEAT_MS
        heartbeat = min(max(heartbeat_ms, _MIN_HEARTBEAT_MS), _MAX_HEARTBEAT_MS) / 1000
        horizon = await self._log.horizon()
        head = max(await self._log.head(), horizon)
        position = request.after
        reset = position <= 0 or position < horizon or position > head
        if reset:
            position = 0
        kinds = sorted({_KIND_NAMES[k] for k in request.kinds if k in _KIND_NAMES})
        filtered = bool(kinds or request.subject)
        first = True
        while not self._hub.closed:
            # Every row up to the hub's newest position was visible when the hub read it (rows
            # become visible in position order, changes/log.py), so a filtered read that found less
            # than a batch has seen everything up to there: the caller's position moves past the
            # rows it skipped (it resumes from there, and never falls behind the retention).
            known = self._hub.latest
            # After the first answer, what this process committed itself comes from memory.
            found = None if first else self._log.recent_after(position, known, BATCH, kinds=kinds,
                                                               subject=request.subject)
            if found is None:
                found = await self._log.read_after(position, BATCH, kinds=kinds, subject=request.subject)
            full = len(found) == BATCH
            seen = found[-1].position if found else position
            if filtered and not full:
                seen = max(seen, known)
            if found or first or seen > position:
                position = max(position, seen)
                yield pb.WatchChangesResponse(
                    changes=[change_message(c) for c in found], position=position, reset=first and reset,
                    caught_up=not full,
                )
                first = False
                if full:
                    continue
            # Only the hub's word leads to another read (one read per replica and change, not a
            # poll per stream). Nothing above `position` readable: wait for a change above what the
            # hub knew before that read (rows below it that cannot be read were pruned; waiting on
            # them would spin). Not what it knows now: a change committed while the answer was
            # being sent moves the hub at once (hub.py), and would then wait for the next one.
            waited = position if found else max(position, known)
            while not await self._hub.wait_beyond(waited, heartbeat):
                if self._hub.closed:
                    return
                yield pb.WatchChangesResponse(position=position, caught_up=True)


class ChangeAckServicer(change_acks_pb2_grpc.ChangeAckServiceServicer):
    """Acknowledgements of the feed by the gateways' caches (changes/acks.py)."""

    def __init__(self, acks: ChangeAcks) -> None:
        self._acks = acks

    async def AcknowledgeChanges(self, request: apb.AcknowledgeChangesRequest, context: grpc.aio.ServicerContext
                                 ) -> apb.AcknowledgeChangesResponse:
        if not request.subscriber:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "subscriber is required")
        # Forwarded by a replica region's metadata plane, which names its region (regions.py).
        sent = str(dict(context.invocation_metadata() or ()).get(REGION_HEADER, ""))[:REGION_NAME_LENGTH]
        grant = await self._acks.acknowledge(request.subscriber[:128], request.position, leaving=request.leaving,
                                             region=sent or None)
        return apb.AcknowledgeChangesResponse(lease_ms=int(grant.lease_seconds * 1000), epoch=grant.epoch)

    async def FenceSubscribers(self, request: apb.FenceSubscribersRequest, context: grpc.aio.ServicerContext
                               ) -> apb.FenceSubscribersResponse:
        # The replica region that calls names itself (services/metadata/changes/acks.py).
        region = str(dict(context.invocation_metadata() or ()).get(REGION_HEADER, ""))[:REGION_NAME_LENGTH]
        if not region or not self._acks.shared:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "FenceSubscribers is for a replica region's metadata plane, on the primary region's")
        names = await self._acks.fence_region(region, request.position)
        return apb.FenceSubscribersResponse(subscribers=names)
