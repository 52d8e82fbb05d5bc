"""The built-in token server (docker-auth-token.md, docker-auth-oauth.md), token mode only.

- `GET /token?service=&scope=&scope=&account=&offline_token=&client_id=`: Basic credentials or
  none (anonymous; so is the empty `Basic Og==`, gateway/auth/basic.py). Answers `{"token",
  "access_token", "expires_in", "issued_at"}` plus `refresh_token` with `offline_token=true`
  (authenticated callers only).
- `POST /token` (application/x-www-form-urlencoded): `grant_type=password` with `username` and
  `password`, or `grant_type=refresh_token` with `refresh_token`; `client_id` and `service` are
  required (docker-auth-oauth.md); `scope` is space-separated, and a form with several `scope`
  fields (containers/image, i.e. podman and skopeo, sends one per scope) asks for all of them;
  `access_type=offline` asks for a refresh token (a refresh grant returns the same one). The
  answer also carries `scope`, the granted scopes.

The token's `access` claim is the INTERSECTION of what was asked and what the account may do
(AccountService.Authorize): asking for more is not an error, the token just lacks it. Wrong
credentials or a bad refresh token → 401 UNAUTHORIZED; a `service` other than ours → 403 DENIED;
an `account` parameter that differs from the credentials → 401; a password check while the client
or account backs off → 429 TOOMANYREQUESTS with `Retry-After` (gateway/auth/logins.py).

POST refusals also carry RFC 6749 section 5.2's `error` and `error_description` next to the OCI
`errors` (docker-auth-oauth.md takes RFC 6749 as its reference; docker, podman and oras read the
OCI envelope): bad credentials or refresh token → `invalid_grant`, still with 401 as
docker-auth-token.md asks of a failed authentication (containerd then tries GET, podman reports
bad credentials); a missing `client_id`, `service` or `grant_type`, or a body that is not a form →
400 `invalid_request`; another grant type → 400 `unsupported_grant_type`.

Tokens name the account's immutable id and credential generation (gateway/auth/tokens.py). A
refresh succeeds only while the account still has both: after a password change, a robot secret
rotation, `lading user revoke-tokens`, a disable or a delete (even if an account of the same name
was created since) the refresh token gets 401.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.accounts import Identity
from gateway.auth.basic import credentials_header
from gateway.auth.gate import AuthGate
from gateway.auth.scopes import Scope, parse_scopes
from gateway.auth.tokens import InvalidToken
from gateway.errors import HttpRegistryError
from gateway.responses import json_response
from services.common.errors import ErrorKind, RegistryError

if TYPE_CHECKING:
    from gateway.context import Gateway

# Token requests are a few hundred bytes; anything much larger is not one.
MAX_FORM_BYTES = 64 * 1024
_TRUE = ("true", "1", "yes")


def _gate(gateway: Gateway) -> AuthGate:
    gate = getattr(gateway, "auth", None)
    if not isinstance(gate, AuthGate) or gate.mode != "token" or gate.issuer is None:
        raise RegistryError(ErrorKind.NAME_UNKNOWN, "this registry has no token endpoint (auth.mode is not token)")
    return gate


# RFC 6749 section 5.2's `error` for the refusals of POST /token that are OAuth2 answers (a 429 or a
# 503 is not: it carries the OCI envelope only).
_OAUTH_ERRORS = {
    ErrorKind.UNAUTHORIZED: "invalid_grant",
    ErrorKind.DENIED: "invalid_request",
    ErrorKind.TOKEN_REQUEST_INVALID: "invalid_request",
}


def _invalid_request(message: str, error: str = "invalid_request") -> HttpRegistryError:
    return HttpRegistryError(ErrorKind.TOKEN_REQUEST_INVALID, message, headers={}, fields={"error": error})


def _oauth_refusal(exc: RegistryError) -> RegistryError:
    """`exc` as POST /token answers it: with `error` and `error_description` when it is an OAuth2 error."""
    fields = exc.fields if isinstance(exc, HttpRegistryError) else {}
    error = fields.get("error") or _OAUTH_ERRORS.get(exc.kind)
    if error is None:
        return exc
    headers = exc.headers if isinstance(exc, HttpRegistryError) else {}
    return HttpRegistryError(exc.kind, exc.message, exc.detail, headers=headers,
                             fields={"error": error, "error_description": exc.message})


def _bad_credentials(gate: AuthGate, message: str = "invalid username or password") -> HttpRegistryError:
    return HttpRegistryError(
        ErrorKind.UNAUTHORIZED, message, headers={"www-authenticate": f'Basic realm="{gate.settings.service}"'}
    )


def _check_service(gate: AuthGate, service: str | None) -> None:
    if service and service != gate.settings.service:
        raise RegistryError(
            ErrorKind.DENIED, f"this token server issues tokens for {gate.settings.service!r}, not {service!r}",
            {"service": service},
        )


async def _answer(gate: AuthGate, identity: Identity | None, scopes: list[Scope], *, refresh: str | None,
                  oauth: bool, refreshing: bool = False) -> Response:
    """Issues the token. `identity` None: anonymous. Its account must still have the id and
    generation it carries (checked by the metadata plane in the same call as the grants)."""
    account = identity.name if identity else ""
    granted, valid = await gate.accounts.authorize(account, scopes, identity=identity)
    if not valid:
        if refreshing:
            raise _bad_credentials(
                gate, "the refresh token was revoked (password changed, secret rotated, tokens revoked, account "
                      "disabled or deleted) or its account expired: log in again")
        raise _bad_credentials(gate, "the account no longer exists, is disabled or has expired")
    assert gate.issuer is not None
    issued = gate.issuer.access_token(identity, granted)
    body: dict[str, Any] = {
        "token": issued.token, "access_token": issued.token,
        "expires_in": issued.expires_in, "issued_at": issued.issued_at,
    }
    if oauth:
        body["scope"] = " ".join(str(s) for s in granted if s.actions)
    if refresh:
        body["refresh_token"] = refresh
    return json_response(body, headers={"cache-control": "no-store", "pragma": "no-cache"})


async def get_token(request: Request, gateway: Gateway) -> Response:
    gate = _gate(gateway)
    query = request.query_params
    _check_service(gate, query.get("service"))
    identity = None
    header = credentials_header(request.headers.get("authorization"))
    if header is not None:
        identity = await gate.authenticate_basic(request, header)
        if identity is None:
            raise _bad_credentials(gate)
    requested_account = query.get("account")
    if requested_account and identity and requested_account != identity.name:
        raise _bad_credentials(gate, "the account parameter does not match the credentials")
    scopes = parse_scopes(query.getlist("scope"))
    assert gate.issuer is not None
    refresh = None
    if identity and query.get("offline_token", "").lower() in _TRUE:
        refresh = gate.issuer.refresh_token(identity)
    return await _answer(gate, identity, scopes, refresh=refresh, oauth=False)


async def _form(request: Request) -> dict[str, list[str]]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _invalid_request("POST /token takes application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise _invalid_request("token request too large")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


async def post_token(request: Request, gateway: Gateway) -> Response:
    gate = _gate(gateway)
    try:
        return await _post_token(request, gate)
    except RegistryError as exc:
        raise _oauth_refusal(exc) from None


async def _post_token(request: Request, gate: AuthGate) -> Response:
    fields = await _form(request)
    form = {key: values[0] for key, values in fields.items()}
    for required in ("grant_type", "service", "client_id"):
        if not form.get(required):
            raise _invalid_request(f"POST /token needs {required} (docker-auth-oauth.md)")
    _check_service(gate, form["service"])
    grant_type = form["grant_type"]
    assert gate.issuer is not None and gate.verifier is not None
    refresh: str | None = None
    scopes = parse_scopes(fields.get("scope", []))
    if grant_type == "password":
        username, password = form.get("username", ""), form.get("password", "")
        header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        identity = await gate.authenticate_basic(request, header) if username else None
        if identity is None:
            raise _bad_credentials(gate)
        if form.get("access_type") == "offline":
            refresh = gate.issuer.refresh_token(identity)
        return await _answer(gate, identity, scopes, refresh=refresh, oauth=True)
    if grant_type == "refresh_token":
        refresh = form.get("refresh_token", "")
        try:
            claims = gate.verifier.verify_refresh(refresh)
        except InvalidToken:
            raise _bad_credentials(gate, "invalid refresh token: log in again") from None
        return await _answer(gate, claims.identity(), scopes, refresh=refresh, oauth=True, refreshing=True)
    raise _invalid_request(f"grant_type {grant_type!r} is not supported: use password or refresh_token",
                           "unsupported_grant_type")
