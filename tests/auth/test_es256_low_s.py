"""ES256 signatures are accepted only in the canonical low-S form (issue 11, item 6): a real
signature whose S is replaced by n - S is still a valid ECDSA signature of the same bytes, so
without the rule every token had a second spelling that verified (malleability)."""

from __future__ import annotations

import base64
import dataclasses
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.auth.keys import VerificationKey, generate_signing_key_pem, load_signing_key
from gateway.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier

# The order n of P-256 (SEC 2), written out here rather than taken from the code under test.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def es256(tmp_path: Path) -> tuple[TokenIssuer, TokenVerifier, ec.EllipticCurvePrivateKey]:
    path = tmp_path / "k.pem"
    path.write_bytes(generate_signing_key_pem())
    key = load_signing_key(path)
    issuer = TokenIssuer(key, issuer="lading", service="lading", lifetime_seconds=300, refresh_lifetime_seconds=600)
    verifier = TokenVerifier([VerificationKey(key.kid, "ES256", key.private_key.public_key(), "lading", "lading")],
                             local_issuer="lading", leeway_seconds=5)
    return issuer, verifier, key.private_key


def _with_s(token: str, *, high: bool) -> str:
    """The same token with its signature's S in the high (n - S above n/2) or low form: both are
    valid ECDSA signatures of the same bytes."""
    head, payload, signature = token.split(".")
    raw = _unb64(signature)
    s = int.from_bytes(raw[32:], "big")
    chosen = max(s, P256_ORDER - s) if high else min(s, P256_ORDER - s)
    return f"{head}.{payload}.{_b64(raw[:32] + chosen.to_bytes(32, 'big'))}"


def test_high_s_twin_of_a_real_signature_is_refused(es256) -> None:
    _, verifier, private = es256
    now = int(time.time())
    real = jwt.encode({"iss": "lading", "sub": "alice", "aud": "lading", "exp": now + 60, "iat": now}, private,
                      algorithm="ES256", headers={"kid": verifier.kids[0]})
    low, high = _with_s(real, high=False), _with_s(real, high=True)
    # The high-S twin is a valid ECDSA signature of the same bytes (only the S rule can refuse it)...
    head, payload, signature = high.split(".")
    raw = _unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    private.public_key().verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert verifier.verify(low).subject == "alice"
    # ...and it is refused.
    with pytest.raises(InvalidToken, match="low-S"):
        verifier.verify(high)


def test_we_issue_only_low_s_and_a_plain_high_s_signature_is_refused(es256) -> None:
    issuer, verifier, private = es256
    for _ in range(40):  # random S: about half of plain ECDSA signatures are high
        token = issuer.access_token(None, []).token
        assert int.from_bytes(_unb64(token.split(".")[2])[32:], "big") <= P256_ORDER // 2
        verifier.verify(token)
    now = int(time.time())
    claims = {"iss": "lading", "sub": "x", "aud": "lading", "exp": now + 60, "iat": now}
    kid = verifier.kids[0]
    refused = 0
    for _ in range(40):
        plain = jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})
        if int.from_bytes(_unb64(plain.split(".")[2])[32:], "big") > P256_ORDER // 2:
            refused += 1
            with pytest.raises(InvalidToken):
                verifier.verify(plain)
        else:
            verifier.verify(plain)
    assert refused > 0  # 40 draws without a high S: chance 2**-40


def test_external_issuer_may_be_let_through_with_high_s(es256) -> None:
    _, _, private = es256
    now = int(time.time())
    token = jwt.encode({"iss": "ci-issuer", "sub": "builder", "aud": "lading", "exp": now + 60, "iat": now},
                       private, algorithm="ES256", headers={"kid": "ci"})
    high = _with_s(token, high=True)
    external = VerificationKey("ci", "ES256", private.public_key(), "ci-issuer", "lading")
    # The same external key without the setting refuses the high-S spelling...
    strict = TokenVerifier([external], local_issuer="lading", leeway_seconds=5)
    with pytest.raises(InvalidToken, match="low-S"):
        strict.verify(high)
    # ...and with it, takes the token as the external issuer's.
    lenient = TokenVerifier([dataclasses.replace(external, allow_high_s=True)], local_issuer="lading",
                            leeway_seconds=5)
    verified = lenient.verify(high)
    assert (verified.subject, verified.issuer, verified.local) == ("builder", "ci-issuer", False)


