"""`Logins`: Basic credentials → the account, for `/token` and for Basic-mode requests.

In order:
1. the short credential cache (`auth.basic_cache_seconds`, gateway/auth/basic.py): a hit counts
   only while the account's id and generation are still current (gateway/auth/account_status.py);
2. credentials this gateway verified before (within `throttle.trusted_credential_seconds`, and
   still current) are *trusted*: they skip the throttle and ask for the metadata plane's reserved
   bcrypt lane (`verified_recently`), so guesses cannot keep a known user out;
3. other credentials pass the throttle first (gateway/auth/throttle.py): refused with
   `429 TOOMANYREQUESTS` and `Retry-After` while their address or account is backing off;
4. the metadata plane checks the password (bcrypt). A failure is counted by the throttle.
Every refused login writes one log line `login refused` with the account, the client address and
the reason (never the secret): `invalid_credentials`, `malformed_credentials`, `backoff:pair`,
`backoff:account`, `backoff:address`, `concurrency:address`, `concurrency:account` or
`checks_saturated` (the metadata plane's queue of password checks is full).
"""

from __future__ import annotations

import logging
import time

from gateway.auth.account_status import AccountStatus
from gateway.auth.accounts import AccountClient, Identity
from gateway.auth.basic import TtlCache, credential_key, parse_basic
from gateway.auth.throttle import LoginThrottle, Throttled
from gateway.errors import HttpRegistryError
from services.common.errors import ErrorKind, RegistryError
from services.common.logs import log_context
from services.common.settings import AuthSettings

log = logging.getLogger("lading.gateway.auth.logins")

# Trusted credentials remembered (keys are SHA-256 digests of the header, as in the cache).
_MAX_TRUSTED = 16384


def too_many(message: str, retry_after: int) -> HttpRegistryError:
    return HttpRegistryError(ErrorKind.TOOMANYREQUESTS, message, {"retry_after_seconds": retry_after},
                             headers={"retry-after": str(max(1, retry_after))})


def refused(account: str, address: str, reason: str) -> None:
    """The one log line of a refused login."""
    with log_context(account=account or None, client_address=address or None, reason=reason):
        log.info("login refused: account=%r address=%s reason=%s", account, address or "-", reason)


class Logins:
    def __init__(self, settings: AuthSettings, accounts: AccountClient, status: AccountStatus,
                 throttle: LoginThrottle | None) -> None:
        self._accounts = accounts
        self._status = status
        self._throttle = throttle
        self._cache = TtlCache(settings.basic_cache_seconds)
        self._trusted = TtlCache(settings.throttle.trusted_credential_seconds, max_entries=_MAX_TRUSTED)

    async def _still_current(self, identity: Identity) -> bool:
        if identity.expires_at and identity.expires_at <= time.time():
            return False
        return await self._status.current(identity.account_id, identity.generation)

    async def check(self, header: str, address: str) -> Identity | None:
        """The account for valid Basic credentials, None for invalid ones. Raises 429
        TOOMANYREQUESTS (throttled), UNAVAILABLE (metadata plane down)."""
        key = credential_key(header)
        cached = self._cache.get(key)
        if isinstance(cached, Identity):
            if await self._still_current(cached):
                return cached
            self._cache.pop(key)
        parsed = parse_basic(header)
        if parsed is None:
            refused("", address, "malformed_credentials")
            return None
        name, secret = parsed
        trusted = self._trusted.get(key)
        if isinstance(trusted, Identity) and not (trusted.name == name and await self._still_current(trusted)):
            self._trusted.pop(key)
            trusted = None
        admission = None
        if trusted is None and self._throttle is not None:
            try:
                admission = self._throttle.admit(address, name)
            except Throttled as throttled:
                refused(name, address, throttled.reason)
                raise too_many(throttled.message, throttled.retry_after) from None
        try:
            identity = await self._accounts.authenticate(name, secret, client_address=address,
                                                         verified_recently=trusted is not None)
        except RegistryError as error:
            if error.kind is ErrorKind.UNAUTHORIZED:
                if self._throttle is not None and trusted is None:
                    self._throttle.failed(address, name)
                refused(name, address, "invalid_credentials")
                return None
            if error.kind is ErrorKind.TOOMANYREQUESTS:
                refused(name, address, "checks_saturated")
                raise too_many(error.message, 1) from None
            raise
        finally:
            if admission is not None:
                admission.release()
        if self._throttle is not None and trusted is None:
            self._throttle.succeeded(address, name)
        ttl = identity.expires_at - time.time() if identity.expires_at else None
        self._cache.put(key, identity, ttl=ttl)
        self._trusted.put(key, identity, ttl=ttl)
        return identity
