"""ManifestCache on its own: TTL expiry, the byte bound, and per-repository invalidation.

A fake clock drives expiry, so nothing here sleeps or depends on timing."""

from __future__ import annotations

from gateway.manifest_cache import ManifestCache
from tests.support.clock import FakeClock


def _put(cache: ManifestCache, repository: str, reference: str, payload: bytes | None = b"{}") -> None:
    cache.put(repository, reference, digest="sha256:" + "a" * 64, media_type="application/json",
              size=len(payload or b"{}"), payload=payload)


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock(100.0)
    cache = ManifestCache(ttl_seconds=1.0, clock=clock)
    _put(cache, "library/a", "latest")
    clock.now += 0.999
    hit = cache.get("library/a", "latest", need_payload=True)
    assert hit is not None and hit.payload == b"{}"
    clock.now += 0.001
    assert cache.get("library/a", "latest", need_payload=True) is None
    assert len(cache) == 0 and cache.size_bytes == 0


def test_head_only_entries_do_not_answer_gets() -> None:
    cache = ManifestCache(clock=FakeClock(100.0))
    _put(cache, "library/a", "latest", payload=None)
    assert cache.get("library/a", "latest", need_payload=True) is None
    hit = cache.get("library/a", "latest", need_payload=False)
    assert hit is not None and hit.digest.startswith("sha256:")


def test_invalidation_drops_only_that_repository() -> None:
    cache = ManifestCache(clock=FakeClock(100.0))
    for reference in ("latest", "v1", "sha256:" + "b" * 64):
        _put(cache, "library/a", reference)
    _put(cache, "library/b", "latest")
    cache.invalidate_repository("library/a")
    assert [cache.get("library/a", r, need_payload=False) for r in ("latest", "v1")] == [None, None]
    assert cache.get("library/b", "latest", need_payload=True) is not None
    assert len(cache) == 1


def test_byte_bound_evicts_least_recently_used() -> None:
    cache = ManifestCache(max_bytes=3 * (512 + 1000), clock=FakeClock(100.0))
    for name in ("one", "two", "three"):
        _put(cache, "r", name, payload=b"x" * 1000)
    assert cache.get("r", "one", need_payload=True) is not None  # now most recently used
    _put(cache, "r", "four", payload=b"x" * 1000)
    assert cache.get("r", "two", need_payload=True) is None
    assert {n for n in ("one", "three", "four") if cache.get("r", n, need_payload=True)} == {"one", "three", "four"}
    assert cache.size_bytes <= cache.max_bytes


def test_oversized_payloads_and_a_zero_ttl_are_not_cached() -> None:
    big = ManifestCache(max_entry_bytes=10, clock=FakeClock(100.0))
    _put(big, "r", "t", payload=b"x" * 11)
    assert len(big) == 0
    off = ManifestCache(ttl_seconds=0, clock=FakeClock(100.0))
    _put(off, "r", "t")
    assert off.get("r", "t", need_payload=False) is None


def test_tag_pages_are_kept_per_page_expire_and_go_with_their_repository() -> None:
    clock = FakeClock(100.0)
    cache = ManifestCache(ttl_seconds=1.0, clock=clock)
    cache.put_tag_page("library/a", 2, "", ["v1", "v2"], True)
    cache.put_tag_page("library/a", 2, "v2", ["v3"], False)
    cache.put_tag_page("library/b", 2, "", ["x"], False)
    first = cache.get_tag_page("library/a", 2, "")
    assert first is not None and first.tags == ("v1", "v2") and first.has_more
    second = cache.get_tag_page("library/a", 2, "v2")
    assert second is not None and second.tags == ("v3",) and not second.has_more
    assert cache.get_tag_page("library/a", 3, "") is None  # another page size is another page
    # A page is not a manifest, and a manifest is not a page.
    _put(cache, "library/a", "latest")
    assert cache.get("library/a", "\0tags 2 ", need_payload=False) is None
    assert cache.get_tag_page("library/a", 2, "latest") is None

    cache.invalidate_repository("library/a")  # a manifest PUT or DELETE through this gateway
    assert cache.get_tag_page("library/a", 2, "") is None
    assert cache.get("library/a", "latest", need_payload=False) is None
    assert cache.get_tag_page("library/b", 2, "") is not None
    clock.now += 1.0
    assert cache.get_tag_page("library/b", 2, "") is None
    assert len(cache) == 0 and cache.size_bytes == 0


