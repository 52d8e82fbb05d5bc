"""One real directory, one real OIDC provider and one registry for the console and identity tests.

- `slapd`: OpenLDAP (tests/support/slapd.py) with StartTLS and LDAPS from a test CA;
- `oidc`: panva's `oidc-provider` from the npm registry (tests/console/oidc, installed with
  `npm ci` from its lockfile when missing), with one confidential client;
- `stack`: `lading serve` in token mode with both: LDAP search-then-bind over StartTLS (service
  account, memberOf, `cache_seconds` 1 so group changes show quickly), OIDC single sign-on, and
  group mappings made with `lading group map`:
    ldap  cn=team-a           → team-a/* pull,push,delete
    ldap  cn=registry-admins  → admin
    oidc  platform            → platform/* pull,push
  Local accounts: `admin` (bootstrap) and `alice` (pull on team-a/*). Delete events go to
  `events_receiver` (one attempt each: a failure is a dead letter at once).
Everything is shared by the whole session (these are the slow parts) and stopped at its end.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, write
from tests.events.receiver import Receiver
from tests.support.clients import require_binary
from tests.support.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd, group_dn
from tests.support.stack import LadingProcess, free_port
from tests.tls.pki import Pki

ADMIN = ("admin", "admin-secret-1")
ALICE = ("alice", "alice-secret-1")
OIDC_CLIENT = ("lading-console", "console-client-secret")
# OIDC users (any password signs in at the provider's development login) → their groups.
OIDC_GROUPS = {"carol": ["platform"], "oscar": [], "paula": ["platform"]}
OIDC_DIR = Path(__file__).resolve().parent / "oidc"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("console-pki"))


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"), pki).start()
    try:
        server.load()
        yield server
    finally:
        server.stop()


@dataclass
class OidcProvider:
    port: int
    process: LadingProcess

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _npm_ci() -> None:
    if (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = require_binary("npm", install_hint="apt-get install npm (Node.js 20 or later)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_DIR, check=True,
                   timeout=300, capture_output=True)


@pytest.fixture(scope="session")
def registry_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def basic_registry_port() -> int:
    """The port of the Basic-mode registry of test_cli_secrets.py (the provider must know its callback)."""
    return free_port()


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory, registry_port: int, basic_registry_port: int
         ) -> Iterator[OidcProvider]:
    node = require_binary("node", install_hint="apt-get install nodejs")
    _npm_ci()
    port = free_port()
    process = LadingProcess("oidc-provider", [node, str(OIDC_DIR / "provider.mjs")],
                            log_dir=tmp_path_factory.mktemp("oidc"), cwd=OIDC_DIR, env={
                                "OIDC_PORT": str(port), "OIDC_CLIENT_ID": OIDC_CLIENT[0],
                                "OIDC_CLIENT_SECRET": OIDC_CLIENT[1],
                                "OIDC_REDIRECT_URI": " ".join(f"http://127.0.0.1:{callback_port}/ui/oidc/callback"
                                                          for callback_port in (registry_port, basic_registry_port)),
                                "OIDC_GROUPS": json.dumps(OIDC_GROUPS)}).start()
    try:
        assert process.wait_for_output("oidc provider ready"), process.describe_failure("did not start")
        yield OidcProvider(port, process)
    finally:
        process.stop()


def ldap_env(slapd: Slapd, **extra: str) -> dict[str, str]:
    return {
        "LADING_AUTH__LDAP__URL": slapd.url,
        "LADING_AUTH__LDAP__START_TLS": "true",
        "LADING_AUTH__LDAP__CA_FILE": str(slapd.ca.cert),
        "LADING_AUTH__LDAP__BIND_DN": SERVICE_DN,
        "LADING_AUTH__LDAP__BIND_PASSWORD": SERVICE_PASSWORD,
        "LADING_AUTH__LDAP__USER_BASE_DN": PEOPLE,
        "LADING_AUTH__LDAP__CACHE_SECONDS": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def events_receiver() -> Iterator[Receiver]:
    """Where the stack sends delete events; it answers 500 (so they are dead letters) unless a
    test sets `status`."""
    receiver = Receiver().start()
    receiver.status = 500
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd, oidc: OidcProvider,
          registry_port: int, events_receiver: Receiver) -> Iterator[AuthStack]:
    root = tmp_path_factory.mktemp("console-stack")
    write(root / "signing.pem", generate_signing_key_pem())
    env = {
        "LADING_AUTH__MODE": "token",
        "LADING_AUTH__SIGNING_KEY_FILE": str(root / "signing.pem"),
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0],
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
        "LADING_AUTH__BASIC_CACHE_SECONDS": "0",
        "LADING_AUTH__OIDC__ISSUER": oidc.issuer,
        "LADING_AUTH__OIDC__CLIENT_ID": OIDC_CLIENT[0],
        "LADING_AUTH__OIDC__CLIENT_SECRET": OIDC_CLIENT[1],
        "LADING_AUTH__OIDC__DISPLAY_NAME": "Test IdP",
        "LADING_EVENTS__ENDPOINTS": json.dumps([{
            "name": "console", "url": events_receiver.url, "max_attempts": 1, "timeout_seconds": 2,
            "include_actions": ["delete"]}]),
        "LADING_EVENTS__DELIVERY_INTERVAL_SECONDS": "0.2",
        **ldap_env(slapd),
    }
    with AuthStack(root / "data", env=env, port=registry_port) as registry:
        registry.add_user(*ALICE, ("team-a/*", "pull"))  # in process (the commands: tests/auth)
        registry.lading("group", "map", "ldap", group_dn("team-a").upper().replace(",", ", "), "team-a/*",
                        "pull,push,delete")
        registry.lading("group", "map", "ldap", group_dn("registry-admins"), "--admin")
        registry.lading("group", "map", "oidc", "platform", "platform/*", "pull,push")
        yield registry


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where failing browser tests leave their screenshots (kept after the run)."""
    folder = Path(os.environ.get("LADING_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    return folder / "console"


# -- forms over plain HTTP ------------------------------------------------------------------------

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """Cookies and the CSRF token of the last page, as a browser keeps them."""

    def __init__(self, stack: AuthStack) -> None:
        self.base = stack.base_url
        self.http = httpx.Client(base_url=stack.base_url, timeout=30, follow_redirects=False,
                                 headers={"origin": stack.base_url})
        self.csrf = ""

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        response = self.http.get(path, **kwargs)  # type: ignore[arg-type]
        found = CSRF_FIELD.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], *, csrf: str | None = None, **kwargs: object) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf if csrf is None else csrf, **data}, **kwargs)  # type: ignore[arg-type]

    def sign_in(self, creds: tuple[str, str]) -> httpx.Response:
        self.get("/ui/signin")
        response = self.post("/ui/signin", {"username": creds[0], "password": creds[1], "next": "/ui/"})
        assert response.status_code == 303 and response.headers["location"] == "/ui/", response.text
        self.get("/ui/")
        return response



