"""End to end: the gateway names the owner of each new upload session (here, anonymous, the
client's address), the blob plane bounds that owner's open sessions, and the refusal is 429."""

from __future__ import annotations

import httpx

from tests.limits.conftest import MAX_UPLOAD_SESSIONS_PER_OWNER
from tests.support.oci import absolute, assert_error, random_bytes, sha256


def test_a_client_cannot_hold_more_than_the_limit_of_open_sessions(client: httpx.Client, repo: str) -> None:
    opened: list[str] = []
    try:
        # Other tests may hold a few sessions from this address: start until refused.
        for _ in range(MAX_UPLOAD_SESSIONS_PER_OWNER + 1):
            response = client.post(f"/v2/{repo}/blobs/uploads/")
            if response.status_code != 202:
                break
            opened.append(absolute(client, response.headers["Location"]))
        assert opened, "no session could be started at all"
        assert_error(response, 429, "TOOMANYREQUESTS")
        assert response.json()["errors"][0]["detail"]["limit"] == MAX_UPLOAD_SESSIONS_PER_OWNER
        # A monolithic push needs a session too.
        data = random_bytes(10)
        assert_error(
            client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data), 429
        )
        # Ending one session frees its place.
        assert client.delete(opened.pop()).status_code == 204
        again = client.post(f"/v2/{repo}/blobs/uploads/")
        assert again.status_code == 202
        opened.append(absolute(client, again.headers["Location"]))
        assert_error(client.post(f"/v2/{repo}/blobs/uploads/"), 429, "TOOMANYREQUESTS")
    finally:
        for location in opened:
            client.delete(location)
    # With the places given back, pushing works again.
    data = random_bytes(10)
    pushed = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert pushed.status_code == 201, pushed.text
