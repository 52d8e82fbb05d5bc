"""Browsing, signing in and out, single sign-on and the CLI secret (the admin pages are in admin.py).

Each handler gets a `Page` (context.py) and makes one or a few ConsoleService calls; what the
signed-in account may see and do is decided by the metadata plane, never here.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from gateway.auth.gate import client_address
from gateway.console import render
from gateway.console.context import Page
from gateway.console.security import (
    OIDC_COOKIE,
    OIDC_COOKIE_SECONDS,
    SESSION_COOKIE,
    clear_cookie,
    origin_of,
    pkce_pair,
    set_cookie,
)
from gateway.console.views import manifest_view
from gateway.middleware import BASE_URL_SCOPE_KEY
from services.common.errors import ErrorKind, RegistryError

HOME = "/ui/"
# CLI secret lifetimes offered in the console (days).
CLI_SECRET_DAYS = (1, 7, 30, 90)


def safe_next(target: str) -> str:
    """Where to go after signing in: a console path of ours, never another site."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


def repository_url(name: str) -> str:
    return f"/ui/r/{quote(name)}"


def registry_host(page: Page) -> str:
    """The registry's host[:port] as the browser reached it, for pull commands."""
    base = page.request.scope.get(BASE_URL_SCOPE_KEY)
    if isinstance(base, str):
        return base.split("://", 1)[-1]
    return page.request.headers.get("host") or f"{page.request.url.hostname}:{page.request.url.port}"


# -- signing in and out ---------------------------------------------------------------------------

async def signin_form(page: Page, *, error: str = "", status: int = 200) -> Response:
    options = await page.client.sign_in_options()
    if not options.auth_enabled:
        return render.redirect(HOME)
    return render.page(page.request, "signin.html", {
        "me": None, "options": options, "error": error,
        "next": safe_next(page.request.query_params.get("next", HOME)),
    }, status=status)


async def signin_get(page: Page) -> Response:
    return await signin_form(page)


async def signin_post(page: Page) -> Response:
    gate = page.gateway.auth
    if gate is None:
        return render.redirect(HOME)
    name, password = render.field(page.form, "username"), page.form.get("password", [""])[0]
    target = safe_next(render.field(page.form, "next"))
    identity = None
    if name and password and ":" not in name:
        header = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        # The registry's own login path: throttle, trusted credentials, directory or bcrypt.
        identity = await gate.logins.check(header, client_address(page.request))
    if identity is None:
        return await signin_form(page, error="invalid username or password", status=401)
    session = await page.client.create_session(identity.account_id, identity.generation,
                                               client_address(page.request))
    response = render.redirect(target)
    set_cookie(response, page.request, SESSION_COOKIE, session.session)
    return response


async def signout(page: Page) -> Response:
    if page.secret:
        await page.client.end_session(page.secret)
    response = render.redirect("/ui/signin")
    clear_cookie(response, page.request, SESSION_COOKIE)
    return response


def _callback_url(page: Page) -> str:
    base = page.console.settings.public_url.rstrip("/") or origin_of(page.request)
    return f"{base}/ui/oidc/callback"


async def oidc_start(page: Page) -> Response:
    cookies = page.console.oidc_cookies
    if cookies is None:
        raise RegistryError(ErrorKind.UNSUPPORTED, "single sign-on needs auth to be on")
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    redirect_uri = _callback_url(page)
    url = await page.client.oidc_url(redirect_uri=redirect_uri, state=state, nonce=nonce, code_challenge=challenge)
    response = render.with_headers(Response(status_code=302, headers={"location": url}))
    set_cookie(response, page.request, OIDC_COOKIE, cookies.seal({
        "state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri,
        "next": safe_next(page.request.query_params.get("next", HOME)),
    }), max_age=OIDC_COOKIE_SECONDS)
    return response