def test_tag_pages_count_against_the_bounds() -> None:
    cache = ManifestCache(max_bytes=4096, max_entry_bytes=2048, clock=FakeClock(100.0))
    cache.put_tag_page("big/repo", 100, "", [f"tag-{i:04d}" for i in range(100)], False)
    assert cache.get_tag_page("big/repo", 100, "") is None  # over max_entry_bytes
    for i in range(20):
        cache.put_tag_page(f"r/{i}", 10, "", [f"v{j}" for j in range(10)], False)
    assert 0 < cache.size_bytes <= 4096
    assert cache.get_tag_page("r/19", 10, "") is not None and cache.get_tag_page("r/0", 10, "") is None

    off = ManifestCache(ttl_seconds=0, clock=FakeClock(100.0))
    off.put_tag_page("library/a", 2, "", ["v1"], False)
    assert off.get_tag_page("library/a", 2, "") is None


# -- coherence with the change feed (gateway/cache_feed.py, issue 15) ------------------------------


def test_entries_live_the_coherent_ttl_only_while_the_feed_is_live() -> None:
    clock = FakeClock(100.0)
    live = [True]
    cache = ManifestCache(ttl_seconds=1.0, coherent_ttl_seconds=30.0, coherent=lambda: live[0], clock=clock)
    _put(cache, "library/a", "latest")
    clock.now += 29.0
    assert cache.get("library/a", "latest", need_payload=True) is not None
    live[0] = False
    _put(cache, "library/a", "v1")  # kept while the feed is down: the fallback TTL
    clock.now += 1.0
    assert cache.get("library/a", "v1", need_payload=True) is None


def test_entries_kept_as_coherent_are_not_served_once_coherence_is_lost() -> None:
    # The lease on the change feed's acknowledgements ran out (or the feed went quiet) and nothing
    # has dropped the cache yet: what was kept for the coherent lifetime must not be served.
    clock = FakeClock(100.0)
    coherent = [True]
    cache = ManifestCache(ttl_seconds=1.0, coherent_ttl_seconds=30.0, coherent=lambda: coherent[0], clock=clock)
    _put(cache, "library/a", "latest")
    clock.now += 0.5
    assert cache.get("library/a", "latest", need_payload=True) is not None
    coherent[0] = False
    assert cache.get("library/a", "latest", need_payload=True) is None
    _put(cache, "library/a", "latest")  # asked again: kept for the short TTL only
    assert cache.get("library/a", "latest", need_payload=True) is not None
    clock.now += 1.0
    assert cache.get("library/a", "latest", need_payload=True) is None


def test_an_answer_asked_for_before_an_invalidation_is_not_kept() -> None:
    cache = ManifestCache(clock=FakeClock(100.0), coherent=lambda: True, coherent_ttl_seconds=30.0)
    ticket = cache.ticket()  # a GET asks the metadata plane ...
    cache.invalidate_repository("library/a")  # ... the feed says the tag moved meanwhile ...
    cache.put("library/a", "latest", digest="sha256:" + "a" * 64, media_type="application/json", size=2,
              payload=b"{}", ticket=ticket)  # ... the old answer arrives: not kept
    assert cache.get("library/a", "latest", need_payload=True) is None
    cache.put("library/b", "latest", digest="sha256:" + "a" * 64, media_type="application/json", size=2,
              payload=b"{}", ticket=ticket)  # another repository's answer is fine
    assert cache.get("library/b", "latest", need_payload=True) is not None
    fresh = cache.ticket()
    cache.put("library/a", "latest", digest="sha256:" + "c" * 64, media_type="application/json", size=2,
              payload=b"{}", ticket=fresh)
    assert cache.get("library/a", "latest", need_payload=True) is not None


def test_clear_drops_everything_and_refuses_answers_asked_for_before() -> None:
    cache = ManifestCache(clock=FakeClock(100.0))
    _put(cache, "library/a", "latest")
    ticket = cache.ticket()
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0
    cache.put_tag_page("library/a", 10, "", ["latest"], False, ticket=ticket)
    assert cache.get_tag_page("library/a", 10, "") is None
