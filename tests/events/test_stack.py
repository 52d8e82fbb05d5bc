"""Event notifications end to end: `lading serve` (SQLite) with an endpoint, a real HTTP receiver,
pushes/pulls/deletes over /v2/, and a restart of the registry while the receiver is down."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.events.receiver import Receiver
from tests.support import oci
from tests.support.stack import Stack, child_env, lading_command


def _env(receiver: Receiver) -> dict[str, str]:
    endpoint = {"name": "hook", "url": receiver.url, "headers": {"X-Token": "t0k"}, "timeout_seconds": 2,
                "max_attempts": 1000, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.3}
    return {
        "LADING_EVENTS__ENDPOINTS": json.dumps([endpoint]),
        "LADING_EVENTS__DELIVERY_INTERVAL_SECONDS": "0.05",
        "LADING_EVENTS__PULL": "sampled",
        "LADING_EVENTS__PULL_SAMPLE_RATE": "1.0",
        "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "0",
    }


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    target = f"unix:{data_dir / 'run' / 'metadata.sock'}"
    return subprocess.run(lading_command("events", *args, "--metadata", target), env=child_env(),
                          capture_output=True, text=True, timeout=60)


def _rows(data_dir: Path, state: str) -> int | None:
    """How many outbox rows are in `state` (None when the command failed)."""
    listed = _cli(data_dir, "list", "--state", state, "--limit", "1000")
    return len(listed.stdout.strip().splitlines()) - 1 if listed.returncode == 0 else None


def _settled(data_dir: Path, timeout: float = 30.0) -> int:
    """Waits until no outbox row is pending (every event delivered; no POST can still be on its
    way, since a row is marked delivered only after its POST succeeded); the delivered count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _rows(data_dir, "pending") == 0 and _rows(data_dir, "dead") == 0:
            delivered = _rows(data_dir, "delivered")
            assert delivered is not None
            return delivered
        time.sleep(0.2)
    raise AssertionError(f"outbox rows still pending after {timeout:.0f}s")


