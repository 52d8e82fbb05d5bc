"""`AccountStore`: accounts and grants in the metadata database (SQLite or PostgreSQL).

Reads go to the primary (never a read replica): an account created or revoked a moment ago must
count at once. Writes run in one transaction each; a duplicate name surfaces as `AccountExists`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.errors import ErrorKind, RegistryError
from services.metadata.accounts.schema import accounts, grants
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

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and _aware(self.expires_at) <= now


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _account(row: Any) -> StoredAccount:
    return StoredAccount(
        id=row.id, name=row.name, kind=row.kind, password_hash=row.password_hash, is_admin=bool(row.is_admin),
        description=row.description, expires_at=_aware(row.expires_at) if row.expires_at else None,
        created_at=_aware(row.created_at),
    )


def _unavailable(exc: BaseException) -> BaseException:
    if is_unavailable(exc):
        return RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly")
    return exc


class AccountStore:
    def __init__(self, database: Database) -> None:
        self._db = database
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

    async def get(self, name: str) -> StoredAccount | None:
        async def work(conn: AsyncConnection) -> StoredAccount | None:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
            return _account(row) if row else None

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
                expires_at=expires_at, created_at=now,
            ))

        await self._write(work)
        created = await self.get(name)
        assert created is not None
        return created

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        """False when there is no such user."""
        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(accounts).where(accounts.c.name == name, accounts.c.kind == "user")
                .values(password_hash=password_hash)
            )
            return result.rowcount > 0

        return await self._write(work)

    async def delete(self, name: str) -> bool:
        """Deletes the account and its grants. False when there is no such account."""
        async def work(conn: AsyncConnection) -> bool:
            account_id = (await conn.execute(select(accounts.c.id).where(accounts.c.name == name))).scalar()
            if account_id is None:
                return False
            # Explicit: SQLite only cascades with foreign_keys=ON, which the engine sets, but be sure.
            await conn.execute(delete(grants).where(grants.c.account_id == account_id))
            await conn.execute(delete(accounts).where(accounts.c.id == account_id))
            return True

        return await self._write(work)

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

    async def set_grant(self, account_id: int, pattern: str, actions: tuple[str, ...]) -> None:
        """Stores exactly `actions` on `pattern` (no actions: removes the row)."""
        async def work(conn: AsyncConnection) -> None:
            if not actions:
                await conn.execute(
                    delete(grants).where(grants.c.account_id == account_id, grants.c.pattern == pattern)
                )
                return
            await conn.execute(
                upsert(self._db.dialect, grants, ["account_id", "pattern"], {"actions": None})
                .values(account_id=account_id, pattern=pattern, actions=",".join(actions))
            )

        await self._write(work)
