"""Signature policies (issue 16, item 4) on SQLite and PostgreSQL: pulls by tag and by digest of
unsigned images refused with a message naming the policy, cosign (tag convention) and Notary v2
(referrer) signatures accepted, index children of a signed index allowed, and cosign signatures
built here from cosign's published format with a real ECDSA P-256 key verified (a wrong key, or a
payload naming another digest, refused). skopeo sees the refusal."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.governance.conftest import Policies, Skopeo
from tests.support import oci
from tests.support.stack import Stack

NOTARY = "application/vnd.cncf.notary.signature"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


def cosign_signature(key: ec.EllipticCurvePrivateKey, image: oci.Manifest, repository: str, *,
                     names: str | None = None) -> oci.Manifest:
    """A cosign signature manifest: one simple-signing layer whose annotation is the base64
    ECDSA-SHA256 signature of the layer's bytes (cosign's format), pushed under sha256-<hex>.sig."""
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": repository},
                     "image": {"docker-manifest-digest": names or image.digest},
                     "type": "cosign container image signature"},
        "optional": None,
    }).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = oci.Blob(payload, SIMPLE_SIGNING)
    config = oci.Blob(b'{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}',
                      "application/vnd.oci.image.config.v1+json")
    document = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config.descriptor(),
                "layers": [{**layer.descriptor(), "annotations": {"dev.cosignproject.cosign/signature": signature}}]}
    return oci.Manifest(oci.render(document), oci.OCI_MANIFEST, blobs=(config, layer))


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def require(policies: Policies, name: str, pattern: str, kind: str, keys: str = "") -> None:
    pb = policies.pb
    policies.stub.SetSignaturePolicy(pb.SetSignaturePolicyRequest(policy=pb.SignaturePolicy(
        name=name, repository_pattern=pattern, type=kind, public_keys=keys), context=policies.context()), timeout=30)


def status(client: httpx.Client, repo: str, reference: str) -> int:
    return oci.get_manifest(client, repo, reference).status_code


def test_signature_policies(stack: Stack, client: httpx.Client, policies: Policies, skopeo: Skopeo,
                            tmp_path: Path) -> None:
    repo = "sig/app"
    key, wrong = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    unsigned, signed, notarized, misnamed = (oci.image(1, layer_size=256) for _ in range(4))
    children = [oci.image(1, layer_size=256) for _ in range(2)]
    index = oci.index(children)
    for image, tag in ((unsigned, "u"), (signed, "s"), (notarized, "n"), (index, "multi"), (misnamed, "m")):
        oci.push(client, repo, image, tag)
    for image, names in ((signed, None), (index, None), (misnamed, unsigned.digest)):
        oci.push(client, repo, cosign_signature(key, image, repo, names=names),
                 f"sha256-{image.digest.split(':')[1]}.sig")
    oci.push(client, repo, oci.artifact(subject=notarized, artifact_type=NOTARY))

    require(policies, "signed", "sig/*", "any")
    refused = oci.get_manifest(client, repo, "u")
    oci.assert_error(refused, 403, "DENIED")
    message = refused.json()["errors"][0]["message"]
    assert "signature policy 'signed'" in message and "and the image has none" in message, message
    assert status(client, repo, unsigned.digest) == 403                      # by digest too
    assert oci.get_manifest(client, repo, "u", method="HEAD").status_code == 403
    for reference in ("s", "n", "multi", children[0].digest, f"sha256-{signed.digest.split(':')[1]}.sig"):
        assert status(client, repo, reference) == 200, reference
    assert status(client, "other/app", "x") == 404                          # not covered: untouched

    # A real client is refused too, and pulls what is signed.
    denied = skopeo("copy", "--src-tls-verify=false", f"docker://{stack.hostport}/{repo}:u", f"oci:{tmp_path / 'u'}:u")
    assert denied.returncode != 0 and "signature policy 'signed'" in denied.stderr, denied.stderr
    pulled = skopeo("copy", "--src-tls-verify=false", f"docker://{stack.hostport}/{repo}:s", f"oci:{tmp_path / 's'}:s")
    assert pulled.returncode == 0, pulled.stderr

    # Only cosign counts: the Notary-signed image is refused.
    require(policies, "signed", "sig/*", "cosign")
    assert "a cosign signature, and the image has none" in oci.get_manifest(client, repo, "n").json()["errors"][0][
        "message"]

    # Verified with the right key: signed passes; a payload naming another digest does not.
    require(policies, "signed", "sig/*", "cosign", pem(key))
    assert status(client, repo, "s") == 200 and status(client, repo, "multi") == 200
    bad = oci.get_manifest(client, repo, "m")
    oci.assert_error(bad, 403, "DENIED")
    assert "verifies with one of its keys and names this digest" in bad.json()["errors"][0]["message"]
    # The wrong key: nothing verifies.
    require(policies, "signed", "sig/*", "cosign", pem(wrong))
    assert status(client, repo, "s") == 403
    # A bad policy is refused with the spec's code and what to do.
    pb = policies.pb
    try:
        policies.stub.SetSignaturePolicy(pb.SetSignaturePolicyRequest(policy=pb.SignaturePolicy(
            name="x", repository_pattern="sig/*", type="notation", public_keys=pem(key)), context=policies.context()))
        raise AssertionError("a notation policy with keys was accepted")
    except Exception as error:  # noqa: BLE001 - grpc.RpcError
        assert "a notation policy takes none" in str(error)

    assert policies.stub.DeleteSignaturePolicy(pb.DeleteSignaturePolicyRequest(name="signed",
                                                                               context=policies.context())).deleted
    assert status(client, repo, "u") == 200
