"""OpenID Connect sign-in, the provider's side: discovery, the code exchange, the ID token's checks.

The gateway (gateway/console) starts a sign-in with a fresh `state`, `nonce` and PKCE
`code_verifier` of its own, kept in a signed cookie of the browser, and asks here for the
authorization URL (`authorization_url`); the browser comes back with a code, the gateway checks
`state`, and `complete` here:
1. exchanges the code at the token endpoint with the verifier (PKCE S256) and the client's
   credentials (`client_secret_basic` when the provider supports it, else `client_secret_post`;
   none for a public client);
2. checks the ID token: signed by a key of the provider's JWKS (by `kid`; an unknown `kid` fetches
   the JWKS again once), with an asymmetric algorithm (never `none` or HS*), `iss` the configured
   issuer, `aud` containing the client id (and `azp` the client id when there are several), not
   expired (60 s leeway), and `nonce` the one this sign-in sent;
3. reads the account name (`username_claim`, else `sub`) and the groups (`groups_claim`, from the
   ID token, else from the userinfo endpoint when the provider has one).
The discovery document's `issuer` must be the configured one. Documents are cached for
`metadata_cache_seconds`. A provider that cannot be reached raises `ProviderUnavailable`; one that
says no, or a token that fails a check, raises `SignInRefused` (both with a message for people).
"""

from __future__ import annotations

import hmac
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from services.common.settings import OidcSettings
from services.metadata.accounts.oidc_errors import ProviderUnavailable, SignInRefused

log = logging.getLogger("lading.metadata.accounts.oidc")

__all__ = ["OidcIdentity", "OidcProvider", "ProviderUnavailable", "SignInRefused"]

_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_LEEWAY_SECONDS = 60
# Fetching the JWKS again for an unknown key id happens at most this often.
_JWKS_REFRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    issuer: str
    subject: str
    username: str
    groups: tuple[str, ...]

    @property
    def external_id(self) -> str:
        return f"{self.issuer} {self.subject}"


def _claim_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(sorted({str(v) for v in value if isinstance(v, (str, int)) and str(v)}))


