"""end-3 (GET/HEAD manifest), end-7 (PUT manifest) and end-9 (DELETE manifest or tag)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.oci import (
    OCI_LAYER,
    OCI_MANIFEST,
    Manifest,
    absolute,
    artifact,
    assert_error,
    get_manifest,
    image,
    index,
    multi_arch_index,
    push,
    push_blob,
    push_manifest_only,
    render,
    sha256,
)

KINDS: dict[str, Callable[[], Manifest]] = {
    "oci-image": lambda: image(3, odd_whitespace=True),
    "oci-index": lambda: index([image(1, architecture="amd64"), image(1, architecture="arm64")],
                               odd_whitespace=True),
    "docker-manifest": lambda: image(2, docker=True, odd_whitespace=True),
    "docker-list": lambda: index([image(1, docker=True, architecture="amd64"),
                                  image(1, docker=True, architecture="arm64")], docker=True, odd_whitespace=True),
    "artifact": lambda: artifact(annotations={"org.example.kind": "sbom"}, odd_whitespace=True),
}


def assert_served(client: httpx.Client, repo: str, reference: str, manifest: Manifest) -> None:
    """GET and HEAD serve the exact pushed bytes, type and digest."""
    response = get_manifest(client, repo, reference)
    assert response.status_code == 200, response.text
    assert response.content == manifest.payload
    assert response.headers["Content-Type"] == manifest.media_type
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    head = get_manifest(client, repo, reference, method="HEAD")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == manifest.media_type
    assert head.headers["Docker-Content-Digest"] == manifest.digest
    assert int(head.headers["Content-Length"]) == manifest.size


@pytest.mark.parametrize("kind", list(KINDS))
def test_push_by_tag_then_pull_exact_bytes(client: httpx.Client, repo: str, kind: str) -> None:
    manifest = KINDS[kind]()
    assert b"\t" in manifest.payload, "the payload must be non-canonical to prove bytes are kept"
    response = push(client, repo, manifest, tag="v1")
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    assert absolute(client, response.headers["Location"]).endswith(
        (f"/v2/{repo}/manifests/v1", f"/v2/{repo}/manifests/{manifest.digest}"))
    assert_served(client, repo, "v1", manifest)
    assert_served(client, repo, manifest.digest, manifest)


@pytest.mark.parametrize("kind", list(KINDS))
def test_push_by_digest(client: httpx.Client, repo: str, kind: str) -> None:
    manifest = KINDS[kind]()
    response = push(client, repo, manifest)
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    assert absolute(client, response.headers["Location"]).endswith(f"/v2/{repo}/manifests/{manifest.digest}")
    assert_served(client, repo, manifest.digest, manifest)


def test_a_conditional_get_answered_304_leaves_the_next_get_whole(client: httpx.Client, repo: str) -> None:
    # The metadata plane sends no payload for a GET the gateway answers 304; the gateway's
    # manifest cache must not keep that empty answer as the manifest's bytes.
    manifest = KINDS[next(iter(KINDS))]()
    push(client, repo, manifest, tag="v1")
    for reference in ("v1", manifest.digest):
        held = client.get(f"/v2/{repo}/manifests/{reference}",
                          headers={"If-None-Match": f'"{manifest.digest}"', "Accept": manifest.media_type})
        assert held.status_code == 304 and held.content == b""
        assert held.headers["Docker-Content-Digest"] == manifest.digest
        assert_served(client, repo, reference, manifest)


def test_multi_arch_index_children_are_pullable(client: httpx.Client, repo: str) -> None:
    top = multi_arch_index()
    push(client, repo, top, tag="multi")
    pulled = get_manifest(client, repo, "multi").json()
    assert [m["platform"]["architecture"] for m in pulled["manifests"]] == ["amd64", "arm64"]
    for child in top.children:
        assert_served(client, repo, child.digest, child)
        for blob in child.blobs:
            assert client.get(f"/v2/{repo}/blobs/{blob.digest}").content == blob.data


def test_manifest_without_media_type_field_uses_content_type(client: httpx.Client, repo: str) -> None:
    # The image spec only RECOMMENDS `mediaType`; the Content-Type then names the type.
    base = image(1)
    document = base.json
    del document["mediaType"]
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=base.blobs)
    push(client, repo, manifest, tag="nomt")
    assert_served(client, repo, "nomt", manifest)


def test_content_type_parameters_are_ignored(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    for blob in manifest.blobs:
        push_blob(client, repo, blob)
    response = client.put(f"/v2/{repo}/manifests/params", content=manifest.payload,
                          headers={"Content-Type": f"{manifest.media_type}; charset=utf-8"})
    assert response.status_code == 201, response.text
    assert_served(client, repo, "params", manifest)


def test_pushing_the_same_manifest_twice_is_idempotent(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    push(client, repo, manifest, tag="a")
    again = push_manifest_only(client, repo, "a", manifest)
    assert again.status_code == 201
    assert again.headers["Docker-Content-Digest"] == manifest.digest
    assert push_manifest_only(client, repo, "b", manifest).status_code == 201
    assert_served(client, repo, "a", manifest)
    assert_served(client, repo, "b", manifest)


def test_tag_moves_to_the_newest_manifest(client: httpx.Client, repo: str) -> None:
    first, second = image(1), image(1)
    push(client, repo, first, tag="latest")
    push(client, repo, second, tag="latest")
    assert_served(client, repo, "latest", second)
    assert_served(client, repo, first.digest, first)  # the old manifest is still there by digest


def test_manifest_is_scoped_to_its_repository(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    push(client, repo, manifest, tag="v1")
    other = unique_repo()
    push(client, other, image(1), tag="v1")
    assert get_manifest(client, other, manifest.digest).status_code == 404
    assert get_manifest(client, other, "v1").content != manifest.payload


# Rejections -------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["config", "layer"])
def test_manifest_with_missing_blob_is_manifest_blob_unknown(client: httpx.Client, repo: str, missing: str) -> None:
    manifest = image(2)
    config, *layers = manifest.blobs
    skipped = config if missing == "config" else layers[1]
    for blob in manifest.blobs:
        if blob is not skipped:
            push_blob(client, repo, blob)
    response = push_manifest_only(client, repo, "broken", manifest)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(get_manifest(client, repo, "broken"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("unknown", [200, 500, 10_000])
def test_any_number_of_unknown_blobs_is_one_bounded_manifest_blob_unknown(
    client: httpx.Client, repo: str, unknown: int
) -> None:
    # Once 200 unknown blobs answered 500 and 500 or more 429: the error outgrew gRPC's trailers.
    known = image(1)
    push(client, repo, known, tag="known")
    layers = [
        {"mediaType": OCI_LAYER, "digest": sha256(f"{repo} {i}".encode()), "size": 1}
        for i in range(unknown)
    ]
    document = {**known.json, "layers": known.json["layers"] + layers}
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=known.blobs)
    response = push_manifest_only(client, repo, "many", manifest)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    detail = response.json()["errors"][0]["detail"]
    assert detail["blob_count"] == unknown and detail["manifest_count"] == 0
    assert 0 < len(detail["blobs"]) <= 5 and set(detail["blobs"]) <= {layer["digest"] for layer in layers}
    assert len(response.content) < 4096
    assert_error(get_manifest(client, repo, "many"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["known"]


def test_manifest_with_blob_linked_only_in_another_repository_is_rejected(
    client: httpx.Client, repo: str
) -> None:
    manifest = image(1)
    elsewhere = unique_repo()
    for blob in manifest.blobs:
        push_blob(client, elsewhere, blob)
    assert_error(push_manifest_only(client, repo, "v1", manifest), 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(get_manifest(client, repo, "v1"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


@pytest.mark.parametrize("key", ["Layers", "LAYERS"])
def test_differently_cased_layers_cannot_hide_an_unknown_blob(client: httpx.Client, repo: str, key: str) -> None:
    # Go clients read `Layers` as `layers`: once accepted, the registry checked no layers at all
    # while docker and containerd pulled one it never checked.
    base = image(1)
    for blob in base.blobs:
        push_blob(client, repo, blob)
    document = {**base.json, key: [{"mediaType": OCI_LAYER, "digest": sha256(repo.encode()), "size": 1}]}
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=base.blobs)
    assert_error(push_manifest_only(client, repo, "cased", manifest), 400, "MANIFEST_INVALID")
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")


def test_index_with_missing_child_is_manifest_blob_unknown(client: httpx.Client, repo: str) -> None:
    present, absent = image(1), image(1)
    push(client, repo, present)
    top = index([present, absent])
    assert_error(push_manifest_only(client, repo, "idx", top), 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(get_manifest(client, repo, "idx"), 404, "MANIFEST_UNKNOWN")


# Fields of a JSON type the image spec does not allow: Go clients (docker, containerd) cannot
# decode such a manifest, so storing it would publish an image they can never pull.
UNDECODABLE: dict[str, Callable[[dict], None]] = {
    "schemaVersion-2.0": lambda doc: doc.update(schemaVersion=2.0),
    "size-over-int64": lambda doc: doc["layers"][0].update(size=2**63),
    "urls-not-an-array": lambda doc: doc["layers"][0].update(urls="https://example.com/layer"),
    "annotations-not-strings": lambda doc: doc["config"].update(annotations={"n": 1}),
    "data-not-the-content": lambda doc: doc["config"].update(data="aGVsbG8="),
    # Not RFC 6838 media types; on PostgreSQL these once answered 500 (VARCHAR(255), no NUL).
    "artifactType-too-long": lambda doc: doc.update(artifactType="application/" + "x" * 300),
    "artifactType-with-nul": lambda doc: doc.update(artifactType="application/x\0y"),
    "config-mediaType-too-long": lambda doc: doc["config"].update(mediaType="application/" + "x" * 300),
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
def test_manifest_with_mistyped_fields_is_manifest_invalid(client: httpx.Client, repo: str, case: str) -> None:
    base = image(1)
    for blob in base.blobs:
        push_blob(client, repo, blob)
    document = base.json
    UNDECODABLE[case](document)
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=base.blobs)
    assert_error(push_manifest_only(client, repo, "bad", manifest), 400, "MANIFEST_INVALID")
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")


def test_manifest_over_4_mib_is_413(client: httpx.Client, repo: str) -> None:
    base = image(1)
    for blob in base.blobs:
        push_blob(client, repo, blob)
    document = base.json
    document["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    payload = render(document)
    assert len(payload) > 4 * 1024 * 1024
    response = client.put(f"/v2/{repo}/manifests/huge", content=payload, headers={"Content-Type": OCI_MANIFEST})
    assert_error(response, 413, "MANIFEST_INVALID", "SIZE_INVALID")
    assert_error(get_manifest(client, repo, "huge"), 404, "MANIFEST_UNKNOWN")


def test_manifest_just_under_4_mib_is_accepted(client: httpx.Client, repo: str) -> None:
    base = image(1)
    document = base.json
    document["annotations"] = {"padding": ""}
    overhead = len(render(document))
    document["annotations"]["padding"] = "y" * (4 * 1024 * 1024 - overhead)
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=base.blobs)
    assert manifest.size == 4 * 1024 * 1024
    push(client, repo, manifest, tag="big")
    assert_served(client, repo, "big", manifest)


def test_a_3_mib_manifest_of_many_descriptors_round_trips(client: httpx.Client, repo: str) -> None:
    """A manifest this big is parsed in the metadata plane's worker thread, not on its event loop
    (metadata.manifest_parse_inline_max_bytes); pushed and pulled it stays the same. Thousands of
    non-distributable layers: each a descriptor to validate, none a blob to push."""
    base = image(1)
    document = base.json

    def layer(number: int) -> dict[str, Any]:
        return {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": sha256(number.to_bytes(8, "big")), "size": 1000 + number,
                "urls": [f"https://layers.example/{number}"],
                "annotations": {"org.opencontainers.image.title": f"layer-{number}.tar.gz"}}

    count = 3 * 1024 * 1024 // len(render(layer(0)))
    document["layers"] = [*document["layers"], *(layer(number) for number in range(count))]
    manifest = Manifest(render(document), OCI_MANIFEST, blobs=base.blobs)
    assert 2.5 * 1024 * 1024 < manifest.size < 3.5 * 1024 * 1024
    push(client, repo, manifest, tag="many")
    assert_served(client, repo, "many", manifest)
    assert_served(client, repo, manifest.digest, manifest)


def test_put_by_digest_that_does_not_match_the_body_is_digest_invalid(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    for blob in manifest.blobs:
        push_blob(client, repo, blob)
    claimed = sha256(manifest.payload + b" ")
    response = client.put(f"/v2/{repo}/manifests/{claimed}", content=manifest.payload,
                          headers={"Content-Type": manifest.media_type})
    assert_error(response, 400, "DIGEST_INVALID")
    assert_error(get_manifest(client, repo, claimed), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")


# Subject ----------------------------------------------------------------------------------------


def test_artifact_with_subject_echoes_oci_subject(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject, tag="app")
    referrer = artifact(subject=subject, artifact_type="application/vnd.example.signature.v1")
    response = push(client, repo, referrer)
    assert response.headers["OCI-Subject"] == subject.digest
    assert_served(client, repo, referrer.digest, referrer)
    pulled = get_manifest(client, repo, referrer.digest).json()
    assert pulled["artifactType"] == "application/vnd.example.signature.v1"
    assert pulled["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


def test_subject_that_does_not_exist_yet_is_accepted(client: httpx.Client, repo: str) -> None:
    future_subject = image(1)  # never pushed (yet)
    referrer = artifact(subject=future_subject)
    response = push(client, repo, referrer, tag="early")
    assert response.headers["OCI-Subject"] == future_subject.digest
    assert_served(client, repo, "early", referrer)
    # The subject can be pushed afterwards.
    push(client, repo, future_subject, tag="late")
    assert_served(client, repo, "late", future_subject)


def test_index_with_subject_echoes_oci_subject(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject)
    child = image(1)
    top = index([child], subject=subject, artifact_type="application/vnd.example.bundle.v1")
    response = push(client, repo, top)
    assert response.headers["OCI-Subject"] == subject.digest


def test_manifest_without_subject_has_no_oci_subject_header(client: httpx.Client, repo: str) -> None:
    response = push(client, repo, image(1))
    assert "OCI-Subject" not in response.headers


# Delete -----------------------------------------------------------------------------------------


def test_delete_by_tag_removes_only_the_tag(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    push(client, repo, manifest, tag="gone")
    push_manifest_only(client, repo, "kept", manifest)
    response = client.delete(f"/v2/{repo}/manifests/gone")
    assert response.status_code == 202, response.text
    assert_error(get_manifest(client, repo, "gone"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, "gone", method="HEAD"), 404)
    assert_served(client, repo, manifest.digest, manifest)
    assert_served(client, repo, "kept", manifest)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["kept"]
    assert_error(client.delete(f"/v2/{repo}/manifests/gone"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_removes_manifest_and_its_tags(client: httpx.Client, repo: str) -> None:
    manifest, survivor = image(1), image(1)
    push(client, repo, manifest, tag="one")
    push_manifest_only(client, repo, "two", manifest)
    push(client, repo, survivor, tag="three")
    response = client.delete(f"/v2/{repo}/manifests/{manifest.digest}")
    assert response.status_code == 202, response.text
    for reference in (manifest.digest, "one", "two"):
        assert_error(get_manifest(client, repo, reference), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["three"]
    assert_served(client, repo, "three", survivor)
    # Blobs are only unlinked by blob DELETE, not by manifest deletion.
    for blob in manifest.blobs:
        assert client.head(f"/v2/{repo}/blobs/{blob.digest}").status_code == 200


def test_delete_unknown_manifest_is_404(client: httpx.Client, repo: str) -> None:
    push(client, repo, image(1), tag="v1")
    assert_error(client.delete(f"/v2/{repo}/manifests/{sha256(b'never')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/manifests/never"), 404, "MANIFEST_UNKNOWN")


def test_deleted_manifest_can_be_pushed_again(client: httpx.Client, repo: str) -> None:
    manifest = image(1)
    push(client, repo, manifest, tag="v1")
    assert client.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    assert push_manifest_only(client, repo, "v1", manifest).status_code == 201
    assert_served(client, repo, "v1", manifest)



def test_concurrent_pushes_of_manifests_to_one_tag_converge(client: httpx.Client, repo: str) -> None:
    # DESIGN invariant 4: concurrent writers of the same manifest and tag all succeed; the tag ends
    # up on one complete manifest.
    manifests = [image(1) for _ in range(3)]
    for manifest in manifests:
        for blob in manifest.blobs:
            push_blob(client, repo, blob)

    def put(i: int) -> int:
        with httpx.Client(base_url=client.base_url, timeout=60.0) as own:
            return push_manifest_only(own, repo, "race", manifests[i % 3]).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(put, range(12))) == [201] * 12
    served = get_manifest(client, repo, "race")
    assert served.content in {m.payload for m in manifests}
    assert served.headers["Docker-Content-Digest"] == sha256(served.content)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["race"]
