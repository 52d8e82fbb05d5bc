"""The audit log: one row per write through the API and per admin, policy or account change.

`record(conn, ...)` is synchronous and runs inside the caller's write transaction, so a change
and its audit row commit together or not at all. Who, from where and which request come from the
gRPC call's RequestContext (services/metadata/events/context.py); an operator command sends
the actor `lading-admin`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert

from services.metadata.events import context as request_context
from services.metadata.events.envelope import RequestInfo
from services.metadata.policies.tables import audit_log

ANONYMOUS = "anonymous"
_INSERT = insert(audit_log)


def actor_of(request: RequestInfo) -> str:
    return request.actor or ANONYMOUS


def record(conn: Connection, action: str, target: str, *, repository: str | None = None, outcome: str = "ok",
           detail: str = "", request: RequestInfo | None = None) -> None:
    """Writes one audit row in `conn`'s transaction (`request`: default, the call's)."""
    info = request if request is not None else request_context.current()
    conn.execute(_INSERT, {
        "at": datetime.now(UTC), "actor": actor_of(info)[:255], "action": action[:64], "target": target,
        "repository": repository, "client_address": info.addr[:64], "request_id": info.request_id[:64],
        "outcome": outcome, "detail": detail,
    })
