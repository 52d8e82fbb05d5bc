"""Small builders of manifest documents for the metadata plane's tests."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_digest() -> str:
    return sha256(os.urandom(16))


def descriptor(media_type: str, digest: str | None = None, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest or random_digest(), "size": size, **extra}


def render(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1).encode()


def image(*, layers: int = 2, media_type: str = OCI_MANIFEST, config_type: str | None = None,
          subject: dict[str, Any] | None = None, artifact_type: str | None = None,
          annotations: dict[str, str] | None = None, extra_layers: list[dict[str, Any]] | None = None,
          with_media_type: bool = True) -> dict[str, Any]:
    """An image manifest with random blob digests (see `blobs_of`)."""
    docker = media_type == DOCKER_MANIFEST
    document: dict[str, Any] = {"schemaVersion": 2}
    if with_media_type:
        document["mediaType"] = media_type
    document["config"] = descriptor(config_type or (DOCKER_CONFIG if docker else OCI_CONFIG))
    document["layers"] = [descriptor(DOCKER_LAYER if docker else OCI_LAYER) for _ in range(layers)]
    document["layers"] += extra_layers or []
    if subject is not None:
        document["subject"] = subject
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if annotations is not None:
        document["annotations"] = annotations
    return document


def index(children: list[bytes], *, media_type: str = OCI_INDEX, child_type: str = OCI_MANIFEST,
          subject: dict[str, Any] | None = None, artifact_type: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [descriptor(child_type, sha256(child), len(child)) for child in children],
    }
    if subject is not None:
        document["subject"] = subject
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    return document


def blobs_of(document: dict[str, Any]) -> list[tuple[str, int]]:
    """(digest, size) of the config and every layer of an image manifest document."""
    return [(d["digest"], d["size"]) for d in [document["config"], *document.get("layers", [])]]
