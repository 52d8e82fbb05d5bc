"""Cookies, CSRF tokens and security headers of the console.

- `lading_session`: the session secret the metadata plane handed out (HttpOnly, SameSite=Lax,
  Path=/ui/, Secure when the browser came over HTTPS). Lax, not Strict: the browser comes back from
  the OIDC provider by a cross-site redirect and must bring its sign-in cookie along.
- CSRF: a signed-in form carries HMAC-SHA256(session secret, "csrf"), which a page of another
  site can neither read nor compute; before sign-in, the token is a random value also kept in the
  `lading_csrf` cookie (double submit). Every POST must carry the right token, and a POST whose
  `Origin` (or, without one, `Referer`) names another origin is refused as well.
- `lading_oidc`: a sign-in through the OIDC provider in progress (state, nonce, PKCE verifier,
  where to go after), MAC'd with a key every gateway replica shares (derived from the upload
  state key, see gateway/auth/upload_state.py) and valid 10 minutes.
- Headers on every console response: a Content-Security-Policy that allows only this origin's
  own scripts, styles and images and no framing, `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: same-origin` (no URL of ours, the OIDC callback's with its code included, goes to another site; `no-referrer` would make browsers send `Origin: null` with our own forms), `Cache-Control: no-store`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.middleware import BASE_URL_SCOPE_KEY

SESSION_COOKIE = "lading_session"
CSRF_COOKIE = "lading_csrf"
OIDC_COOKIE = "lading_oidc"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui/"
OIDC_COOKIE_SECONDS = 600

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secure_request(request: Request) -> bool:
    """The browser reached us over HTTPS (directly, or through a trusted proxy that said so)."""
    base = request.scope.get(BASE_URL_SCOPE_KEY)
    if isinstance(base, str):
        return base.startswith("https://")
    return request.url.scheme == "https"


def origin_of(request: Request) -> str:
    """`scheme://host[:port]` as the browser sees this registry."""
    base = request.scope.get(BASE_URL_SCOPE_KEY)
    if isinstance(base, str):
        return base
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def set_cookie(response: Response, request: Request, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="lax",
                        secure=secure_request(request))


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="lax", secure=secure_request(request))


def session_secret(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


def csrf_for_session(secret: str) -> str:
    return _b64(hmac.new(secret.encode(), b"lading console csrf v1", hashlib.sha256).digest())


def csrf_token(request: Request) -> tuple[str, str | None]:
    """(the token forms of this page carry, a new pre-sign-in cookie value to set or None)."""
    secret = session_secret(request)
    if secret:
        return csrf_for_session(secret), None
    existing = request.cookies.get(CSRF_COOKIE, "")
    if len(existing) >= 32:
        return existing, None
    fresh = secrets.token_urlsafe(32)
    return fresh, fresh


def same_origin(request: Request) -> bool:
    """False when the request says it comes from another origin (Origin, else Referer)."""
    claimed = request.headers.get("origin")
    if claimed is None:
        referer = request.headers.get("referer")
        if not referer:
            return True  # neither header (privacy settings): the CSRF token decides alone
        parts = urlsplit(referer)
        claimed = f"{parts.scheme}://{parts.netloc}"
    return claimed.rstrip("/") == origin_of(request).rstrip("/")


def csrf_ok(request: Request, submitted: str) -> bool:
    if not submitted or not same_origin(request):
        return False
    secret = session_secret(request)
    expected = csrf_for_session(secret) if secret else request.cookies.get(CSRF_COOKIE, "")
    return bool(expected) and hmac.compare_digest(submitted.encode(), expected.encode())


class OidcStateCookie:
    """The signed cookie of a sign-in in progress (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, values: dict[str, str]) -> str:
        payload = _b64(orjson.dumps({**values, "exp": int(time.time()) + OIDC_COOKIE_SECONDS}))
        mac = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{payload}.{mac}"

    def open(self, cookie: str) -> dict[str, str] | None:
        payload, _, mac = cookie.partition(".")
        expected = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        try:
            values = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(values, dict) or int(values.get("exp", 0)) < time.time():
            return None
        return {k: str(v) for k, v in values.items()}


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())
