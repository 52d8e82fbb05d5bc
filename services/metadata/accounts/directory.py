"""LDAP / Active Directory accounts: a bind checks the password, the entry or a search gives the groups.

Two ways to find a user (`auth.ldap`):
- direct bind: the user's DN is `user_dn_template` with `{username}` filled in (escaped as an RDN
  value), and the user binds as it;
- search-then-bind: the service account (`bind_dn`, or an anonymous bind when only
  `user_base_dn` is set) searches `user_base_dn` for `user_filter` (the name escaped as a filter
  value); exactly one entry must match; the user then binds as that entry's DN.
Groups: the values of `member_of_attribute` on the user's entry (read with the user's own bind, or
by the search), or with `group_search` the DNs of the entries under `group_base_dn` that match
`group_filter` with `{user_dn}` filled in. Connections use LDAPS (`ldaps://`) or StartTLS with
`ca_file`, and every step has the `timeout_seconds` deadline.

Answers: a `DirectoryUser` (the password is right); None (unknown name, wrong password, an empty
password, which LDAP would otherwise take as an anonymous bind, or a name Lading accounts cannot
have); `DirectoryUnavailable` (the directory cannot be reached, refuses TLS, or the service account
cannot bind): the caller answers 503 with its message, never "wrong password".

Costs: ldap3 is synchronous, so every conversation runs on a thread of its own pool
(`max_concurrent_checks`), behind the same two lanes as bcrypt (passwords.PasswordSlots):
credentials a gateway verified before go first, and client addresses take turns in the other lane.
Successful checks are remembered for `cache_seconds` (keyed by an HMAC of name and password under
a per-process key, so the cache holds no password): logins within it cost no round trip.
`lookup` (the service account reads a user's groups without their password) lets sessions and
refresh tokens be checked again after that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.settings import LdapSettings
from services.metadata.accounts.passwords import PasswordChecksBusy, PasswordSlots
from services.metadata.accounts.store import LDAP, normalize_group

log = logging.getLogger("lading.metadata.accounts.ldap")

T = TypeVar("T")
# LDAP result code of a bind with a wrong password or an unknown DN.
_INVALID_CREDENTIALS = 49
_MAX_REMEMBERED = 4096
# Names Lading accounts may have (core._USER_NAME): others never reach the directory.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class DirectoryUnavailable(Exception):
    """The directory cannot answer (down, TLS refused, service account refused); `str()` says
    what and what to do."""


class DirectoryBusy(Exception):
    """Too many directory checks are waiting."""


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    dn: str
    # Normalized group DNs (store.normalize_group), sorted.
    groups: tuple[str, ...]
    # False when the answer came from the cache (the directory was not asked this time).
    fresh: bool = True


def _groups(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)):
        values = [values]
    found = {normalize_group(LDAP, v.decode() if isinstance(v, bytes) else str(v)) for v in values}
    return tuple(sorted(g for g in found if g))


class LdapDirectory:
    """See the module docstring. Build once per process; `close()` stops its threads."""

    def __init__(self, settings: LdapSettings, *, max_waiting: int = 32) -> None:
        import ldap3  # only processes with a directory configured load the LDAP client

        self._ldap3 = ldap3
        self._settings = settings
        self._service_password = settings.bind_password.get_secret_value()
        if not self._service_password and settings.bind_password_file is not None:
            self._service_password = settings.bind_password_file.read_text().splitlines()[0].strip()
        self._search_mode = bool(settings.user_base_dn)
        if not self._search_mode and "{username}" not in settings.user_dn_template:
            raise ValueError("auth.ldap needs user_dn_template (with {username}) or user_base_dn (search-then-bind)")
        if settings.group_search and not settings.group_base_dn:
            raise ValueError("auth.ldap.group_search needs auth.ldap.group_base_dn")
        workers = settings.max_concurrent_checks
        self.slots = PasswordSlots(workers, reserved=1 if workers > 1 else 0, max_waiting=max_waiting)
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ldap")
        self._cache_key = secrets.token_bytes(32)
        self._remembered: dict[bytes, tuple[float, DirectoryUser]] = {}
        tls = None
        if settings.url.startswith("ldaps://") or settings.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                            ca_certs_file=str(settings.ca_file) if settings.ca_file else None)
        # ldap3 packs its receive timeout as whole seconds (SO_RCVTIMEO).
        self._timeout = max(1, math.ceil(settings.timeout_seconds))
        self._server = ldap3.Server(settings.url, use_ssl=settings.url.startswith("ldaps://"), tls=tls,
                                    connect_timeout=self._timeout, get_info=ldap3.NONE)

    @property
    def can_lookup(self) -> bool:
        """A user's groups can be read without their password (a service account, or anonymous
        search-then-bind)."""
        return bool(self._settings.bind_dn) or self._search_mode

    @property
    def cache_seconds(self) -> float:
        return self._settings.cache_seconds

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- public, async ---------------------------------------------------------------------------

    async def check(self, username: str, password: str, *, priority: bool = False,
                    source: str = "") -> DirectoryUser | None:
        """The user when `password` is theirs, None otherwise (see the module docstring). Raises
        DirectoryUnavailable, DirectoryBusy."""
        if not password or not _USER_NAME.fullmatch(username):
            return None
        key = hmac.new(self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        remembered = self._remembered.get(key)
        if remembered is not None and time.monotonic() - remembered[0] <= self._settings.cache_seconds:
            user = remembered[1]
            return DirectoryUser(user.dn, user.groups, fresh=False)
        user = await self._run(priority, source, self._check, username, password)
        if user is not None and self._settings.cache_seconds > 0:
            if len(self._remembered) >= _MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[key] = (time.monotonic(), user)
        return user

    async def lookup(self, username: str) -> DirectoryUser | None:
        """The user's entry and groups as the service account sees them now; None when the
        directory no longer has the user. Raises DirectoryUnavailable (also without a service
        account: see `can_lookup`)."""
        if not self.can_lookup:
            raise DirectoryUnavailable("auth.ldap has no service account (bind_dn) to check users again")
        if not _USER_NAME.fullmatch(username):
            return None
        return await self._run(True, "", self._lookup, username)

    # -- on the directory's threads ---------------------------------------------------------------

    async def _run(self, priority: bool, source: str, fn: Callable[..., T], *args: object) -> T:
        try:
            async with self.slots.slot(priority=priority, source=source):
                return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        except PasswordChecksBusy:
            raise DirectoryBusy from None

    def _connection(self, user: str | None, password: str | None) -> Any:
        ldap3 = self._ldap3
        return ldap3.Connection(self._server, user=user, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                receive_timeout=self._timeout, read_only=True,
                                raise_exceptions=False, authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS)

    def _open_and_bind(self, connection: Any) -> bool:
        """Opens (StartTLS when asked) and binds; False for invalid credentials."""
        try:
            connection.open()
            if self._settings.start_tls and not self._settings.url.startswith("ldaps://"):
                if not connection.start_tls():
                    raise DirectoryUnavailable(self._describe("StartTLS was refused", connection.result))
            if connection.bind():
                return True
        except self._ldap3.core.exceptions.LDAPException as error:
            raise DirectoryUnavailable(self._unreachable(error)) from None
        if connection.result and connection.result.get("result") == _INVALID_CREDENTIALS:
            return False
        raise DirectoryUnavailable(self._describe("the bind failed", connection.result))

    def _service(self) -> Any:
        """A connection bound as the service account (anonymous without `bind_dn`)."""
        settings = self._settings
        connection = self._connection(settings.bind_dn or None, self._service_password or None)
        if not self._open_and_bind(connection):
            connection.unbind()
            raise DirectoryUnavailable(
                f"the LDAP service account {settings.bind_dn!r} cannot bind (invalid credentials): fix "
                "auth.ldap.bind_dn and auth.ldap.bind_password (or bind_password_file)")
        return connection

    def _search(self, connection: Any, base: str, search_filter: str, attributes: list[str],
                *, scope: str = "SUBTREE") -> list[Any]:
        ldap3 = self._ldap3
        try:
            ok = connection.search(base, search_filter, search_scope=getattr(ldap3, scope),
                                   attributes=attributes, size_limit=0 if scope == "BASE" else 2)
        except ldap3.core.exceptions.LDAPException as error:
            raise DirectoryUnavailable(self._unreachable(error)) from None
        result = connection.result or {}
        # 0 success, 4 size limit exceeded (more than one user matched), 32 no such object.
        if not ok and result.get("result") not in (0, 4, 32):
            raise DirectoryUnavailable(self._describe(f"the search under {base!r} failed", result))
        return [entry for entry in connection.response or [] if entry.get("type") == "searchResEntry"]

    def _find_user(self, connection: Any, username: str) -> tuple[str, Any] | None:
        """(DN, the entry's attributes) of the one entry matching the user filter."""
        from ldap3.utils.conv import escape_filter_chars

        settings = self._settings
        search_filter = settings.user_filter.replace("{username}", escape_filter_chars(username))
        entries = self._search(connection, settings.user_base_dn, search_filter, [settings.member_of_attribute])
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("LDAP: %d entries match %s under %s; refusing the ambiguous name %r",
                            len(entries), search_filter, settings.user_base_dn, username)
            return None
        return entries[0]["dn"], entries[0].get("attributes", {})

    def _template_dn(self, username: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return self._settings.user_dn_template.replace("{username}", escape_rdn(username))

    def _groups_of(self, connection: Any, dn: str, attributes: Any | None) -> tuple[str, ...]:
        from ldap3.utils.conv import escape_filter_chars

        settings = self._settings
        if settings.group_search:
            search_filter = settings.group_filter.replace("{user_dn}", escape_filter_chars(dn))
            ldap3 = self._ldap3
            try:
                connection.search(settings.group_base_dn, search_filter, search_scope=ldap3.SUBTREE, attributes=[])
            except ldap3.core.exceptions.LDAPException as error:
                raise DirectoryUnavailable(self._unreachable(error)) from None
            return _groups([e["dn"] for e in connection.response or [] if e.get("type") == "searchResEntry"])
        if attributes is None:
            entries = self._search(connection, dn, "(objectClass=*)", [settings.member_of_attribute], scope="BASE")
            attributes = entries[0].get("attributes", {}) if entries else {}
        return _groups(attributes.get(settings.member_of_attribute))

    def _check(self, username: str, password: str) -> DirectoryUser | None:
        service = None
        try:
            attributes = None
            if self._search_mode:
                service = self._service()
                found = self._find_user(service, username)
                if found is None:
                    return None
                dn, attributes = found
            else:
                dn = self._template_dn(username)
            user = self._connection(dn, password)
            try:
                if not self._open_and_bind(user):
                    return None
                groups = self._groups_of(service if (service and self._settings.group_search) else user, dn, attributes)
            finally:
                user.unbind()
            return DirectoryUser(dn, groups)
        finally:
            if service is not None:
                service.unbind()

    def _lookup(self, username: str) -> DirectoryUser | None:
        service = self._service()
        try:
            if self._search_mode:
                found = self._find_user(service, username)
                if found is None:
                    return None
                dn, attributes = found
            else:
                dn, attributes = self._template_dn(username), None
                if not self._search(service, dn, "(objectClass=*)", [self._settings.member_of_attribute],
                                    scope="BASE"):
                    return None
            return DirectoryUser(dn, self._groups_of(service, dn, attributes))
        finally:
            service.unbind()

    # -- messages -----------------------------------------------------------------------------------

    def _unreachable(self, error: BaseException) -> str:
        return (f"the LDAP directory at {self._settings.url} cannot be reached ({type(error).__name__}: {error}); "
                "directory accounts cannot sign in until it answers again (local accounts and robots still can)")

    def _describe(self, what: str, result: Any) -> str:
        result = result or {}
        return (f"the LDAP directory at {self._settings.url}: {what} ({result.get('description', '')} "
                f"{result.get('message', '')}".rstrip() + "); check auth.ldap's settings")
