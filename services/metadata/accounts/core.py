"""`AccountsCore`: the account use cases behind AccountService (transport-agnostic).

Errors: NAME_INVALID (bad account name or pattern), DENIED (name taken, unknown action, password
too long), NAME_UNKNOWN (no such account), UNAUTHORIZED (authentication failed: one answer for a
wrong secret, an unknown name, a disabled account and an expired robot), TOOMANYREQUESTS (too
many password checks waiting; see passwords.py).

Credential generations: a password change, a robot secret rotation, `revoke_tokens`, a disable and
a delete bump the account's generation (store.py), and tokens carry the generation they were
issued for, so every earlier token stops working.

Where accounts come from (`origin`):
- "local": users and robots made with `lading user add` / `robot create`; bcrypt.
- "ldap": a name that is not a local account is checked against the directory when one is
  configured (directory.py); the first successful bind creates the account row (its immutable id
  and generation serve tokens and the revocation feed as for any account), and every bind records
  the groups the directory reported. A local account of the same name wins: its password is
  checked, never the directory's. The directory's groups are trusted for `auth.ldap.cache_seconds`;
  after that, sessions and refresh tokens (calls naming the account id) are checked again with the
  service account, and refused without one, so a user removed from the directory or a group
  loses what it gave within that time.
- "oidc": created at the first console sign-in through the OIDC provider (oidc.py), with the
  groups its ID token listed; its password is the CLI secret made in the console (bcrypt, with
  an expiry).
Groups become grants and admin through `group_mappings` (lading group map).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository
from services.metadata.accounts.directory import DirectoryBusy, DirectoryUnavailable, LdapDirectory
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
from services.metadata.accounts.store import (
    ADMIN_ACTION,
    ADMIN_PATTERN,
    LDAP,
    LOCAL,
    OIDC,
    AccountExists,
    AccountStore,
    GroupMapping,
    StoredAccount,
    normalize_group,
)

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


def _mapping_key(provider: str, group: str) -> tuple[str, str]:
    if provider not in (LDAP, OIDC):
        raise RegistryError(ErrorKind.DENIED, f"unknown provider {provider!r}: use ldap or oidc", {"provider": provider})
    normalized = normalize_group(provider, group.strip())
    if not normalized or len(normalized) > 512:
        raise RegistryError(ErrorKind.DENIED, "name the group (at most 512 characters)", {"group": group})
    return provider, normalized


def _valid_repository(name: str) -> bool:
    try:
        validate_repository(name)
    except RegistryError:
        return False
    return True


def _busy() -> RegistryError:
    return RegistryError(ErrorKind.TOOMANYREQUESTS, "too many logins are being checked at the moment; retry in a few seconds")


class NeedsPrimaryRegion(Exception):  # noqa: N818 - a signal, not an error the caller sees
    """Raised in a replica region (`AccountsCore.read_only`) by a login that must write (a
    directory user's first login creates the account; stale directory groups are stored): the
    metadata plane passes the call on to the primary region (services/metadata/regions.py)."""


class AccountsCore:
    def __init__(self, store: AccountStore, passwords: Passwords, *, anonymous_pull: Sequence[str],
                 directory: LdapDirectory | None = None) -> None:
        self._store = store
        self._passwords = passwords
        self._anonymous = anonymous_grants([validate_pattern(p) for p in anonymous_pull])
        self.directory = directory
        # A replica region's metadata plane reads a read-only standby (NeedsPrimaryRegion).
        self.read_only = False

    @property
    def store(self) -> AccountStore:
        return self._store

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
        account = await self._require(name)
        if account.origin != LOCAL:
            raise RegistryError(ErrorKind.DENIED, f"{name!r} is an {account.origin.upper()} account: its password "
                                "is the directory's or provider's, not Lading's", {"account": name})
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
        """The account `name` when `secret` is its password or robot secret (or, for directory
        accounts, the directory accepts it; for OIDC accounts, their CLI secret); UNAUTHORIZED
        otherwise, UNAVAILABLE when the directory cannot answer.

        bcrypt runs in every case (unknown name, disabled account, expired robot) so the failure
        takes as long. `verified_recently` (the gateway's word) picks the bcrypt (or directory)
        lane; addresses take turns in the normal one.
        """
        account = await self._store.get(name) if name else None
        if self.directory is not None and name and not name.startswith(ROBOT_PREFIX) and (
                account is None or account.origin == LDAP):
            return await self._authenticate_directory(name, secret, account, verified_recently, client_address)
        now = datetime.now(UTC)
        hashed = account.password_hash if account is not None and account.password_hash else None
        try:
            matched = await self._passwords.check(secret, hashed, priority=verified_recently, source=client_address)
        except PasswordChecksBusy:
            raise _busy() from None
        if account is None or not matched or not account.active(now) or account.origin == LDAP:
            raise _failed()
        if account.origin == OIDC and (account.secret_expires_at is None or account.secret_expires_at <= now):
            raise _failed()
        return account

    async def _authenticate_directory(self, name: str, secret: str, account: StoredAccount | None,
                                      priority: bool, source: str) -> StoredAccount:
        assert self.directory is not None
        try:
            user = await self.directory.check(name, secret, priority=priority, source=source)
        except DirectoryUnavailable as exc:
            raise RegistryError(ErrorKind.UNAVAILABLE, str(exc)) from None
        except DirectoryBusy:
            raise _busy() from None
        if user is None:
            raise _failed()
        needs_write = account is None or user.fresh or \
            not account.groups_fresh(datetime.now(UTC), self.directory.cache_seconds)
        if needs_write and self.read_only:
            raise NeedsPrimaryRegion(name)
        if account is None:
            try:
                account = await self._store.create(
                    name=name, kind="user", password_hash="", is_admin=False, description="LDAP directory account",
                    expires_at=None, origin=LDAP, groups=user.groups, external_id=user.dn)
                log.info("created the directory account %r (%s)", name, user.dn)
            except AccountExists:  # another replica created it at the same moment
                account = await self._require(name)
                account = await self._store.set_groups(account, user.groups)
        elif user.fresh or not account.groups_fresh(datetime.now(UTC), self.directory.cache_seconds):
            account = await self._store.set_groups(account, user.groups)
        if not account.active(datetime.now(UTC)):
            raise _failed()
        return account

    async def current(self, account: StoredAccount, *, strict: bool) -> StoredAccount | None:
        """The account with groups the directory reported within `auth.ldap.cache_seconds`:
        as it is when they are, else checked again with the service account (None when the
        directory no longer has the user). `strict` (sessions, refresh tokens: no password came
        with the call): without a service account a stale directory account is None; otherwise
        (the gateway checked the password a moment ago) its groups stand. Raises UNAVAILABLE
        when the directory must be asked and cannot answer."""
        if account.origin != LDAP or self.directory is None:
            return account
        if account.groups_fresh(datetime.now(UTC), self.directory.cache_seconds):
            return account
        if not self.directory.can_lookup:
            return None if strict else account
        try:
            user = await self.directory.lookup(account.name)
        except DirectoryUnavailable as exc:
            raise RegistryError(ErrorKind.UNAVAILABLE, str(exc)) from None
        if user is None:
            log.info("directory account %r is gone from the directory: its tokens and sessions end", account.name)
            await self._store.gone_from_directory(account)
            return None
        return await self._store.set_groups(account, user.groups)

    async def subject(self, account: StoredAccount | None) -> Subject:
        """What `account` may do (None: anonymous): its grants, the anonymous ones, and what its
        directory or provider groups are mapped to."""
        if account is None:
            return Subject(is_admin=False, grants=self._anonymous)
        own = await self._store.grants_of(account.id)
        merged = dict(self._anonymous)
        for pattern, actions in own.items():
            merged[pattern] = normalize_actions([*merged.get(pattern, ()), *actions])
        is_admin = account.is_admin
        if account.origin != LOCAL and account.groups:
            for mapping in await self._store.mappings(account.origin, account.groups):
                if mapping.admin:
                    is_admin = True
                else:
                    merged[mapping.pattern] = normalize_actions([*merged.get(mapping.pattern, ()), *mapping.actions])
        return Subject(is_admin=is_admin, grants=merged)

    async def authorize(self, name: str, scopes: Sequence[Scope], *, account_id: str = "",
                        generation: int = 0) -> tuple[list[Scope], bool]:
        """(granted scopes in request order, whether `name` is a valid account). Empty `name` is
        anonymous; an unknown, disabled or expired account gets anonymous rights and `False`.
        With `account_id`, the account must also still have that immutable id and credential
        `generation` (a refresh token's), else it is not valid either; a directory account's
        groups are then checked again once they are older than the directory cache time."""
        subject = await self.subject(None)
        valid = not name
        if name:
            account = await self._store.get(name)
            if account is not None and account_id and (
                account.uid != account_id or account.credential_generation != generation
            ):
                account = None
            if account is not None and account.active(datetime.now(UTC)):
                account = await self.current(account, strict=bool(account_id))
                if account is not None:
                    valid = True
                    subject = await self.subject(account)
        return intersect(subject, scopes, valid_name=_valid_repository), valid

    # -- group mappings --------------------------------------------------------------------------

    async def map_group(self, provider: str, group: str, pattern: str, actions: Sequence[str], *,
                        admin: bool = False) -> GroupMapping:
        """Adds `actions` on `pattern` for the group (or, with `admin`, admin rights); returns the
        group's mapping on that pattern afterwards."""
        provider, group = _mapping_key(provider, group)
        if admin:
            mapping = GroupMapping(provider, group, ADMIN_PATTERN, (ADMIN_ACTION,))
            await self._store.set_mapping(mapping)
            return mapping
        validate_pattern(pattern)
        wanted = normalize_actions(actions)
        if not wanted:
            raise RegistryError(ErrorKind.DENIED, "name at least one action: pull, push, delete (or --admin)")
        current = next((m.actions for m in await self._store.mappings(provider, (group,)) if m.pattern == pattern), ())
        mapping = GroupMapping(provider, group, pattern, normalize_actions([*current, *wanted]))
        await self._store.set_mapping(mapping)
        return mapping

    async def unmap_group(self, provider: str, group: str, pattern: str, actions: Sequence[str], *,
                          admin: bool = False) -> bool:
        """Removes `actions` (all when empty) on exactly `pattern`, or the admin mapping; False
        when there was nothing to remove."""
        provider, group = _mapping_key(provider, group)
        key = ADMIN_PATTERN if admin else pattern
        current = next((m for m in await self._store.mappings(provider, (group,)) if m.pattern == key), None)
        if current is None:
            return False
        removed = set(current.actions) if admin or not actions else set(normalize_actions(actions))
        await self._store.set_mapping(GroupMapping(provider, group, key,
                                                   tuple(a for a in current.actions if a not in removed)))
        return True

    async def list_mappings(self, provider: str = "") -> list[GroupMapping]:
        if provider:
            provider, _ = _mapping_key(provider, "x")
        return await self._store.mappings(provider or None)

    # -- OIDC accounts --------------------------------------------------------------------------

    async def oidc_account(self, *, username: str, external_id: str, groups: Sequence[str]) -> StoredAccount:
        """The OIDC account for the provider's user (created at the first sign-in), with the
        groups its token listed. DENIED when the name belongs to another account: a local or
        directory account, or an OIDC account of another provider user."""
        if not _USER_NAME.fullmatch(username):
            raise RegistryError(ErrorKind.DENIED, f"the provider's user name {username!r} cannot be a Lading account "
                                "name (letters, digits, '.', '_', '@', '-'); set auth.oidc.username_claim")
        normalized = tuple(sorted({normalize_group(OIDC, g) for g in groups}))
        account = await self._store.get(username)
        if account is None:
            try:
                account = await self._store.create(
                    name=username, kind="user", password_hash="", is_admin=False, description="OIDC account",
                    expires_at=None, origin=OIDC, groups=normalized, external_id=external_id)
                log.info("created the OIDC account %r (%s)", username, external_id)
                return account
            except AccountExists:
                account = await self._require(username)
        if account.origin != OIDC or account.external_id != external_id:
            raise RegistryError(ErrorKind.DENIED, f"an account named {username!r} exists already and belongs to "
                                "someone else; ask an administrator", {"account": username})
        return await self._store.set_groups(account, normalized)

    async def create_cli_secret(self, account: StoredAccount, *, expires_at: datetime) -> tuple[StoredAccount, str]:
        """A new CLI secret for an OIDC account (returned once); the old one and every token
        issued with it stop working. DENIED for other accounts."""
        if account.origin != OIDC:
            raise RegistryError(ErrorKind.DENIED, "only single sign-on (OIDC) accounts use CLI secrets; "
                                "use your password (or a robot account)")
        secret = new_robot_secret()
        updated = await self._store.set_cli_secret(account, await self._passwords.hash(secret), expires_at)
        if updated is None:
            raise _unknown(account.name)
        return updated, secret

    async def revoke_cli_secret(self, account: StoredAccount) -> StoredAccount:
        if account.origin != OIDC:
            raise RegistryError(ErrorKind.DENIED, "only single sign-on (OIDC) accounts have CLI secrets")
        updated = await self._store.set_cli_secret(account, "", None)
        if updated is None:
            raise _unknown(account.name)
        return updated

    def close(self) -> None:
        self._passwords.close()
        if self.directory is not None:
            self.directory.close()

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
