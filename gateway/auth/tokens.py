"""JWT access and refresh tokens (docker-auth-jwt.md): issue with our key, verify against the set.

Verification, in order: the header must name a `kid` of the key set and exactly that key's
algorithm (so `alg: none`, HS256 keyed with a public key, or an RS/ES mix-up never verify); then
the signature; then `exp` (required), `nbf` and `iat` (when present) with `leeway`; `iss` must be
the key's issuer and `aud` the key's audience (our `service`). Refresh tokens carry the audience
`<service>#refresh`, so they can never pass as access tokens.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.auth.keys import SigningKey, VerificationKey
from gateway.auth.scopes import Access, Scope, access_claim
from services.common.lazy import lazy_module

jwt = lazy_module("jwt")  # loaded by the first token: a gateway without auth never needs it

REFRESH_AUDIENCE_SUFFIX = "#refresh"


class InvalidToken(Exception):
    """The token must not be trusted; the message says why (for logs, not for clients)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str  # "" for anonymous
    issuer: str
    access: Access
    local: bool  # issued by this registry (the subject is one of our accounts)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str  # RFC 3339


class TokenIssuer:
    def __init__(self, key: SigningKey, *, issuer: str, service: str, lifetime_seconds: int,
                 refresh_lifetime_seconds: int) -> None:
        self._key = key
        self._issuer = issuer
        self._service = service
        self._lifetime = lifetime_seconds
        self._refresh_lifetime = refresh_lifetime_seconds

    def _sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self._key.private_key, algorithm=self._key.algorithm,
                          headers={"kid": self._key.kid, "typ": "JWT"})

    def access_token(self, subject: str, granted: Sequence[Scope]) -> IssuedToken:
        now = int(time.time())
        claims = {
            "iss": self._issuer, "sub": subject, "aud": self._service, "exp": now + self._lifetime,
            "nbf": now, "iat": now, "jti": secrets.token_urlsafe(16), "access": access_claim(granted),
        }
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(self._sign(claims), self._lifetime, issued_at)

    def refresh_token(self, subject: str) -> str:
        now = int(time.time())
        return self._sign({
            "iss": self._issuer, "sub": subject, "aud": self._service + REFRESH_AUDIENCE_SUFFIX,
            "exp": now + self._refresh_lifetime, "nbf": now, "iat": now, "jti": secrets.token_urlsafe(16),
        })


class TokenVerifier:
    def __init__(self, keys: Iterable[VerificationKey], *, local_issuer: str, leeway_seconds: int) -> None:
        self._keys = {key.kid: key for key in keys}
        self._local_issuer = local_issuer
        self._leeway = leeway_seconds

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def _decode(self, token: str, *, refresh: bool) -> tuple[dict[str, object], VerificationKey]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken(f"unknown key id {kid!r}")
        if header.get("alg") != key.algorithm:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not {key.algorithm} (the key's)")
        if refresh and key.issuer != self._local_issuer:
            raise InvalidToken("refresh tokens are only ours")
        audience = key.audience + (REFRESH_AUDIENCE_SUFFIX if refresh else "")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[key.algorithm], audience=audience, issuer=key.issuer,
                leeway=self._leeway, options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        return claims, key

    def verify(self, token: str) -> VerifiedToken:
        """The verified access token. Raises InvalidToken."""
        claims, key = self._decode(token, refresh=False)
        subject = claims.get("sub", "")
        return VerifiedToken(
            subject=subject if isinstance(subject, str) else "",
            issuer=key.issuer,
            access=Access.from_claim(claims.get("access")),
            local=key.issuer == self._local_issuer,
        )

    def verify_refresh(self, token: str) -> str:
        """The subject of a refresh token we issued. Raises InvalidToken."""
        claims, _ = self._decode(token, refresh=True)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("refresh token without subject")
        return subject
