"""`LoginThrottle`: exponential backoff of failed password checks, and a bound on checks in flight.

Every password check (`/token` with Basic credentials or the password grant, and Basic-mode
requests whose credentials are not in the short cache) passes `admit(address, account)` first.
Failures are counted under three keys, each with its own free budget (`auth.throttle`):
- (client address, account): a guesser at one account from one place (5 free failures);
- account, from anywhere: a guesser spread over many addresses (20);
- client address, any account: one place spraying many accounts (50).
Past its free failures a key is blocked for `base_delay_seconds`, doubled with each further
failure up to `max_delay_seconds`; a blocked attempt is refused at once (429 with `Retry-After`)
and costs no bcrypt. A key forgets its failures after `forget_after_seconds` without one. A success
clears the (address, account) key only: the account's and the address's counts stay, so a user
typing the right password cannot reset an attacker's budget for them.

Independently, at most `max_concurrent_per_address` / `max_concurrent_per_account` checks of
not-yet-trusted credentials run at once per address / account: 64 clients behind one address
cannot queue 64 bcrypt runs in front of everyone else.

Fairness: credentials this gateway verified before (`trusted`, gateway/auth/gate.py) skip all of
this and use the metadata plane's reserved bcrypt lane, so a known user keeps getting in while
others guess at the same account from the same address (all clients of a benchmark share
127.0.0.1). What a throttle cannot tell apart, a first login with new credentials from a place
where someone is guessing at the same account, waits out the backoff like the guesser.

IPv6 clients are counted per /64 (one host usually has a whole /64). State is per gateway
process and bounded (`max_tracked_keys`, least recently used first).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.settings import LoginThrottleSettings


class Throttled(Exception):
    """The attempt is refused without a check: `retry_after` seconds, and why (for the log)."""

    def __init__(self, retry_after: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class _KeyState:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    in_flight: int = 0


@dataclass(slots=True)
class Admission:
    """An admitted check: `release()` it when the check is over (success or not)."""

    _states: list[_KeyState] = field(default_factory=list)
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            for state in self._states:
                state.in_flight -= 1


def address_bucket(address: str) -> str:
    """The address throttles count under: IPv4 as is, IPv6 by its /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return address


class LoginThrottle:
    def __init__(self, settings: LoginThrottleSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: OrderedDict[tuple[str, ...], _KeyState] = OrderedDict()

    def _state(self, key: tuple[str, ...], now: float) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
            while len(self._keys) > self._settings.max_tracked_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if state.failures and now - state.last_failure > self._settings.forget_after_seconds:
                state.failures, state.blocked_until = 0, 0.0
        return state

    def _keys_of(self, address: str, account: str) -> list[tuple[tuple[str, ...], int, str]]:
        bucket = address_bucket(address)
        s = self._settings
        return [
            (("pair", bucket, account), s.free_failures_per_address_account,
             "too many failed logins for this account from your address"),
            (("account", account), s.free_failures_per_account, "too many failed logins for this account"),
            (("address", bucket), s.free_failures_per_address, "too many failed logins from your address"),
        ]

    def admit(self, address: str, account: str) -> Admission:
        """Admits one check, or raises Throttled."""
        now = self._clock()
        keys = self._keys_of(address, account)
        states = [self._state(key, now) for key, _, _ in keys]
        for (key, _, message), state in zip(keys, states, strict=True):
            if state.blocked_until > now:
                wait = math.ceil(state.blocked_until - now)
                raise Throttled(wait, f"backoff:{key[0]}", f"{message}; retry in {wait} s")
        pair, per_account, per_address = states
        if per_address.in_flight >= self._settings.max_concurrent_per_address:
            raise Throttled(1, "concurrency:address", "too many logins at once from your address; retry in 1 s")
        if per_account.in_flight >= self._settings.max_concurrent_per_account:
            raise Throttled(1, "concurrency:account", "too many logins at once for this account; retry in 1 s")
        for state in (per_account, per_address):
            state.in_flight += 1
        return Admission([per_account, per_address])

    def failed(self, address: str, account: str) -> None:
        """Counts a wrong password (or unknown account) under every key."""
        now = self._clock()
        for key, free, _ in self._keys_of(address, account):
            state = self._state(key, now)
            state.failures += 1
            state.last_failure = now
            beyond = state.failures - free
            if beyond > 0:
                delay = min(self._settings.max_delay_seconds,
                            self._settings.base_delay_seconds * 2 ** min(beyond - 1, 62))
                state.blocked_until = max(state.blocked_until, now + delay)

    def succeeded(self, address: str, account: str) -> None:
        """A right password from this address: its (address, account) count starts again."""
        self._keys.pop(("pair", address_bucket(address), account), None)