def through_the_provider(url: str, user: str, back_to: str) -> str:
    """Follows an authorization URL as a browser would, through the provider's development login
    (any password) and consent forms; returns the URL it sends the browser back to (starting
    with `back_to`, carrying the code and state)."""
    with httpx.Client(timeout=30, follow_redirects=False) as idp:
        response = idp.get(url)
        for _ in range(12):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if target.startswith(back_to):
                    return target
                response = idp.get(target)
                continue
            assert response.status_code == 200, response.text
            action = re.search(r'<form[^>]*action="([^"]+)"', response.text)
            assert action, response.text
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', response.text))
            if 'name="login"' in response.text:
                fields |= {"login": user, "password": "anything"}
            response = idp.post(urljoin(str(response.url), html.unescape(action.group(1))), data=fields)
    raise AssertionError("the provider never sent the browser back")


def sign_in_with_provider(browser: Browser, user: str) -> None:
    """Single sign-on over plain HTTP: the console's redirect to the provider, its forms, the callback."""
    started = browser.http.get("/ui/oidc/start")
    assert started.status_code == 302, started.text
    target = through_the_provider(started.headers["location"], user, browser.base)
    back = browser.get(target.removeprefix(browser.base))
    assert back.status_code == 303 and back.headers["location"] == "/ui/", back.text
    browser.get("/ui/account")


# -- the browser ---------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Leaves each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium, headless, driven by Playwright (never a browser Playwright downloads).
    `launch` gives every run a fresh temporary profile (user data dir). Module scope, not session:
    Playwright's sync API keeps an event loop running in the main thread while it is open, which
    would break the asyncio tests of later modules."""
    if not Path(CHROMIUM).exists():
        require_binary("chromium", install_hint="apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: object, stack: AuthStack, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """A page in a fresh browser context (no cookies); on failure, a screenshot of where it stood
    is kept under `artifacts` (test-artifacts/console/<test>.png)."""
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            artifacts.mkdir(parents=True, exist_ok=True)
            name = request.node.name.replace("/", "_").replace("[", "_").replace("]", "")
            with contextlib.suppress(Exception):
                tab.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
                (artifacts / f"{name}.html").write_text(tab.content())
        context.close()
