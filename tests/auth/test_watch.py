"""`GET /lading/v1/watch?repository=…` and `lading watch REPO` (issue 15, item 6) on the token-mode
stack of this package (tests/auth/conftest.py):

- the stream needs pull on the repository: anonymous callers get the Bearer challenge for
  `repository:<name>:pull`; an account without pull there is refused;
- `lading watch` (a real subprocess, signing in as alice through the token realm) prints a tag
  pushed, moved and deleted, and a manifest deleted, with their digests, as they happen;
- a client that comes back with `Last-Event-ID` gets exactly the changes it missed, in order.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx

from tests.auth.conftest import ADMIN, ALICE, Secured, unique
from tests.auth.support import client
from tests.support.oci import Manifest, image, push, push_manifest_only, render
from tests.support.stack import child_env, lading_command

DEADLINE_SECONDS = 15.0


def variant(base: Manifest, n: int) -> Manifest:
    return Manifest(render({**base.json, "annotations": {"n": str(n)}}), base.media_type, blobs=base.blobs)


def events(response: httpx.Response) -> Iterator[tuple[str, str, dict]]:
    """(event, id, data) of a Server-Sent Events response, as they arrive."""
    event, ident, data = "message", "", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, ident, json.loads("\n".join(data))
            event, ident, data = "message", "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_watching_needs_pull_on_the_repository(secured: Secured) -> None:
    repo = unique("team-a/watched")
    anonymous = httpx.get(f"{secured.base_url}/lading/v1/watch", params={"repository": repo}, timeout=10)
    assert anonymous.status_code == 401
    assert f'scope="repository:{repo}:pull"' in anonymous.headers["www-authenticate"]
    with client(secured.stack, secured.robot) as robot:  # robot$ci: nothing on shared/*
        refused = robot.get("/lading/v1/watch", params={"repository": unique("shared/x")})
        assert refused.status_code in (401, 403), refused.text
    with client(secured.stack, ALICE) as alice:
        missing = alice.get("/lading/v1/watch")
        assert missing.status_code == 400
        assert missing.json()["errors"][0]["code"] == "NAME_INVALID"


def test_lading_watch_prints_tag_changes_as_they_happen(secured: Secured) -> None:
    repo = unique("team-a/watched")
    command = lading_command("watch", repo, "--registry", secured.base_url, "--username", ALICE[0], "--json")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=child_env({"LADING_WATCH_PASSWORD": ALICE[1]}))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        assert process.stderr is not None
        assert "watching" in process.stderr.readline()  # subscribed: what follows is seen
        with client(secured.stack, ALICE) as alice, client(secured.stack, ADMIN) as admin:
            base = image(layers=1)
            moved = variant(base, 1)
            push(alice, repo, base, tag="v1")
            assert push_manifest_only(alice, repo, "v1", moved).status_code == 201
            assert admin.delete(f"/v2/{repo}/manifests/v1").status_code == 202  # alice may not delete
            assert push_manifest_only(alice, repo, "v2", base).status_code == 201
            assert admin.delete(f"/v2/{repo}/manifests/{base.digest}").status_code == 202
        seen = [json.loads(lines.get(timeout=DEADLINE_SECONDS)) for _ in range(5)]
    finally:
        process.kill()
        process.wait(10)
    assert [(e["event"], e.get("tag"), e.get("digest")) for e in seen] == [
        ("tag_pushed", "v1", base.digest),
        ("tag_moved", "v1", moved.digest),
        ("tag_deleted", "v1", moved.digest),
        ("tag_pushed", "v2", base.digest),
        ("manifest_deleted", None, base.digest),
    ]
    assert seen[1]["previous_digest"] == base.digest
    assert seen[4]["tags"] == ["v2"]
    assert all(e["repository"] == repo for e in seen)
    positions = [int(e["id"]) for e in seen]
    assert positions == sorted(positions)


def test_a_watcher_resumes_with_last_event_id(secured: Secured) -> None:
    repo = unique("team-a/resumed")
    base = image(layers=1)
    with client(secured.stack, ALICE) as alice:
        with alice.stream("GET", "/lading/v1/watch", params={"repository": repo}, timeout=DEADLINE_SECONDS) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            received = events(stream)
            assert next(received)[0] == "ready"
            push(alice, repo, base, tag="a")
            event, last_id, data = next(received)
            assert (event, data["tag"]) == ("tag_pushed", "a")
        # Disconnected: these happen while nobody watches.
        for n, tag in enumerate(("b", "c")):
            assert push_manifest_only(alice, repo, tag, variant(base, n)).status_code == 201
        # Another repository's changes never reach this watcher.
        push(alice, unique("team-a/other"), image(layers=1), tag="x")
        started = time.monotonic()
        with alice.stream("GET", "/lading/v1/watch", params={"repository": repo},
                          headers={"Last-Event-ID": last_id}, timeout=DEADLINE_SECONDS) as stream:
            received = events(stream)
            missed = [next(received) for _ in range(2)]
            assert [(e, d["tag"]) for e, _, d in missed] == [("tag_pushed", "b"), ("tag_pushed", "c")]
            assert next(received)[0] == "ready"
        assert time.monotonic() - started < DEADLINE_SECONDS
