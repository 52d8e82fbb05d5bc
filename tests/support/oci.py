"""Test content for a registry: blobs, OCI/Docker manifests, indexes, artifacts, OCI image layouts,
and the few HTTP calls that push them.

Everything is built from random bytes so that tests never collide on a shared registry. A
`Manifest` keeps the exact payload bytes it will be pushed with (optionally with non-canonical
whitespace), so tests can check that the registry stores and serves those bytes unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import httpx

# Media types (OCI image spec v1.1, Docker image manifest v2 schema 2).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Every manifest type, for Accept headers.
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_ALL = ", ".join(ALL_MANIFEST_TYPES)

REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Bytes with the media type they are referenced with."""

    data: bytes
    media_type: str = "application/octet-stream"

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Manifest:
    """A manifest or index: the exact bytes to push, its media type, and what it references.

    `blobs` are the blobs it references directly (config and layers); `children` the manifests
    an index references. Both must be in the repository before the manifest is pushed.
    """

    payload: bytes
    media_type: str
    blobs: tuple[Blob, ...] = ()
    children: tuple[Manifest, ...] = ()
    platform: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def digest(self) -> str:
        return sha256(self.payload)

    @property
    def size(self) -> int:
        return len(self.payload)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.payload)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            desc["platform"] = dict(self.platform)
        desc.update(extra)
        return desc

    def all_blobs(self) -> list[Blob]:
        """Every blob reachable from this manifest (children included), without duplicates."""
        seen: dict[str, Blob] = {}
        for child in self.children:
            for blob in child.all_blobs():
                seen.setdefault(blob.digest, blob)
        for blob in self.blobs:
            seen.setdefault(blob.digest, blob)
        return list(seen.values())


def render(document: Mapping[str, Any], *, odd_whitespace: bool = False) -> bytes:
    """JSON bytes of `document`. With `odd_whitespace`, deliberately non-canonical (tabs, spaces
    around separators, a trailing newline) so a registry that re-serialises would change them."""
    if not odd_whitespace:
        return json.dumps(document, separators=(",", ":")).encode()
    return (json.dumps(document, indent="\t", separators=(" ,  ", " :   ")) + "\n\n").encode()


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def random_blob(size: int = 1024, media_type: str = "application/octet-stream") -> Blob:
    return Blob(random_bytes(size), media_type)


@dataclass(frozen=True)
class Layer:
    """A real gzip'd tar layer (clients such as skopeo sniff compression) and its diff ID."""

    blob: Blob
    diff_id: str


