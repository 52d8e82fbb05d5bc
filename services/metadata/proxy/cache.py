"""The pull-through cache's use cases in the metadata plane (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update

from services.common.digests import Digest, looks_like_digest
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag
from services.common.settings import ProxySettings
from services.common.upstream import Upstream, Upstreams
from services.metadata.core import MetadataCore
from services.metadata.events.context import acting_as
from services.metadata.events.envelope import PROXY_EVICT_ACTOR, internal_request
from services.metadata.fetch_leases import FetchLeases
from services.metadata.proxy.tables import proxy_blobs, proxy_tags
from services.metadata.store.access import Kind
from services.metadata.store.base import MetadataStore, StoredManifest
from services.metadata.store.dialect import upsert
from services.metadata.store.engine import Database
from services.metadata.store.schema import manifest_references, manifests, repositories, repository_blobs

log = logging.getLogger("lading.proxy")

_UNKNOWN = (ErrorKind.NAME_UNKNOWN, ErrorKind.MANIFEST_UNKNOWN)
# How often a caller waiting for another's fetch looks again: first after this, then 1.5 times
# longer each time, up to the maximum.
_WAIT_POLL_SECONDS = 0.05
_WAIT_POLL_MAX_SECONDS = 0.5
# A cached manifest's pull is recorded (for eviction by age) at most this often per process.
_TOUCH_EVERY_SECONDS = 60.0
_TOUCH_MEMORY = 100_000


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone (stored as UTC).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class UpstreamCounters:
    """Per upstream, since this process started (`lading proxy status`, metrics)."""

    hits: int = 0
    misses: int = 0
    revalidations: int = 0
    stale_serves: int = 0
    blob_fetches: int = 0
    last_error: str = ""
    last_error_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BlobFetchDecision:
    outcome: str  # "no_source" | "linked" | "fetch"
    size: int = 0
    lease_id: str = ""
    upstream: str = ""
    remote: str = ""


@dataclass
class ProxyCache:
    """Manifests through the cache, blob fetch leases, cached content accounting."""

    upstreams: Upstreams
    settings: ProxySettings
    core: MetadataCore
    store: MetadataStore
    database: Database
    clock: Callable[[], float] = time.time
    counters: dict[str, UpstreamCounters] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counters = {u.name: UpstreamCounters() for u in self.upstreams.all}
        self._touched: dict[tuple[str, str], float] = {}
        dialect = self.database.dialect
        self.leases = FetchLeases(self.database, self.settings.fetch_lease_seconds)
        self._upsert_checked = upsert(dialect, proxy_tags, ["repository", "tag"],
                                      {"digest": None, "checked_at": None})
        self._upsert_blob = upsert(dialect, proxy_blobs, ["digest"], {"last_pulled_at": None})

    def refuse_writes(self, repository: str) -> None:
        self.upstreams.refuse_writes(repository)

    def _source(self, repository: str) -> tuple[Upstream, str] | None:
        found = self.upstreams.for_repository(repository)
        if found is not None:
            found[0].check_allowed(repository, found[1])
        return found

    def _count(self, upstream: Upstream, counters: UpstreamCounters, outcome: str) -> None:
        if outcome == "hit":
            counters.hits += 1
        elif outcome == "miss":
            counters.misses += 1
        elif outcome == "revalidation":
            counters.revalidations += 1
        elif outcome == "stale":
            counters.stale_serves += 1
        else:
            counters.blob_fetches += 1
        upstream.observer.outcome(upstream.name, outcome)

    def _failed(self, upstream: Upstream, error: RegistryError) -> None:
        counters = self.counters[upstream.name]
        counters.last_error = error.message
        counters.last_error_at = self.clock()
        log.warning("%s", error.message)

    # -- manifests ----------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str, *, omit_payload: bool
                           ) -> tuple[StoredManifest, str, str]:
        """(`_answer`'s manifest and warning, the name of the upstream that serves the repository or "")."""
        manifest, warning = await self._answer(repository, reference, omit_payload=omit_payload)
        return manifest, warning, self.upstream_name(repository)

    def upstream_name(self, repository: str) -> str:
        """The name of the upstream that serves `repository`, "" outside every prefix."""
        found = self.upstreams.for_repository(repository)
        return "" if found is None else found[0].name

    async def _answer(self, repository: str, reference: str, *, omit_payload: bool
                      ) -> tuple[StoredManifest, str]:
        """The manifest `reference` names and a warning ("" unless served stale).

        Outside every upstream's prefix: `MetadataCore.get_manifest`. Inside: see the package
        docstring. Raises what `MetadataCore.get_manifest` raises; MANIFEST_UNKNOWN naming the
        upstream when it has no such manifest; UPSTREAM_FAILED (502) when it failed and nothing
        cached may stand in; DENIED outside the upstream's allowed repositories.
        """
        validate_repository(repository)
        found = self._source(repository)
        if found is None:
            return await self.core.get_manifest(repository, reference, omit_payload=omit_payload), ""
        upstream, remote = found
        counters = self.counters[upstream.name]
        if looks_like_digest(reference):
            try:
                manifest = await self.core.get_manifest(repository, reference, omit_payload=omit_payload)
                self._count(upstream, counters, "hit")
                await self._touch(repository, manifest.digest)
                return manifest, ""
            except RegistryError as error:
                if error.kind not in _UNKNOWN:
                    raise
            self._count(upstream, counters, "miss")
            try:
                await self._fetch_manifest(upstream, repository, remote, reference)
            except RegistryError as error:
                if error.kind is ErrorKind.UPSTREAM_FAILED:
                    self._failed(upstream, error)
                raise
            return await self.core.get_manifest(repository, reference, omit_payload=omit_payload), ""

        tag = validate_tag(reference)
        local: StoredManifest | None
        try:
            local = await self.core.get_manifest(repository, tag, omit_payload=omit_payload)
        except RegistryError as error:
            if error.kind not in _UNKNOWN:
                raise
            local = None
        checked = await self._checked_at(repository, tag) if local is not None else None
        now = _now()
        if local is not None and checked is not None and checked[0] == local.digest and \
                (now - checked[1]).total_seconds() < upstream.settings.revalidate_seconds:
            self._count(upstream, counters, "hit")
            await self._touch(repository, local.digest)
            return local, ""
        try:
            if local is not None:
                self._count(upstream, counters, "revalidation")
                head = await upstream.head_manifest(remote, tag)
                if head.digest == local.digest:
                    await self._mark_checked(repository, tag, local.digest)
                    self._count(upstream, counters, "hit")
                    await self._touch(repository, local.digest)
                    return local, ""
            self._count(upstream, counters, "miss")
            digest = await self._fetch_manifest(upstream, repository, remote, tag)
            await self._mark_checked(repository, tag, digest)
        except RegistryError as error:
            if error.kind is not ErrorKind.UPSTREAM_FAILED:
                raise
            self._failed(upstream, error)
            if local is None or checked is None:
                raise
            age = (now - checked[1]).total_seconds()
            if age > upstream.settings.max_staleness_seconds:
                raise RegistryError(
                    ErrorKind.UPSTREAM_FAILED,
                    f"{error.message}; the cached {repository}:{tag} was last checked {int(age)} s ago, over "
                    f"the {int(upstream.settings.max_staleness_seconds)} s max staleness",
                    error.detail,
                ) from None
            self._count(upstream, counters, "stale")
            text = error.message.replace('"', "'").replace("\\", "/")
            return local, f'110 lading "Response is stale: {text}; cached copy last checked {int(age)} s ago"'
        return await self.core.get_manifest(repository, tag, omit_payload=omit_payload), ""

    async def _fetch_manifest(self, upstream: Upstream, repository: str, remote: str, reference: str) -> str:
        """GETs a manifest from the upstream and stores it (by digest, or under the tag); its digest."""
        fetched = await upstream.get_manifest(remote, reference)
        actual = str(Digest.of(fetched.payload))
        expected = reference if looks_like_digest(reference) else (fetched.digest or actual)
        if expected.startswith("sha256:") and expected != actual:
            raise RegistryError(
                ErrorKind.UPSTREAM_FAILED,
                f"{upstream.describe()} failed: it served manifest {reference} of {remote} with content that "
                f"hashes to {actual}, not {expected}; nothing was cached",
                {"upstream": upstream.name},
            )
        try:
            await self.core.put_manifest(repository, reference, fetched.media_type, fetched.payload,
                                         from_upstream=True)
        except RegistryError as error:
            if error.kind in (ErrorKind.MANIFEST_INVALID, ErrorKind.DIGEST_INVALID, ErrorKind.MANIFEST_TOO_LARGE):
                raise RegistryError(
                    ErrorKind.UPSTREAM_FAILED,
                    f"{upstream.describe()} failed: its manifest {reference} of {remote} cannot be cached: "
                    f"{error.message}",
                    {"upstream": upstream.name},
                ) from None
            raise
        return actual

    async def _checked_at(self, repository: str, tag: str) -> tuple[str, datetime] | None:
        statement = select(proxy_tags.c.digest, proxy_tags.c.checked_at).where(
            proxy_tags.c.repository == repository, proxy_tags.c.tag == tag)
        async with self.database.access.connection(Kind.PRIMARY_READ) as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else (row[0], _aware(row[1]))

    async def _mark_checked(self, repository: str, tag: str, digest: str) -> None:
        values = {"repository": repository, "tag": tag, "digest": digest, "checked_at": _now()}
        await self.database.access.write(lambda conn: conn.execute(self._upsert_checked, values))

    # -- blobs --------------------------------------------------------------------------------

    async def begin_blob_fetch(self, repository: str, digest: str, *, wait_seconds: float) -> BlobFetchDecision:
        """See ProxyService.BeginBlobFetch (protos/lading/metadata/v1/proxy.proto)."""
        validate_repository(repository)
        digest = str(Digest.parse(digest))
        found = self._source(repository)
        if found is None:
            return BlobFetchDecision("no_source")
        upstream, remote = found
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        pause, waited = _WAIT_POLL_SECONDS, False
        while True:
            size = await self.store.stat_blob(repository, digest)
            if size is not None:
                return BlobFetchDecision("linked", size=size)
            if await self._cached_from(digest) == upstream.name:
                size = await self.store.mount_blob(repository, digest, None)
                if size is not None:
                    return BlobFetchDecision("linked", size=size)
            # A waiter tries for the lease (a write) only once the holder's looks gone or lapsed.
            if not waited or not await self._lease_running(digest):
                lease_id = await self._take_lease(digest)
                if lease_id is not None:
                    self._count(upstream, self.counters[upstream.name], "blob_fetch")
                    return BlobFetchDecision("fetch", lease_id=lease_id, upstream=upstream.name, remote=remote)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RegistryError(
                    ErrorKind.UNAVAILABLE,
                    f"blob {digest} is being fetched from {upstream.describe()} by another request; retry shortly",
                    {"digest": digest, "upstream": upstream.name},
                )
            # Waiters look again sooner at first, then less often: many clients waiting for one
            # large blob must not load the database the fetch itself needs.
            await asyncio.sleep(min(pause, remaining))
            pause, waited = min(pause * 1.5, _WAIT_POLL_MAX_SECONDS), True

    async def _lease_running(self, digest: str) -> bool:
        return await self.leases.running(digest)

    async def end_blob_fetch(self, repository: str, digest: str, *, lease_id: str, fetched: bool,
                             size: int) -> None:
        """See ProxyService.EndBlobFetch."""
        validate_repository(repository)
        digest = str(Digest.parse(digest))
        found = self.upstreams.for_repository(repository)
        try:
            if fetched and found is not None:
                await self.core.link_blob(repository, digest, size)
                now = _now()
                values = {"digest": digest, "upstream": found[0].name, "size": size, "fetched_at": now,
                          "last_pulled_at": now}
                await self.database.access.write(lambda conn: conn.execute(self._upsert_blob, values))
        finally:
            await self.leases.release(digest, lease_id)

    async def renew_blob_fetch(self, digest: str, lease_id: str) -> bool:
        """See ProxyService.RenewBlobFetch."""
        return await self.leases.renew(str(Digest.parse(digest)), lease_id)

    async def _cached_from(self, digest: str) -> str | None:
        statement = select(proxy_blobs.c.upstream).where(proxy_blobs.c.digest == digest)
        async with self.database.access.connection(Kind.PRIMARY_READ) as conn:
            return (await conn.execute(statement)).scalar()

    async def release_lease(self, key: str, lease_id: str) -> None:
        await self.leases.release(key, lease_id)

    async def take_lease(self, key: str) -> str | None:
        """A new lease on `key` (a blob's digest: its fetch; "mirror:…": a mirror run), or None
        while another holder's lease runs. Lapses after `proxy.fetch_lease_seconds` unless renewed
        (`self.leases.keeper`)."""
        return await self._take_lease(key)

    async def _take_lease(self, digest: str) -> str | None:
        """A new lease on `digest`'s fetch, or None while another holder's lease runs."""
        return await self.leases.take(digest)

    # -- pulls and eviction --------------------------------------------------------------------

    async def _touch(self, repository: str, digest: str) -> None:
        """Records that the cached manifest `digest` (and so its blobs) was pulled: at most once a
        minute per manifest and process, so a hot tag costs no write per pull."""
        now = self.clock()
        key = (repository, digest)
        if now - self._touched.get(key, 0.0) < _TOUCH_EVERY_SECONDS:
            return
        if len(self._touched) > _TOUCH_MEMORY:
            self._touched.clear()
        self._touched[key] = now
        manifest_id = (select(manifests.c.id).join(repositories, repositories.c.id == manifests.c.repository_id)
                       .where(repositories.c.name == repository, manifests.c.digest == digest)
                       .scalar_subquery())
        referenced = select(manifest_references.c.digest).where(manifest_references.c.manifest_id == manifest_id)
        statement = (update(proxy_blobs).where(proxy_blobs.c.digest.in_(referenced))
                     .values(last_pulled_at=_now()))
        try:
            await self.database.access.write(lambda conn: conn.execute(statement), durable=False)
        except Exception as error:  # noqa: BLE001 - bookkeeping never fails a pull
            log.warning("could not record a pull of %s@%s: %s", repository, digest, error)

    async def evict(self, *, older_than_seconds: float, upstream: str = "", dry_run: bool = False
                    ) -> tuple[list[tuple[str, str, int, str]], int]:
        """See ProxyService.EvictCached. Returns ([(upstream, digest, size, reason)], manifests removed)."""
        age = older_than_seconds or self.settings.evict_after_seconds
        cutoff = _now() - timedelta(seconds=age) if age > 0 else None
        chosen: list[tuple[str, str, int, str]] = []
        for configured in self.upstreams.all:
            if upstream and configured.name != upstream:
                continue
            statement = (select(proxy_blobs.c.digest, proxy_blobs.c.size, proxy_blobs.c.last_pulled_at)
                         .where(proxy_blobs.c.upstream == configured.name)
                         .order_by(proxy_blobs.c.last_pulled_at, proxy_blobs.c.digest))
            async with self.database.access.connection(Kind.PRIMARY_READ) as conn:
                rows = list(await conn.execute(statement))
            total = sum(int(row[1]) for row in rows)
            budget = configured.settings.byte_budget
            for digest, size, pulled in rows:
                if cutoff is not None and _aware(pulled) < cutoff:
                    reason = "age"
                elif budget and total > budget:
                    reason = "budget"
                else:
                    break
                total -= int(size)
                chosen.append((configured.name, digest, int(size), reason))
        if dry_run:
            return chosen, 0
        removed = 0
        for name, digest, _size, _reason in chosen:
            removed += await self._evict_blob(self.upstreams.named(name), digest)
        return chosen, removed

    async def _evict_blob(self, upstream: Upstream, digest: str) -> int:
        """Unlinks `digest` from the upstream's repositories with the cached manifests that
        reference it; forgets it. Returns the number of manifests removed. Its delete events name
        the eviction actor, so replication does not copy them as deletes."""
        with acting_as(internal_request(PROXY_EVICT_ACTOR)):
            return await self._evict_blob_now(upstream, digest)

    async def _evict_blob_now(self, upstream: Upstream, digest: str) -> int:
        r, rb, m, mr = repositories, repository_blobs, manifests, manifest_references
        prefix = upstream.prefix
        in_prefix = func.substr(r.c.name, 1, len(prefix)) == prefix
        linked = select(r.c.name).join(rb, rb.c.repository_id == r.c.id).where(rb.c.digest == digest, in_prefix)
        referencing = (select(r.c.name, m.c.digest).join(m, m.c.repository_id == r.c.id)
                       .join(mr, mr.c.manifest_id == m.c.id).where(mr.c.digest == digest, in_prefix))
        async with self.database.access.connection(Kind.PRIMARY_READ) as conn:
            repos = [row[0] for row in await conn.execute(linked)]
            holders = [(row[0], row[1]) for row in await conn.execute(referencing)]
        removed = 0
        for repository, manifest_digest in holders:
            try:
                await self.store.delete_manifest(repository, manifest_digest)
                removed += 1
            except RegistryError as error:
                if error.kind not in _UNKNOWN:
                    raise
            forget = delete(proxy_tags).where(proxy_tags.c.repository == repository,
                                              proxy_tags.c.digest == manifest_digest)
            await self.database.access.write(lambda conn, forget=forget: conn.execute(forget))
        for repository in repos:
            await self.store.unlink_blob(repository, digest)
        drop = delete(proxy_blobs).where(proxy_blobs.c.digest == digest)
        await self.database.access.write(lambda conn: conn.execute(drop))
        log.info("evicted cached blob %s of %s (%d manifests removed)", digest, upstream.describe(), removed)
        return removed

    # -- status -------------------------------------------------------------------------------

    async def status(self) -> list[dict[str, object]]:
        """Per upstream: configuration, cached blobs and bytes, cached tags, counters."""
        blobs_q = (select(proxy_blobs.c.upstream, func.count(), func.coalesce(func.sum(proxy_blobs.c.size), 0))
                   .group_by(proxy_blobs.c.upstream))
        async with self.database.access.connection(Kind.PRIMARY_READ) as conn:
            by_upstream = {row[0]: (int(row[1]), int(row[2])) for row in await conn.execute(blobs_q)}
            tags = [row[0] for row in await conn.execute(select(proxy_tags.c.repository))]
        out = []
        for upstream in self.upstreams.all:
            counters = self.counters[upstream.name]
            blobs, size = by_upstream.get(upstream.name, (0, 0))
            out.append({
                "name": upstream.name, "url": upstream.url, "prefix": upstream.prefix,
                "cached_blobs": blobs, "cached_bytes": size,
                "cached_tags": sum(1 for repo in tags if repo.startswith(upstream.prefix)),
                "byte_budget": upstream.settings.byte_budget,
                "hits": counters.hits, "misses": counters.misses, "stale_serves": counters.stale_serves,
                "last_error": counters.last_error, "offline": upstream.offline,
            })
        return out
