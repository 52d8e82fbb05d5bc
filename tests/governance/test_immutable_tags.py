"""Immutable tags (issue 16, item 1) against a real stack on SQLite and PostgreSQL: skopeo pushes
refused with the documented message, same-digest re-pushes allowed, deletes refused, the one-time
admin override consumed once and recorded. The `lading immutable` commands: test_cli.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from tests.governance.conftest import Policies, Skopeo
from tests.support import oci
from tests.support.stack import Stack


def skopeo_push(skopeo: Skopeo, tmp_path: Path, stack: Stack, manifest: oci.Manifest, reference: str, name: str):
    layout = oci.write_layout(tmp_path / name, {"x": manifest})
    return skopeo("copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:x",
                  f"docker://{stack.hostport}/{reference}")


def test_immutable_tag_rules_with_skopeo(stack: Stack, client: httpx.Client, policies: Policies, skopeo: Skopeo,
                                         tmp_path: Path) -> None:
    first, second = oci.image(1, layer_size=2048), oci.image(1, layer_size=2048)
    policies.add_rule("prod-releases", "prod/*", "v*")
    oci.push(client, "prod/app", second, "v0")  # both images' blobs in place for the raw pushes below

    # Creating an immutable tag is allowed, and so is pushing the same digest again.
    assert skopeo_push(skopeo, tmp_path, stack, first, "prod/app:v1", "a").returncode == 0
    assert oci.push_manifest_only(client, "prod/app", "v1", first).status_code == 201

    # Moving it is refused: 403 DENIED naming the rule, shown by skopeo.
    refused = skopeo_push(skopeo, tmp_path, stack, second, "prod/app:v1", "b")
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() and "rule 'prod-releases'" in refused.stderr, refused.stderr
    raw = oci.push_manifest_only(client, "prod/app", "v1", second)
    oci.assert_error(raw, 403, "DENIED")
    error = raw.json()["errors"][0]
    assert "immutable" in error["message"] and "lading immutable override prod/app v1" in error["message"]
    assert error["detail"] == {"policy": "immutable-tag", "rule": "prod-releases", "repository": "prod/app",
                               "tag": "v1", "digest": first.digest}
    assert oci.get_manifest(client, "prod/app", "v1").headers["Docker-Content-Digest"] == first.digest

    # Tags the rule does not cover move freely.
    for repo, tag in (("prod/app", "latest"), ("dev/app", "v1")):
        assert oci.push(client, repo, second, tag).status_code == 201
        assert oci.push(client, repo, first, tag).status_code == 201

    # Deletes: by tag, and by digest (which would take the tag with it).
    oci.assert_error(client.delete("/v2/prod/app/manifests/v1"), 403, "DENIED")
    by_digest = client.delete(f"/v2/prod/app/manifests/{first.digest}")
    oci.assert_error(by_digest, 403, "DENIED")
    assert "deleted with its manifest" in by_digest.json()["errors"][0]["message"]

    # The one-time override: only for a covered tag; the next move goes through, the one after not.
    with pytest.raises(grpc.RpcError, match="no immutable-tag rule covers prod/app:latest"):
        policies.override("prod/app", "latest", "x")
    assert policies.override("prod/app", "v1", "CVE hotfix, ticket 42") == "prod-releases"
    assert skopeo_push(skopeo, tmp_path, stack, second, "prod/app:v1", "c").returncode == 0
    assert oci.get_manifest(client, "prod/app", "v1").headers["Docker-Content-Digest"] == second.digest
    oci.assert_error(oci.push_manifest_only(client, "prod/app", "v1", first), 403, "DENIED")
    assert policies.history("prod/app", "v1") == [("push+override", first.digest, second.digest),
                                                  ("push", "", first.digest)]

    # Bad input: the spec's NAME_INVALID, with what to do.
    with pytest.raises(grpc.RpcError, match="invalid rule name"):
        policies.add_rule("Bad Name", "prod/*", "v*")
    with pytest.raises(grpc.RpcError, match="invalid tag pattern"):
        policies.add_rule("ok", "prod/*", "v 1")
    with pytest.raises(grpc.RpcError, match="needs a reason"):
        policies.override("prod/app", "v1", " ")

    # Without the rule the tag moves and deletes like any other.
    assert policies.remove_rule("prod-releases") and not policies.remove_rule("prod-releases")
    assert oci.push_manifest_only(client, "prod/app", "v1", first).status_code == 201
    assert client.delete("/v2/prod/app/manifests/v1").status_code == 202


def test_racing_pushes_to_a_new_immutable_tag(stack: Stack, client: httpx.Client, policies: Policies) -> None:
    """Pushes of different digests racing to create one immutable tag: exactly one wins, every
    other is refused, and the tag's history has exactly one entry (the check is exact)."""
    from concurrent.futures import ThreadPoolExecutor

    policies.add_rule("race", "race/*", "v*")
    images = [oci.image(1, layer_size=256) for _ in range(6)]
    for image in images:
        oci.push(client, "race/app", image)  # by digest: no tag yet

    def put(image: oci.Manifest) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=30) as own:
            return oci.push_manifest_only(own, "race/app", "v1", image).status_code

    with ThreadPoolExecutor(len(images)) as pool:
        statuses = list(pool.map(put, images))
    policies.remove_rule("race")
    assert sorted(statuses) == [201] + [403] * (len(images) - 1), statuses
    winner = images[statuses.index(201)]
    assert policies.history("race/app", "v1") == [("push", "", winner.digest)]
    assert oci.get_manifest(client, "race/app", "v1").headers["Docker-Content-Digest"] == winner.digest
