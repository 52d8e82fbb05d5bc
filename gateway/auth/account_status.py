"""`AccountStatus`: is a token or a remembered check of an account still good?

While the revocation feed is live (gateway/auth/change_feed.py) the answer comes from the
revocation set alone: no call at all. While it is not (fail safe), the account's current state is
asked from the metadata plane (AccountService.GetCredentialStates), shared by concurrent requests
and remembered at most `revocation_feed.degraded_check_seconds`; if the metadata plane cannot
answer either, the request fails with 503 UNAVAILABLE rather than trusting a set that may be stale.
Tokens without an account id (issued by an older version) are refused while the feed is down.
"""

from __future__ import annotations

import asyncio
import time

from gateway.auth.accounts import AccountClient, CredentialState
from gateway.auth.change_feed import RevocationFeed
from gateway.auth.revocations import RevocationSet
from services.common.settings import RevocationFeedSettings

# Bound on remembered answers of the fail-safe path.
_MAX_REMEMBERED = 4096


class AccountStatus:
    def __init__(self, revocations: RevocationSet, feed: RevocationFeed, accounts: AccountClient,
                 settings: RevocationFeedSettings) -> None:
        self._revocations = revocations
        self._feed = feed
        self._accounts = accounts
        self._settings = settings
        self._asked: dict[str, tuple[float, CredentialState | None]] = {}
        self._pending: dict[str, asyncio.Future[CredentialState | None]] = {}

    @property
    def live(self) -> bool:
        return self._feed.live

    async def current(self, account_id: str, generation: int) -> bool:
        """True when credentials of (account_id, generation) still count. Raises UNAVAILABLE when
        the feed is down and the metadata plane does not answer."""
        if self._revocations.refuses(account_id, generation):
            return False
        if self._feed.live:
            return True
        state = await self._state(account_id)
        return state is not None and state.active and state.generation <= generation

    def current_unversioned(self, name: str, issued_at: int) -> bool:
        """For a token of ours without an account id: True when `name` did not change since."""
        return self._feed.live and not self._revocations.refuses_unversioned(name, issued_at)

    async def _state(self, account_id: str) -> CredentialState | None:
        now = time.monotonic()
        asked = self._asked.get(account_id)
        if asked is not None and now - asked[0] <= self._settings.degraded_check_seconds:
            return asked[1]
        pending = self._pending.get(account_id)
        if pending is None:
            pending = self._pending[account_id] = asyncio.ensure_future(self._ask(account_id))
        # shield: a request cancelled while waiting must not cancel the others' answer.
        return await asyncio.shield(pending)

    async def _ask(self, account_id: str) -> CredentialState | None:
        try:
            started = time.monotonic()
            state = (await self._accounts.credential_states([account_id])).get(account_id)
            if len(self._asked) >= _MAX_REMEMBERED:
                self._asked.clear()
            # Remembered from when the question left: the answer is at least that old.
            self._asked[account_id] = (started, state)
            return state
        finally:
            self._pending.pop(account_id, None)
