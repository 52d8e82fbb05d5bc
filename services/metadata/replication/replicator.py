"""Copies what replication events name to one target registry (see the package docstring)."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import grpc
import orjson
from lading.blob.v1 import blob_pb2, blob_pb2_grpc

from services.common.errors import ErrorKind, RegistryError, from_rpc_error
from services.common.settings import (
    EventEndpointSettings,
    EventsSettings,
    ReplicationRuleSettings,
    ReplicationSettings,
)
from services.common.upstream import MANIFEST_ACCEPT, Upstream
from services.metadata.manifests import parse_manifest
from services.metadata.store.base import MetadataStore

log = logging.getLogger("lading.replication")

ENDPOINT_PREFIX = "replicate-"
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


class Replicator:
    """One rule: copies pushed manifests (with children and blobs) to its target registry."""

    def __init__(self, rule: ReplicationRuleSettings, store: MetadataStore, blob_channel: grpc.aio.Channel | None
                 ) -> None:
        self.rule = rule
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
        if not repository or not digest or not self._wanted(repository):
            return
        remote = f"{self.rule.target_prefix}{repository}"
        if event.get("action") == "delete":
            if not tag:
                response = await self._target.send("DELETE", remote, f"/v2/{remote}/manifests/{digest}")
                if response.status_code not in (202, 200, 404):
                    raise self._failed(f"DELETE of {remote}@{digest} answered HTTP {response.status_code}")
            return
        if tag and not self._tags.fullmatch(tag):
            return
        await self._copy_manifest(repository, remote, digest, tag)

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
        parsed = parse_manifest(payload, stored.media_type)
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
        if started.status_code != 202 or "location" not in started.headers:
            raise self._failed(f"starting an upload to {remote} answered HTTP {started.status_code}")
        location = str(started.url.join(started.headers["location"]))
        location += ("&" if "?" in location else "?") + urlencode({"digest": digest})
        done = await self._target.send(
            "PUT", remote, location,
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
            content=self._read(digest))
        if done.status_code != 201:
            raise self._failed(f"uploading blob {digest} to {remote} answered HTTP {done.status_code}")
        self._remember(digest, remote)

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
