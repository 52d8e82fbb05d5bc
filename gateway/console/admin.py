"""The administrator's pages: users, robots, grants, directory mappings, GC, events, maintenance,
storage. Every call is an Admin* call of ConsoleService, which refuses (DENIED → 403) unless the
session's account is an admin: the gateway hides the links, the metadata plane decides.

`SECTIONS` is the admin menu; the governance policies (issue 16) join it when they exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lading.metadata.v1 import accounts_pb2
from starlette.responses import Response

from gateway.console import render
from gateway.console.context import Page
from services.common.errors import ErrorKind, RegistryError

SECTIONS = (
    ("/ui/admin/", "Overview"),
    ("/ui/admin/users", "Users"),
    ("/ui/admin/robots", "Robots"),
    ("/ui/admin/grants", "Grants"),
    ("/ui/admin/directory", "Directory groups"),
    ("/ui/admin/gc", "Garbage collection"),
    ("/ui/admin/events", "Events"),
    ("/ui/admin/storage", "Storage"),
)
ROBOT_EXPIRY_DAYS = (0, 30, 90, 365)
EVENT_STATES = ("", "pending", "delivered", "dead")
EVENTS_PER_PAGE = 50


def _page(page: Page, template: str, **context: object) -> Response:
    return render.page(page.request, template, {"me": page.me, "sections": SECTIONS, **context})


def _actions(page: Page) -> list[str]:
    return [a for a in ("pull", "push", "delete") if render.field(page.form, a)]


async def overview(page: Page) -> Response:
    maintenance = await page.client.maintenance(page.secret)
    stats = await page.client.gc_stats(page.secret)
    return _page(page, "admin/overview.html", maintenance=maintenance, stats=stats)


async def set_maintenance(page: Page) -> Response:
    await page.client.set_maintenance(page.secret, render.field(page.form, "on") == "1")
    return render.redirect("/ui/admin/")


async def users(page: Page, *, created: str = "") -> Response:
    listed = await page.client.accounts(page.secret)
    return _page(page, "admin/users.html", accounts=[a for a in listed.accounts
                                                     if a.kind != accounts_pb2.ACCOUNT_KIND_ROBOT], created=created)


async def create_user(page: Page) -> Response:
    name = render.field(page.form, "name")
    password = page.form.get("password", [""])[0]
    await page.client.create_user(page.secret, name, password, render.field(page.form, "admin") == "1")
    return render.redirect("/ui/admin/users")


async def delete_account(page: Page) -> Response:
    name = render.field(page.form, "name")
    await page.client.delete_account(page.secret, name)
    return render.redirect("/ui/admin/robots" if name.startswith("robot$") else "/ui/admin/users")


async def set_disabled(page: Page) -> Response:
    name = render.field(page.form, "name")
    await page.client.set_disabled(page.secret, name, render.field(page.form, "disabled") == "1")
    return render.redirect("/ui/admin/robots" if name.startswith("robot$") else "/ui/admin/users")


async def robots(page: Page) -> Response:
    listed = await page.client.accounts(page.secret)
    return _page(page, "admin/robots.html", robots=[a for a in listed.accounts
                                                    if a.kind == accounts_pb2.ACCOUNT_KIND_ROBOT],
                 days=ROBOT_EXPIRY_DAYS, created=None)


async def create_robot(page: Page) -> Response:
    try:
        days = int(render.field(page.form, "days") or "0")
    except ValueError:
        raise RegistryError(ErrorKind.DENIED, "choose an expiry") from None
    expires = int((datetime.now(UTC) + timedelta(days=days)).timestamp()) if days > 0 else 0
    created = await page.client.create_robot(page.secret, render.field(page.form, "name"),
                                             render.field(page.form, "description"), expires)
    listed = await page.client.accounts(page.secret)
    # The secret is shown on this answer only (never in a URL, never again).
    return _page(page, "admin/robots.html", robots=[a for a in listed.accounts
                                                    if a.kind == accounts_pb2.ACCOUNT_KIND_ROBOT],
                 days=ROBOT_EXPIRY_DAYS, created=created)


async def grants(page: Page) -> Response:
    listed = await page.client.grants(page.secret)
    return _page(page, "admin/grants.html", permissions=listed.permissions)


async def add_grant(page: Page) -> Response:
    await page.client.grant(page.secret, render.field(page.form, "account"), render.field(page.form, "pattern"),
                            _actions(page))
    return render.redirect("/ui/admin/grants")


async def revoke_grant(page: Page) -> Response:
    await page.client.revoke(page.secret, render.field(page.form, "account"), render.field(page.form, "pattern"), [])
    return render.redirect("/ui/admin/grants")


def _mapping(page: Page) -> accounts_pb2.GroupMapping:
    return accounts_pb2.GroupMapping(
        provider=render.field(page.form, "provider"), group=render.field(page.form, "group"),
        pattern=render.field(page.form, "pattern"), actions=_actions(page),
        admin=render.field(page.form, "admin") == "1")


async def directory(page: Page) -> Response:
    listed = await page.client.mappings(page.secret)
    options = await page.client.sign_in_options()
    return _page(page, "admin/directory.html", mappings=listed.mappings, options=options)


async def map_group(page: Page) -> Response:
    await page.client.map_group(page.secret, _mapping(page))
    return render.redirect("/ui/admin/directory")


async def unmap_group(page: Page) -> Response:
    await page.client.unmap_group(page.secret, _mapping(page))
    return render.redirect("/ui/admin/directory")


async def gc(page: Page, *, plan: object = None) -> Response:
    stats = await page.client.gc_stats(page.secret)
    return _page(page, "admin/gc.html", stats=stats, plan=plan,
                 untagged=render.field(page.form, "delete_untagged") == "1")


async def gc_dry_run(page: Page) -> Response:
    plan = await page.client.gc_plan(page.secret, render.field(page.form, "delete_untagged") == "1")
    return await gc(page, plan=plan)


async def events(page: Page) -> Response:
    state = page.request.query_params.get("state", "")
    if state not in EVENT_STATES:
        state = ""
    try:
        before = int(page.request.query_params.get("before", "0") or 0)
    except ValueError:
        before = 0
    listed = await page.client.events(page.secret, state, before, EVENTS_PER_PAGE)
    return _page(page, "admin/events.html", rows=listed.rows, state=state, states=EVENT_STATES,
                 next_before=listed.rows[-1].id if len(listed.rows) == EVENTS_PER_PAGE else 0)


async def replay(page: Page) -> Response:
    try:
        row_id = int(render.field(page.form, "id") or "0")
    except ValueError:
        row_id = 0
    await page.client.replay(page.secret, row_id, dead=row_id == 0)
    return render.redirect("/ui/admin/events" + ("?state=dead" if row_id == 0 else ""))


async def storage(page: Page) -> Response:
    usage = await page.client.storage(page.secret, 20)
    largest = max((r.bytes for r in usage.repositories), default=0)
    return _page(page, "admin/storage.html", usage=usage, largest=largest)
