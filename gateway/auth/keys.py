"""Token signing and verification keys: PEM files, JWKS files, key ids.

Key id (`kid`): the libtrust form Docker's reference tokens use (docker-auth-jwt.md): SHA-256 of
the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4 joined by ':' (e.g.
`PYYO:TEWU:V7JH:...`). It depends only on the public key, so every replica derives the same id.

Each verification key carries the one algorithm it may be used with (ES256 for P-256, RS256 for
RSA; a JWKS `alg` is honoured when it names one of those) and the issuer and audience whose tokens
it signs. Nothing else (no `none`, no HS*) is ever accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.lazy import lazy_module

# Loaded when a key is first read: a gateway without auth never needs them (services/common/lazy.py).
jwt = lazy_module("jwt")
serialization = lazy_module("cryptography.hazmat.primitives.serialization")
ec = lazy_module("cryptography.hazmat.primitives.asymmetric.ec")
rsa = lazy_module("cryptography.hazmat.primitives.asymmetric.rsa")

ALLOWED_ALGORITHMS = ("ES256", "RS256")


class KeyFileError(ValueError):
    """A key file that cannot be used (wrong type, unreadable, unsupported curve)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any  # a cryptography public key
    issuer: str
    audience: str
    # ES256 only: also accept high-S signatures (an external issuer that cannot make low-S ones).
    allow_high_s: bool = False


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    algorithm: str = "ES256"

    def private_der(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def libtrust_kid(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def _algorithm_for(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyFileError(f"EC keys must be P-256 (ES256), not {public_key.curve.name}")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise KeyFileError("RSA keys must have at least 2048 bits")
        return "RS256"
    raise KeyFileError(f"unsupported key type {type(public_key).__name__}: use an EC P-256 or RSA key")


def load_signing_key(path: Path) -> SigningKey:
    """An ES256 private key from a PEM file (`lading auth keygen`, or `openssl ecparam -genkey
    -name prime256v1 -noout -out key.pem`)."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise KeyFileError(f"the signing key {path} must be an EC P-256 private key (ES256)")
    return SigningKey(libtrust_kid(private.public_key()), private)


def load_public_pem(path: Path, *, issuer: str, audience: str) -> VerificationKey:
    """A verification key from a PEM file holding a public key, a private key or a certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key {path}: {exc}") from exc
    public: Any
    try:
        if b"PRIVATE KEY" in data:
            public = serialization.load_pem_private_key(data, password=None).public_key()
        elif b"CERTIFICATE" in data:
            from cryptography import x509

            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot parse the key {path}: {exc}") from exc
    return VerificationKey(libtrust_kid(public), _algorithm_for(public), public, issuer, audience)


def load_jwks(path: Path, *, issuer: str, audience: str, allow_high_s: bool = False) -> list[VerificationKey]:
    """The keys of a JWKS file (RFC 7517); each needs a `kid`. Keys of other types are refused."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the JWKS file {path}: {exc}") from exc
    keys = []
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise KeyFileError(f"every key in {path} needs a kid")
        if entry.get("use", "sig") != "sig":
            continue
        try:
            public = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise KeyFileError(f"key {kid} in {path}: {exc}") from exc
        if hasattr(public, "public_key") and not isinstance(public, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            public = public.public_key()
        algorithm = _algorithm_for(public)
        if entry.get("alg") not in (None, algorithm):
            raise KeyFileError(f"key {kid} in {path} says alg {entry.get('alg')!r}; its type allows {algorithm}")
        keys.append(VerificationKey(kid, algorithm, public, issuer, audience, allow_high_s))
    if not keys:
        raise KeyFileError(f"the JWKS file {path} has no signing keys")
    return keys


def generate_signing_key_pem() -> bytes:
    """A new ES256 private key in PEM (PKCS#8), for `lading auth keygen`."""
    private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