def random_layer(size: int = 4096, media_type: str = OCI_LAYER) -> Layer:
    """A tar.gz holding one file of `size` random bytes."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tar:
        info = tarfile.TarInfo(name=f"data-{os.urandom(4).hex()}.bin")
        info.size = size
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(random_bytes(size)))
    tar_bytes = tar_buffer.getvalue()
    return Layer(Blob(gzip.compress(tar_bytes, mtime=0), media_type), sha256(tar_bytes))


def image_config(diff_ids: Sequence[str], *, architecture: str = "amd64", os_name: str = "linux",
                 media_type: str = OCI_CONFIG) -> Blob:
    """A minimal but valid image config for the given layer diff IDs."""
    document = {
        "architecture": architecture,
        "os": os_name,
        "config": {"Labels": {"test.nonce": os.urandom(8).hex()}},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": "lading tests"} for _ in diff_ids],
    }
    return Blob(render(document), media_type)


def image(layers: int = 3, *, layer_size: int = 4096, docker: bool = False,
          architecture: str = "amd64", os_name: str = "linux",
          annotations: Mapping[str, str] | None = None, odd_whitespace: bool = False,
          extra: Mapping[str, Any] | None = None) -> Manifest:
    """An image manifest (OCI by default, Docker schema 2 with `docker=True`) with random layers.

    `extra` adds top-level fields (such as `subject` or `artifactType`)."""
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    built = [random_layer(layer_size, layer_type) for _ in range(layers)]
    config = image_config([layer.diff_id for layer in built], architecture=architecture, os_name=os_name,
                          media_type=DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in built],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    if extra:
        document.update(extra)
    return Manifest(render(document, odd_whitespace=odd_whitespace), media_type,
                    blobs=(config, *(layer.blob for layer in built)),
                    platform={"architecture": architecture, "os": os_name})


def index(children: Sequence[Manifest], *, docker: bool = False, artifact_type: str | None = None,
          subject: Manifest | None = None, annotations: Mapping[str, str] | None = None,
          odd_whitespace: bool = False) -> Manifest:
    """An OCI image index (or a Docker manifest list) over `children`, each with its platform."""
    media_type = DOCKER_LIST if docker else OCI_INDEX
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [child.descriptor() for child in children],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = subject_descriptor(subject)
    if annotations:
        document["annotations"] = dict(annotations)
    return Manifest(render(document, odd_whitespace=odd_whitespace), media_type, children=tuple(children))


def multi_arch_index(platforms: Iterable[tuple[str, str]] = (("amd64", "linux"), ("arm64", "linux")),
                     *, layers: int = 2, docker: bool = False) -> Manifest:
    """An index with one image per (architecture, os)."""
    children = [image(layers, architecture=arch, os_name=os_name, docker=docker) for arch, os_name in platforms]
    return index(children, docker=docker)


EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


def subject_descriptor(subject: Manifest | Mapping[str, Any]) -> dict[str, Any]:
    """The descriptor a `subject` field holds (no platform: that only belongs in indexes)."""
    if isinstance(subject, Manifest):
        return {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    return dict(subject)


def artifact(*, artifact_type: str | None = "application/vnd.example.sbom.v1",
             subject: Manifest | Mapping[str, Any] | None = None, files: Sequence[Blob] | None = None,
             config: Blob | None = None, annotations: Mapping[str, str] | None = None,
             odd_whitespace: bool = False) -> Manifest:
    """An OCI artifact manifest: `artifactType`, the empty config by default, optional subject.

    With `artifact_type=None` the manifest has no artifactType, so referrers must report the
    config's media type instead (pass a `config` with a distinctive media type)."""
    config = config or EMPTY_CONFIG
    files = list(files) if files is not None else [random_blob(256, "application/vnd.example.file")]
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        document["artifactType"] = artifact_type
    document["config"] = config.descriptor()
    document["layers"] = [blob.descriptor() for blob in files] or [EMPTY_CONFIG.descriptor()]
    if subject is not None:
        document["subject"] = subject_descriptor(subject)
    if annotations:
        document["annotations"] = dict(annotations)
    blobs = (config, *files) if files else (config, EMPTY_CONFIG)
    return Manifest(render(document, odd_whitespace=odd_whitespace), OCI_MANIFEST, blobs=blobs)


# OCI image layouts on disk -------------------------------------------------------------------


def write_layout(directory: Path, tagged: Mapping[str, Manifest]) -> Path:
    """Writes an OCI image layout holding every manifest in `tagged` (with children and blobs),
    each named by its tag in index.json. Returns `directory`."""
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def put(data: bytes) -> None:
        (blobs_dir / sha256(data).split(":", 1)[1]).write_bytes(data)

    def put_manifest(manifest: Manifest) -> None:
        for child in manifest.children:
            put_manifest(child)
        for blob in manifest.blobs:
            put(blob.data)
        put(manifest.payload)

    entries = []
    for tag, manifest in tagged.items():
        put_manifest(manifest)
        entry = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size,
                 "annotations": {REF_NAME: tag}}
        entries.append(entry)
    top = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (directory / "index.json").write_text(json.dumps(top, indent=2))
    return directory


