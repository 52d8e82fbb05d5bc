"""`AccountsCore`: the account use cases behind AccountService (transport-agnostic).

Errors: NAME_INVALID (bad account name or pattern), DENIED (name taken, unknown action, password
too long), NAME_UNKNOWN (no such account), UNAUTHORIZED (authentication failed: one answer for a
wrong secret, an unknown name, a disabled account and an expired robot), TOOMANYREQUESTS (too
many password checks waiting; see passwords.py).

Credential generations: a password change, a robot secret rotation, `revoke_tokens`, a disable and
a delete bump the account's generation (store.py), and tokens carry the generation they were
issued for, so every earlier token stops working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository
from services.metadata.accounts.passwords import (
    PasswordChecksBusy,
    Passwords,
    PasswordTooLong,
    new_robot_secret,
)
from services.metadata.accounts.policy import (
    Scope,
    Subject,
    anonymous_grants,
    intersect,
    normalize_actions,
    validate_pattern,
)
from services.metadata.accounts.store import AccountExists, AccountStore, StoredAccount

log = logging.getLogger("lading.metadata.accounts")

ROBOT_PREFIX = "robot$"
# No ':' (Basic credentials split there) and no '$' (reserved for robots) in user names.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_ROBOT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class CreatedRobot:
    account: StoredAccount
    secret: str


def _unknown(name: str) -> RegistryError:
    return RegistryError(ErrorKind.NAME_UNKNOWN, f"no account named {name!r}", {"account": name})


def _failed() -> RegistryError:
    return RegistryError(ErrorKind.UNAUTHORIZED, "invalid username or password")


def _valid_repository(name: str) -> bool:
    try:
        validate_repository(name)
    except RegistryError:
        return False
    return True


class AccountsCore:
    def __init__(self, store: AccountStore, passwords: Passwords, *, anonymous_pull: Sequence[str]) -> None:
        self._store = store
        self._passwords = passwords
        self._anonymous = anonymous_grants([validate_pattern(p) for p in anonymous_pull])

    # -- management ---------------------------------------------------------------------------------

    async def create_user(self, name: str, password: str, *, is_admin: bool = False,
                          description: str = "") -> StoredAccount:
        if not _USER_NAME.fullmatch(name):
            raise RegistryError(
                ErrorKind.NAME_INVALID,
                f"invalid user name {name!r}: letters, digits, '.', '_', '@', '-' (no ':' or '$'), at most 128",
                {"account": name},
            )
        password_hash = await self._hash(password)
        try:
            return await self._store.create(name=name, kind="user", password_hash=password_hash,
                                            is_admin=is_admin, description=description, expires_at=None)
        except AccountExists:
            raise RegistryError(ErrorKind.DENIED, f"account {name!r} exists already", {"account": name}) from None

    async def set_password(self, name: str, password: str) -> None:
        password_hash = await self._hash(password)
        if not await self._store.set_password_hash(name, password_hash):
            raise _unknown(name)

    async def delete_account(self, name: str) -> None:
        if not await self._store.delete(name):
            raise _unknown(name)

    async def revoke_tokens(self, name: str) -> StoredAccount:
        """Every token issued to `name` so far stops working (its credentials stay)."""
        account = await self._store.revoke_tokens(name)
        if account is None:
            raise _unknown(name)
        log.info("revoked every token of %r (credential generation %d)", name, account.credential_generation)
        return account

    async def set_disabled(self, name: str, disabled: bool) -> StoredAccount:
        account = await self._store.set_disabled(name, disabled)
        if account is None:
            raise _unknown(name)
        return account

    async def rotate_robot_secret(self, name: str) -> CreatedRobot:
        """A new secret for robot `name` (with or without the prefix), returned once; the old
        secret and every token issued before stop working."""
        full = ROBOT_PREFIX + name.removeprefix(ROBOT_PREFIX)
        secret = new_robot_secret()
        if not await self._store.set_password_hash(full, await self._passwords.hash(secret), kind="robot"):
            raise RegistryError(ErrorKind.NAME_UNKNOWN, f"no robot named {full!r}", {"account": full})
        account = await self._require(full)
        return CreatedRobot(account, secret)

    async def credential_states(self, uids: Sequence[str]) -> list[StoredAccount]:
        """The accounts with these immutable ids (deleted ones are absent)."""
        return await self._store.get_by_uids(list(dict.fromkeys(uids))[:1000])

    async def create_robot(self, name: str, *, description: str = "",
                           expires_at: datetime | None = None) -> CreatedRobot:
        """A robot `robot$<name>` with a fresh secret (returned once; only its hash is stored)."""
        short = name.removeprefix(ROBOT_PREFIX)
        if not _ROBOT_NAME.fullmatch(short):
            raise RegistryError(
                ErrorKind.NAME_INVALID,
                f"invalid robot name {name!r}: lowercase letters, digits, '.', '_', '-', at most 64",
                {"account": name},
            )
        secret = new_robot_secret()
        full = ROBOT_PREFIX + short
        try:
            account = await self._store.create(
                name=full, kind="robot", password_hash=await self._passwords.hash(secret), is_admin=False,
                description=description, expires_at=expires_at,
            )
        except AccountExists:
            raise RegistryError(ErrorKind.DENIED, f"account {full!r} exists already", {"account": full}) from None
        return CreatedRobot(account, secret)

    async def list_accounts(self) -> list[StoredAccount]:
        return await self._store.list()

    async def grant(self, name: str, pattern: str, actions: Sequence[str]) -> tuple[str, ...]:
        """Adds `actions` on `pattern`; returns the account's actions on it afterwards."""
        validate_pattern(pattern)
        wanted = normalize_actions(actions)
        if not wanted:
            raise RegistryError(ErrorKind.DENIED, "name at least one action: pull, push, delete")
        account = await self._require(name)
        current = (await self._store.grants_of(account.id)).get(pattern, ())
        merged = normalize_actions([*current, *wanted])
        await self._store.set_grant(account, pattern, merged)
        return merged

    async def revoke(self, name: str, pattern: str, actions: Sequence[str]) -> bool:
        """Removes `actions` (all when empty) on exactly `pattern`; False when nothing was granted."""
        account = await self._require(name)
        current = (await self._store.grants_of(account.id)).get(pattern)
        if current is None:
            return False
        removed = set(normalize_actions(actions)) if actions else set(current)
        await self._store.set_grant(account, pattern, tuple(a for a in current if a not in removed))
        return True

    async def list_grants(self, name: str = "") -> list[tuple[str, str, tuple[str, ...]]]:
        if name:
            await self._require(name)
        return await self._store.list_grants(name or None)

    async def ensure_admin(self, name: str, password: str) -> bool:
        """The bootstrap admin: created when absent (True), left alone when present (False)."""
        if await self._store.get(name) is not None:
            return False
        try:
            await self.create_user(name, password, is_admin=True, description="bootstrap admin")
        except RegistryError as error:
            if error.kind is ErrorKind.DENIED and "exists" in error.message:
                return False  # another replica created it at the same moment
            raise
        log.info("created the bootstrap admin account %r", name)
        return True

    # -- the gateway's questions -------------------------------------------------------------------

    async def authenticate(self, name: str, secret: str, *, verified_recently: bool = False,
                           client_address: str = "") -> StoredAccount:
        """The account `name` when `secret` is its password or robot secret; UNAUTHORIZED otherwise.

        bcrypt runs in every case (unknown name, disabled account, expired robot) so the failure
        takes as long. `verified_recently` (the gateway's word) picks the bcrypt lane; addresses
        take turns in the normal one.
        """
        account = await self._store.get(name) if name else None
        try:
            matched = await self._passwords.check(
                secret, account.password_hash if account else None, priority=verified_recently,
                source=client_address,
            )
        except PasswordChecksBusy:
            raise RegistryError(
                ErrorKind.TOOMANYREQUESTS,
                "too many logins are being checked at the moment; retry in a few seconds",
            ) from None
        if account is None or not matched or not account.active(datetime.now(UTC)):
            raise _failed()
        return account

    async def authorize(self, name: str, scopes: Sequence[Scope], *, account_id: str = "",
                        generation: int = 0) -> tuple[list[Scope], bool]:
        """(granted scopes in request order, whether `name` is a valid account). Empty `name` is
        anonymous; an unknown, disabled or expired account gets anonymous rights and `False`.
        With `account_id`, the account must also still have that immutable id and credential
        `generation` (a refresh token's), else it is not valid either."""
        subject = Subject(is_admin=False, grants=self._anonymous)
        valid = not name
        if name:
            account = await self._store.get(name)
            if account is not None and account_id and (
                account.uid != account_id or account.credential_generation != generation
            ):
                account = None
            if account is not None and account.active(datetime.now(UTC)):
                valid = True
                own = await self._store.grants_of(account.id)
                merged = dict(self._anonymous)
                for pattern, actions in own.items():
                    merged[pattern] = normalize_actions([*merged.get(pattern, ()), *actions])
                subject = Subject(is_admin=account.is_admin, grants=merged)
        return intersect(subject, scopes, valid_name=_valid_repository), valid

    def close(self) -> None:
        self._passwords.close()

    # -- helpers ------------------------------------------------------------------------------------

    async def _require(self, name: str) -> StoredAccount:
        account = await self._store.get(name)
        if account is None:
            raise _unknown(name)
        return account

    async def _hash(self, password: str) -> str:
        try:
            return await self._passwords.hash(password)
        except PasswordTooLong as exc:
            raise RegistryError(ErrorKind.DENIED, str(exc)) from None
        except ValueError:
            raise RegistryError(ErrorKind.DENIED, "the password must not be empty") from None