class OidcProvider:
    def __init__(self, settings: OidcSettings) -> None:
        self._settings = settings
        self._issuer = settings.issuer.rstrip("/")
        secret = settings.client_secret.get_secret_value()
        if not secret and settings.client_secret_file is not None:
            secret = settings.client_secret_file.read_text().splitlines()[0].strip()
        self._client_secret = secret
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        # No redirects, no proxies from the environment: we talk to the provider only.
        self._http = httpx.AsyncClient(verify=verify, timeout=settings.timeout_seconds, follow_redirects=False,
                                       trust_env=False)
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None

    @property
    def display_name(self) -> str:
        return self._settings.display_name

    async def close(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.get(url, **kwargs)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                f"the OIDC provider cannot be reached ({what} at {url}: {type(error).__name__} {error})".rstrip()
                + "; retry when it is back") from None
        if response.status_code != 200:
            raise ProviderUnavailable(f"the OIDC provider answered {response.status_code} for its {what} ({url})")
        try:
            body = response.json()
        except ValueError:
            raise ProviderUnavailable(f"the OIDC provider's {what} ({url}) is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the OIDC provider's {what} ({url}) is not a JSON object")
        return body

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (cached)."""
        cached = self._metadata
        if cached is not None and time.monotonic() - cached[0] <= self._settings.metadata_cache_seconds:
            return cached[1]
        document = await self._get_json(f"{self._issuer}/.well-known/openid-configuration", "discovery document")
        if str(document.get("issuer", "")).rstrip("/") != self._issuer:
            raise ProviderUnavailable(
                f"the OIDC discovery document names issuer {document.get('issuer')!r}, not {self._settings.issuer!r} "
                "(auth.oidc.issuer must be exactly the provider's issuer)")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(key), str):
                raise ProviderUnavailable(f"the OIDC discovery document has no {key}")
        self._metadata = (time.monotonic(), document)
        return document

    async def _keys(self, *, refresh: bool = False) -> dict[str, Any]:
        cached = self._jwks
        now = time.monotonic()
        if cached is not None and not (refresh and now - cached[0] > _JWKS_REFRESH_SECONDS) and (
                now - cached[0] <= self._settings.metadata_cache_seconds):
            return cached[1]
        document = await self._get_json((await self.metadata())["jwks_uri"], "JWKS")
        self._jwks = (now, document)
        return document

    async def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        endpoint = (await self.metadata())["authorization_endpoint"]
        query = urlencode({
            "response_type": "code", "client_id": self._settings.client_id, "redirect_uri": redirect_uri,
            "scope": " ".join(self._settings.scopes), "state": state, "nonce": nonce,
            "code_challenge": code_challenge, "code_challenge_method": "S256",
        })
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def complete(self, *, code: str, code_verifier: str, redirect_uri: str, nonce: str) -> OidcIdentity:
        """Raises SignInRefused, ProviderUnavailable (see the module docstring)."""
        document = await self.metadata()
        tokens = await self._exchange(document, code, code_verifier, redirect_uri)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the OIDC provider returned no ID token (is `openid` among auth.oidc.scopes?)")
        claims = await self._verify(id_token, nonce)
        settings = self._settings
        groups_value = claims.get(settings.groups_claim)
        username = claims.get(settings.username_claim)
        access_token = tokens.get("access_token")
        if (groups_value is None or username is None) and isinstance(document.get("userinfo_endpoint"), str) \
                and isinstance(access_token, str):
            info = await self._get_json(document["userinfo_endpoint"], "userinfo",
                                        headers={"authorization": f"Bearer {access_token}"})
            if info.get("sub") == claims["sub"]:
                groups_value = groups_value if groups_value is not None else info.get(settings.groups_claim)
                username = username if username is not None else info.get(settings.username_claim)
        name = str(username) if isinstance(username, (str, int)) and str(username) else str(claims["sub"])
        return OidcIdentity(str(claims["iss"]), str(claims["sub"]), name, _claim_list(groups_value))

    async def _exchange(self, document: dict[str, Any], code: str, verifier: str, redirect_uri: str
                        ) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, "client_id": self._settings.client_id}
        auth = None
        if self._client_secret:
            methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            if "client_secret_basic" in methods:
                auth = httpx.BasicAuth(self._settings.client_id, self._client_secret)
            else:
                form["client_secret"] = self._client_secret
        url = document["token_endpoint"]
        try:
            response = await self._http.post(url, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT,
                                             headers={"accept": "application/json"})
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                f"the OIDC provider cannot be reached (token endpoint {url}: {type(error).__name__}); retry later"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            described = body.get("error_description", "") if isinstance(body, dict) else ""
            if response.status_code >= 500:
                raise ProviderUnavailable(f"the OIDC provider's token endpoint answered {response.status_code}")
            raise SignInRefused(f"the OIDC provider refused the sign-in: {error} {described}".rstrip())
        return body

    async def _verify(self, token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise SignInRefused(f"the ID token is malformed ({error})") from None
        algorithm = header.get("alg")
        if algorithm not in _ALGORITHMS:
            raise SignInRefused(f"the ID token is signed with {algorithm!r}, which Lading does not accept")
        key = await self._key_for(header.get("kid"), algorithm)
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], audience=self._settings.client_id, issuer=self._issuer,
                leeway=_LEEWAY_SECONDS, options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidIssuerError:
            # Some providers end the issuer with a slash; the discovery check allowed that.
            claims = self._decode_with_issuer(token, key, algorithm)
        except jwt.PyJWTError as error:
            raise SignInRefused(f"the ID token failed a check ({type(error).__name__}: {error})") from None
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self._settings.client_id:
            raise SignInRefused("the ID token names several audiences but its azp is not this client")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise SignInRefused("the ID token's nonce is not this sign-in's (a replayed or foreign token)")
        return claims

    def _decode_with_issuer(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self._settings.client_id,
                                leeway=_LEEWAY_SECONDS, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.PyJWTError as error:
            raise SignInRefused(f"the ID token failed a check ({type(error).__name__}: {error})") from None
        if str(claims.get("iss", "")).rstrip("/") != self._issuer:
            raise SignInRefused(f"the ID token's issuer {claims.get('iss')!r} is not {self._settings.issuer!r}")
        return claims

    async def _key_for(self, kid: Any, algorithm: str) -> Any:
        for refresh in (False, True):
            document = await self._keys(refresh=refresh)
            for entry in document.get("keys", []):
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                if kid is not None and entry.get("kid") != kid:
                    continue
                if entry.get("alg") not in (None, algorithm):
                    continue
                try:
                    return jwt.PyJWK(entry, algorithm=algorithm).key
                except jwt.PyJWTError:
                    continue
        raise SignInRefused(f"no key of the provider's JWKS matches the ID token (kid {kid!r}, {algorithm})")
