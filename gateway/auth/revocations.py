"""The gateway's revocation set: which accounts changed lately, fed by the metadata plane's change
feed (gateway/auth/change_feed.py), so that a token check costs a dictionary lookup.

An entry per account that changed within the feed's retention (at least the longest token
lifetime): its immutable id, newest credential generation, whether it is active (not deleted or
disabled), and when it changed. A token (or a cached Basic check) made for (id, generation) is
refused when its account is inactive or its generation is below the entry's. Accounts without an
entry did not change since any token still alive was issued, so their tokens stand.

Tokens of our accounts issued before tokens carried an id (no `uid` claim) are matched by name:
refused when the account changed after the token's `iat`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lading.metadata.v1 import changes_pb2

# Seconds of clock difference tolerated between the metadata plane (change times) and the
# gateway that issued a token (its `iat`) when matching tokens without an id by name.
_LEGACY_SKEW_SECONDS = 5

# Changes that end the tokens issued before (a grants change or an enable does not).
_CREDENTIAL_REASONS = frozenset({
    changes_pb2.ACCOUNT_CHANGE_REASON_DELETED,
    changes_pb2.ACCOUNT_CHANGE_REASON_DISABLED,
    changes_pb2.ACCOUNT_CHANGE_REASON_TOKENS_REVOKED,
    changes_pb2.ACCOUNT_CHANGE_REASON_PASSWORD_CHANGED,
    changes_pb2.ACCOUNT_CHANGE_REASON_SECRET_ROTATED,
})


@dataclass(slots=True)
class AccountEntry:
    name: str
    generation: int
    active: bool
    changed_at_ms: int


class RevocationSet:
    def __init__(self) -> None:
        self._by_id: dict[str, AccountEntry] = {}
        # name → time (ms) of its newest credential change, for tokens without an id.
        self._by_name: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def reset(self) -> None:
        self._by_id.clear()
        self._by_name.clear()

    def apply(self, change: changes_pb2.AccountChange, changed_at_ms: int) -> None:
        if not change.account_id:
            return  # a change of many accounts' grants (a group mapping): no credentials end
        entry = self._by_id.get(change.account_id)
        if entry is None or change.credential_generation >= entry.generation:
            self._by_id[change.account_id] = AccountEntry(
                change.name, change.credential_generation, change.active, changed_at_ms
            )
        if change.reason in _CREDENTIAL_REASONS:
            self._by_name[change.name] = max(self._by_name.get(change.name, 0), changed_at_ms)

    def refuses(self, account_id: str, generation: int) -> bool:
        """True when tokens of (account_id, generation) must not count any more."""
        entry = self._by_id.get(account_id)
        return entry is not None and (not entry.active or generation < entry.generation)

    def refuses_unversioned(self, name: str, issued_at: int) -> bool:
        """For tokens without an account id: True when `name` changed after `issued_at` (unix s)."""
        changed = self._by_name.get(name)
        return changed is not None and issued_at * 1000 <= changed + _LEGACY_SKEW_SECONDS * 1000

    def forget_before(self, cutoff_ms: int) -> None:
        """Drops entries older than `cutoff_ms` (every token they could refuse has expired)."""
        self._by_id = {k: v for k, v in self._by_id.items() if v.changed_at_ms >= cutoff_ms}
        self._by_name = {k: v for k, v in self._by_name.items() if v >= cutoff_ms}
