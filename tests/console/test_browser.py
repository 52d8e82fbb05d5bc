"""The console in a real browser (Debian's chromium, headless, driven by Playwright): signing in with
a local account (by keyboard), a directory account and single sign-on; browsing to a multi-arch
image, its platforms, annotations and signature; copying the pull commands by tag and by digest;
deleting a tag (gone from /v2/ too); an admin creating a robot whose secret works; a non-admin kept
out of the admin pages; an OIDC user's CLI secret used by skopeo; browsing from a search to a
manifest and copying its pull command with the keyboard only (skip link, Tab, Enter, a visible
focus at every stop); and every main page readable 320 px wide.

Screenshots (and the HTML) of a failing test's page are kept in test-artifacts/console/.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.auth.support import AuthStack, DockerAuth, get_token
from tests.console.conftest import ADMIN, ALICE
from tests.support import oci
from tests.support.clients import require_binary

COSIGN = "application/vnd.dev.cosign.artifact.sig.v1+json"
# The index's annotations, as the manifest page must show them (markup in a value stays text).
ANNOTATIONS = {"org.opencontainers.image.source": "https://example.org/web",
               "org.opencontainers.image.description": 'a <b>web</b> server & "friends"'}


def sign_in(page: Any, creds: tuple[str, str], *, next_path: str = "/ui/") -> None:
    """Signs in on the form with the keyboard only: the user name field has the focus."""
    page.goto(next_path)
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(creds[0])
    page.keyboard.press("Tab")
    page.keyboard.type(creds[1])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(next_path) + r"$"))


def push_web(stack: AuthStack) -> tuple[str, oci.Manifest, oci.Manifest]:
    """A multi-arch image tagged v1 and v2, signed (a cosign-style referrer)."""
    repository = f"team-a/web-{uuid.uuid4().hex[:6]}"
    index = oci.index([oci.image(2, architecture=arch) for arch in ("amd64", "arm64")], annotations=ANNOTATIONS)
    signature = oci.artifact(artifact_type=COSIGN, subject=index)
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as client:
        assert oci.push(client, repository, index, "v1").status_code == 201
        assert oci.push_manifest_only(client, repository, "v2", index).status_code == 201
        assert oci.push(client, repository, signature).status_code == 201
    return repository, index, signature


def test_local_sign_in_browse_copy_and_delete_a_tag(page: Any, stack: AuthStack) -> None:
    repository, index, signature = push_web(stack)
    sign_in(page, ADMIN)
    page.get_by_label("Search repositories").fill(repository)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=repository).click()
    rows = page.locator("table.tags tbody tr")
    assert rows.count() == 2 and "admin" in rows.first.inner_text()
    page.get_by_role("link", name="v1", exact=True).click()
    page.wait_for_url(re.compile(r"/-/manifests/v1$"))
    assert page.locator("#digest").inner_text() == index.digest
    platforms = page.locator("section[aria-labelledby=platforms-title] tbody tr")
    assert platforms.count() == 2
    assert {platforms.nth(i).locator("td").first.inner_text() for i in range(2)} == {"linux/amd64", "linux/arm64"}
    referrer = page.locator("#referrers a").first
    assert referrer.inner_text() == COSIGN

    # Copy the pull command by tag, as a person would.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("button[data-copy=pull-tag]").click()
    page.get_by_text("Copied.").wait_for()
    expected = f"docker pull {stack.hostport}/{repository}:v1"
    assert page.locator("#pull-tag").input_value() == expected
    assert page.evaluate("navigator.clipboard.readText()") == expected
    # And by digest: the copied command names exactly this index, as a client pulling it sees.
    page.locator("button[data-copy=pull-digest]").click()
    page.locator(".copy", has=page.locator("#pull-digest")).get_by_text("Copied.").wait_for()
    by_digest = f"docker pull {stack.hostport}/{repository}@{index.digest}"
    assert page.locator("#pull-digest").input_value() == by_digest
    assert page.evaluate("navigator.clipboard.readText()") == by_digest
    name, digest = by_digest.removeprefix(f"docker pull {stack.hostport}/").split("@")
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as client:
        pulled = oci.get_manifest(client, name, digest)
    assert pulled.status_code == 200 and oci.sha256(pulled.content) == index.digest
    # The index's annotations, each key with its value, as text.
    shown = page.locator("section[aria-labelledby=annotations-title] dl")
    pairs = dict(zip(shown.locator("dt").all_inner_texts(), shown.locator("dd").all_inner_texts(), strict=True))
    assert pairs == ANNOTATIONS

    # A platform, then the signature (which links back to its subject).
    platforms.first.locator("a").click()
    page.get_by_role("heading", name="Config and layers").wait_for()
    shown = page.locator("section[aria-labelledby=layers-title] tbody tr")
    platform_image = next(c for c in index.children if c.digest in page.url)
    assert shown.count() == len(platform_image.blobs)  # the config and every layer
    page.go_back()
    page.locator("#referrers a").first.click()
    page.wait_for_url(re.compile(re.escape(signature.digest) + r"$"))
    assert page.get_by_role("link", name=index.digest[:19]).count() == 1

    # Delete v2 from the repository page (the browser asks first).
    page.goto(f"/ui/r/{repository}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete tag v2").click()
    page.get_by_text("Tag “v2” deleted.").wait_for()
    assert page.get_by_role("link", name="v2", exact=True).count() == 0
    with httpx.Client(base_url=stack.base_url, auth=DockerAuth(ADMIN), timeout=30) as client:
        assert client.get(f"/v2/{repository}/tags/list").json()["tags"] == ["v1"]
        assert oci.get_manifest(client, repository, "v2").status_code == 404
        assert oci.get_manifest(client, repository, index.digest).status_code == 200


FOCUSED = """() => { const e = document.activeElement; const style = getComputedStyle(e);
    const box = e.getBoundingClientRect();
    return {id: e.id, tag: e.tagName, cls: e.className, text: (e.innerText || e.value || '').trim(),
            outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
            onScreen: box.width > 0 && box.left >= 0 && box.top >= 0}; }"""


def tab_to(page: Any, wanted: Any, *, limit: int = 12) -> dict[str, Any]:
    """Presses Tab until `wanted(focused)` holds (within `limit` presses); every stop on the way has
    a visible focus ring and is on the screen."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        assert focused["outline"] and focused["onScreen"], focused
        if wanted(focused):
            return focused
    raise AssertionError(f"never reached by Tab within {limit} presses")


