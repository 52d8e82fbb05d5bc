"""The audit log: one row per write through the API and per admin, policy or account change, with
who (actor), what (action, target, repository), from where (client address), which request
(request id), the outcome (ok / denied / failed, and why) and when.

Two ways in:
- `AuditInterceptor` (the metadata plane's gRPC server) records every call of the methods in
  `AUDITED`, whatever its outcome, right after the call and before its answer leaves: a client
  that sees its push succeed finds it in the log. The row commits in its own transaction just
  after the change (a power cut in between can lose the row, never invent one; on SQLite it
  shares the change's next group commit).
- `record(conn, ...)` writes a row inside a caller's transaction, for events inside another write
  (an immutable-tag override used by a push, policies/tags.py).

Who: the gRPC request's RequestContext (the gateway fills in the authenticated account; the
`lading` commands send `lading-admin`); a console call names its session's account
(`note_actor`); operator calls without a context are `operator`; no account at all: `anonymous`.
Secrets (passwords, tokens, session ids, payloads) never reach the log: `target` is built from
the request's other scalar fields.

Export: with an event endpoint whose `include_actions` lists "audit", every row is also sent as
an event (action "audit", the row under `target`) through the durable outbox, for a SIEM.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from sqlalchemy import Connection, insert

from services.metadata.events import context as request_context
from services.metadata.events.envelope import RequestInfo
from services.metadata.policies.tables import audit_log
from services.metadata.store.dialect import database_full

if TYPE_CHECKING:
    from services.metadata.events.outbox import EventOutbox
    from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.audit")
ANONYMOUS = "anonymous"
OPERATOR = "operator"
_INSERT = insert(audit_log)
# Set by a servicer that learns the caller's account itself (the console's sessions).
_noted_actor: contextvars.ContextVar[str] = contextvars.ContextVar("lading_audit_actor", default="")

# gRPC method → audit action. Reads are not audited; GC's many internal steps are one row per
# run (GcRecordRun).
AUDITED: dict[str, str] = {
    "/lading.metadata.v1.MetadataService/LinkBlob": "blob.push",
    "/lading.metadata.v1.MetadataService/UnlinkBlob": "blob.delete",
    "/lading.metadata.v1.MetadataService/MountBlob": "blob.mount",
    "/lading.metadata.v1.MetadataService/PutManifest": "manifest.push",
    "/lading.metadata.v1.MetadataService/DeleteManifest": "manifest.delete",
    "/lading.metadata.v1.AccountService/CreateUser": "account.create-user",
    "/lading.metadata.v1.AccountService/SetPassword": "account.set-password",
    "/lading.metadata.v1.AccountService/DeleteAccount": "account.delete",
    "/lading.metadata.v1.AccountService/CreateRobot": "account.create-robot",
    "/lading.metadata.v1.AccountService/Grant": "account.grant",
    "/lading.metadata.v1.AccountService/Revoke": "account.revoke",
    "/lading.metadata.v1.AccountService/RevokeTokens": "account.revoke-tokens",
    "/lading.metadata.v1.AccountService/RotateRobotSecret": "account.rotate-secret",
    "/lading.metadata.v1.AccountService/SetAccountDisabled": "account.set-disabled",
    "/lading.metadata.v1.AccountService/MapGroup": "account.map-group",
    "/lading.metadata.v1.AccountService/UnmapGroup": "account.unmap-group",
    "/lading.metadata.v1.AdminService/GcRecordRun": "gc.run",
    "/lading.metadata.v1.AdminService/DeleteRepository": "repository.delete",
    "/lading.metadata.v1.AdminService/SetMaintenance": "maintenance.set",
    "/lading.metadata.v1.EventsService/ReplayEvents": "events.replay",
    "/lading.metadata.v1.ConsoleService/CreateCliSecret": "account.create-cli-secret",
    "/lading.metadata.v1.ConsoleService/RevokeCliSecret": "account.revoke-cli-secret",
    "/lading.metadata.v1.ConsoleService/DeleteTag": "manifest.delete",
    "/lading.metadata.v1.ConsoleService/AdminCreateUser": "account.create-user",
    "/lading.metadata.v1.ConsoleService/AdminDeleteAccount": "account.delete",
    "/lading.metadata.v1.ConsoleService/AdminSetAccountDisabled": "account.set-disabled",
    "/lading.metadata.v1.ConsoleService/AdminCreateRobot": "account.create-robot",
    "/lading.metadata.v1.ConsoleService/AdminGrant": "account.grant",
    "/lading.metadata.v1.ConsoleService/AdminRevoke": "account.revoke",
    "/lading.metadata.v1.ConsoleService/AdminMapGroup": "account.map-group",
    "/lading.metadata.v1.ConsoleService/AdminUnmapGroup": "account.unmap-group",
    "/lading.metadata.v1.ConsoleService/AdminReplayEvents": "events.replay",
    "/lading.metadata.v1.ConsoleService/AdminSetMaintenance": "maintenance.set",
    "/lading.metadata.v1.PolicyService/SetImmutableRule": "policy.immutable.set",
    "/lading.metadata.v1.PolicyService/DeleteImmutableRule": "policy.immutable.delete",
    "/lading.metadata.v1.PolicyService/AllowTagOverride": "tag.override-grant",
    "/lading.metadata.v1.PolicyService/RestoreTag": "tag.restore",
    "/lading.metadata.v1.PolicyService/SetQuota": "policy.quota.set",
    "/lading.metadata.v1.PolicyService/DeleteQuota": "policy.quota.delete",
    "/lading.metadata.v1.PolicyService/RecountQuotas": "policy.quota.recount",
    "/lading.metadata.v1.PolicyService/SetRetentionPolicy": "policy.retention.set",
    "/lading.metadata.v1.PolicyService/DeleteRetentionPolicy": "policy.retention.delete",
    "/lading.metadata.v1.PolicyService/RunRetention": "retention.run",
    "/lading.metadata.v1.PolicyService/SetSignaturePolicy": "policy.signature.set",
    "/lading.metadata.v1.PolicyService/DeleteSignaturePolicy": "policy.signature.delete",
    "/lading.metadata.v1.PolicyService/SetVulnerabilityPolicy": "policy.vulnerability.set",
    "/lading.metadata.v1.PolicyService/DeleteVulnerabilityPolicy": "policy.vulnerability.delete",
}

# Request fields never written to the log (secrets, bulk bytes, what identifies nothing).
_HIDDEN = frozenset({"password", "secret", "payload", "session", "token", "credential", "context", "page",
                     "new_password", "client_secret", "code", "code_verifier", "nonce", "state", "public_keys"})
_TARGET_MAX = 512


def note_actor(name: str) -> None:
    """The account behind this call, when the servicer learns it itself (console sessions)."""
    _noted_actor.set(name)


def actor_of(request: RequestInfo) -> str:
    return request.actor or ANONYMOUS


def record(conn: Connection, action: str, target: str, *, repository: str | None = None, outcome: str = "ok",
           detail: str = "", request: RequestInfo | None = None) -> None:
    """Writes one audit row in `conn`'s transaction (`request`: default, the call's)."""
    info = request if request is not None else request_context.current()
    conn.execute(_INSERT, _row(actor_of(info), action, target, repository, info, outcome, detail))


def _row(actor: str, action: str, target: str, repository: str | None, info: RequestInfo, outcome: str,
         detail: str) -> dict[str, Any]:
    return {"at": datetime.now(UTC), "actor": actor[:255], "action": action[:64], "target": target[:_TARGET_MAX],
            "repository": repository[:255] if repository else None, "client_address": info.addr[:64],
            "request_id": info.request_id[:64], "outcome": outcome, "detail": detail[:2000]}


def describe(message: Any, depth: int = 0) -> tuple[str, str | None]:
    """(target, repository) of a request: its scalar fields but the hidden ones, "k=v" joined
    by spaces; one level of nested messages (the console wraps the account requests)."""
    parts: list[str] = []
    repository: str | None = None
    for field, value in message.ListFields():
        if field.name in _HIDDEN:
            continue
        if field.type == field.TYPE_MESSAGE:
            if depth == 0 and not field.is_repeated:
                inner, inner_repository = describe(value, depth + 1)
                parts.append(inner)
                repository = repository or inner_repository
            continue
        if field.is_repeated:
            value = ",".join(str(v) for v in value)
        if field.name == "repository" and isinstance(value, str):
            repository = value
        parts.append(f"{field.name}={value}")
    return " ".join(p for p in parts if p), repository


def _outcome(code: grpc.StatusCode | None) -> str:
    if code is None or code == grpc.StatusCode.OK:
        return "ok"
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return "denied"
    return "failed"


@dataclass
class AuditWriter:
    """Writes the interceptor's rows (and their events). Rows of calls that end at the same time
    share one transaction: each `write` waits until its row is committed (so the answer still
    leaves after its row), but concurrent pushes cost the database's single writer one audit
    transaction per batch instead of one per call (16 pushing clients: about a quarter of the
    small-image throughput otherwise; docs/benchmarks.md)."""

    database: Database
    events: EventOutbox | None = None
    _pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = dataclasses.field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None

    async def write(self, row: dict[str, Any]) -> None:
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, committed))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await asyncio.shield(committed)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [row for row, _ in batch]

            def work(conn: Connection, rows: list[dict[str, Any]] = rows) -> None:
                conn.execute(_INSERT, rows)
                if self.events is not None:
                    for row in rows:
                        self.events.audit_recorded(conn, row)

            try:
                await self.database.access.write(work, durable=False)
            except Exception as error:  # noqa: BLE001 - each waiting call logs its own gap
                for _, committed in batch:
                    if not committed.done():
                        committed.set_exception(error)
            else:
                for _, committed in batch:
                    if not committed.done():
                        committed.set_result(None)


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Records every call of an `AUDITED` method (see the module docstring). Placed outside the
    access check and the error mapping: it sees refused calls, and mapped errors with their code."""

    def __init__(self, writer: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._write = writer

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        action = AUDITED.get(handler_call_details.method)
        if handler is None or action is None or not handler.unary_unary:
            return handler
        behavior = handler.unary_unary

        async def audited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            code: grpc.StatusCode | None = None
            detail = ""
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code, detail = context.code(), context.details() or ""
                raise
            except BaseException:
                code = grpc.StatusCode.INTERNAL
                raise
            finally:
                if code is None:
                    code = context.code()
                    detail = (context.details() or "") if code not in (None, grpc.StatusCode.OK) else ""
                await self._record(action, request, code, detail)

        return grpc.unary_unary_rpc_method_handler(audited, handler.request_deserializer,
                                                   handler.response_serializer)

    async def _record(self, action: str, request: Any, code: grpc.StatusCode | None, detail: str) -> None:
        try:
            info = request_context.from_proto(request.context) if _has_context(request) else RequestInfo()
            actor = info.actor or _noted_actor.get() or (OPERATOR if not _has_context(request) else ANONYMOUS)
            target, repository = describe(request)
            if action == "manifest.delete" and ":" not in getattr(request, "reference", ":"):
                action = "tag.delete"
            await self._write(_row(actor, action, target, repository, info, _outcome(code),
                                   detail if isinstance(detail, str) else str(detail)))
        except Exception as exc:  # noqa: BLE001 - the call's own outcome stands; the gap is logged
            if database_full(exc) is not None:
                log.error("could not write the audit row of %s: the metadata database's disk is full", action)
            else:
                log.exception("could not write the audit row of %s", action)


def _has_context(request: Any) -> bool:
    try:
        return request.HasField("context")
    except ValueError:
        return False
