"""`SessionStore`: console sessions in the metadata database, so every gateway replica serves them.

A session is a random secret the browser keeps in an HttpOnly cookie; the table holds its SHA-256.
It ends at `expires_at` (sign-in + `console.session_seconds`), after `console.idle_seconds`
without a page (`last_seen_at` is written at most once a minute, not on every page), on sign-out,
and when its account's credential generation moves on (checked by the core). Expired rows are
deleted when sessions are created. Reads and writes go to the primary (never a read replica): a
session opened or ended a moment ago must count at once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy import exc as sa_exc

from services.common.errors import ErrorKind, RegistryError
from services.metadata.console.tables import console_sessions
from services.metadata.store.access import primary_read
from services.metadata.store.dialect import database_full, is_unavailable
from services.metadata.store.engine import Database

T = TypeVar("T")
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)
# `last_seen_at` is written again only when older than this (a page view is not a write).
TOUCH_SECONDS = 60.0


def session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredSession:
    id: str
    account_uid: str
    credential_generation: int
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unavailable(exc: BaseException) -> BaseException:
    if (full := database_full(exc)) is not None:
        return full
    if is_unavailable(exc):
        return RegistryError(ErrorKind.UNAVAILABLE, "the metadata database is unavailable; retry shortly")
    return exc


class SessionStore:
    def __init__(self, database: Database, *, lifetime_seconds: float, idle_seconds: float) -> None:
        self._db = database
        self._lifetime = timedelta(seconds=lifetime_seconds)
        self._idle = timedelta(seconds=idle_seconds)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        try:
            return await self._db.access.write(work)
        except RegistryError:
            raise
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None

    async def create(self, account_uid: str, generation: int, client_address: str) -> tuple[str, StoredSession]:
        """(the secret, shown once; the stored session)."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "id": session_id(secret), "account_uid": account_uid, "credential_generation": generation,
            "created_at": now, "expires_at": now + self._lifetime, "last_seen_at": now,
            "client_address": client_address[:64],
        }

        def work(conn: Connection) -> None:
            conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
            conn.execute(insert(console_sessions).values(**row))

        await self._write(work)
        return secret, StoredSession(row["id"], account_uid, generation, now, row["expires_at"], now)

    async def get(self, secret: str) -> StoredSession | None:
        """The live session of `secret` (None: unknown, expired or idle too long; such a row is
        deleted). Notes the visit at most once per TOUCH_SECONDS."""
        if not secret:
            return None
        key = session_id(secret)
        try:
            row = await self._db.access.first(primary_read(select(console_sessions).where(console_sessions.c.id == key)))
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from None
        if row is None:
            return None
        session = StoredSession(row.id, row.account_uid, int(row.credential_generation), _aware(row.created_at),
                                _aware(row.expires_at), _aware(row.last_seen_at))
        now = datetime.now(UTC)
        if session.expires_at <= now or now - session.last_seen_at > self._idle:
            await self.end(secret)
            return None
        if (now - session.last_seen_at).total_seconds() > TOUCH_SECONDS:
            def touch(conn: Connection) -> None:
                conn.execute(update(console_sessions).where(console_sessions.c.id == key).values(last_seen_at=now))

            await self._write(touch)
        return session

    async def set_generation(self, secret: str, generation: int) -> None:
        """The session goes on under the account's new credential generation (it caused the
        change itself: a new CLI secret)."""
        key = session_id(secret)

        def work(conn: Connection) -> None:
            conn.execute(update(console_sessions).where(console_sessions.c.id == key)
                         .values(credential_generation=generation))

        await self._write(work)

    async def end(self, secret: str) -> None:
        key = session_id(secret)

        def work(conn: Connection) -> None:
            conn.execute(delete(console_sessions).where(console_sessions.c.id == key))

        await self._write(work)
