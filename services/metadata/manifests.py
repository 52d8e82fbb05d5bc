"""Parsing and validation of manifests: OCI image manifest and index, Docker schema2 and manifest list.

`parse_manifest(payload, content_type)` is pure (no I/O): it decides the manifest's media type,
checks its shape, and extracts what the store needs (the blobs and child manifests it references,
its subject, the artifact type shown in the referrers API, annotations, config media type).

Media type resolution:
- the Content-Type (parameters and case ignored) must be one of `ACCEPTED_MEDIA_TYPES`, or empty /
  `application/json` / `application/octet-stream`, in which case the type is inferred from the
  payload's `mediaType` field, else from its shape (`manifests` → OCI index, `config` → OCI image
  manifest);
- when the payload carries a `mediaType`, it must equal the Content-Type;
- Docker schema1 (and any `schemaVersion` 1 payload) is refused: push schema2 or OCI instead.

Errors (all `RegistryError`):
- MANIFEST_INVALID: not JSON, not an object, `schemaVersion` not the JSON integer 2, unknown or
  mismatched media type, a malformed descriptor (missing/non-string `mediaType`, size not an
  integer in 0..2**63-1, `urls`/`annotations`/`artifactType`/`platform` of the wrong JSON type,
  `data` that is not the base64 of the content the descriptor names), malformed `annotations`, an
  `artifactType` or config `mediaType` that is not an RFC 6838 media type, a manifest or descriptor
  key that is a known field in another case (`Layers`: Go clients would read it as `layers`).
  The image spec types these fields (int, int64, string, array of strings, string map) and Go
  clients (docker, containerd) fail to decode a manifest that breaks them, so one stored anyway
  could never be pulled by them (CNCF Distribution refuses them for that reason);
- DIGEST_INVALID: a descriptor whose `digest` is a string that does not parse (a missing or
  non-string digest is MANIFEST_INVALID: the document itself is malformed). We chose DIGEST_INVALID because the
  distribution spec names it for "a manifest includes an invalid layer digest"; the detail says
  which descriptor (e.g. `{"descriptor": "layers[2]", "digest": "sha256:xyz"}`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

ACCEPTED_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

SCHEMA1_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
# Content-Types that say nothing about the manifest: infer the type from the payload.
GENERIC_CONTENT_TYPES = frozenset({"", "application/json", "application/octet-stream"})

# Layers whose bytes live elsewhere (Windows base layers, licensed content): the registry never
# holds them, so they are not required to be linked in the repository.
_FOREIGN_LAYER_TYPES = frozenset({"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"})
_NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable."

_SCHEMA1_MESSAGE = "Docker manifest schema1 is not supported; push schema2 or OCI"

# A descriptor's size is an int64 (image spec); orjson reads larger integers as floats up to 2**64.
_MAX_SIZE = 2**63 - 1
# RFC 6838 section 4.2, which the image spec requires of media types and artifact types: type "/"
# subtype, each a restricted-name of at most 127 characters. The manifest's `artifactType` and its
# config's `mediaType` are stored (and shown by the referrers API), so they are held to it: a
# longer one or one with a NUL would not fit the store's column. Other descriptors' `mediaType`
# need only be non-empty strings (nothing keeps them but the payload).
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
# The fields of a manifest and of a descriptor (lowercase → spelling), for `_exact_keys`.
_MANIFEST_FIELDS = {name.lower(): name for name in (
    "schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests", "subject", "annotations")}
_DESCRIPTOR_FIELDS = {name.lower(): name for name in (
    "mediaType", "digest", "size", "urls", "annotations", "data", "artifactType", "platform")}
# Platform fields (image-index spec) and their JSON types.
_PLATFORM_STRINGS = ("architecture", "os", "os.version", "variant")
_PLATFORM_LISTS = ("os.features", "features")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """What the registry keeps from a valid manifest.

    `blob_digests` (config and distributable layers of an image manifest) must be linked in the
    repository; `manifest_digests` (children of an index) must exist in it. Both are deduplicated
    and keep first-seen order. `artifact_type` is the value the referrers API shows: the manifest's
    `artifactType`, else (image manifests only) the config's media type, else None.
    """

    media_type: str
    subject_digest: str | None
    artifact_type: str | None
    config_media_type: str | None
    annotations: dict[str, str] | None
    blob_digests: tuple[str, ...]
    manifest_digests: tuple[str, ...]


def is_foreign_layer(media_type: str) -> bool:
    return media_type in _FOREIGN_LAYER_TYPES or media_type.startswith(_NONDISTRIBUTABLE_PREFIX)


def normalize_content_type(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` → `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def _invalid(message: str, detail: Any = None) -> RegistryError:
    return RegistryError(ErrorKind.MANIFEST_INVALID, message, detail)


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"manifest is not valid JSON ({exc}); send the manifest document as UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object with schemaVersion 2")
    _exact_keys(document, _MANIFEST_FIELDS, "manifest")
    return document


def _exact_keys(value: dict[str, Any], fields: dict[str, str], where: str) -> None:
    """Refuses a key that is one of `fields` in another case (`Layers`, `DIGEST`). JSON keys are
    case-sensitive, so this parser would not see it, but Go's encoding/json (docker, containerd,
    CNCF Distribution) matches keys case-insensitively and would: the registry would check one
    list of references and clients pull another."""
    for key in value:
        field = fields.get(key.lower())
        if field is not None and key != field:
            raise _invalid(f"{where} has a key {key!r}: spell it {field!r} (Go clients read {key!r} as {field!r})",
                           {"field": f"{where}.{key}"})


def _check_schema_version(document: dict[str, Any]) -> None:
    version = document.get("schemaVersion")
    # `type(...) is int`: not a bool, and not 2.0 (orjson reads it as a float; Go clients refuse it).
    if version == 1 and type(version) is int:
        raise _invalid(_SCHEMA1_MESSAGE, {"schemaVersion": 1})
    if version != 2 or type(version) is not int:
        raise _invalid(
            f"manifest schemaVersion must be 2, got {version!r}",
            {"schemaVersion": version},
        )


def _resolve_media_type(document: dict[str, Any], content_type: str) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("manifest mediaType must be a string", {"mediaType": declared})
    if content_type in SCHEMA1_MEDIA_TYPES or declared in SCHEMA1_MEDIA_TYPES:
        raise _invalid(_SCHEMA1_MESSAGE, {"mediaType": declared or content_type})
    if content_type in GENERIC_CONTENT_TYPES:
        if declared is not None:
            media_type = declared
        elif "manifests" in document:
            media_type = OCI_INDEX
        elif "config" in document:
            media_type = OCI_MANIFEST
        else:
            raise _invalid(
                "cannot tell the manifest type: set its mediaType field or the Content-Type header to one of "
                + ", ".join(ACCEPTED_MEDIA_TYPES),
                {"accepted": list(ACCEPTED_MEDIA_TYPES)},
            )
    else:
        media_type = content_type
        if declared is not None and declared != content_type:
            raise _invalid(
                f"manifest mediaType {declared!r} does not match Content-Type {content_type!r}; make them equal",
                {"mediaType": declared, "contentType": content_type},
            )
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise _invalid(
            f"unsupported manifest media type {media_type!r}; use one of " + ", ".join(ACCEPTED_MEDIA_TYPES),
            {"mediaType": media_type, "accepted": list(ACCEPTED_MEDIA_TYPES)},
        )
    return media_type


def _descriptor(value: Any, where: str) -> tuple[str, str]:
    """Validates one descriptor; returns (mediaType, digest)."""
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object", {"descriptor": where})
    _exact_keys(value, _DESCRIPTOR_FIELDS, where)
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType must be a non-empty string", {"descriptor": where})
    digest = value.get("digest")
    if not isinstance(digest, str) or not digest:
        # A missing digest is a malformed document, not a malformed digest.
        raise _invalid(f"{where}.digest is required", {"descriptor": where})
    try:
        parsed = Digest.parse(digest)  # type: ignore[arg-type]
    except RegistryError as exc:
        raise RegistryError(
            ErrorKind.DIGEST_INVALID,
            f"{where}.digest is invalid: {exc.message}",
            {"descriptor": where, "digest": digest},
        ) from None
    size = value.get("size")
    if type(size) is not int or not 0 <= size <= _MAX_SIZE:
        raise _invalid(f"{where}.size must be an integer from 0 to {_MAX_SIZE}", {"descriptor": where, "size": size})
    _descriptor_extras(value, where, parsed, size)
    return media_type, str(parsed)


def _descriptor_extras(value: dict[str, Any], where: str, digest: Digest, size: int) -> None:
    """The optional descriptor fields have the JSON types the image spec gives them, and embedded
    `data` is the base64 of exactly the content the descriptor names."""
    urls = value.get("urls")
    if not _is_text_list(urls):
        raise _invalid(f"{where}.urls must be an array of strings", {"descriptor": where, "field": "urls"})
    _annotations(value.get("annotations"), f"{where}.annotations")
    _media_type_field(value, "artifactType", where)
    platform = value.get("platform")
    if platform is not None and not (
        isinstance(platform, dict)
        and all(_is_text(platform.get(key)) for key in _PLATFORM_STRINGS)
        and all(_is_text_list(platform.get(key)) for key in _PLATFORM_LISTS)
    ):
        raise _invalid(f"{where}.platform must be an object of string fields (os.features and features: "
                       "arrays of strings)", {"descriptor": where, "field": "platform"})
    data = value.get("data")
    if data is not None:
        try:
            content = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        except binascii.Error:
            content = None
        if content is None or len(content) != size or Digest.of(content, digest.algorithm) != digest:
            raise _invalid(f"{where}.data must be the base64 encoding of the content the descriptor's digest "
                           "and size name", {"descriptor": where, "field": "data"})


def _is_text(value: Any) -> bool:
    """A string, or null (which Go clients decode as an empty string: not worth a refusal)."""
    return value is None or isinstance(value, str)


def _is_text_list(value: Any) -> bool:
    """Absent, or an array of `_is_text` items."""
    return value is None or (isinstance(value, list) and all(_is_text(item) for item in value))


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f"{where} must be an object of string values", {"field": where})
    return value


def _optional_string(document: dict[str, Any], key: str, where: str = "") -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        name = f"{where}.{key}" if where else key
        raise _invalid(f"{name} must be a non-empty string", {"field": name})
    return value


def _media_type_field(document: dict[str, Any], key: str, where: str = "") -> str | None:
    """An optional field that must be an RFC 6838 media type (such as `artifactType`)."""
    value = _optional_string(document, key, where)
    if value is not None and not _MEDIA_TYPE.fullmatch(value):
        name = f"{where}.{key}" if where else key
        raise _invalid(f"{name} must be a media type (RFC 6838: type/subtype, each at most 127 letters, digits "
                       f"or !#$&^_.+-), got {value[:300]!r}", {"field": name})
    return value


def _descriptor_list(document: dict[str, Any], key: str, *, required: bool) -> list[Any]:
    value = document.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _invalid(f"manifest {key} must be an array of descriptors", {"field": key})
    return value


def parse_manifest(payload: bytes, content_type: str) -> ParsedManifest:
    """Validates `payload` sent with `content_type`; see the module docstring for rules and errors."""
    document = _decode(payload)
    _check_schema_version(document)
    media_type = _resolve_media_type(document, normalize_content_type(content_type))

    subject_digest = None
    if document.get("subject") is not None:
        subject_digest = _descriptor(document["subject"], "subject")[1]
    artifact_type = _media_type_field(document, "artifactType")
    annotations = _annotations(document.get("annotations"), "annotations")

    blobs: dict[str, None] = {}
    children: dict[str, None] = {}
    config_media_type = None
    if media_type in IMAGE_MANIFEST_TYPES:
        if "manifests" in document:
            raise _invalid("an image manifest cannot have a manifests field", {"field": "manifests"})
        config_media_type, config_digest = _descriptor(document.get("config"), "config")
        _media_type_field(document["config"], "mediaType", "config")
        blobs[config_digest] = None
        # Docker schema2 requires layers; OCI artifacts may leave them out.
        layers = _descriptor_list(document, "layers", required=media_type == DOCKER_MANIFEST)
        for position, layer in enumerate(layers):
            layer_type, layer_digest = _descriptor(layer, f"layers[{position}]")
            if not is_foreign_layer(layer_type):
                blobs[layer_digest] = None
        if artifact_type is None:
            artifact_type = config_media_type
    else:
        if "config" in document or "layers" in document:
            raise _invalid("an index cannot have config or layers fields", {"field": "config/layers"})
        for position, child in enumerate(_descriptor_list(document, "manifests", required=True)):
            children[_descriptor(child, f"manifests[{position}]")[1]] = None

    return ParsedManifest(
        media_type=media_type,
        subject_digest=subject_digest,
        artifact_type=artifact_type,
        config_media_type=config_media_type,
        annotations=annotations,
        blob_digests=tuple(blobs),
        manifest_digests=tuple(children),
    )


async def off_the_loop_when_big(payload: bytes, inline_max_bytes: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`, CPU work on `payload`, in a worker thread when the payload is over
    `inline_max_bytes` (metadata.manifest_parse_inline_max_bytes): a big one would hold the event
    loop, and every other call of the process, for tens of milliseconds; a small one costs less
    than the hop."""
    if len(payload) > inline_max_bytes:
        return await asyncio.to_thread(work, *args)
    return work(*args)


async def parse_manifest_off_the_loop(payload: bytes, content_type: str, *, inline_max_bytes: int) -> ParsedManifest:
    """`parse_manifest`, off the loop when big (`off_the_loop_when_big`)."""
    return await off_the_loop_when_big(payload, inline_max_bytes, parse_manifest, payload, content_type)
