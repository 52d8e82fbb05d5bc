"""What the console shows of a manifest payload, and how it writes sizes and times.

`manifest_view` reads the stored payload (OCI or Docker manifest or index) into plain data for the
template: config, layers with sizes, annotations, subject, and for an index its manifests with
their platforms. A payload that is not a JSON object shows as an empty view (the raw bytes are
shown too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: str = ""
    artifact_type: str = ""


@dataclass(frozen=True)
class ManifestView:
    is_index: bool
    config: Descriptor | None
    layers: list[Descriptor]
    manifests: list[Descriptor]
    annotations: dict[str, str]
    subject: Descriptor | None
    artifact_type: str
    total_size: int
    pretty: str


def _descriptor(value: Any) -> Descriptor | None:
    if not isinstance(value, dict):
        return None
    platform = value.get("platform")
    described = ""
    if isinstance(platform, dict):
        parts = [str(platform.get("os", "")), str(platform.get("architecture", ""))]
        if platform.get("variant"):
            parts.append(str(platform["variant"]))
        described = "/".join(p for p in parts if p)
    annotations = value.get("annotations")
    size = value.get("size")
    return Descriptor(
        media_type=str(value.get("mediaType", "")), digest=str(value.get("digest", "")),
        size=size if isinstance(size, int) else 0,
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        platform=described, artifact_type=str(value.get("artifactType", "")),
    )


def _descriptors(values: Any) -> list[Descriptor]:
    if not isinstance(values, list):
        return []
    return [d for d in (_descriptor(v) for v in values) if d is not None]


def manifest_view(payload: bytes, media_type: str) -> ManifestView:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return ManifestView(False, None, [], [], {}, None, "", 0, payload.decode(errors="replace"))
    is_index = media_type in INDEX_TYPES or "manifests" in document
    layers = _descriptors(document.get("layers") or document.get("blobs"))
    config = _descriptor(document.get("config"))
    annotations = document.get("annotations")
    total = sum(layer.size for layer in layers) + (config.size if config else 0)
    return ManifestView(
        is_index=is_index, config=config, layers=layers, manifests=_descriptors(document.get("manifests")),
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        subject=_descriptor(document.get("subject")), artifact_type=str(document.get("artifactType", "")),
        total_size=total, pretty=orjson.dumps(document, option=orjson.OPT_INDENT_2).decode(),
    )


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_time(seconds: int) -> str:
    if not seconds:
        return "–"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def short_digest(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest
