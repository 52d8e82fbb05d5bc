"""Builds the AccountService for the metadata process (called from services.metadata.main)."""

from __future__ import annotations

from services.common.settings import AuthSettings
from services.metadata.accounts.core import AccountsCore
from services.metadata.accounts.directory import LdapDirectory
from services.metadata.accounts.passwords import Passwords
from services.metadata.accounts.servicer import AccountServicer
from services.metadata.accounts.store import AccountStore
from services.metadata.changes.log import ChangeLog
from services.metadata.store.engine import Database


def build_account_servicer(database: Database, settings: AuthSettings,
                           changes: ChangeLog | None = None, *, read_only: bool = False) -> AccountServicer:
    """`changes`: the process's change feed (account changes are appended to it); a private one
    when not given (tests of the service alone). `read_only`: a replica region's (logins that
    must write raise NeedsPrimaryRegion, passed on to the primary region)."""
    directory = None
    if settings.ldap.url:
        directory = LdapDirectory(settings.ldap, max_waiting=settings.password_check_queue)
    core = AccountsCore(
        AccountStore(database, changes),
        Passwords(rounds=settings.bcrypt_rounds, workers=settings.password_check_workers,
                  max_waiting=settings.password_check_queue),
        anonymous_pull=settings.anonymous_pull,
        directory=directory,
    )
    core.read_only = read_only
    return AccountServicer(core)


def bootstrap_password(settings: AuthSettings) -> str:
    """The bootstrap admin's password: the setting, else the first line of the file ("" if neither)."""
    if settings.bootstrap_admin_password:
        return settings.bootstrap_admin_password
    if settings.bootstrap_admin_password_file is not None:
        return settings.bootstrap_admin_password_file.read_text().splitlines()[0].strip()
    return ""


async def bootstrap_admin(servicer: AccountServicer, settings: AuthSettings) -> None:
    """Creates `settings.bootstrap_admin` (an admin) when it is set and absent.

    Raises ValueError when the name is set but no password is (a silent skip would leave a
    registry nobody can administer).
    """
    if not settings.bootstrap_admin:
        return
    password = bootstrap_password(settings)
    if not password:
        raise ValueError(
            "auth.bootstrap_admin is set but no password: set LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD "
            "or LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD_FILE"
        )
    await servicer.core.ensure_admin(settings.bootstrap_admin, password)
