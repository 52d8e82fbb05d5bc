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

from sqlalchemy import delete, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.errors import ErrorKind, RegistryError
from services.metadata.accounts.schema import accounts, grants
from services.metadata.changes.log import ChangeLog
from services.metadata.store.dialect import is_unavailable, upsert
from services.metadata.store.engine import Database

T = TypeVar("T")
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

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and _aware(self.expires_at) <= now

    def active(self, now: datetime) -> bool:
        """May log in and use its tokens: neither disabled nor expired."""
        return not self.disabled and not self.expired(now)


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
        disabled=bool(row.disabled),
    )


def _unavailable(exc: BaseException) -> BaseException:
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
            async with self._db.engine.connect() as conn:
                return await work(conn)
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self._write_lock, self._db.writes.begin() as conn:
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
                     expires_at: datetime | None) -> StoredAccount:
        """Raises AccountExists when the name is taken."""
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(insert(accounts).values(
                name=name, kind=kind, password_hash=password_hash, is_admin=is_admin, description=description,
                expires_at=expires_at, created_at=now, uid=uuid.uuid4().hex, credential_generation=1,
                disabled=False,
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
