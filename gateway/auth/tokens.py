"""JWT access and refresh tokens (docker-auth-jwt.md): issue with our key, verify against the set.

Verification, in order: the header must name a `kid` of the key set and exactly that key's
algorithm (so `alg: none`, HS256 keyed with a public key, or an RS/ES mix-up never verify); then
the signature; then `exp` (required), `nbf` and `iat` (when present) with `leeway`; `iss` must be
the key's issuer and `aud` the key's audience (our `service`). Refresh tokens carry the audience
`<service>#refresh`, so they can never pass as access tokens.

ES256 signatures are accepted only in the canonical low-S form (S at most half the curve order):
(R, S) and (R, n - S) verify alike, so without this rule every token has a second spelling that
also verifies (malleability). We issue low-S only (`canonical_es256`). An external issuer that
cannot may be let through with `auth.external.accept_high_s_signatures`.

Tokens of our own accounts carry `uid` (the account's immutable id) and `gen` (its credential
generation when the token was issued; services/metadata/accounts/store.py): a refresh with a
stale generation is refused, and gateways refuse access tokens of revoked generations
(gateway/auth/revocations.py). Their `exp` never passes the account's own expiry (robots).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.auth.accounts import Identity
from gateway.auth.keys import SigningKey, VerificationKey
from gateway.auth.scopes import Access, Scope, access_claim
from services.common.lazy import lazy_module

jwt = lazy_module("jwt")  # loaded by the first token: a gateway without auth never needs it

REFRESH_AUDIENCE_SUFFIX = "#refresh"
# The order n of P-256; an ES256 signature is R || S, 32 bytes each (RFC 7518 section 3.4).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ES256_HALF = 32


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def canonical_es256(token: str) -> str:
    """The same ES256 token with its signature in low-S form (S replaced by n - S when above n/2)."""
    head, payload, signature = token.rsplit(".", 2)
    raw = _b64decode(signature)
    s = int.from_bytes(raw[_ES256_HALF:], "big")
    if s <= P256_ORDER // 2:
        return token
    low = (P256_ORDER - s).to_bytes(_ES256_HALF, "big")
    return f"{head}.{payload}.{_b64encode(raw[:_ES256_HALF] + low)}"


def check_low_s(token: str) -> None:
    """Raises InvalidToken unless the ES256 signature is 64 bytes with 1 <= S <= n/2."""
    try:
        raw = _b64decode(token.rsplit(".", 1)[1])
    except (IndexError, binascii.Error, ValueError):
        raise InvalidToken("malformed signature") from None
    if len(raw) != 2 * _ES256_HALF:
        raise InvalidToken("an ES256 signature is 64 bytes")
    s = int.from_bytes(raw[_ES256_HALF:], "big")
    if not 1 <= s <= P256_ORDER // 2:
        raise InvalidToken("ES256 signature not in the canonical low-S form")


class InvalidToken(Exception):
    """The token must not be trusted; the message says why (for logs, not for clients)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str  # "" for anonymous
    issuer: str
    access: Access
    local: bool  # issued by this registry (the subject is one of our accounts)
    # Our tokens of an account: its immutable id and credential generation ("" / 0 in tokens
    # issued before these claims existed, and in other issuers' tokens).
    account_id: str = ""
    generation: int = 0
    issued_at: int = 0


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    """What a verified refresh token names: the account, by name, immutable id and generation."""

    name: str
    account_id: str
    generation: int
    # The refresh token's own `exp` (never past the account's expiry): access tokens made from
    # it do not outlive it.
    expires_at: int = 0

    def identity(self) -> Identity:
        return Identity(self.name, self.account_id, self.generation, self.expires_at)


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
        token = jwt.encode(claims, self._key.private_key, algorithm=self._key.algorithm,
                           headers={"kid": self._key.kid, "typ": "JWT"})
        return canonical_es256(token) if self._key.algorithm == "ES256" else token

    @staticmethod
    def _expiry(now: int, lifetime: int, identity: Identity | None) -> int:
        if identity is not None and identity.expires_at:
            return max(now, min(now + lifetime, identity.expires_at))
        return now + lifetime

    @staticmethod
    def _account_claims(identity: Identity | None) -> dict[str, object]:
        if identity is None:
            return {"sub": ""}
        return {"sub": identity.name, "uid": identity.account_id, "gen": identity.generation}

    def access_token(self, identity: Identity | None, granted: Sequence[Scope]) -> IssuedToken:
        """An access token for `identity` (None: anonymous) with the `granted` scopes."""
        now = int(time.time())
        expires = self._expiry(now, self._lifetime, identity)
        claims = {
            "iss": self._issuer, **self._account_claims(identity), "aud": self._service, "exp": expires,
            "nbf": now, "iat": now, "jti": secrets.token_urlsafe(16), "access": access_claim(granted),
        }
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(self._sign(claims), expires - now, issued_at)

    def refresh_token(self, identity: Identity) -> str:
        now = int(time.time())
        return self._sign({
            "iss": self._issuer, **self._account_claims(identity), "aud": self._service + REFRESH_AUDIENCE_SUFFIX,
            "exp": self._expiry(now, self._refresh_lifetime, identity), "nbf": now, "iat": now,
            "jti": secrets.token_urlsafe(16),
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
        if key.algorithm == "ES256" and not key.allow_high_s:
            check_low_s(token)
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
        local = key.issuer == self._local_issuer
        uid, generation, issued_at = claims.get("uid"), claims.get("gen"), claims.get("iat")
        return VerifiedToken(
            subject=subject if isinstance(subject, str) else "",
            issuer=key.issuer,
            access=Access.from_claim(claims.get("access")),
            local=local,
            account_id=uid if local and isinstance(uid, str) else "",
            generation=generation if local and isinstance(generation, int) else 0,
            issued_at=issued_at if isinstance(issued_at, int) else 0,
        )

    def verify_refresh(self, token: str) -> RefreshClaims:
        """The account a refresh token we issued names. Raises InvalidToken (also for refresh
        tokens issued before they carried the account's id and generation: log in again)."""
        claims, _ = self._decode(token, refresh=True)
        subject, uid, generation = claims.get("sub"), claims.get("uid"), claims.get("gen")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("refresh token without subject")
        if not isinstance(uid, str) or not uid or not isinstance(generation, int):
            raise InvalidToken("refresh token without account id and generation (issued by an older version)")
        expires = claims.get("exp")
        return RefreshClaims(subject, uid, generation, expires if isinstance(expires, int) else 0)
