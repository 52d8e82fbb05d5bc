"""Copies what replication events name to one target registry (see the package docstring)."""

from __future__ import annotations

import fnmatch
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import grpc
import orjson
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.settings import (
    EventEndpointSettings,
    EventsSettings,
    ReplicationRuleSettings,
    ReplicationSettings,
)
from services.common.upstream import MANIFEST_ACCEPT, Upstream
from services.metadata.events.envelope import GC_ACTOR, PROXY_EVICT_ACTOR
from services.metadata.manifests import parse_manifest_off_the_loop
from services.metadata.store.base import MetadataStore, Page

log = logging.getLogger("lading.replication")

ENDPOINT_PREFIX = "replicate-"
# Deletes the registry makes on its own behalf (see Replicator._delete): never copied to a target.
_NOT_REPLICATED_ACTORS = frozenset({PROXY_EVICT_ACTOR, GC_ACTOR})
# The placeholder manifest a tag is moved to before it is deleted on targets without tag deletes.
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
_EMPTY_JSON = b"{}"
_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
# Repositories, tags and referrers read per store call by `Replicator.run`.
_RUN_PAGE = 500
# What a replication endpoint's outbox rows are about: manifests (blob links alone copy nothing).
_MANIFEST_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",
]


def with_replication_endpoints(events: EventsSettings, replication: ReplicationSettings) -> EventsSettings:
    """`events` with one endpoint per replication rule (their outbox rows feed the replicators)."""
    if not replication.rules:
        return events
    added = [
        EventEndpointSettings(
            name=f"{ENDPOINT_PREFIX}{rule.name}", url=rule.url, timeout_seconds=rule.timeout_seconds,
            max_attempts=rule.max_attempts, backoff_base_seconds=rule.backoff_base_seconds,
            backoff_cap_seconds=rule.backoff_cap_seconds,
            include_actions=["push", "delete"] if rule.deletes else ["push"],
            include_media_types=_MANIFEST_TYPES,
        )
        for rule in replication.rules
    ]
    return events.model_copy(update={"endpoints": [*events.endpoints, *added]})


@dataclass
class RunResult:
    """What `Replicator.run` did (see RunReplicationResponse in protos/.../replication.proto)."""

    repositories: int = 0
    tags: int = 0
    copied: int = 0
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)


