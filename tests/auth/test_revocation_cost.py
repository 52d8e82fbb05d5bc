"""The gateway checks tokens against its revocation set without asking the metadata plane on each
request (issue 11, item 2: "without a database call per request").

A token-mode `lading serve` exposes the metadata plane's gRPC metrics; 50 requests with one bearer
token are made, and the metadata plane's counters show 50 tag listings (the requests did reach it
for their data) and not one AccountService or ChangeService call caused by them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import ALICE, auth_env
from tests.auth.support import AuthStack, oauth_login, signing_keys
from tests.support.grpc_calls import handled_calls
from tests.support.stack import free_port

REQUESTS = 50


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthStack, str]]:
    root = tmp_path_factory.mktemp("metered")
    keys = signing_keys(root)
    metrics = f"127.0.0.1:{free_port()}"
    env = auth_env(keys, LADING_OBSERVABILITY__METADATA_METRICS_LISTEN=metrics)
    with AuthStack(Path(root / "data"), env=env) as stack:
        stack.lading("user", "add", ALICE[0], "--password-stdin", stdin=ALICE[1] + "\n")
        stack.lading("grant", "add", ALICE[0], "team-a/*", "pull,push")
        yield stack, f"http://{metrics}/metrics"


def test_bearer_requests_ask_the_metadata_plane_nothing_about_the_account(metered: tuple[AuthStack, str]) -> None:
    stack, metrics_url = metered
    token = oauth_login(stack.base_url, ALICE, "repository:team-a/app:pull").json()["access_token"]
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        assert client.get("/v2/team-a/app/tags/list").status_code == 404  # warm: channels open
        before = handled_calls(metrics_url)
        for _ in range(REQUESTS):
            assert client.get("/v2/team-a/app/tags/list").status_code == 404
    after = handled_calls(metrics_url)
    grown = {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name, 0.0)}
    listings = sum(count for name, count in grown.items() if "Tag" in name)
    assert listings >= REQUESTS, f"the requests did not reach the metadata plane as expected: {grown}"
    about_accounts = {name: count for name, count in grown.items()
                      if name.startswith(("AccountService/", "ChangeService/"))}
    assert about_accounts == {}, f"account checks per request: {about_accounts}"
