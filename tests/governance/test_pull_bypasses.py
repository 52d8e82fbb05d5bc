"""What the pull policies cover besides manifest GET/HEAD (README "Policies", "What the pull
policies gate"): the console's manifest page shows a manifest a policy refuses, but says that its
pulls are refused and why, and offers no pull command; its tag list marks each tag a policy
refuses with the policy and the pull gate's reason, and nothing else; blobs are not gated
(content-addressed and shared between images: the manifest is the gate), so a blob GET with pull
access still answers."""

from __future__ import annotations

import json

import httpx
from markupsafe import escape

from tests.governance.conftest import Policies
from tests.governance.test_signatures import require
from tests.governance.test_vulnerabilities import SARIF, sarif
from tests.support import oci


def test_console_says_when_a_policy_refuses_a_manifest(client: httpx.Client, policies: Policies) -> None:
    repo = "bypass/app"
    unsigned, signed = oci.image(1, layer_size=300), oci.image(1, layer_size=300)
    oci.push(client, repo, unsigned, "unsigned")
    oci.push(client, repo, signed, "signed")
    oci.push(client, repo, oci.image(1, layer_size=100), "sha256-" + signed.digest.split(":", 1)[1] + ".sig")
    require(policies, "bypass-signed", "bypass/*", "cosign")
    try:
        oci.assert_error(oci.get_manifest(client, repo, "unsigned"), 403, "DENIED")
        for reference in ("unsigned", unsigned.digest):
            page = client.get(f"/ui/r/{repo}/-/manifests/{reference}")
            assert page.status_code == 200, page.text
            assert 'id="pull-refused"' in page.text
            assert "signature policy &#39;bypass-signed&#39;" in page.text or "signature policy 'bypass-signed'" in page.text
            assert "docker pull" not in page.text
            assert unsigned.digest in page.text  # still shown
        page = client.get(f"/ui/r/{repo}/-/manifests/signed")
        assert page.status_code == 200 and 'id="pull-refused"' not in page.text and "docker pull" in page.text
        # Blobs are not gated: the manifest is (documented).
        layer = unsigned.blobs[-1]
        assert client.get(f"/v2/{repo}/blobs/{layer.digest}", follow_redirects=True).content == layer.data
    finally:
        policies.stub.DeleteSignaturePolicy(policies.pb.DeleteSignaturePolicyRequest(
            name="bypass-signed", context=policies.context()), timeout=30)
    page = client.get(f"/ui/r/{repo}/-/manifests/unsigned")
    assert 'id="pull-refused"' not in page.text and "docker pull" in page.text


def _row(page: str, tag: str) -> str:
    """The tag list's row of `tag` (repository.html: one <tr data-tag="..."> per tag)."""
    start = page.index(f'<tr data-tag="{tag}">')
    return page[start:page.index("</tr>", start)]


def test_tag_list_marks_the_tags_a_policy_refuses(client: httpx.Client, policies: Policies) -> None:
    repo = "marks/app"
    unsigned, signed, vulnerable = (oci.image(1, layer_size=300) for _ in range(3))
    for image, tag in ((unsigned, "unsigned"), (signed, "signed"), (vulnerable, "vulnerable")):
        oci.push(client, repo, image, tag)
    signatures = ["sha256-" + image.digest.split(":", 1)[1] + ".sig" for image in (signed, vulnerable)]
    for tag in signatures:
        oci.push(client, repo, oci.image(1, layer_size=100), tag)
    report = oci.Blob(json.dumps(sarif("CVE-2024-3094", "10.0")).encode(), SARIF)
    oci.push(client, repo, oci.artifact(artifact_type=SARIF, subject=vulnerable, files=[report]))
    pb = policies.pb
    require(policies, "marks-signed", "marks/*", "cosign")
    policies.stub.SetVulnerabilityPolicy(pb.SetVulnerabilityPolicyRequest(policy=pb.VulnerabilityPolicy(
        name="marks-scanned", repository_pattern="marks/*", severity="high"), context=policies.context()), timeout=30)
    try:
        page = client.get(f"/ui/r/{repo}")
        assert page.status_code == 200, page.text
        # Each refused tag: the badge, the policy, and the reason the pull gate gives (its 403).
        for tag, policy, words in (("unsigned", "signature policy “marks-signed”", "the image has none"),
                                   ("vulnerable", "vulnerability policy “marks-scanned”", "CVE-2024-3094 (critical)")):
            refused = oci.get_manifest(client, repo, tag)
            oci.assert_error(refused, 403, "DENIED")
            reason = refused.json()["errors"][0]["detail"]["reason"]
            assert words in reason, reason
            row = _row(page.text, tag)
            assert "pull refused" in row and policy in row and str(escape(reason)) in row, row
        # Allowed tags (a signed clean image, the signatures themselves) carry no mark.
        assert oci.get_manifest(client, repo, "signed").status_code == 200
        for tag in ("signed", *signatures):
            assert "refus" not in _row(page.text, tag), tag
    finally:
        policies.stub.DeleteSignaturePolicy(pb.DeleteSignaturePolicyRequest(
            name="marks-signed", context=policies.context()), timeout=30)
        policies.stub.DeleteVulnerabilityPolicy(pb.DeleteVulnerabilityPolicyRequest(
            name="marks-scanned", context=policies.context()), timeout=30)
    assert "pull refused" not in client.get(f"/ui/r/{repo}").text
