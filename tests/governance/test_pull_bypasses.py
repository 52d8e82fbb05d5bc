"""What the pull policies cover besides manifest GET/HEAD (README "Policies", "What the pull
policies gate"): the console's manifest page shows a manifest a policy refuses, but says that its
pulls are refused and why, and offers no pull command; blobs are not gated (content-addressed and
shared between images: the manifest is the gate), so a blob GET with pull access still answers."""

from __future__ import annotations

import httpx

from tests.governance.conftest import Policies
from tests.governance.test_signatures import require
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
