"""HTML responses of the console: the Jinja2 environment (built on the first page, so a gateway
that never serves the console never loads it), security headers, forms, and error pages.

Templates autoescape everything; values are never marked safe, so a repository name, a tag or
an annotation can never become markup.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.console import views
from gateway.console.security import CSRF_COOKIE, SECURITY_HEADERS, csrf_token, set_cookie
from services.common.errors import ErrorKind, RegistryError

log = logging.getLogger("lading.gateway.console")

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Forms are small: a bound on what a POST body may hold.
MAX_FORM_BYTES = 64 * 1024

_environment: Any = None


def environment() -> Any:
    global _environment  # one per process, built lazily (see the module docstring)
    if _environment is None:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                 auto_reload=False, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                 lstrip_blocks=True)
        env.filters["size"] = views.human_size
        env.filters["time"] = views.human_time
        env.filters["short"] = views.short_digest
        env.filters["path"] = lambda value: quote(str(value), safe="/:@")
        env.globals["query"] = lambda **values: urlencode({k: v for k, v in values.items() if v not in ("", None)})
        _environment = env
    return _environment


def with_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def page(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> Response:
    token, new_cookie = csrf_token(request)
    body = environment().get_template(template).render(request=request, csrf=token, **context)
    response = with_headers(HTMLResponse(body, status_code=status))
    if new_cookie is not None:
        set_cookie(response, request, CSRF_COOKIE, new_cookie, max_age=3600)
    return response


def redirect(location: str) -> Response:
    """303 See Other: after a POST the browser GETs `location`."""
    return with_headers(RedirectResponse(location, status_code=303))


async def form(request: Request) -> dict[str, list[str]]:
    """The urlencoded POST body (at most MAX_FORM_BYTES)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise RegistryError(ErrorKind.UNSUPPORTED, "forms are sent as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise RegistryError(ErrorKind.SIZE_INVALID, "form too large")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def field(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name)
    return found[0].strip() if found else ""


_TITLES = {401: "Sign in required", 403: "Not allowed", 404: "Not found", 405: "Not possible now",
           429: "Too many attempts", 503: "Temporarily unavailable"}


def error_page(request: Request, error: Exception, me: Any = None) -> Response:
    """An HTML page for a failure: the registry error's message (they are written for people),
    or a generic one for a bug (logged with its traceback)."""
    if isinstance(error, RegistryError):
        status = error.kind.http_status  # the one error table's status (services/common/errors.py)
        message = error.message
    else:
        log.exception("console page %s failed", request.url.path, exc_info=error)
        status, message = 500, "something went wrong on the registry's side; the gateway's log says what"
    response = page(request, "error.html", {"me": me, "title": _TITLES.get(status, "Cannot do that"),
                                            "message": message, "status": status}, status=status)
    if status == 429 and isinstance(error, RegistryError) and isinstance(error.detail, dict):
        retry = error.detail.get("retry_after_seconds")
        if retry:
            response.headers["retry-after"] = str(retry)
    return response