def skip_to_content(page: Any) -> None:
    """The first Tab stop of every page is the skip link; Enter moves the focus into <main>."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.evaluate("window.scrollTo(0, 0)")
    tab_to(page, lambda f: f["cls"] == "skip" and f["text"] == "Skip to content", limit=1)
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'main'")


def test_keyboard_only_from_search_to_a_manifest(page: Any, stack: AuthStack) -> None:
    repository, index, _ = push_web(stack)
    sign_in(page, ADMIN)
    skip_to_content(page)
    tab_to(page, lambda f: f["id"] == "q", limit=1)  # the search field comes first in the content
    page.keyboard.type(repository)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/\?q="))
    skip_to_content(page)
    tab_to(page, lambda f: f["tag"] == "A" and f["text"] == repository)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(f"/ui/r/{repository}") + "$"))
    skip_to_content(page)
    tab_to(page, lambda f: f["tag"] == "A" and f["text"] == "v1")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/-/manifests/v1$"))
    assert page.locator("#digest").inner_text() == index.digest
    # The by-digest pull command's Copy button, by keyboard too.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    skip_to_content(page)
    tab_to(page, lambda f: f["id"] == "pull-digest")
    tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Copy", limit=1)
    page.keyboard.press("Enter")
    page.locator(".copy", has=page.locator("#pull-digest")).get_by_text("Copied.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == f"docker pull {stack.hostport}/{repository}@{index.digest}"


def test_an_admin_creates_a_robot_and_its_secret_works(page: Any, stack: AuthStack) -> None:
    sign_in(page, ADMIN)
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Robots").click()
    name = f"web{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name (robot$ is added)").fill(name)
    page.get_by_label("Description").fill("made in the console")
    page.get_by_role("button", name="Create robot").click()
    assert page.locator("#created-robot").inner_text() == f"robot${name}"
    secret = page.locator("#robot-secret").input_value()
    assert len(secret) >= 40
    assert get_token(stack.base_url, creds=(f"robot${name}", secret))
    page.reload()  # the secret is shown once: a new page never has it
    assert page.locator("#robot-secret").count() == 0 and secret not in page.content()


def test_a_non_admin_cannot_reach_the_admin_pages(page: Any, stack: AuthStack) -> None:
    sign_in(page, ALICE)
    assert page.get_by_role("link", name="Admin", exact=True).count() == 0
    for path in ("/ui/admin/", "/ui/admin/users", "/ui/admin/robots", "/ui/admin/grants", "/ui/admin/directory",
                 "/ui/admin/gc", "/ui/admin/events", "/ui/admin/storage"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        assert "alice is not an administrator" in page.locator("main").inner_text()


def test_a_directory_account_signs_in(page: Any, stack: AuthStack) -> None:
    repository, _, _ = push_web(stack)
    sign_in(page, ("dana", "dana-pw"))
    page.goto("/ui/account")
    assert "directory (LDAP)" in page.locator("main").inner_text()
    assert "cn=team-a,ou=groups,dc=example,dc=org" in page.locator("main").inner_text()
    page.goto(f"/ui/?q={repository}")
    assert page.get_by_role("link", name=repository).count() == 1


def test_single_sign_on_then_a_cli_secret_for_skopeo(page: Any, stack: AuthStack, tmp_path: Path) -> None:
    skopeo = require_binary("skopeo", install_hint="apt-get install skopeo")
    page.goto("/ui/signin")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    # The provider's own (development) login and consent pages.
    page.locator("input[name=login]").fill("carol")
    page.locator("input[name=password]").fill("anything")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]").click()  # consent: "Continue"
    page.wait_for_url(re.compile(r"/ui/$"))
    page.goto("/ui/account")
    main = page.locator("main").inner_text()
    assert "single sign-on (OIDC)" in main and "platform" in main
    page.get_by_label("Valid for").select_option("7")
    page.get_by_role("button", name="Create a secret").click()
    secret = page.locator("#cli-secret").input_value()
    assert len(secret) >= 40

    layout = oci.write_layout(tmp_path / "layout", {"v1": oci.image(layers=1)})

    def copy(target: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"--dest-creds=carol:{password}",
                               f"oci:{layout}:v1", f"docker://{stack.hostport}/{target}"],
                              capture_output=True, text=True, timeout=120)

    pushed = copy("platform/tool:1", secret)
    assert pushed.returncode == 0, pushed.stderr
    refused = copy("team-a/tool:1", secret)  # carol's group maps to platform/* only
    assert refused.returncode != 0
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke the secret").click()
    page.get_by_text("You have no CLI secret.").wait_for()
    revoked = copy("platform/tool:2", secret)
    assert revoked.returncode != 0, "a revoked CLI secret still pushes"
    assert "401" in revoked.stderr or "unauthorized" in revoked.stderr.lower(), revoked.stderr


def test_main_pages_are_readable_320_px_wide(page: Any, stack: AuthStack) -> None:
    repository, _, _ = push_web(stack)
    page.set_viewport_size({"width": 320, "height": 640})
    sign_in(page, ADMIN)
    for path in ("/ui/", f"/ui/r/{repository}", f"/ui/r/{repository}/-/manifests/v1", "/ui/admin/",
                 "/ui/admin/users", "/ui/admin/storage", "/ui/account"):
        page.goto(path)
        # Nothing wider than the screen: wide tables scroll inside their own box, long names wrap.
        wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > 321 && !e.closest('.scroll'))
            .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
        assert page.evaluate("document.documentElement.scrollWidth") <= 320, (path, wide)
        assert page.locator("main h1").first.is_visible(), path