async def oidc_callback(page: Page) -> Response:
    cookies = page.console.oidc_cookies
    query = page.request.query_params
    started = cookies.open(page.request.cookies.get(OIDC_COOKIE, "")) if cookies is not None else None
    if started is None or not hmac.compare_digest(query.get("state", "").encode(), started["state"].encode()):
        raise RegistryError(ErrorKind.UNAUTHORIZED, "this sign-in did not start here or took too long; sign in again")
    if query.get("error"):
        raise RegistryError(ErrorKind.UNAUTHORIZED, f"the identity provider refused the sign-in: {query.get('error')} "
                            f"{query.get('error_description', '')}".rstrip())
    session = await page.client.complete_oidc(
        code=query.get("code", ""), code_verifier=started["verifier"], redirect_uri=started["redirect_uri"],
        nonce=started["nonce"], client_address=client_address(page.request))
    response = render.redirect(safe_next(started.get("next", HOME)))
    clear_cookie(response, page.request, OIDC_COOKIE)
    set_cookie(response, page.request, SESSION_COOKIE, session.session)
    return response


# -- browsing ----------------------------------------------------------------------------------------

async def search(page: Page) -> Response:
    query = page.request.query_params.get("q", "").strip()
    last = page.request.query_params.get("last", "")
    found = await page.client.search(page.secret, query, last, page.console.settings.page_size)
    return render.page(page.request, "search.html", {
        "me": page.me, "q": query, "repositories": found.repositories, "has_more": found.page.has_more,
        "next_last": found.repositories[-1].name if found.repositories else "", "last": last,
    })


async def repository(page: Page) -> Response:
    name = page.request.path_params["name"]
    query = page.request.query_params.get("q", "").strip()
    last = page.request.query_params.get("last", "")
    found = await page.client.tags(page.secret, name, query, last, page.console.settings.page_size)
    return render.page(page.request, "repository.html", {
        "me": page.me, "name": name, "q": query, "tags": found.tags, "has_more": found.page.has_more,
        "next_last": found.tags[-1].name if found.tags else "", "last": last, "can_delete": found.can_delete,
        "host": registry_host(page), "deleted": page.request.query_params.get("deleted", ""),
    })


def referrer_tree(subject: str, nodes: Sequence[Any]) -> list[dict[str, Any]]:
    """The flat breadth-first list of ReferrerNodes as nested dicts under `subject`."""
    children: dict[str, list[Any]] = {}
    for node in nodes:
        children.setdefault(node.subject, []).append(node)

    def build(digest: str) -> list[dict[str, Any]]:
        return [{
            "digest": n.descriptor.digest, "size": n.descriptor.size,
            "kind": n.descriptor.artifact_type or n.descriptor.media_type,
            "annotations": sorted(n.descriptor.annotations.items()),
            "children": build(n.descriptor.digest),
        } for n in children.get(digest, [])]

    return build(subject)


async def manifest(page: Page) -> Response:
    name = page.request.path_params["name"]
    reference = page.request.path_params["reference"]
    details = await page.client.manifest(page.secret, name, reference)
    found = await page.client.referrers(page.secret, name, details.digest)
    return render.page(page.request, "manifest.html", {
        "me": page.me, "name": name, "reference": reference, "details": details,
        "view": manifest_view(details.payload, details.media_type),
        "tree": referrer_tree(details.digest, found.nodes), "truncated": found.truncated,
        "host": registry_host(page),
        "tag": reference if ":" not in reference else (details.tags[0] if details.tags else ""),
    })


async def delete_tag(page: Page) -> Response:
    name = page.request.path_params["name"]
    tag = page.request.path_params["tag"]
    try:
        await page.client.delete_tag(page.secret, name, tag)
    finally:
        # This gateway's manifest cache forgets the repository at once, as after an API delete.
        if page.gateway.manifests is not None:
            page.gateway.manifests.invalidate_repository(name)
    return render.redirect(f"{repository_url(name)}?deleted={quote(tag)}")


# -- the account's own page ------------------------------------------------------------------------

async def account(page: Page) -> Response:
    return render.page(page.request, "account.html", {"me": page.me, "secret": "", "days": CLI_SECRET_DAYS})


async def cli_secret_create(page: Page) -> Response:
    try:
        days = int(render.field(page.form, "days") or "0")
    except ValueError:
        days = 0
    created = await page.client.create_cli_secret(page.secret, max(days, 0) * 86400)
    # Rendered here, not redirected to: the secret must never sit in a URL or the history.
    return render.page(page.request, "account.html", {
        "me": created.session, "secret": created.secret, "secret_expires_at": created.expires_at,
        "days": CLI_SECRET_DAYS, "host": registry_host(page)})


async def cli_secret_revoke(page: Page) -> Response:
    await page.client.revoke_cli_secret(page.secret)
    return render.redirect("/ui/account")
