"""Tag history and restore (issue 16, item 6) on SQLite and PostgreSQL: every creation, move and
delete is recorded and served by the HTTP endpoint; restore --to/--at round-trips; GC keeps a
manifest a tag left within the history window. The `lading tag history|restore` commands: test_cli.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import httpx
import pytest

from gateway.auth.rules import PULL
from gateway.routes import build_routes
from tests.governance.conftest import Policies, run_gc
from tests.support import oci
from tests.support.stack import Stack


def digest_of(client: httpx.Client, repo: str, tag: str) -> str:
    response = oci.get_manifest(client, repo, tag)
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def test_history_restore_and_gc_window(stack: Stack, client: httpx.Client, policies: Policies) -> None:
    repo = "hist/app"
    first, second = oci.image(1, layer_size=1024), oci.image(1, layer_size=1024)
    oci.push(client, repo, first, "latest")
    oci.push(client, repo, first, "latest")  # same digest again: not a move, not recorded
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.05)
    oci.push(client, repo, second, "latest")
    assert client.delete(f"/v2/{repo}/manifests/latest").status_code == 202

    history = client.get(f"/lading/v1/repositories/{repo}/tags/latest/history")
    assert history.status_code == 200
    body = history.json()
    assert body["name"] == repo and body["tag"] == "latest"
    moves = [(e["action"], e["old_digest"], e["new_digest"]) for e in body["history"]]
    assert moves == [("delete", second.digest, None), ("push", first.digest, second.digest),
                     ("push", None, first.digest)]
    assert all(e["actor"] == "anonymous" and e["at"].endswith("Z") for e in body["history"])
    assert len(client.get(f"/lading/v1/repositories/{repo}/tags/latest/history", params={"n": 1}).json()["history"]) == 1
    oci.assert_error(client.get(f"/lading/v1/repositories/{repo}/tags/latest/history", params={"n": "x"}), 400,
                     "PAGINATION_NUMBER_INVALID")
    oci.assert_error(client.get(f"/lading/v1/repositories/{repo}/tags/.bad/history"), 400, "TAG_INVALID")

    # Restore by time (where the tag pointed between the two pushes), then by digest.
    assert policies.restore(repo, "latest", at=between) == (first.digest, True)
    assert digest_of(client, repo, "latest") == first.digest
    assert policies.restore(repo, "latest", digest=second.digest) == (second.digest, True)
    assert digest_of(client, repo, "latest") == second.digest
    assert policies.restore(repo, "latest", digest=second.digest) == (second.digest, False)
    with pytest.raises(grpc.RpcError, match="history of hist/app:latest starts after"):
        policies.restore(repo, "latest", at="2000-01-01T00:00:00Z")
    with pytest.raises(grpc.RpcError, match="no longer stored"):
        policies.restore(repo, "latest", digest=oci.image(1).digest)
    with pytest.raises(grpc.RpcError, match="exactly one of --to DIGEST and --at TIME"):
        policies.restore(repo, "latest")
    assert [entry[0] for entry in policies.history(repo, "latest")] == ["restore", "restore", "delete", "push", "push"]

    # GC (review delay 0, untagged manifests collected): `first` is untagged now, but a tag left it
    # within the history window, so it stays; a manifest never tagged goes.
    never_tagged = oci.image(1, layer_size=512)
    oci.push(client, repo, never_tagged)
    run_gc(stack)
    assert oci.get_manifest(client, repo, first.digest).status_code == 200
    assert oci.get_manifest(client, repo, never_tagged.digest).status_code == 404
    assert policies.restore(repo, "latest", digest=first.digest) == (first.digest, True)
    assert oci.get_manifest(client, repo, "latest").content == first.payload


def test_history_endpoint_needs_pull() -> None:
    """The endpoint is declared with the PULL rule (the auth gate enforces it as for tags/list)."""
    route = next(r for r in build_routes() if getattr(r, "path", "").startswith("/lading/v1/repositories/"))
    assert route.path == "/lading/v1/repositories/{name:path}/tags/{tag}/history"
    assert route.endpoint.access == {"GET": PULL}
