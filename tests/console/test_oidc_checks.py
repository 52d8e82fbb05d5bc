"""The ID token checks of the OIDC sign-in (services/metadata/accounts/oidc.py), with tokens made
here: the real provider (tests/console) only ever issues good ones, so each way a token can be
wrong is built by hand and must be refused."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.settings import OidcSettings
from services.metadata.accounts.oidc import OidcProvider, SignInRefused

ISSUER = "https://sso.example"
CLIENT = "lading"
NONCE = "nonce-of-this-sign-in"


@pytest.fixture
def keys() -> dict[str, object]:
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()), "other": rsa.generate_private_key(65537, 2048)}


@pytest.fixture
def provider(keys: dict[str, object]) -> OidcProvider:
    found = OidcProvider(OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret="s"))
    jwks = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"].public_key())), "kid": "r1", "use": "sig"},  # type: ignore[attr-defined]
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec"].public_key())), "kid": "e1", "use": "sig"},  # type: ignore[attr-defined]
    ]
    now = time.monotonic()
    # What the discovery document and the JWKS would say (already fetched).
    found._metadata = (now, {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth",
                             "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks"})
    found._jwks = (now, {"keys": jwks})
    return found


def token(key: object, kid: str = "r1", algorithm: str = "RS256", **claims: object) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT, "sub": "u-1", "iat": now, "exp": now + 300, "nonce": NONCE, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm,  # type: ignore[arg-type]
                      headers={"kid": kid})


async def test_good_tokens_pass(provider: OidcProvider, keys: dict[str, object]) -> None:
    assert (await provider._verify(token(keys["rsa"]), NONCE))["sub"] == "u-1"
    assert (await provider._verify(token(keys["ec"], "e1", "ES256"), NONCE))["sub"] == "u-1"
    assert (await provider._verify(token(keys["rsa"], aud=[CLIENT, "other"], azp=CLIENT), NONCE))["sub"] == "u-1"


@pytest.mark.parametrize("case", ["nonce", "no-nonce", "audience", "issuer", "expired", "no-sub", "azp",
                                  "unknown-key", "wrong-key", "hs256", "none"])
async def test_bad_tokens_are_refused(provider: OidcProvider, keys: dict[str, object], case: str) -> None:
    now = int(time.time())
    made = {
        "nonce": lambda: token(keys["rsa"], nonce="another"),
        "no-nonce": lambda: token(keys["rsa"], nonce=None),
        "audience": lambda: token(keys["rsa"], aud="someone-else"),
        "issuer": lambda: token(keys["rsa"], iss="https://evil.example"),
        "expired": lambda: token(keys["rsa"], iat=now - 7200, exp=now - 3600),
        "no-sub": lambda: token(keys["rsa"], sub=None),
        "azp": lambda: token(keys["rsa"], aud=[CLIENT, "other"], azp="other"),
        "unknown-key": lambda: token(keys["rsa"], kid="nope"),
        "wrong-key": lambda: token(keys["other"], kid="r1"),
        "hs256": lambda: jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "u", "iat": now, "exp": now + 60,
                                     "nonce": NONCE}, "secret-key-material-32-bytes-long", algorithm="HS256",
                                    headers={"kid": "r1"}),
        "none": lambda: jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "u", "iat": now, "exp": now + 60,
                                    "nonce": NONCE}, None, algorithm="none"),  # type: ignore[arg-type]
    }[case]()
    if case == "unknown-key":
        provider._keys = _no_refetch(provider)  # type: ignore[method-assign]
    with pytest.raises(SignInRefused):
        await provider._verify(made, NONCE)


def _no_refetch(provider: OidcProvider):  # type: ignore[no-untyped-def]
    """The JWKS as cached: a refetch for the unknown key id finds the same keys."""
    cached = provider._jwks

    async def keys(*, refresh: bool = False) -> dict[str, object]:
        assert cached is not None
        return cached[1]

    return keys
