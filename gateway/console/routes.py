"""The console's route table and the ASGI endpoint that runs its pages.

`ConsoleEndpoint` is to the console what gateway.routes.Endpoint is to the registry API: method
dispatch, the session (who is signed in: one GetSession call, except on the sign-in pages), CSRF
on every POST, security headers on every answer, and one place that turns failures into HTML
pages. A GET without a live session is sent to the sign-in page; a POST gets 401.

Repository names hold slashes, so paths put a `-` segment (which no name component can be)
between the name and what follows: `/ui/r/<name>/-/manifests/<reference>`.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import request_context
from gateway.console import admin, pages, render
from gateway.console.context import Page
from gateway.console.security import SESSION_COOKIE, clear_cookie, csrf_ok, session_secret
from services.common.errors import ErrorKind, RegistryError

PageHandler = Callable[[Page], Awaitable[Response]]
STATIC = Path(__file__).resolve().parent / "static"
_STATE_KEY = "gateway"  # gateway.routes.STATE_KEY (not imported: that module imports this one)


class ConsoleEndpoint:
    def __init__(self, *, get: PageHandler | None = None, post: PageHandler | None = None,
                 public: bool = False) -> None:
        self.handlers = {"GET": get, "HEAD": get, "POST": post}
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._respond(request)
        await render.with_headers(response)(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        gateway = request.scope["state"][_STATE_KEY]
        console = gateway.console
        handler = self.handlers.get(request.method)
        page = None
        try:
            if console is None:
                raise RegistryError(ErrorKind.NAME_UNKNOWN, "the web console is turned off (console.enabled)")
            if handler is None:
                allowed = ", ".join(m for m, h in self.handlers.items() if h is not None)
                return render.with_headers(Response("method not allowed", status_code=405,
                                                    headers={"allow": allowed}))
            page = Page(request, gateway, console, session_secret(request))
            request_context.bind(request.scope)
            if request.method == "POST":
                page.form = await render.form(request)
                if not csrf_ok(request, render.field(page.form, "csrf")):
                    raise RegistryError(ErrorKind.DENIED, "the form was stale or came from another site; "
                                        "reload the page and try again")
            if not self.public:
                page.me = await console.client.session(page.secret)
            return await handler(page)
        except RegistryError as error:
            if error.kind is ErrorKind.UNAUTHORIZED and not self.public:
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response = render.redirect(f"/ui/signin?next={quote(target, safe='')}")
                else:
                    response = render.error_page(request, error)
                if page is not None and page.secret:
                    clear_cookie(response, request, SESSION_COOKIE)
                return response
            return render.error_page(request, error, page.me if page is not None else None)
        except Exception as error:  # noqa: BLE001 - every failure becomes an HTML page here
            return render.error_page(request, error, page.me if page is not None else None)


class StaticFiles:
    """Our own CSS and JavaScript: only the files shipped in `static/`, read once."""

    def __init__(self) -> None:
        self.files = {
            path.name: (path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            for path in STATIC.iterdir() if path.is_file()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.files.get(scope["path_params"].get("file", ""))
        if found is None or scope["method"] not in ("GET", "HEAD"):
            response = Response("not found", status_code=404, media_type="text/plain")
        else:
            response = Response(found[0], media_type=found[1], headers={"cache-control": "public, max-age=3600",
                                                                         "x-content-type-options": "nosniff"})
        await response(scope, receive, send)


def _full(path: str, app: object) -> Route:
    """A route that matches the whole path (see gateway.routes.FullPathRoute)."""
    route = Route(path, app)  # type: ignore[arg-type]
    route.path_regex = re.compile(route.path_regex.pattern.removesuffix("$") + r"\Z", route.path_regex.flags | re.DOTALL)
    return route


def console_routes() -> list[BaseRoute]:
    """Every /ui/ route (mounted before the gateway's catch-all)."""
    def page(**kwargs: object) -> ConsoleEndpoint:
        return ConsoleEndpoint(**kwargs)  # type: ignore[arg-type]

    return [
        _full("/ui", page(get=_to_home, public=True)),
        _full("/ui/", page(get=pages.search)),
        _full("/ui/static/{file}", StaticFiles()),
        _full("/ui/signin", page(get=pages.signin_get, post=pages.signin_post, public=True)),
        _full("/ui/signout", page(post=pages.signout, public=True)),
        _full("/ui/oidc/start", page(get=pages.oidc_start, public=True)),
        _full("/ui/oidc/callback", page(get=pages.oidc_callback, public=True)),
        _full("/ui/account", page(get=pages.account)),
        _full("/ui/account/cli-secret", page(post=pages.cli_secret_create)),
        _full("/ui/account/cli-secret/revoke", page(post=pages.cli_secret_revoke)),
        _full("/ui/r/{name:path}/-/manifests/{reference}", page(get=pages.manifest)),
        _full("/ui/r/{name:path}/-/tags/{tag}/delete", page(post=pages.delete_tag)),
        _full("/ui/r/{name:path}", page(get=pages.repository)),
        _full("/ui/admin/", page(get=admin.overview)),
        _full("/ui/admin/maintenance", page(post=admin.set_maintenance)),
        _full("/ui/admin/users", page(get=admin.users, post=admin.create_user)),
        _full("/ui/admin/accounts/delete", page(post=admin.delete_account)),
        _full("/ui/admin/accounts/disable", page(post=admin.set_disabled)),
        _full("/ui/admin/robots", page(get=admin.robots, post=admin.create_robot)),
        _full("/ui/admin/grants", page(get=admin.grants, post=admin.add_grant)),
        _full("/ui/admin/grants/revoke", page(post=admin.revoke_grant)),
        _full("/ui/admin/directory", page(get=admin.directory, post=admin.map_group)),
        _full("/ui/admin/directory/remove", page(post=admin.unmap_group)),
        _full("/ui/admin/gc", page(get=admin.gc, post=admin.gc_dry_run)),
        _full("/ui/admin/events", page(get=admin.events)),
        _full("/ui/admin/events/replay", page(post=admin.replay)),
        _full("/ui/admin/storage", page(get=admin.storage)),
        _full("/ui/{path:path}", page(get=_not_found, post=_not_found)),
    ]


async def _to_home(page: Page) -> Response:
    return render.redirect("/ui/")


async def _not_found(page: Page) -> Response:
    raise RegistryError(ErrorKind.NAME_UNKNOWN, f"the console has no page at {page.request.url.path}")
