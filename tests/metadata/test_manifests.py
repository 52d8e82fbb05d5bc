"""Parsing and validation of every manifest media type, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.errors import ErrorKind, RegistryError
from services.metadata.manifests import ACCEPTED_MEDIA_TYPES, ParsedManifest, parse_manifest
from tests.metadata import docs


def parse(document: Any, content_type: str) -> ParsedManifest:
    return parse_manifest(json.dumps(document).encode(), content_type)


def refused(payload: bytes | Any, content_type: str, kind: ErrorKind = ErrorKind.MANIFEST_INVALID) -> RegistryError:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(RegistryError) as caught:
        parse_manifest(raw, content_type)
    assert caught.value.kind is kind, caught.value
    return caught.value


@pytest.mark.parametrize("media_type", [docs.OCI_MANIFEST, docs.DOCKER_MANIFEST])
def test_image_manifest_references_config_and_layers(media_type: str) -> None:
    document = docs.image(layers=2, media_type=media_type)
    parsed = parse(document, media_type)
    assert parsed.media_type == media_type
    assert parsed.blob_digests == tuple(d for d, _ in docs.blobs_of(document))
    assert parsed.manifest_digests == ()
    assert parsed.subject_digest is None
    assert parsed.config_media_type == document["config"]["mediaType"]
    # No artifactType: the referrers API shows the config media type.
    assert parsed.artifact_type == document["config"]["mediaType"]


@pytest.mark.parametrize(("media_type", "child_type"), [(docs.OCI_INDEX, docs.OCI_MANIFEST),
                                                        (docs.DOCKER_LIST, docs.DOCKER_MANIFEST)])
def test_index_references_child_manifests(media_type: str, child_type: str) -> None:
    children = [b"one", b"two", b"one"]
    parsed = parse(docs.index(children, media_type=media_type, child_type=child_type), media_type)
    assert parsed.media_type == media_type
    assert parsed.manifest_digests == (docs.sha256(b"one"), docs.sha256(b"two"))  # deduplicated
    assert parsed.blob_digests == ()
    assert parsed.artifact_type is None and parsed.config_media_type is None


def test_duplicate_layers_are_referenced_once() -> None:
    document = docs.image(layers=1)
    document["layers"].append(dict(document["layers"][0]))
    assert len(parse(document, docs.OCI_MANIFEST).blob_digests) == 2


def test_artifact_manifest_with_subject_and_empty_config() -> None:
    subject = docs.descriptor(docs.OCI_MANIFEST)
    document = docs.image(layers=1, config_type=docs.OCI_EMPTY, artifact_type="application/vnd.example+json",
                          subject=subject, annotations={"a": "1"})
    parsed = parse(document, docs.OCI_MANIFEST)
    assert parsed.subject_digest == subject["digest"]
    assert parsed.artifact_type == "application/vnd.example+json"
    assert parsed.config_media_type == docs.OCI_EMPTY
    assert parsed.annotations == {"a": "1"}
    # The empty config is a blob like any other: clients push it.
    assert document["config"]["digest"] in parsed.blob_digests


def test_artifact_without_layers_is_accepted_for_oci_only() -> None:
    document = docs.image(layers=0, config_type=docs.OCI_EMPTY, artifact_type="application/x")
    del document["layers"]
    assert parse(document, docs.OCI_MANIFEST).blob_digests == (document["config"]["digest"],)
    docker = docs.image(layers=0, media_type=docs.DOCKER_MANIFEST)
    del docker["layers"]
    refused(docker, docs.DOCKER_MANIFEST)


def test_index_artifact_type_and_subject() -> None:
    subject = docs.descriptor(docs.OCI_MANIFEST)
    parsed = parse(docs.index([b"x"], subject=subject, artifact_type="application/x-set"), docs.OCI_INDEX)
    assert parsed.subject_digest == subject["digest"] and parsed.artifact_type == "application/x-set"


@pytest.mark.parametrize("layer_type", [docs.DOCKER_FOREIGN, docs.OCI_NONDISTRIBUTABLE,
                                        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"])
def test_foreign_layers_are_not_required(layer_type: str) -> None:
    foreign = docs.descriptor(layer_type, urls=["https://example.com/layer"])
    document = docs.image(layers=1, extra_layers=[foreign])
    assert foreign["digest"] not in parse(document, docs.OCI_MANIFEST).blob_digests


@pytest.mark.parametrize("content_type", ["", "application/json", "application/octet-stream",
                                          "application/json; charset=utf-8"])
def test_generic_content_type_infers_from_media_type_field(content_type: str) -> None:
    assert parse(docs.image(media_type=docs.DOCKER_MANIFEST), content_type).media_type == docs.DOCKER_MANIFEST
    assert parse(docs.index([b"x"], media_type=docs.DOCKER_LIST), content_type).media_type == docs.DOCKER_LIST


@pytest.mark.parametrize("content_type", ["", "application/json", "application/octet-stream"])
def test_generic_content_type_infers_from_shape(content_type: str) -> None:
    image = docs.image(with_media_type=False)
    assert parse(image, content_type).media_type == docs.OCI_MANIFEST
    index = docs.index([b"x"])
    del index["mediaType"]
    assert parse(index, content_type).media_type == docs.OCI_INDEX
    error = refused({"schemaVersion": 2}, content_type)
    assert docs.OCI_MANIFEST in error.message


def test_content_type_is_case_and_parameter_insensitive() -> None:
    assert parse(docs.image(), docs.OCI_MANIFEST.upper() + "; foo=bar").media_type == docs.OCI_MANIFEST


def test_payload_without_media_type_takes_the_content_type() -> None:
    assert parse(docs.image(with_media_type=False), docs.DOCKER_MANIFEST).media_type == docs.DOCKER_MANIFEST


def test_media_type_mismatch() -> None:
    error = refused(docs.image(media_type=docs.OCI_MANIFEST), docs.DOCKER_MANIFEST)
    assert "does not match" in error.message


def test_image_pushed_as_index_is_refused() -> None:
    refused(docs.image(with_media_type=False), docs.OCI_INDEX)
    mixed = docs.image()
    mixed["manifests"] = []
    refused(mixed, docs.OCI_MANIFEST)


def test_unknown_content_type_lists_accepted_types() -> None:
    error = refused(docs.image(with_media_type=False), "application/vnd.example.thing")
    for accepted in ACCEPTED_MEDIA_TYPES:
        assert accepted in error.message
    refused(docs.image(media_type="application/vnd.example.thing"), "")


@pytest.mark.parametrize("content_type", ["application/vnd.docker.distribution.manifest.v1+json",
                                          "application/vnd.docker.distribution.manifest.v1+prettyjws", ""])
def test_schema1_is_refused(content_type: str) -> None:
    error = refused({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}, content_type)
    assert "schema1 is not supported" in error.message and "schema2 or OCI" in error.message


@pytest.mark.parametrize("payload", [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"42"])
def test_not_a_json_object(payload: bytes) -> None:
    error = refused(payload, docs.OCI_MANIFEST)
    assert "JSON" in error.message


@pytest.mark.parametrize("version", [None, 3, "2", True, 2.5, 2.0])
def test_schema_version_must_be_2(version: Any) -> None:
    # 2.0 too: Go clients cannot decode it into the spec's int.
    document = docs.image()
    if version is None:
        del document["schemaVersion"]
    else:
        document["schemaVersion"] = version
    assert "schemaVersion" in refused(document, docs.OCI_MANIFEST).message


@pytest.mark.parametrize(
    ("field", "value"),
    [("digest", "sha256:abc"), ("digest", "md5:" + "a" * 32), ("digest", "sha256:" + "A" * 64)],
)
def test_bad_descriptor_digest_is_digest_invalid(field: str, value: Any) -> None:
    document = docs.image(layers=2)
    document["layers"][1][field] = value
    error = refused(document, docs.OCI_MANIFEST, ErrorKind.DIGEST_INVALID)
    assert error.detail["descriptor"] == "layers[1]"


@pytest.mark.parametrize("value", [None, 12, ""])
def test_missing_or_non_string_descriptor_digest_is_manifest_invalid(value: Any) -> None:
    document = docs.image(layers=2)
    document["layers"][1]["digest"] = value
    error = refused(document, docs.OCI_MANIFEST, ErrorKind.MANIFEST_INVALID)
    assert error.detail["descriptor"] == "layers[1]"


@pytest.mark.parametrize("size", [-1, "10", 1.5, None, True, 2**63, 2**64 - 1, 2.0])
def test_bad_descriptor_size(size: Any) -> None:
    # The image spec's size is an int64: 2**63 and up would break every Go client's decoding.
    document = docs.image()
    document["config"]["size"] = size
    error = refused(document, docs.OCI_MANIFEST)
    assert error.detail["descriptor"] == "config"


def test_bad_descriptors_elsewhere() -> None:
    no_config = docs.image()
    del no_config["config"]
    refused(no_config, docs.OCI_MANIFEST)
    layers_not_list = docs.image()
    layers_not_list["layers"] = {"a": 1}
    refused(layers_not_list, docs.OCI_MANIFEST)
    layer_not_object = docs.image()
    layer_not_object["layers"][0] = "sha256:" + "a" * 64
    refused(layer_not_object, docs.OCI_MANIFEST)
    no_media_type = docs.image()
    del no_media_type["layers"][0]["mediaType"]
    refused(no_media_type, docs.OCI_MANIFEST)
    index = docs.index([b"x"])
    index["manifests"][0]["digest"] = "nope"
    assert refused(index, docs.OCI_INDEX, ErrorKind.DIGEST_INVALID).detail["descriptor"] == "manifests[0]"
    no_manifests = docs.index([])
    del no_manifests["manifests"]
    refused(no_manifests, docs.OCI_INDEX)
    index_with_layers = docs.index([b"x"])
    index_with_layers["layers"] = []
    refused(index_with_layers, docs.OCI_INDEX)


def test_bad_subject_annotations_and_artifact_type() -> None:
    bad_subject = docs.image(subject={"mediaType": docs.OCI_MANIFEST, "digest": "bad", "size": 1})
    assert refused(bad_subject, docs.OCI_MANIFEST, ErrorKind.DIGEST_INVALID).detail["descriptor"] == "subject"
    refused(docs.image(annotations={"a": 1}), docs.OCI_MANIFEST)  # type: ignore[dict-item]
    not_object = docs.image()
    not_object["annotations"] = ["a"]
    refused(not_object, docs.OCI_MANIFEST)
    refused(docs.image(artifact_type=""), docs.OCI_MANIFEST)
    numeric = docs.image()
    numeric["artifactType"] = 5
    refused(numeric, docs.OCI_MANIFEST)


def test_empty_index_is_valid() -> None:
    parsed = parse(docs.index([]), docs.OCI_INDEX)
    assert parsed.manifest_digests == () and parsed.media_type == docs.OCI_INDEX


def test_largest_int64_size_is_accepted() -> None:
    document = docs.image()
    document["layers"][0]["size"] = 2**63 - 1
    assert document["layers"][0]["digest"] in parse(document, docs.OCI_MANIFEST).blob_digests


# The optional descriptor fields, typed by the image spec; Go clients (and CNCF Distribution) fail
# to decode a manifest whose fields have another JSON type, so such a manifest is never stored.
BAD_OPTIONAL_FIELDS = {
    "urls-not-array": ("urls", "https://example.com/layer"),
    "urls-of-numbers": ("urls", [1]),
    "annotations-not-strings": ("annotations", {"a": 1}),
    "annotations-not-object": ("annotations", ["a"]),
    "artifactType-number": ("artifactType", 5),
    "artifactType-empty": ("artifactType", ""),
    "platform-string": ("platform", "linux/amd64"),
    "platform-architecture-number": ("platform", {"architecture": 64, "os": "linux"}),
    "platform-features-string": ("platform", {"architecture": "amd64", "os": "linux", "os.features": "x"}),
    "data-not-base64": ("data", "!!not base64!!"),
    "data-number": ("data", 5),
    "data-other-content": ("data", "aGVsbG8="),
}


@pytest.mark.parametrize("where", ["config", "layers[0]", "subject", "manifests[0]"])
@pytest.mark.parametrize("case", list(BAD_OPTIONAL_FIELDS))
def test_optional_descriptor_fields_of_the_wrong_type_are_manifest_invalid(where: str, case: str) -> None:
    field, value = BAD_OPTIONAL_FIELDS[case]
    if where == "manifests[0]":
        document, media_type = docs.index([b"child"]), docs.OCI_INDEX
        target = document["manifests"][0]
    else:
        document, media_type = docs.image(layers=1, subject=docs.descriptor(docs.OCI_MANIFEST)), docs.OCI_MANIFEST
        target = document["layers"][0] if where == "layers[0]" else document[where]
    target[field] = value
    error = refused(document, media_type)
    assert where in error.message


def test_well_typed_optional_descriptor_fields_are_accepted() -> None:
    content = b"embedded config"
    document = docs.image(layers=1)
    document["config"] = docs.descriptor(docs.OCI_CONFIG, docs.sha256(content), len(content),
                                         data="ZW1iZWRkZWQgY29uZmln", annotations={"a": "b"})
    document["layers"][0].update(urls=["https://example.com/l"], artifactType="application/x")
    assert document["config"]["digest"] in parse(document, docs.OCI_MANIFEST).blob_digests
    index = docs.index([b"child"])
    index["manifests"][0]["platform"] = {"architecture": "arm64", "os": "linux", "variant": "v8",
                                         "os.features": ["f"], "features": [], "os.version": None}
    index["manifests"][0]["urls"] = None
    assert parse(index, docs.OCI_INDEX).manifest_digests == (docs.sha256(b"child"),)


# RFC 6838 (the image spec's rule for artifactType and media types): at most 127 characters each
# side of the '/', from a small alphabet. The stored ones once reached PostgreSQL's VARCHAR(255)
# (or its refusal of NUL) and answered 500.
NOT_MEDIA_TYPES = {
    "too-long-subtype": "application/" + "x" * 128,
    "too-long-overall": "a" * 127 + "/" + "b" * 128,
    "nul": "application/x\u0000y",
    "no-slash": "sbom",
    "parameters": "application/json; charset=utf-8",
    "space": "application/x y",
    "non-ascii": "application/\u00e9",
}


@pytest.mark.parametrize("field", ["artifactType", "config.mediaType", "index.artifactType",
                                   "layers[0].artifactType"])
@pytest.mark.parametrize("case", list(NOT_MEDIA_TYPES))
def test_artifact_type_and_config_media_type_must_be_media_types(field: str, case: str) -> None:
    value = NOT_MEDIA_TYPES[case].encode().decode("unicode_escape")
    document, media_type = docs.image(layers=1), docs.OCI_MANIFEST
    if field == "artifactType":
        document["artifactType"] = value
    elif field == "config.mediaType":
        document["config"]["mediaType"] = value
    elif field == "layers[0].artifactType":
        document["layers"][0]["artifactType"] = value
    else:
        document, media_type = docs.index([b"x"], artifact_type=value), docs.OCI_INDEX
    error = refused(document, media_type)
    assert "RFC 6838" in error.message


@pytest.mark.parametrize("value", ["a" * 127 + "/" + "b" * 127, "application/vnd.oci.image.config.v1+json",
                                   "application/vnd.dev.cosign.artifact.sig.v1+json", "A1/b!#$&^_.+-"])
def test_longest_and_odd_but_valid_media_types_are_accepted(value: str) -> None:
    document = docs.image(layers=1, artifact_type=value)
    document["config"]["mediaType"] = value
    assert parse(document, docs.OCI_MANIFEST).artifact_type == value


# JSON keys are case-sensitive, but Go's encoding/json (docker, containerd, Distribution) matches
# them case-insensitively: a `Layers` this parser ignored, Go clients read as the layers.
@pytest.mark.parametrize(("where", "key"), [
    ("manifest", "Layers"), ("manifest", "LAYERS"), ("manifest", "Config"), ("manifest", "MediaType"),
    ("manifest", "Subject"), ("manifest", "SchemaVersion"),
    ("config", "Digest"), ("layers[0]", "SIZE"), ("layers[0]", "Urls"), ("subject", "MediaType"),
])
def test_known_fields_in_another_case_are_refused(where: str, key: str) -> None:
    document = docs.image(layers=1, subject=docs.descriptor(docs.OCI_MANIFEST))
    target = document if where == "manifest" else (document["layers"][0] if where == "layers[0]" else document[where])
    target[key] = target.get(key.lower(), docs.descriptor(docs.OCI_LAYER)) if key != "LAYERS" else []
    error = refused(document, docs.OCI_MANIFEST)
    assert repr(key) in error.message


def test_index_with_a_differently_cased_manifests_key_is_refused() -> None:
    document = docs.index([b"x"])
    document["Manifests"] = [docs.descriptor(docs.OCI_MANIFEST)]
    assert "'Manifests'" in refused(document, docs.OCI_INDEX).message
