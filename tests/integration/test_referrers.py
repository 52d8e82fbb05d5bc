"""end-12a/12b: the referrers API."""

from __future__ import annotations

import httpx

from tests.support.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    artifact,
    assert_error,
    image,
    index,
    push,
    sha256,
)

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"
CONFIG_TYPE = "application/vnd.example.config.v1+json"
BUNDLE = "application/vnd.example.bundle.v1"


def referrers(client: httpx.Client, repo: str, digest: str, **params: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/referrers/{digest}", params=params)


def assert_index(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    body = response.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return body["manifests"]


def test_unknown_subject_gives_an_empty_index_not_404(client: httpx.Client, repo: str) -> None:
    push(client, repo, image(1), tag="v1")
    assert assert_index(referrers(client, repo, sha256(b"no such subject"))) == []


def test_unknown_repository_gives_an_empty_index_not_404(client: httpx.Client, repo: str) -> None:
    # Nothing was ever pushed to `repo`: the real metadata plane's answer, not a stand-in's
    # (tests/gateway/test_http_errors.py fakes it), must still be an empty index.
    assert assert_index(referrers(client, repo, sha256(b"no such subject"))) == []
    assert assert_index(referrers(client, repo, sha256(b"no such subject"), artifactType=SBOM)) == []


def test_subject_without_referrers_gives_an_empty_index(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject, tag="v1")
    assert assert_index(referrers(client, repo, subject.digest)) == []


def test_lists_referrers_with_artifact_type_rules_and_annotations(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject, tag="v1")
    sbom = artifact(subject=subject, artifact_type=SBOM, annotations={"org.example.sbom.format": "json"})
    # No artifactType: the config's media type stands in for it.
    config = Blob(b'{"signed":true}', CONFIG_TYPE)
    signature = artifact(subject=subject, artifact_type=None, config=config,
                         annotations={"org.example.signature.fingerprint": "abcd"})
    # An index without artifactType: the descriptor has none either.
    plain_index = index([image(1)], subject=subject, annotations={"org.example.kind": "plain"})
    typed_index = index([image(1)], subject=subject, artifact_type=BUNDLE)
    unrelated = artifact(subject=image(1), artifact_type=SBOM)  # refers to something else
    for manifest in (sbom, signature, plain_index, typed_index, unrelated):
        push(client, repo, manifest)

    listed = {d["digest"]: d for d in assert_index(referrers(client, repo, subject.digest))}
    assert set(listed) == {sbom.digest, signature.digest, plain_index.digest, typed_index.digest}

    assert listed[sbom.digest] == {
        "mediaType": OCI_MANIFEST, "digest": sbom.digest, "size": sbom.size, "artifactType": SBOM,
        "annotations": {"org.example.sbom.format": "json"},
    }
    assert listed[signature.digest]["artifactType"] == CONFIG_TYPE
    assert listed[signature.digest]["annotations"] == {"org.example.signature.fingerprint": "abcd"}
    assert listed[signature.digest]["size"] == signature.size
    assert listed[plain_index.digest]["mediaType"] == OCI_INDEX
    assert "artifactType" not in listed[plain_index.digest]
    assert listed[plain_index.digest]["annotations"] == {"org.example.kind": "plain"}
    assert listed[typed_index.digest]["artifactType"] == BUNDLE
    assert listed[typed_index.digest]["size"] == typed_index.size


def test_referrers_before_the_subject_exists(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    sbom = artifact(subject=subject, artifact_type=SBOM)
    push(client, repo, sbom)
    assert [d["digest"] for d in assert_index(referrers(client, repo, subject.digest))] == [sbom.digest]


def test_artifact_type_filter(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject)
    sbom = artifact(subject=subject, artifact_type=SBOM)
    signature = artifact(subject=subject, artifact_type=SIGNATURE)
    push(client, repo, sbom)
    push(client, repo, signature)

    response = referrers(client, repo, subject.digest, artifactType=SBOM)
    assert [d["digest"] for d in assert_index(response)] == [sbom.digest]
    assert response.headers["OCI-Filters-Applied"] == "artifactType"

    response = referrers(client, repo, subject.digest, artifactType="application/vnd.example.none")
    assert assert_index(response) == []
    assert response.headers["OCI-Filters-Applied"] == "artifactType"

    unfiltered = referrers(client, repo, subject.digest)
    assert len(assert_index(unfiltered)) == 2
    assert "OCI-Filters-Applied" not in unfiltered.headers


def test_deleted_referrer_is_no_longer_listed(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject)
    keep, drop = artifact(subject=subject), artifact(subject=subject)
    push(client, repo, keep)
    push(client, repo, drop)
    assert client.delete(f"/v2/{repo}/manifests/{drop.digest}").status_code == 202
    assert [d["digest"] for d in assert_index(referrers(client, repo, subject.digest))] == [keep.digest]


def test_referrers_are_scoped_to_the_repository(client: httpx.Client, repo: str) -> None:
    subject = image(1)
    push(client, repo, subject)
    push(client, repo, artifact(subject=subject))
    other = repo + "-other"
    push(client, other, subject)
    assert assert_index(referrers(client, other, subject.digest)) == []


def test_invalid_digest_is_400(client: httpx.Client, repo: str) -> None:
    push(client, repo, image(1), tag="v1")
    assert_error(referrers(client, repo, "sha256:xyz"), 400, "DIGEST_INVALID")
    assert_error(referrers(client, repo, "v1"), 400, "DIGEST_INVALID")


def test_filters_and_last_with_a_nul_are_not_errors(client: httpx.Client, repo: str) -> None:
    # PostgreSQL refuses a NUL in a parameter: these once answered 500.
    subject = image(1)
    push(client, repo, subject, tag="v1")
    push(client, repo, artifact(subject=subject, artifact_type=SBOM))
    assert assert_index(referrers(client, repo, subject.digest, artifactType=SBOM + "\0")) == []
    assert len(assert_index(referrers(client, repo, subject.digest, last="\0"))) == 1
