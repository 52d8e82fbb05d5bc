"""A small in-process cache of manifest GET/HEAD answers, so hot pulls skip the metadata round trip.

What is cached: for a (repository, reference) pair, the answer the metadata plane gave — digest,
media type, size and (for GETs) the payload; and for a repository, the pages of its tag list
(`tags/list`, per `n` and `last`), which change exactly when its manifests and tags do. Errors are
never cached: a manifest pushed a moment ago is visible at once.

Correctness (the contract the TTL and the change feed buy):
- A reference by digest names immutable bytes, and a tag moves; but both can be deleted, and
  another gateway replica does not tell this one directly. The metadata plane's change feed does
  (gateway/cache_feed.py): every tag pushed, moved or deleted, manifest or repository deleted,
  drops the repository's entries here as soon as the change arrives, and a write through another
  gateway answers only once this one acknowledged the change or lost its lease
  (services/metadata/changes/acks.py). While the feed is live and the lease valid (`coherent()`
  answers True) entries live `coherent_ttl_seconds`, and are served only while `coherent()` still
  answers True (a lookup that finds it False drops everything); otherwise, at most
  `ttl_seconds` (default 1 s) from the moment the metadata plane answered — the old bound: a
  manifest deleted, or a tag moved, through ANOTHER replica is served by this one for at most
  `ttl_seconds` afterwards. When the feed goes down, or starts over, everything is dropped.
- An answer the metadata plane gave before a change but that arrives here after the change was
  applied must not be kept: a reader takes a `ticket()` before asking, and `put` ignores an
  answer whose repository was invalidated after that ticket.
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
# Repositories whose last invalidation epoch is remembered; past that, all older tickets are refused.
_DROPPED_KEPT = 4096


@dataclass(frozen=True, slots=True)
class CachedManifest:
    digest: str
    media_type: str
    size: int
    payload: bytes | None  # None: only HEAD asked so far
    expires_at: float
    # Kept for the coherent lifetime: served only while `coherent()` still says so.
    coherent: bool = False


@dataclass(frozen=True, slots=True)
class CachedTagPage:
    tags: tuple[str, ...]
    has_more: bool
    expires_at: float
    coherent: bool = False


def _tag_page_reference(limit: int, last: str) -> str:
    # NUL never occurs in a tag or digest, so these keys cannot meet a manifest reference.
    return f"\0tags {limit} {last}"


class ManifestCache:
    """LRU + TTL map (repository, reference) → CachedManifest (and tag-list pages). Not
    thread-safe (one event loop)."""

    def __init__(self, *, ttl_seconds: float = DEFAULT_TTL_SECONDS, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
                 clock: Callable[[], float] = time.monotonic, coherent_ttl_seconds: float | None = None,
                 coherent: Callable[[], bool] = lambda: False) -> None:
        self.ttl_seconds = ttl_seconds
        self.coherent_ttl_seconds = ttl_seconds if coherent_ttl_seconds is None else coherent_ttl_seconds
        self.coherent = coherent
        # Invalidation epochs (see the module docstring): the newest, the one per repository
        # invalidated lately, and the floor below which every ticket is too old.
        self._epoch = 0
        self._floor = 0
        self._dropped: dict[str, int] = {}
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
        if entry.coherent and not self.coherent():
            # Coherence lost (feed down, lease ran out): nothing kept for the coherent lifetime
            # may be served, whether or not the feed's or lease's own handler ran yet.
            self.clear()
            return None
        self._entries.move_to_end(key)
        return entry

    def ticket(self) -> int:
        """Take one before asking the metadata plane; hand it to `put`/`put_tag_page`."""
        return self._epoch

    def _expiry(self, repository: str, ticket: int | None) -> tuple[float, bool] | None:
        """When an answer got with `ticket` expires and whether it was kept as coherent, or None
        when it must not be kept."""
        if not self.enabled:
            return None
        if ticket is not None and (ticket < self._floor or self._dropped.get(repository, -1) > ticket):
            return None
        if self.coherent():
            return self._clock() + self.coherent_ttl_seconds, True
        return self._clock() + self.ttl_seconds, False

    def put(self, repository: str, reference: str, *, digest: str, media_type: str, size: int,
            payload: bytes | None, ticket: int | None = None) -> None:
        """Keeps what the metadata plane just answered (see `_expiry` for how long)."""
        if payload is not None and len(payload) > self.max_entry_bytes:
            return
        expiry = self._expiry(repository, ticket)
        if expiry is None:
            return
        entry = CachedManifest(digest, media_type, size, payload, *expiry)
        self._keep(repository, reference, entry)

    def put_tag_page(self, repository: str, limit: int, last: str, tags: list[str], has_more: bool,
                     ticket: int | None = None) -> None:
        """Keeps a `tags/list` page the metadata plane just answered."""
        expiry = self._expiry(repository, ticket)
        if expiry is None:
            return
        entry = CachedTagPage(tuple(tags), has_more, *expiry)
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
        """Drops every entry of `repository` (after a manifest write or delete through this
        gateway, or a change of it on the change feed); answers asked for before are not kept."""
        self._epoch += 1
        self._dropped[repository] = self._epoch
        if len(self._dropped) > _DROPPED_KEPT:
            self._dropped.clear()
            self._floor = self._epoch
        for reference in list(self._by_repository.get(repository, ())):
            self._drop((repository, reference))

    def clear(self) -> None:
        """Drops everything (the change feed went down or started over); answers asked for
        before are not kept."""
        self._epoch += 1
        self._floor = self._epoch
        self._dropped.clear()
        self._entries.clear()
        self._by_repository.clear()
        self._bytes = 0

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