@dataclass(frozen=True)
class Layout:
    """A read-only view of an OCI image layout written by a client."""

    root: Path

    @property
    def index(self) -> dict[str, Any]:
        return json.loads((self.root / "index.json").read_text())

    def blob(self, digest: str) -> bytes:
        algorithm, encoded = digest.split(":", 1)
        return (self.root / "blobs" / algorithm / encoded).read_bytes()

    def has_blob(self, digest: str) -> bool:
        algorithm, encoded = digest.split(":", 1)
        return (self.root / "blobs" / algorithm / encoded).is_file()

    def descriptor_for(self, tag: str) -> dict[str, Any]:
        for entry in self.index["manifests"]:
            if (entry.get("annotations") or {}).get(REF_NAME) == tag:
                return entry
        raise KeyError(f"no manifest tagged {tag!r} in {self.root}/index.json")


# Pushing and pulling over HTTP (httpx) -----------------------------------------------------------


def absolute(client: httpx.Client, location: str) -> str:
    """Resolves a Location header (relative or absolute) against the client's base URL."""
    return urljoin(str(client.base_url), location)


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to whatever query it has (upload Locations MAY carry critical
    query parameters, so they must be kept, not replaced)."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def with_digest(url: str, digest: str) -> str:
    return with_query(url, digest=digest)


def push_blob(client: httpx.Client, repo: str, blob: Blob | bytes) -> httpx.Response:
    """POST + PUT monolithic upload; asserts 201 and returns the PUT response."""
    data = blob.data if isinstance(blob, Blob) else blob
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, f"POST upload: {started.status_code} {started.text}"
    done = client.put(with_digest(absolute(client, started.headers["Location"]), sha256(data)), content=data, headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, f"PUT upload: {done.status_code} {done.text}"
    return done


def push_manifest_only(client: httpx.Client, repo: str, reference: str, manifest: Manifest) -> httpx.Response:
    """PUT the manifest bytes with their media type; returns the response without asserting."""
    return client.put(f"/v2/{repo}/manifests/{reference}", content=manifest.payload,
                      headers={"Content-Type": manifest.media_type})


def push(client: httpx.Client, repo: str, manifest: Manifest, tag: str | None = None) -> httpx.Response:
    """Pushes every blob and child, then the manifest (by `tag`, else by digest); asserts 201."""
    for child in manifest.children:
        push(client, repo, child)
    for blob in manifest.blobs:
        push_blob(client, repo, blob)
    response = push_manifest_only(client, repo, tag or manifest.digest, manifest)
    assert response.status_code == 201, f"PUT manifest: {response.status_code} {response.text}"
    return response


def get_manifest(client: httpx.Client, repo: str, reference: str, *, method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})


def assert_pulls_back(client: httpx.Client, repo: str, reference: str, manifest: Manifest) -> None:
    """The manifest under `reference` and each of its blobs come back byte-identical (following
    a blob GET's redirect, as registry clients do)."""
    pulled = get_manifest(client, repo, reference)
    assert pulled.status_code == 200 and pulled.content == manifest.payload, pulled.text
    for blob in manifest.blobs:
        got = client.get(f"/v2/{repo}/blobs/{blob.digest}", follow_redirects=True)
        assert got.status_code == 200 and got.content == blob.data, f"{blob.digest}: {got.status_code}"


def error_codes(response: httpx.Response) -> list[str]:
    """The `code`s of an OCI error envelope; asserts the envelope's shape."""
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], body
    for error in body["errors"]:
        assert isinstance(error, dict) and isinstance(error.get("code"), str), body
        assert error["code"].replace("_", "").isalpha() and error["code"].isupper(), body
        assert "message" not in error or isinstance(error["message"], str), body
    return [error["code"] for error in body["errors"]]


def assert_error(response: httpx.Response, status: int | Sequence[int], *codes: str) -> None:
    """Asserts the status (one or any of several) and, when codes are given, that the OCI error
    envelope carries one of them (HEAD responses have no body, so only the status is checked)."""
    allowed = (status,) if isinstance(status, int) else tuple(status)
    assert response.status_code in allowed, (
        f"{response.request.method} {response.request.url}: expected {allowed}, "
        f"got {response.status_code} {response.text[:500]}"
    )
    if codes and response.request.method != "HEAD":
        found = error_codes(response)
        assert set(found) & set(codes), f"expected one of {codes}, got {found}"
