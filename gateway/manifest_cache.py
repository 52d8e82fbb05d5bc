"""A small in-process cache of manifest GET/HEAD answers, so hot pulls skip the metadata round trip.

What is cached: for a (repository, reference) pair, the answer the metadata plane gave — digest,
media type, size and (for GETs) the payload; and for a repository, the pages of its tag list
(`tags/list`, per `n` and `last`), which change exactly when its manifests and tags do. Errors are
never cached: a manifest pushed a moment ago is visible at once.

Correctness (the contract the TTL buys):
- A reference by digest names immutable bytes, and a tag moves; but both can be deleted, and
  another gateway replica does not tell this one. So every entry lives at most `ttl_seconds`
  (default 1 s) from the moment the metadata plane answered: a manifest deleted, or a tag moved,
  through ANOTHER replica is served by this one for at most `ttl_seconds` afterwards — the same
  kind of staleness a read replica gives, and far shorter than any client's retry loop.
- Writes through THIS gateway (manifest PUT or DELETE, tag or digest) drop every entry of that
  repository (tag-list pages included) before answering, so a client that writes and then reads through one gateway never
  sees the old state.
- Access control is not affected: the route's Endpoint checks the request before the handler
  (and so the cache) runs.

Bounds: at most `max_bytes` of payload (least recently used entries go first; an entry counts its
payload plus a fixed overhead) and entries larger than `max_entry_bytes` are not kept. Time is
`time.monotonic()` (injectable for tests); there is no background task: expired entries are
dropped when looked up or pushed out by the LRU bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TTL_SECONDS = 1.0
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
# Accounted per entry on top of its payload (keys, tuple, strings): keeps many HEAD-only entries bounded.
_ENTRY_OVERHEAD = 512


@dataclass(frozen=True, slots=True)
class CachedManifest:
    digest: str
    media_type: str
    size: int
    payload: bytes | None  # None: only HEAD asked so far
    expires_at: float


@dataclass(frozen=True, slots=True)
class CachedTagPage:
    tags: tuple[str, ...]
    has_more: bool
    expires_at: float


def _tag_page_reference(limit: int, last: str) -> str:
    # NUL never occurs in a tag or digest, so these keys cannot meet a manifest reference.
    return f"\0tags {limit} {last}"


class ManifestCache:
    """LRU + TTL map (repository, reference) → CachedManifest (and tag-list pages). Not
    thread-safe (one event loop)."""

    def __init__(self, *, ttl_seconds: float = DEFAULT_TTL_SECONDS, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], CachedManifest | CachedTagPage] = OrderedDict()
        # repository → its references in `_entries`, so invalidation does not scan everything.
        self._by_repository: dict[str, set[str]] = {}
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, repository: str, reference: str, *, need_payload: bool) -> CachedManifest | None:
        """The live entry, or None (missing, expired, or `need_payload` and only HEAD was cached)."""
        entry = self._live((repository, reference))
        if not isinstance(entry, CachedManifest) or (need_payload and entry.payload is None):
            return None
        return entry

    def get_tag_page(self, repository: str, limit: int, last: str) -> CachedTagPage | None:
        """The live `tags/list` page of `repository` for (`limit`, `last`), or None."""
        entry = self._live((repository, _tag_page_reference(limit, last)))
        return entry if isinstance(entry, CachedTagPage) else None

    def _live(self, key: tuple[str, str]) -> CachedManifest | CachedTagPage | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, repository: str, reference: str, *, digest: str, media_type: str, size: int,
            payload: bytes | None) -> None:
        """Keeps what the metadata plane just answered, for `ttl_seconds` from now."""
        if not self.enabled or (payload is not None and len(payload) > self.max_entry_bytes):
            return
        entry = CachedManifest(digest, media_type, size, payload, self._clock() + self.ttl_seconds)
        self._keep(repository, reference, entry)

    def put_tag_page(self, repository: str, limit: int, last: str, tags: list[str], has_more: bool) -> None:
        """Keeps a `tags/list` page the metadata plane just answered, for `ttl_seconds` from now."""
        if not self.enabled:
            return
        entry = CachedTagPage(tuple(tags), has_more, self._clock() + self.ttl_seconds)
        if _cost(entry) <= self.max_entry_bytes:
            self._keep(repository, _tag_page_reference(limit, last), entry)

    def _keep(self, repository: str, reference: str, entry: CachedManifest | CachedTagPage) -> None:
        key = (repository, reference)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self._by_repository.setdefault(repository, set()).add(reference)
        self._bytes += _cost(entry)
        while self._bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def invalidate_repository(self, repository: str) -> None:
        """Drops every entry of `repository` (after a manifest write or delete through this gateway)."""
        for reference in list(self._by_repository.get(repository, ())):
            self._drop((repository, reference))

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= _cost(entry)
        references = self._by_repository.get(key[0])
        if references is not None:
            references.discard(key[1])
            if not references:
                del self._by_repository[key[0]]


def _cost(entry: CachedManifest | CachedTagPage) -> int:
    if isinstance(entry, CachedTagPage):
        # Each tag's string plus its slot in the tuple.
        return _ENTRY_OVERHEAD + sum(len(tag) + 64 for tag in entry.tags)
    return _ENTRY_OVERHEAD + (len(entry.payload) if entry.payload is not None else 0)