def test_every_event_arrives_as_committed_across_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    data_dir = tmp_path / "data"
    stack = Stack(data_dir, env=_env(receiver)).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30, headers={"User-Agent": "events-test/1"}) as client:
            first = oci.image(layers=2)
            oci.push(client, "team/app", first, "v1")
            events = receiver.wait_for(4)
            push = events[3]
            assert push["action"] == "push" and push["target"]["digest"] == first.digest
            assert push["target"]["tag"] == "v1" and push["target"]["mediaType"] == first.media_type
            assert push["target"]["url"] == f"http://{stack.hostport}/v2/team/app/manifests/{first.digest}"
            assert push["request"]["method"] == "PUT" and push["request"]["useragent"] == "events-test/1"
            assert push["request"]["host"] == stack.hostport and push["request"]["id"]
            # Distribution's `source.addr`: the node's host name and the registry's port.
            assert push["source"]["addr"] == f"{socket.gethostname()}:{stack.port}"
            assert push["source"]["instanceID"]
            assert receiver.posts[0][0]["x-token"] == "t0k"

            # A push that fails (a layer was never uploaded) must never produce an event.
            broken = oci.image(layers=2)
            for blob in broken.blobs[:-1]:
                oci.push_blob(client, "team/app", blob)
            failed = oci.push_manifest_only(client, "team/app", "broken", broken)
            oci.assert_error(failed, 400, "MANIFEST_BLOB_UNKNOWN")

            # A pull (sampled at rate 1), then the receiver goes away.
            assert oci.get_manifest(client, "team/app", "v1").status_code == 200
            receiver.wait_for(4 + 2 + 1)
            receiver.stop()

            second = oci.image(layers=1)
            oci.push(client, "team/app", second, "v2")
            mounted = client.post(f"/v2/team/copy/blobs/uploads/?mount={first.blobs[1].digest}&from=team/app")
            assert mounted.status_code == 201
            assert client.delete(f"/v2/team/app/manifests/{first.digest}").status_code == 202
            assert client.delete("/v2/team/app/manifests/v2").status_code == 202
        listed = _cli(data_dir, "list", "--state", "pending")
        assert listed.returncode == 0, listed.stderr
        # v2 push (2 blobs + manifest), mount, deletes: the manifest, its tag v1 (gone with it), tag v2
        assert len(listed.stdout.strip().splitlines()) - 1 == 3 + 1 + 3
    finally:
        stack.stop()

    # Restart the registry, then the receiver: everything that piled up is delivered.
    stack = Stack(data_dir, env=_env(receiver), port=stack.port).start()
    try:
        receiver.start()
        receiver.wait_for(7 + 7)
        # Once nothing is pending nothing more is sent: what the receiver holds then is final, and
        # any duplicate (beyond at-least-once) is in it.
        delivered = _settled(data_dir)
        events = receiver.events
        assert len(events) == delivered == 7 + 7, [(e["action"], e["id"]) for e in events]
        actions = [(e["action"], e["target"].get("digest"), e["target"].get("tag")) for e in events]
        # One worker, one endpoint: the backlog arrives in commit order.
        assert actions[7:] == [
            ("push", second.blobs[0].digest, None), ("push", second.blobs[1].digest, None),
            ("push", second.digest, "v2"), ("mount", first.blobs[1].digest, None),
            ("delete", first.digest, None), ("delete", None, "v1"), ("delete", None, "v2"),
        ]
        assert events[10]["target"]["fromRepository"] == "team/app"
        assert all(e["target"].get("digest") != broken.digest for e in events)
        assert [e["action"] for e in events[:7]].count("pull") == 1
        assert len({e["id"] for e in events}) == len(events)
        # Replay one delivered row by id (the newest: the tag delete): it is sent again, same event id.
        listed = _cli(data_dir, "list", "--state", "delivered", "--limit", "1000")
        newest_id = listed.stdout.strip().splitlines()[1].split()[0]
        replayed = _cli(data_dir, "replay", newest_id)
        assert replayed.returncode == 0 and "1 event(s) pending again" in replayed.stdout, replayed.stderr
        again = receiver.wait_for(len(events) + 1)
        assert again[-1]["id"] == events[-1]["id"] and again[-1]["target"] == {"repository": "team/app", "tag": "v2"}
        assert _cli(data_dir, "replay", "999999").returncode == 1
    finally:
        stack.stop()


def test_every_manifest_and_blob_get_is_a_pull_event_with_the_gateway_cache_on(tmp_path: Path,
                                                                               receiver: Receiver) -> None:
    # The gateway's manifest cache at its defaults: with pull events on (rate 1), a GET it answered
    # from its cache never reached the metadata plane, and that pull sent no event. Blob GETs are
    # pulls too ("layer pushes and pulls"); HEADs are none.
    env = {k: v for k, v in _env(receiver).items() if k != "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS"}
    with Stack(tmp_path / "data", env=env) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        image = oci.image(layers=1)
        oci.push(client, "team/app", image, "v1")
        receiver.wait_for(3)
        for _ in range(3):
            assert oci.get_manifest(client, "team/app", "v1").status_code == 200
        assert oci.get_manifest(client, "team/app", "v1", method="HEAD").status_code == 200
        layer = image.blobs[-1]
        assert client.head(f"/v2/team/app/blobs/{layer.digest}").status_code == 200
        assert client.get(f"/v2/team/app/blobs/{layer.digest}", follow_redirects=True).content == layer.data
        pulls = [e for e in receiver.wait_for(3 + 4) if e["action"] == "pull"]
        assert [(e["target"]["digest"], e["target"].get("tag"), e["request"]["method"]) for e in pulls] == [
            (image.digest, "v1", "GET")] * 3 + [(layer.digest, None, "GET")]
        assert pulls[3]["target"] == {
            "mediaType": "application/octet-stream", "digest": layer.digest, "size": layer.size,
            "length": layer.size, "repository": "team/app",
            "url": f"http://{stack.hostport}/v2/team/app/blobs/{layer.digest}",
        }
        # Nothing else was written (the HEADs sent none).
        assert _settled(stack.data_dir) == 3 + 4


