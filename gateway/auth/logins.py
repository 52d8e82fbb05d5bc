"""`Logins`: Basic credentials → the account, for `/token` and for Basic-mode requests.

In order:
1. the short credential cache (`auth.basic_cache_seconds`, gateway/auth/basic.py): a hit counts
   only while the account's id and generation are still current (gateway/auth/account_status.py);
2. credentials this gateway verified before (within `throttle.trusted_credential_seconds`, and
   still current) are *trusted*: they skip the throttle and ask for the metadata plane's reserved
   bcrypt lane (`verified_recently`), so guesses cannot keep a known user out;
3. other credentials pass the throttle first (gateway/auth/throttle.py): refused with
   `429 TOOMANYREQUESTS` and `Retry-After` while their address or account is backing off, the
   answer held back `throttle.refusal_delay_seconds` (1 s, at most the Retry-After) so that a
   client ignoring Retry-After cannot keep the gateway busy answering it;
4. the metadata plane checks the password (bcrypt). A failure is counted by the throttle.
Identical credentials from one address checked at the same moment share one check (steps 2-4).
Every refused login writes one log line `login refused` with the account, the client address and
the reason (never the secret): `invalid_credentials`, `malformed_credentials`, `backoff:pair`,
`backoff:account`, `backoff:address`, `concurrency:address`, `concurrency:account` or
`checks_saturated` (the metadata plane's queue of password checks is full).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gateway.auth.account_status import AccountStatus
from gateway.auth.accounts import AccountClient, Identity
from gateway.auth.basic import TtlCache, credential_key, parse_basic
from gateway.auth.throttle import LoginThrottle, Throttled, address_bucket
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


class _Saturated(Exception):
    """The metadata plane's queue of password checks is full."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    identity: Identity | None
    reason: str  # why it was refused ("" when not)


class Logins:
    def __init__(self, settings: AuthSettings, accounts: AccountClient, status: AccountStatus,
                 throttle: LoginThrottle | None) -> None:
        self._accounts = accounts
        self._status = status
        self._throttle = throttle
        self._refusal_delay = settings.throttle.refusal_delay_seconds
        self._cache = TtlCache(settings.basic_cache_seconds)
        self._trusted = TtlCache(settings.throttle.trusted_credential_seconds, max_entries=_MAX_TRUSTED)
        # Checks in flight, by (credential, address bucket): the same credentials sent by many
        # requests at once (a client's parallel uploads, a CI fleet sharing a robot) cost one check.
        self._in_flight: dict[tuple[str, str], asyncio.Future[_Outcome]] = {}

    async def _still_current(self, identity: Identity) -> bool:
        if identity.expires_at and identity.expires_at <= time.time():
            return False
        return await self._status.current(identity.account_id, identity.generation)

    async def check(self, header: str, address: str) -> Identity | None:
        """The account for valid Basic credentials, None for invalid ones. Raises 429
        TOOMANYREQUESTS (throttled, or the metadata plane's checks saturated), UNAVAILABLE
        (metadata plane down)."""
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
        flight = (key, address_bucket(address))
        pending = self._in_flight.get(flight)
        if pending is None:
            pending = self._in_flight[flight] = asyncio.ensure_future(self._verify(key, name, secret, address))
            pending.add_done_callback(lambda _done: self._in_flight.pop(flight, None))
        try:
            # shield: a request cancelled while waiting must not cancel the others' answer.
            outcome = await asyncio.shield(pending)
        except Throttled as throttled:
            refused(name, address, throttled.reason)
            # Held back a moment (see throttle.refusal_delay_seconds): costs a sleeping coroutine.
            await asyncio.sleep(min(self._refusal_delay, throttled.retry_after))
            raise too_many(throttled.message, throttled.retry_after) from None
        except _Saturated:
            refused(name, address, "checks_saturated")
            raise too_many("too many logins are being checked at the moment; retry in a few seconds", 1) from None
        if outcome.identity is None:
            refused(name, address, outcome.reason)
        return outcome.identity

    async def _verify(self, key: str, name: str, secret: str, address: str) -> _Outcome:
        """One password check (steps 2-4 of the module docstring). Raises Throttled, _Saturated."""
        trusted = self._trusted.get(key)
        if isinstance(trusted, Identity) and not (trusted.name == name and await self._still_current(trusted)):
            self._trusted.pop(key)
            trusted = None
        admission = None
        if trusted is None and self._throttle is not None:
            admission = self._throttle.admit(address, name)
        try:
            identity = await self._accounts.authenticate(name, secret, client_address=address,
                                                         verified_recently=trusted is not None)
        except RegistryError as error:
            if error.kind is ErrorKind.UNAUTHORIZED:
                if self._throttle is not None and trusted is None:
                    self._throttle.failed(address, name)
                return _Outcome(None, "invalid_credentials")
            if error.kind is ErrorKind.TOOMANYREQUESTS:
                raise _Saturated from None
            raise
        finally:
            if admission is not None:
                admission.release()
        if self._throttle is not None and trusted is None:
            self._throttle.succeeded(address, name)
        ttl = identity.expires_at - time.time() if identity.expires_at else None
        self._cache.put(key, identity, ttl=ttl)
        self._trusted.put(key, identity, ttl=ttl)
        return _Outcome(identity, "")
