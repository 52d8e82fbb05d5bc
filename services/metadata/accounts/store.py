"""`AccountStore`: accounts and grants in the metadata database (SQLite or PostgreSQL).

Reads go to the primary (never a read replica): an account created or revoked a moment ago must
count at once. Writes run in one transaction each; a duplicate name surfaces as `AccountExists`.

Every change that must reach the gateways (a credential generation bumped, an account deleted,
disabled or enabled, grants changed) appends an "account" change to the change feed
(services/metadata/changes) in the same transaction, so the feed never tells of a change that
rolled back nor misses one that committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.errors import ErrorKind, RegistryError
from services.metadata.accounts.schema import accounts, grants, group_mappings
from services.metadata.changes.log import ChangeLog
from services.metadata.store.access import Kind
from services.metadata.store.dialect import database_full, is_unavailable, upsert
from services.metadata.store.engine import Database

T = TypeVar("T")
LOCAL, LDAP, OIDC = "local", "ldap", "oidc"
ORIGINS = (LOCAL, LDAP, OIDC)
# The group mapping that makes a group's members admins: no pattern, this one action.
ADMIN_PATTERN, ADMIN_ACTION = "", "admin"
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)


class AccountExists(Exception):
    """An account with that name exists already."""


@dataclass(frozen=True, slots=True)
class StoredAccount:
    id: int
    name: str
    kind: str  # "user" | "robot"
    password_hash: str
    is_admin: bool
    description: str
    expires_at: datetime | None
    created_at: datetime
    # Immutable and never reused (see schema.py); tokens name it.
    uid: str = ""
    credential_generation: int = 1
    disabled: bool = False
    # "local", "ldap" or "oidc".
    origin: str = LOCAL
    # Directory / provider accounts: the groups last reported and when (None: never).
    groups: tuple[str, ...] = ()
    groups_checked_at: datetime | None = None
    # OIDC: "<issuer> <sub>"; and when the CLI secret (the password hash) stops working.
    external_id: str | None = None
    secret_expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and _aware(self.expires_at) <= now

    def active(self, now: datetime) -> bool:
        """May log in and use its tokens: neither disabled nor expired."""
        return not self.disabled and not self.expired(now)

    def groups_fresh(self, now: datetime, max_age_seconds: float) -> bool:
        """The directory reported its groups at most `max_age_seconds` ago."""
        checked = self.groups_checked_at
        return checked is not None and (now - checked).total_seconds() <= max_age_seconds


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """What one account change left behind (the body of its change-feed entry)."""

    uid: str
    name: str
    generation: int
    active: bool
    reason: str

    def body(self) -> dict[str, object]:
        return {"account_id": self.uid, "name": self.name, "generation": self.generation,
                "active": self.active, "reason": self.reason}


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _account(row: Any) -> StoredAccount:
    return StoredAccount(
        id=row.id, name=row.name, kind=row.kind, password_hash=row.password_hash, is_admin=bool(row.is_admin),
        description=row.description, expires_at=_aware(row.expires_at) if row.expires_at else None,
        created_at=_aware(row.created_at), uid=row.uid, credential_generation=int(row.credential_generation),
        disabled=bool(row.disabled), origin=row.origin or LOCAL,
        groups=tuple(orjson.loads(row.directory_groups)) if row.directory_groups else (),
        groups_checked_at=_aware(row.directory_checked_at) if row.directory_checked_at else None,
        external_id=row.external_id,
        secret_expires_at=_aware(row.secret_expires_at) if row.secret_expires_at else None,
    )


@dataclass(frozen=True, slots=True)
class GroupMapping:
    provider: str
    group: str  # normalized (see `normalize_group`)
    pattern: str  # ADMIN_PATTERN for the admin mapping
    actions: tuple[str, ...]

    @property
    def admin(self) -> bool:
        return self.pattern == ADMIN_PATTERN


def normalize_group(provider: str, group: str) -> str:
    """How groups are compared: LDAP DNs case-insensitively and without spaces around `,` and
    `=` (`CN=Team A, OU=Groups` is `cn=team a,ou=groups`); OIDC claim values exactly."""
    if provider != LDAP:
        return group
    parts = [part.strip() for part in group.split(",")]
    return ",".join("=".join(side.strip() for side in part.split("=", 1)) for part in parts).lower()


def _unavailable(exc: BaseException) -> BaseException:
    if (full := database_full(exc)) is not None:
        return full
    if is_unavailable(exc):
        return RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly")
    return exc


class AccountStore:
    def __init__(self, database: Database, changes: ChangeLog | None = None) -> None:
        self._db = database
        self._changes = changes or ChangeLog(database)
        self._write_lock: Any = asyncio.Lock() if database.dialect == "sqlite" else contextlib.nullcontext()

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self._db.access.connection(Kind.PRIMARY_READ) as conn:
                return await work(conn)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self._write_lock, self._db.access.transaction() as conn:
                return await work(conn)
        except sa_exc.IntegrityError as exc:
            raise AccountExists(str(exc)) from None
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None

    async def _write_changes(self, work: Callable[[AsyncConnection], Awaitable[list[CredentialChange]]]
                             ) -> list[CredentialChange]:
        """A write transaction that appends its account changes to the change feed."""
        async def with_feed(conn: AsyncConnection) -> list[CredentialChange]:
            made = await work(conn)
            for change in made:
                await self._changes.append(conn, "account", change.uid, change.body())
            return made

        made = await self._write(with_feed)
        if made:
            self._changes.committed()
        return made

    async def get(self, name: str) -> StoredAccount | None:
        async def work(conn: AsyncConnection) -> StoredAccount | None:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
            return _account(row) if row else None

        return await self._read(work)

    async def get_by_uids(self, uids: list[str]) -> list[StoredAccount]:
        """The accounts with these immutable ids (deleted ones are absent)."""
        if not uids:
            return []

        async def work(conn: AsyncConnection) -> list[StoredAccount]:
            return [_account(r) for r in await conn.execute(select(accounts).where(accounts.c.uid.in_(uids)))]

        return await self._read(work)

    async def list(self) -> list[StoredAccount]:
        async def work(conn: AsyncConnection) -> list[StoredAccount]:
            return [_account(r) for r in await conn.execute(select(accounts).order_by(accounts.c.name))]

        return await self._read(work)

    async def create(self, *, name: str, kind: str, password_hash: str, is_admin: bool, description: str,
                     expires_at: datetime | None, origin: str = LOCAL, groups: tuple[str, ...] | None = None,
                     external_id: str | None = None) -> StoredAccount:
        """Raises AccountExists when the name is taken. `groups` (directory and provider
        accounts): what the directory reported just now."""
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(insert(accounts).values(
                name=name, kind=kind, password_hash=password_hash, is_admin=is_admin, description=description,
                expires_at=expires_at, created_at=now, uid=uuid.uuid4().hex, credential_generation=1,
                disabled=False, origin=origin, external_id=external_id,
                directory_groups=orjson.dumps(list(groups)).decode() if groups is not None else None,
                directory_checked_at=now if groups is not None else None,
            ))

        await self._write(work)
        created = await self.get(name)
        assert created is not None
        return created

    async def _bump(self, conn: AsyncConnection, condition: Any, reason: str, **values: Any
                    ) -> list[CredentialChange]:
        """Bumps the credential generation of the account matching `condition` (setting `values`
        too); [] when none matches."""
        row = (await conn.execute(
            update(accounts).where(condition)
            .values(credential_generation=accounts.c.credential_generation + 1, **values)
            .returning(accounts.c.uid, accounts.c.name, accounts.c.credential_generation, accounts.c.disabled)
        )).first()
        if row is None:
            return []
        return [CredentialChange(row.uid, row.name, int(row.credential_generation), not row.disabled, reason)]

    async def set_password_hash(self, name: str, password_hash: str, *, kind: str = "user") -> bool:
        """Replaces the password (a user's) or secret (`kind="robot"`) and bumps the credential
        generation. False when there is no such account of that kind."""
        reason = "secret_rotated" if kind == "robot" else "password_changed"

        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            return await self._bump(conn, (accounts.c.name == name) & (accounts.c.kind == kind), reason,
                                    password_hash=password_hash)

        return bool(await self._write_changes(work))

    async def revoke_tokens(self, name: str) -> StoredAccount | None:
        """Bumps the credential generation; None when there is no such account."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            return await self._bump(conn, accounts.c.name == name, "tokens_revoked")

        if not await self._write_changes(work):
            return None
        return await self.get(name)

    async def set_disabled(self, name: str, disabled: bool) -> StoredAccount | None:
        """Disables (bumping the generation: tokens issued before never count again) or enables
        the account. None when there is no such account."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            if disabled:
                return await self._bump(conn, accounts.c.name == name, "disabled", disabled=True)
            row = (await conn.execute(
                update(accounts).where(accounts.c.name == name).values(disabled=False)
                .returning(accounts.c.uid, accounts.c.name, accounts.c.credential_generation)
            )).first()
            return [CredentialChange(row.uid, row.name, int(row.credential_generation), True, "enabled")] if row else []

        if not await self._write_changes(work):
            return None
        return await self.get(name)

    async def delete(self, name: str) -> bool:
        """Deletes the account and its grants. False when there is no such account."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            row = (await conn.execute(
                select(accounts.c.id, accounts.c.uid, accounts.c.credential_generation)
                .where(accounts.c.name == name)
            )).first()
            if row is None:
                return []
            # Explicit: SQLite only cascades with foreign_keys=ON, which the engine sets, but be sure.
            await conn.execute(delete(grants).where(grants.c.account_id == row.id))
            await conn.execute(delete(accounts).where(accounts.c.id == row.id))
            return [CredentialChange(row.uid, name, int(row.credential_generation) + 1, False, "deleted")]

        return bool(await self._write_changes(work))

    async def grants_of(self, account_id: int) -> dict[str, tuple[str, ...]]:
        async def work(conn: AsyncConnection) -> dict[str, tuple[str, ...]]:
            rows = await conn.execute(
                select(grants.c.pattern, grants.c.actions).where(grants.c.account_id == account_id)
            )
            return {row.pattern: tuple(a for a in row.actions.split(",") if a) for row in rows}

        return await self._read(work)

    async def list_grants(self, name: str | None) -> list[tuple[str, str, tuple[str, ...]]]:
        """(account name, pattern, actions) sorted by account then pattern."""
        async def work(conn: AsyncConnection) -> list[tuple[str, str, tuple[str, ...]]]:
            statement = (
                select(accounts.c.name, grants.c.pattern, grants.c.actions)
                .join(accounts, accounts.c.id == grants.c.account_id)
                .order_by(accounts.c.name, grants.c.pattern)
            )
            if name:
                statement = statement.where(accounts.c.name == name)
            return [(r.name, r.pattern, tuple(a for a in r.actions.split(",") if a))
                    for r in await conn.execute(statement)]

        return await self._read(work)

    async def set_grant(self, account: StoredAccount, pattern: str, actions: tuple[str, ...]) -> None:
        """Stores exactly `actions` on `pattern` (no actions: removes the row)."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            if not actions:
                await conn.execute(
                    delete(grants).where(grants.c.account_id == account.id, grants.c.pattern == pattern)
                )
            else:
                await conn.execute(
                    upsert(self._db.dialect, grants, ["account_id", "pattern"], {"actions": None})
                    .values(account_id=account.id, pattern=pattern, actions=",".join(actions))
                )
            return [CredentialChange(account.uid, account.name, account.credential_generation,
                                     not account.disabled, "grants_changed")]

        await self._write_changes(work)

    # -- directory and provider accounts ---------------------------------------------------------

    async def set_groups(self, account: StoredAccount, groups: tuple[str, ...]) -> StoredAccount:
        """Records the groups the directory or provider reported just now. When they differ
        from the stored ones, the change feed hears of it (gateways forget remembered grants);
        a lost group also bumps the credential generation, so tokens issued with its grants and
        sessions opened under it stop working."""
        now = datetime.now(UTC)
        lost = bool(set(account.groups) - set(groups))

        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            values: dict[str, Any] = {"directory_groups": orjson.dumps(list(groups)).decode(),
                                      "directory_checked_at": now}
            if tuple(groups) == tuple(account.groups):
                await conn.execute(update(accounts).where(accounts.c.id == account.id).values(**values))
                return []
            if lost:
                return await self._bump(conn, accounts.c.id == account.id, "tokens_revoked", **values)
            await conn.execute(update(accounts).where(accounts.c.id == account.id).values(**values))
            return [CredentialChange(account.uid, account.name, account.credential_generation,
                                     not account.disabled, "grants_changed")]

        await self._write_changes(work)
        found = await self.get(account.name)
        assert found is not None
        return found

    async def gone_from_directory(self, account: StoredAccount) -> None:
        """The directory no longer knows the account: every token and session of it stops
        working (its row stays, with its local grants, should it come back)."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            return await self._bump(conn, accounts.c.id == account.id, "tokens_revoked",
                                    directory_groups="[]", directory_checked_at=datetime.now(UTC))

        await self._write_changes(work)

    async def set_cli_secret(self, account: StoredAccount, password_hash: str,
                             expires_at: datetime | None) -> StoredAccount | None:
        """Replaces an OIDC account's CLI secret ("" removes it) and bumps the credential
        generation (tokens issued with the old secret stop working). None: no such account."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            return await self._bump(conn, (accounts.c.id == account.id) & (accounts.c.uid == account.uid),
                                    "secret_rotated", password_hash=password_hash, secret_expires_at=expires_at)

        if not await self._write_changes(work):
            return None
        return await self.get(account.name)

    # -- group mappings ----------------------------------------------------------------------

    async def mappings(self, provider: str | None = None, groups: tuple[str, ...] | None = None
                       ) -> list[GroupMapping]:
        """The mappings (of one provider; of these normalized groups), by provider, group, pattern."""
        async def work(conn: AsyncConnection) -> list[GroupMapping]:
            statement = select(group_mappings).order_by(
                group_mappings.c.provider, group_mappings.c.group_name, group_mappings.c.pattern)
            if provider:
                statement = statement.where(group_mappings.c.provider == provider)
            if groups is not None:
                if not groups:
                    return []
                statement = statement.where(group_mappings.c.group_name.in_(list(groups)))
            return [GroupMapping(r.provider, r.group_name, r.pattern, tuple(a for a in r.actions.split(",") if a))
                    for r in await conn.execute(statement)]

        return await self._read(work)

    async def set_mapping(self, mapping: GroupMapping) -> None:
        """Stores exactly `mapping.actions` for (provider, group, pattern); none removes the row.
        Every account the change could affect is told through the change feed ("grants_changed"
        with an empty account id and name: gateways forget every remembered grant)."""
        async def work(conn: AsyncConnection) -> list[CredentialChange]:
            key = ((group_mappings.c.provider == mapping.provider) & (group_mappings.c.group_name == mapping.group)
                   & (group_mappings.c.pattern == mapping.pattern))
            await conn.execute(delete(group_mappings).where(key))
            if mapping.actions:
                await conn.execute(insert(group_mappings).values(
                    provider=mapping.provider, group_name=mapping.group, pattern=mapping.pattern,
                    actions=",".join(mapping.actions)))
            return [CredentialChange("", "", 0, True, "grants_changed")]

        await self._write_changes(work)
