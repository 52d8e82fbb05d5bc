"""`GET /lading/v1/repositories/<name>/tags/<tag>/history` (services/metadata/policies) in token
mode: it needs pull on the repository, as a manifest GET does. Without a token: 401 with a Bearer
challenge for that repository's pull scope; with a token whose holder has no pull there: refused;
with pull: the tag's history."""

from __future__ import annotations

import httpx

from tests.auth.conftest import ADMIN, ALICE, Secured, unique
from tests.auth.support import DockerAuth, challenge_params, get_token
from tests.support import oci


def test_tag_history_needs_pull_on_the_repository(secured: Secured) -> None:
    base = secured.base_url
    repo = unique("shared/history")  # alice and bob: pull on shared/*; robot$ci: team-a/* only
    first, second = oci.image(1, layer_size=200), oci.image(1, layer_size=200)
    with httpx.Client(base_url=base, auth=DockerAuth(ADMIN), timeout=30) as admin:
        assert oci.push(admin, repo, first, "v1").status_code == 201
        assert oci.push(admin, repo, second, "v1").status_code == 201
    path = f"/lading/v1/repositories/{repo}/tags/v1/history"

    anonymous = httpx.get(base + path, timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    challenge = challenge_params(anonymous.headers["www-authenticate"])
    assert challenge["scope"] == f"repository:{repo}:pull"

    # The robot may ask for the scope but is granted nothing there: its token carries no pull.
    robot = get_token(base, f"repository:{repo}:pull", creds=secured.robot)
    refused = httpx.get(base + path, headers={"Authorization": f"Bearer {robot}"}, timeout=10)
    assert refused.status_code in (401, 403), refused.text
    assert "new_digest" not in refused.text
    # Nor does a token for another repository open this one.
    other = get_token(base, "repository:shared/other:pull", creds=ALICE)
    assert httpx.get(base + path, headers={"Authorization": f"Bearer {other}"}, timeout=10).status_code in (401, 403)

    token = get_token(base, f"repository:{repo}:pull", creds=ALICE)
    allowed = httpx.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert allowed.status_code == 200, allowed.text
    body = allowed.json()
    assert (body["name"], body["tag"]) == (repo, "v1")
    moves = [(entry["action"], entry["old_digest"], entry["new_digest"]) for entry in body["history"]]
    assert ("push", first.digest, second.digest) in moves
    assert any(new == first.digest and not old for _, old, new in moves)
    assert all(entry["actor"] == ADMIN[0] for entry in body["history"])
