"""`PolicyStore`: the governance rules and the tag history in the metadata database.

The calls that change them are audited by the AuditInterceptor (policies/audit.py). Reads take
the primary. Database failures become `RegistryError(UNAVAILABLE)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, select
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.events import context as request_context
from services.metadata.policies import audit
from services.metadata.policies.quotas import Quota, QuotaKeeper
from services.metadata.policies.retention import RetentionPolicy
from services.metadata.policies.signatures import SignaturePolicy
from services.metadata.policies.tables import (
    audit_log,
    immutable_tag_rules,
    quotas,
    retention_policies,
    signature_policies,
    tag_history,
    tag_overrides,
    vulnerability_policies,
)
from services.metadata.policies.tags import ImmutableRule, TagKeeper
from services.metadata.policies.vulnerabilities import VulnerabilityPolicy
from services.metadata.store.access import Read, primary_read
from services.metadata.store.dialect import database_full, is_retryable, is_unavailable, upsert
from services.metadata.store.engine import Database

log = logging.getLogger("lading.metadata.policies")
T = TypeVar("T")
_ATTEMPTS = 5
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)


def _now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StoredRule:
    rule: ImmutableRule
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    tag: str
    old_digest: str | None
    new_digest: str | None
    action: str
    actor: str
    at: datetime


class PolicyStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._keeper = TagKeeper(database.dialect)
        self._quotas = QuotaKeeper(database.dialect)
        r = immutable_tag_rules
        self._set_rule = upsert(database.dialect, r, ["name"], {
            "repository_pattern": None, "tag_pattern": None, "created_at": None, "created_by": None})
        self._set_override = upsert(database.dialect, tag_overrides, ["repository", "tag"], {
            "granted_by": None, "reason": None, "expires_at": None})

    @property
    def database(self) -> Database:
        return self._db

    async def read(self, statement: Any) -> list[Any]:
        return await self._read(statement)

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self._write(work)

    async def rows(self, declared: Read, params: dict[str, Any]) -> list[Any]:
        """A declared read of the pull policies' hot path (store/access.py), errors translated."""
        try:
            return await self._db.access.rows(declared, params)
        except _DB_ERRORS as exc:
            raise _translate(exc) from None

    async def immutable_rules(self) -> list[ImmutableRule]:
        return [stored.rule for stored in await self.list_rules()]

    # -- retention policies ---------------------------------------------------------------------------

    async def set_retention(self, policy: RetentionPolicy) -> None:
        def work(conn: Connection) -> None:
            conn.execute(upsert(self._db.dialect, retention_policies, ["name"], {
                "repository_pattern": None, "keep_last": None, "keep_tags": None, "untagged_after_seconds": None}),
                {"name": policy.name, "repository_pattern": policy.repository_pattern, "keep_last": policy.keep_last,
                 "keep_tags": policy.keep_tags, "untagged_after_seconds": int(policy.untagged_after_seconds),
                 "created_at": _now()})

        await self._write(work)

    async def delete_retention(self, name: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            delete(retention_policies).where(retention_policies.c.name == name)).rowcount > 0)

    # -- signature policies ---------------------------------------------------------------------------

    async def set_signature_policy(self, policy: SignaturePolicy) -> None:
        def work(conn: Connection) -> None:
            conn.execute(upsert(self._db.dialect, signature_policies, ["name"], {
                "repository_pattern": None, "kind": None, "public_keys": None}),
                {"name": policy.name, "repository_pattern": policy.repository_pattern, "kind": policy.kind,
                 "public_keys": policy.public_keys, "created_at": _now()})

        await self._write(work)

    async def delete_signature_policy(self, name: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            delete(signature_policies).where(signature_policies.c.name == name)).rowcount > 0)

    async def set_vulnerability_policy(self, policy: VulnerabilityPolicy) -> None:
        def work(conn: Connection) -> None:
            conn.execute(upsert(self._db.dialect, vulnerability_policies, ["name"], {
                "repository_pattern": None, "severity": None, "max_age_seconds": None, "allow": None}),
                {"name": policy.name, "repository_pattern": policy.repository_pattern, "severity": policy.severity,
                 "max_age_seconds": int(policy.max_age_seconds), "allow": policy.allow, "created_at": _now()})

        await self._write(work)

    async def delete_vulnerability_policy(self, name: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            delete(vulnerability_policies).where(vulnerability_policies.c.name == name)).rowcount > 0)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._db.access.write(work)
            except RegistryError:
                raise
            except _DB_ERRORS as exc:
                if attempt < _ATTEMPTS and is_retryable(exc):
                    await asyncio.sleep(0.005 * attempt)
                    continue
                raise _translate(exc) from None
        raise AssertionError("unreachable")

    async def _read(self, statement: Any) -> list[Any]:
        try:
            # The primary: a rule just set applies at once (store/access.py).
            return await self._db.access.rows(primary_read(statement))
        except _DB_ERRORS as exc:
            raise _translate(exc) from None

    # -- immutable-tag rules ------------------------------------------------------------------------

    async def set_rule(self, rule: ImmutableRule) -> StoredRule:
        now = _now()
        actor = audit.actor_of(request_context.current())

        def work(conn: Connection) -> None:
            conn.execute(self._set_rule, {"name": rule.name, "repository_pattern": rule.repository_pattern,
                                          "tag_pattern": rule.tag_pattern, "created_at": now, "created_by": actor})

        await self._write(work)
        return StoredRule(rule, actor, now)

    async def delete_rule(self, name: str) -> bool:
        def work(conn: Connection) -> bool:
            return conn.execute(delete(immutable_tag_rules).where(immutable_tag_rules.c.name == name)).rowcount > 0

        return await self._write(work)

    async def list_rules(self) -> list[StoredRule]:
        r = immutable_tag_rules
        rows = await self._read(select(r.c.name, r.c.repository_pattern, r.c.tag_pattern, r.c.created_by,
                                       r.c.created_at).order_by(r.c.name))
        return [StoredRule(ImmutableRule(row[0], row[1], row[2]), row[3], row[4]) for row in rows]

    async def allow_override(self, repository: str, tag: str, reason: str, lifetime: timedelta
                             ) -> tuple[ImmutableRule, datetime]:
        """Grants a one-time override; NAME_INVALID when no rule covers the tag."""
        expires = _now() + lifetime
        actor = audit.actor_of(request_context.current())

        def work(conn: Connection) -> ImmutableRule:
            covering = [rule for rule in self._keeper.rules(conn) if rule.covers(repository, tag)]
            if not covering:
                raise RegistryError(ErrorKind.NAME_INVALID,
                                    f"no immutable-tag rule covers {repository}:{tag}; nothing to override "
                                    "(see `lading immutable list`)", {"repository": repository, "tag": tag})
            conn.execute(self._set_override, {"repository": repository, "tag": tag, "granted_by": actor,
                                              "reason": reason, "expires_at": expires})
            return covering[0]

        return await self._write(work), expires

    # -- quotas -------------------------------------------------------------------------------------

    async def set_quota(self, name: str, repository_pattern: str, limit_bytes: int) -> Quota:
        """Creates or changes a quota and counts its usage from the links (in one transaction)."""
        def work(conn: Connection) -> Quota:
            conn.execute(upsert(self._db.dialect, quotas, ["name"], {"repository_pattern": None, "limit_bytes": None}),
                         {"name": name, "repository_pattern": repository_pattern, "limit_bytes": limit_bytes,
                          "used_bytes": 0, "updated_at": _now()})
            _, used = self._quotas.recount(conn, name)
            return Quota(name, repository_pattern, limit_bytes, used)

        return await self._write(work)

    async def delete_quota(self, name: str) -> bool:
        def work(conn: Connection) -> bool:
            from services.metadata.policies.tables import quota_blobs

            conn.execute(delete(quota_blobs).where(quota_blobs.c.quota == name))
            return conn.execute(delete(quotas).where(quotas.c.name == name)).rowcount > 0

        return await self._write(work)

    async def list_quotas(self) -> list[Quota]:
        q = quotas
        rows = await self._read(select(q.c.name, q.c.repository_pattern, q.c.limit_bytes, q.c.used_bytes)
                                .order_by(q.c.name))
        return [Quota(*row) for row in rows]

    async def recount_quotas(self) -> dict[str, tuple[int, int]]:
        """Every quota rebuilt from the links, one transaction each: {name: (before, after)}."""
        found: dict[str, tuple[int, int]] = {}
        for quota in await self.list_quotas():
            try:
                found[quota.name] = await self._write(lambda conn, name=quota.name: self._quotas.recount(conn, name))
            except RegistryError as error:
                if error.kind is not ErrorKind.NAME_UNKNOWN:  # removed meanwhile
                    raise
        return found

    # -- history ------------------------------------------------------------------------------------

    async def history(self, repository: str, tag: str, limit: int) -> list[HistoryEntry]:
        h = tag_history
        rows = await self._read(
            select(h.c.tag, h.c.old_digest, h.c.new_digest, h.c.action, h.c.actor, h.c.at)
            .where(h.c.repository == repository, h.c.tag == tag).order_by(h.c.id.desc()).limit(limit))
        return [HistoryEntry(*row) for row in rows]

    async def audit(self, *, since: datetime | None, actor: str, repository: str, limit: int) -> list[AuditEntry]:
        a = audit_log
        query = select(a.c.id, a.c.at, a.c.actor, a.c.action, a.c.target, a.c.repository, a.c.client_address,
                       a.c.request_id, a.c.outcome, a.c.detail)
        if since is not None:
            query = query.where(a.c.at >= since)
        if actor:
            query = query.where(a.c.actor == actor)
        if repository:
            query = query.where(a.c.repository == repository)
        return [AuditEntry(*row) for row in await self._read(query.order_by(a.c.id.desc()).limit(limit))]

    async def digest_at(self, repository: str, tag: str, moment: datetime) -> str | None:
        """The digest `tag` pointed at at `moment` (None: it did not exist then, as far as the
        history knows). Raises MANIFEST_UNKNOWN when the history holds nothing that early."""
        h = tag_history
        rows = await self._read(
            select(h.c.new_digest).where(h.c.repository == repository, h.c.tag == tag, h.c.at <= moment)
            .order_by(h.c.id.desc()).limit(1))
        if not rows:
            raise RegistryError(
                ErrorKind.MANIFEST_UNKNOWN,
                f"the history of {repository}:{tag} starts after {rfc3339(moment)}; "
                f"see `lading tag history {repository} {tag}`",
                {"name": repository, "reference": tag})
        return rows[0][0]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    repository: str | None
    client_address: str
    request_id: str
    outcome: str
    detail: str


def _translate(error: BaseException) -> BaseException:
    if (full := database_full(error)) is not None:
        return full
    if is_unavailable(error):
        log.warning("metadata database unavailable: %s", error)
        return RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly",
                             {"reason": type(error).__name__})
    return error