@pytest.mark.parametrize("manifest_cache", ["on", "off"])
def test_a_conditional_get_answered_304_is_no_pull_event(tmp_path: Path, receiver: Receiver,
                                                          manifest_cache: str) -> None:
    # Distribution checks If-None-Match against the digest before it reads the manifest, and its
    # pull notification comes from that read: a 304 sends none. Lading's metadata plane recorded
    # the pull before the gateway compared the ETag, so every 304 was a pull event too.
    env = _env(receiver)
    if manifest_cache == "on":
        del env["LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS"]
    with Stack(tmp_path / "data", env=env) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        image = oci.image(layers=1)
        layer = image.blobs[-1]
        oci.push(client, "team/app", image, "v1")
        receiver.wait_for(3)

        def manifest(reference: str, if_none_match: str | None = None) -> int:
            headers = {"Accept": oci.ACCEPT_ALL}
            if if_none_match is not None:
                headers["If-None-Match"] = if_none_match
            answer = client.get(f"/v2/team/app/manifests/{reference}", headers=headers)
            assert answer.headers["docker-content-digest"] == image.digest
            return answer.status_code

        def blob(if_none_match: str | None = None) -> int:
            headers = {} if if_none_match is None else {"If-None-Match": if_none_match}
            answer = client.get(f"/v2/team/app/blobs/{layer.digest}", headers=headers, follow_redirects=True)
            assert answer.status_code == 304 or answer.content == layer.data
            return answer.status_code

        held, other = f'"{image.digest}"', f'"{oci.sha256(b"other")}"'
        # Not yet cached, then cached (the gateway keeps what a HEAD or a 304 needs): 304s each time.
        assert [manifest("v1", held), manifest(image.digest, f"W/{held}"), manifest("v1", "*")] == [304] * 3
        assert manifest("v1", other) == 200  # a pull
        assert [manifest("v1", held), manifest(image.digest, f"{other}, {held}")] == [304] * 2
        assert manifest(image.digest) == 200  # a pull
        assert manifest(image.digest, held) == 304
        assert [blob(f'"{layer.digest}"'), blob(other), blob(f'"{layer.digest}"')] == [304, 200, 304]
        pulls = [e for e in receiver.wait_for(3 + 3) if e["action"] == "pull"]
        assert [(e["target"]["digest"], e["target"].get("tag")) for e in pulls] == [
            (image.digest, "v1"), (image.digest, None), (layer.digest, None)]
        # Nothing else was written (the 304s sent none).
        assert _settled(stack.data_dir) == 3 + 3


def test_through_a_trusted_proxy_events_name_the_client_and_the_external_url(tmp_path: Path,
                                                                             receiver: Receiver) -> None:
    # 127.0.0.1 is a trusted proxy by default. Distribution takes request.addr from
    # X-Forwarded-For and builds target.url from X-Forwarded-Proto/-Host; request.host stays the
    # Host header. Events named the proxy and mixed the forwarded scheme with the internal host.
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "registry.example"}
    with Stack(tmp_path / "data", env=_env(receiver)) as stack, \
            httpx.Client(base_url=stack.base_url, timeout=30, headers=forwarded) as client:
        blob = oci.random_blob(64)
        # Monolithic: no Location to follow (it names the external host).
        assert client.post(f"/v2/team/app/blobs/uploads/?digest={blob.digest}", content=blob.data).status_code == 201
        [push] = receiver.wait_for(1)
        assert push["request"]["addr"] == "203.0.113.7" and push["request"]["host"] == stack.hostport
        assert push["target"]["url"] == f"https://registry.example/v2/team/app/blobs/{blob.digest}"