class Replicator:
    """One rule: copies pushed manifests (with children and blobs) to its target registry."""

    def __init__(self, rule: ReplicationRuleSettings, store: MetadataStore, blob_channel: grpc.aio.Channel | None,
                 *, parse_inline_max_bytes: int) -> None:
        """`parse_inline_max_bytes`: manifests over it are parsed in a worker thread
        (metadata.manifest_parse_inline_max_bytes)."""
        self.rule = rule
        self._parse_inline_max_bytes = parse_inline_max_bytes
        self._store = store
        self._blobs = blob_pb2_grpc.BlobServiceStub(blob_channel) if blob_channel is not None else None
        self._target = Upstream(rule, actions="pull,push")
        self._tags = re.compile(rule.tags)
        # digest → a target repository this replicator put it in (a mount source for the next one).
        self._placed: dict[str, str] = {}

    def _wanted(self, repository: str) -> bool:
        patterns = self.rule.repositories
        return not patterns or any(fnmatch.fnmatchcase(repository, pattern) for pattern in patterns)

    async def deliver(self, bodies: list[str]) -> str:
        """Copies every event of the batch, in order; "" when all are done, else why not (the
        whole batch is retried: copies already made are found on the target and skipped)."""
        try:
            for body in bodies:
                await self._one(orjson.loads(body))
        except RegistryError as error:
            return error.message
        return ""

    async def _one(self, event: dict[str, Any]) -> None:
        target = event.get("target") or {}
        repository = target.get("repository", "")
        digest = target.get("digest", "")
        tag = target.get("tag")
        if not repository or not self._wanted(repository):
            return
        if tag and not self._tags.fullmatch(tag):
            return
        remote = f"{self.rule.target_prefix}{repository}"
        if event.get("action") == "delete":
            await self._delete(event, remote, digest or tag or "")
            return
        if digest:
            await self._copy_manifest(repository, remote, digest, tag)

    async def run(self) -> RunResult:
        """`lading replication run`: copies every tag the rule matches now (with children, blobs
        and the tagged manifests' referrers). Idempotent: a tag the target has at the same digest
        costs one HEAD (its referrers one HEAD each), blobs the target has are not sent again."""
        result = RunResult()
        async for repository in self._pages(lambda last: self._store.list_repositories(last=last, limit=_RUN_PAGE)):
            if not self._wanted(repository):
                continue
            result.repositories += 1
            remote = f"{self.rule.target_prefix}{repository}"
            try:
                tags = [tag async for tag in self._pages(
                    lambda last, repository=repository: self._store.list_tags(repository, last=last, limit=_RUN_PAGE))]
            except RegistryError as error:
                if error.kind is ErrorKind.NAME_UNKNOWN:  # deleted since it was listed
                    continue
                raise
            for tag in tags:
                if not self._tags.fullmatch(tag):
                    continue
                result.tags += 1
                try:
                    await self._run_tag(repository, remote, tag, result)
                except RegistryError as error:
                    if error.kind in (ErrorKind.MANIFEST_UNKNOWN, ErrorKind.NAME_UNKNOWN):
                        continue  # untagged or deleted since it was listed
                    result.failures.append(f"{repository}:{tag}: {error.message}")
        return result

    async def _run_tag(self, repository: str, remote: str, tag: str, result: RunResult) -> None:
        stored = await self._store.get_manifest(repository, tag=tag, with_payload=False)
        head = await self._target.send("HEAD", remote, f"/v2/{remote}/manifests/{tag}",
                                       headers={"accept": MANIFEST_ACCEPT})
        if head.status_code == 200 and head.headers.get("docker-content-digest") == stored.digest:
            result.unchanged += 1
        else:
            await self._copy_manifest(repository, remote, stored.digest, tag)
            result.copied += 1
        async for referrer in self._pages(lambda last: self._store.list_referrers(
                repository, stored.digest, artifact_type=None, last=last, limit=_RUN_PAGE), key="digest"):
            await self._copy_manifest(repository, remote, referrer.digest, None)

    @staticmethod
    async def _pages(fetch: Callable[[str], Awaitable[Page[Any]]], *, key: str = "") -> AsyncIterator[Any]:
        last = ""
        while True:
            page = await fetch(last)
            for item in page.items:
                yield item
            if not page.has_more or not page.items:
                return
            last = getattr(page.items[-1], key) if key else page.items[-1]

    async def _delete(self, event: dict[str, Any], remote: str, reference: str) -> None:
        """A manifest (by digest) or tag deleted in the source is deleted on the target, unless
        the registry deleted it on its own behalf: the pull-through cache's evictions free local
        space and the collector's deletes follow this registry's retention, not the user's."""
        actor = (event.get("actor") or {}).get("name", "")
        if actor in _NOT_REPLICATED_ACTORS or not reference:
            return
        if reference.startswith("sha256:") and not await self._target_has_manifest(remote, reference):
            # Not a manifest there: nothing to delete, or the event is a blob's delete (same shape),
            # which is not copied (Distribution 2.x would unlink a layer DELETEd as a manifest).
            return
        response = await self._target.send("DELETE", remote, f"/v2/{remote}/manifests/{reference}")
        if response.status_code in (400, 405) and not reference.startswith("sha256:"):
            await self._untag(remote, reference)
        elif response.status_code not in (202, 200, 404):
            raise self._failed(f"DELETE of {remote} {reference} answered HTTP {response.status_code}: "
                               f"{response.text[:300]}")
        log.info("replication %s: deleted %s %s", self.rule.name, remote, reference)

    async def _untag(self, remote: str, tag: str) -> None:
        """Deletes only the tag on a target without tag deletes (CNCF Distribution 2.x answers
        400): points the tag at a throwaway manifest of its own, then deletes that by digest, so
        the manifest the tag named and its other tags stay (regclient's `tag rm` does the same)."""
        head = await self._target.send("HEAD", remote, f"/v2/{remote}/manifests/{tag}",
                                       headers={"accept": MANIFEST_ACCEPT})
        if head.status_code == 404:
            return
        if not await self._target_has(remote, "blobs", _EMPTY_DIGEST):
            await self._upload(remote, _EMPTY_DIGEST, _EMPTY_JSON)
        placeholder = orjson.dumps({
            "schemaVersion": 2, "mediaType": _OCI_MANIFEST,
            "config": {"mediaType": _EMPTY_MEDIA_TYPE, "digest": _EMPTY_DIGEST, "size": len(_EMPTY_JSON)},
            "layers": [],
            "annotations": {"io.lading.replication.deleted-tag": tag, "io.lading.nonce": uuid.uuid4().hex},
        })
        put = await self._target.send("PUT", remote, f"/v2/{remote}/manifests/{tag}",
                                      headers={"content-type": _OCI_MANIFEST}, content=placeholder)
        if put.status_code not in (200, 201):
            raise self._failed(f"the target cannot delete tag {remote}:{tag} (no tag deletes) and refused the "
                               f"placeholder manifest that replaces it: HTTP {put.status_code}: {put.text[:300]}")
        digest = str(Digest.of(placeholder))
        gone = await self._target.send("DELETE", remote, f"/v2/{remote}/manifests/{digest}")
        if gone.status_code not in (200, 202, 404):
            raise self._failed(f"deleting the placeholder {digest} of tag {remote}:{tag} answered HTTP "
                               f"{gone.status_code}: {gone.text[:300]}")

    async def _copy_manifest(self, repository: str, remote: str, digest: str, tag: str | None) -> None:
        try:
            stored = await self._store.get_manifest(repository, digest=digest, with_payload=True)
        except RegistryError as error:
            if error.kind in (ErrorKind.MANIFEST_UNKNOWN, ErrorKind.NAME_UNKNOWN):
                log.info("replication %s: %s@%s is gone, nothing to copy", self.rule.name, repository, digest)
                return
            raise
        if tag is None and await self._target_has(remote, "manifests", digest):
            return
        payload = stored.payload or b""
        parsed = await parse_manifest_off_the_loop(payload, stored.media_type,
                                                   inline_max_bytes=self._parse_inline_max_bytes)
        for child in parsed.manifest_digests:
            await self._copy_manifest(repository, remote, child, None)
        for blob in parsed.blob_digests:
            await self._copy_blob(repository, remote, blob)
        response = await self._target.send(
            "PUT", remote, f"/v2/{remote}/manifests/{tag or digest}",
            headers={"content-type": stored.media_type}, content=payload)
        if response.status_code not in (200, 201):
            raise self._failed(f"PUT of manifest {remote}:{tag or digest} answered HTTP {response.status_code}: "
                               f"{response.text[:300]}")
        log.info("replication %s: copied %s@%s%s", self.rule.name, repository, digest, f" ({tag})" if tag else "")

    async def _target_has_manifest(self, remote: str, digest: str) -> bool:
        response = await self._target.send("HEAD", remote, f"/v2/{remote}/manifests/{digest}",
                                           headers={"accept": MANIFEST_ACCEPT})
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        return response.status_code == 200 and media_type in _MANIFEST_TYPES

    async def _target_has(self, remote: str, kind: str, digest: str) -> bool:
        headers = {"accept": MANIFEST_ACCEPT} if kind == "manifests" else {}
        response = await self._target.send("HEAD", remote, f"/v2/{remote}/{kind}/{digest}", headers=headers)
        return response.status_code == 200

    async def _copy_blob(self, repository: str, remote: str, digest: str) -> None:
        if await self._target_has(remote, "blobs", digest):
            self._remember(digest, remote)
            return
        size = await self._store.stat_blob(repository, digest)
        if size is None:
            raise self._failed(f"blob {digest} of {repository} is not linked here; it cannot be copied")
        elsewhere = self._placed.get(digest)
        if elsewhere and elsewhere != remote:
            # Cross-repository mount: 201 when the target linked it, else 202 and a session.
            query = urlencode({"mount": digest, "from": elsewhere})
            started = await self._target.send("POST", remote, f"/v2/{remote}/blobs/uploads/?{query}")
            if started.status_code == 201:
                self._remember(digest, remote)
                return
        else:
            started = await self._target.send("POST", remote, f"/v2/{remote}/blobs/uploads/")
        await self._finish_upload(started, remote, digest, size, self._read(digest))
        self._remember(digest, remote)

    async def _upload(self, remote: str, digest: str, data: bytes) -> None:
        started = await self._target.send("POST", remote, f"/v2/{remote}/blobs/uploads/")
        await self._finish_upload(started, remote, digest, len(data), data)

    async def _finish_upload(self, started: Any, remote: str, digest: str, size: int, content: Any) -> None:
        if started.status_code != 202 or "location" not in started.headers:
            raise self._failed(f"starting an upload to {remote} answered HTTP {started.status_code}")
        location = str(started.url.join(started.headers["location"]))
        location += ("&" if "?" in location else "?") + urlencode({"digest": digest})
        done = await self._target.send(
            "PUT", remote, location,
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
            content=content)
        if done.status_code != 201:
            raise self._failed(f"uploading blob {digest} to {remote} answered HTTP {done.status_code}")

    def _remember(self, digest: str, remote: str) -> None:
        if len(self._placed) > 100_000:
            self._placed.clear()
        self._placed[digest] = remote

    async def _read(self, digest: str) -> AsyncIterator[bytes]:
        if self._blobs is None:
            raise self._failed("the metadata plane has no channel to the blob plane (set gc.blob_target)")
        try:
            async for message in self._blobs.ReadBlob(blob_pb2.ReadBlobRequest(digest=digest), timeout=3600):
                yield message.data
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _failed(self, what: str) -> RegistryError:
        return RegistryError(ErrorKind.UPSTREAM_FAILED, f"replication {self.rule.name!r} to {self.rule.url}: {what}")

    async def aclose(self) -> None:
        await self._target.aclose()
