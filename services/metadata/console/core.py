"""`ConsoleCore`: who a console session is, and what it may see and do.

An `Actor` is resolved for every call from the session secret the gateway passes on: the session
must be live (sessions.py), its account must still exist, be active, have the credential
generation the session was opened under, and (directory accounts) groups the directory reported
within `auth.ldap.cache_seconds`, checked again with the service account after that
(AccountsCore.current). Anything else is UNAUTHORIZED ("sign in again"). With auth off
(`auth.mode = "none"`) there are no accounts: every caller is the open actor, who may pull, push
and delete everywhere (as on the registry API) but administer nothing.

Permissions are the registry API's: `AccountsCore.subject` (own grants, anonymous pulls, mapped
groups; admins everything). Listings show only what the actor may pull; a repository it may not
pull is NAME_UNKNOWN, as if it did not exist. Admin calls need an admin (DENIED).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag
from services.metadata.accounts.core import AccountsCore
from services.metadata.accounts.policy import REPOSITORY_ACTIONS, Subject
from services.metadata.accounts.store import StoredAccount
from services.metadata.console.reads import ConsoleReads
from services.metadata.console.sessions import SessionStore, StoredSession
from services.metadata.policies.audit import note_actor

log = logging.getLogger("lading.metadata.console")

OPEN_SUBJECT = Subject(is_admin=False, grants={"*": REPOSITORY_ACTIONS})


@dataclass(frozen=True, slots=True)
class Actor:
    # None with auth off.
    account: StoredAccount | None
    subject: Subject
    session: StoredSession | None = None

    @property
    def name(self) -> str:
        return self.account.name if self.account is not None else ""

    @property
    def is_admin(self) -> bool:
        return self.subject.is_admin

    def pull_patterns(self) -> list[str] | None:
        """Patterns of the repositories the actor may pull; None: every repository."""
        if self.subject.is_admin:
            return None
        patterns = sorted(p for p, actions in self.subject.grants.items() if "pull" in actions)
        return None if "*" in patterns else patterns

    def may(self, repository: str, action: str) -> bool:
        return action in self.subject.repository_actions(repository)


def unauthorized(message: str = "your console session has ended; sign in again") -> RegistryError:
    return RegistryError(ErrorKind.UNAUTHORIZED, message)


class ConsoleCore:
    def __init__(self, accounts: AccountsCore, sessions: SessionStore, reads: ConsoleReads, *,
                 auth_enabled: bool) -> None:
        self.accounts = accounts
        self.sessions = sessions
        self.reads = reads
        self.auth_enabled = auth_enabled

    # -- sessions ---------------------------------------------------------------------------------

    async def open_session(self, account: StoredAccount, client_address: str) -> tuple[str, Actor]:
        secret, session = await self.sessions.create(account.uid, account.credential_generation, client_address)
        return secret, Actor(account, await self.accounts.subject(account), session)

    async def create_session(self, account_id: str, generation: int, client_address: str) -> tuple[str, Actor]:
        """A session for an account the gateway just authenticated (see the proto)."""
        if not self.auth_enabled:
            raise RegistryError(ErrorKind.UNSUPPORTED, "auth is off: the console needs no sign-in")
        found = await self.accounts.credential_states([account_id])
        account = found[0] if found else None
        if account is None or account.credential_generation != generation or not account.active(datetime.now(UTC)):
            raise unauthorized("invalid username or password")
        return await self.open_session(account, client_address)

    async def actor(self, secret: str) -> Actor:
        """The session's actor (see the module docstring). Raises UNAUTHORIZED."""
        if not self.auth_enabled:
            return Actor(None, OPEN_SUBJECT)
        session = await self.sessions.get(secret)
        if session is None:
            raise unauthorized()
        found = await self.accounts.credential_states([session.account_uid])
        account = found[0] if found else None
        if account is not None and account.active(datetime.now(UTC)) \
                and account.credential_generation == session.credential_generation:
            account = await self.accounts.current(account, strict=True)
        else:
            account = None
        if account is None or account.credential_generation != session.credential_generation:
            await self.sessions.end(secret)
            raise unauthorized()
        actor = Actor(account, await self.accounts.subject(account), session)
        note_actor(actor.name)  # the audit log's actor for this call (policies/audit.py)
        return actor

    async def admin(self, secret: str) -> Actor:
        actor = await self.actor(secret)
        if actor.account is None:
            raise RegistryError(ErrorKind.DENIED, "auth is off: administer the registry with the lading command")
        if not actor.is_admin:
            raise RegistryError(ErrorKind.DENIED, f"{actor.name} is not an administrator")
        return actor

    async def end_session(self, secret: str) -> None:
        if secret:
            await self.sessions.end(secret)

    async def create_cli_secret(self, secret: str, lifetime_seconds: int, max_seconds: int
                                ) -> tuple[str, datetime, Actor]:
        actor = await self.actor(secret)
        if actor.account is None:
            raise RegistryError(ErrorKind.DENIED, "auth is off: no account to make a CLI secret for")
        lifetime = min(lifetime_seconds or max_seconds, max_seconds)
        if lifetime < 60:
            raise RegistryError(ErrorKind.DENIED, "a CLI secret must live at least a minute")
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        account, cli_secret = await self.accounts.create_cli_secret(actor.account, expires_at=expires)
        return cli_secret, expires, await self._continue(secret, actor, account)

    async def revoke_cli_secret(self, secret: str) -> Actor:
        actor = await self.actor(secret)
        if actor.account is None:
            raise RegistryError(ErrorKind.DENIED, "auth is off: no account")
        account = await self.accounts.revoke_cli_secret(actor.account)
        return await self._continue(secret, actor, account)

    async def _continue(self, secret: str, actor: Actor, account: StoredAccount) -> Actor:
        """This session survives the generation bump it caused (other sessions of the account end)."""
        await self.sessions.set_generation(secret, account.credential_generation)
        session = replace(actor.session, credential_generation=account.credential_generation) \
            if actor.session is not None else None
        return Actor(account, actor.subject, session)

    # -- what the actor may see ------------------------------------------------------------------

    async def pullable_repository(self, actor: Actor, repository: str) -> int:
        """The repository's id; NAME_UNKNOWN when it does not exist or the actor may not pull it."""
        validate_repository(repository)
        repository_id = await self.reads.repository_id(repository) if actor.may(repository, "pull") else None
        if repository_id is None:
            raise RegistryError(ErrorKind.NAME_UNKNOWN, f"no repository {repository!r} that you may pull",
                                {"name": repository})
        return repository_id

    @staticmethod
    def check_delete(actor: Actor, repository: str, tag: str) -> None:
        validate_tag(tag)
        if not actor.may(repository, "delete"):
            raise RegistryError(ErrorKind.DENIED, f"{actor.name or 'you'} may not delete in {repository}",
                                {"name": repository, "action": "delete"})
