"""Delete events from the collector and the admin commands, end to end: `lading serve` (SQLite,
zero review delay) with an endpoint, a real HTTP receiver, `lading gc --delete-untagged` and
`lading tag|manifest|repo delete`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.events.receiver import Receiver
from tests.support import oci
from tests.support.stack import Stack, child_env, lading_command


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    endpoint = {"name": "hook", "url": receiver.url, "timeout_seconds": 2, "max_attempts": 100,
                "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.3}
    env = {
        "LADING_EVENTS__ENDPOINTS": json.dumps([endpoint]),
        "LADING_EVENTS__DELIVERY_INTERVAL_SECONDS": "0.05",
        "LADING_GC__REVIEW_DELAY_SECONDS": "0",
        "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "0",
    }
    with Stack(tmp_path / "data", env=env) as running:
        yield running


def lading(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    run = stack.data_dir / "run"
    done = subprocess.run(
        lading_command(*args, "--metadata", f"unix:{run / 'metadata.sock'}", "--blob", f"unix:{run / 'blob.sock'}"),
        env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def deletes_after(receiver: Receiver, count: int, seen: int) -> list[dict[str, Any]]:
    """The delete events received after the first `seen` events, once there are `count` of them."""
    events = receiver.wait_for(seen + count)
    return [e for e in events[seen:] if e["action"] == "delete"]


def test_gc_and_admin_deletes_send_delete_events(stack: Stack, receiver: Receiver) -> None:
    untagged, kept, other = oci.image(layers=1), oci.image(layers=1), oci.image(layers=1)
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"User-Agent": "events-test/1"}) as client:
        oci.push(client, "ev/app", untagged, "old")
        oci.push(client, "ev/app", kept, "b1")
        oci.push(client, "ev/other", other, "c1")
        seen = len(receiver.wait_for(9))  # 3 x (config, layer, manifest)

        # A user deletes a tag over /v2/: the manifest is left untagged; the collector (retention
        # on for this run) deletes it.
        assert client.delete("/v2/ev/app/manifests/old").status_code == 202
        user_delete = deletes_after(receiver, 1, seen)
        assert user_delete[0]["target"] == {"repository": "ev/app", "tag": "old"}
        assert user_delete[0]["request"]["useragent"] == "events-test/1"
        seen += 1
        run = lading(stack, "gc", "--delete-untagged")
        assert "1 manifest(s) deleted" in run.stderr
        [gc_event] = deletes_after(receiver, 1, seen)
        assert gc_event["target"] == {"digest": untagged.digest, "repository": "ev/app"}
        assert gc_event["actor"] == {"name": "lading-gc"}
        assert gc_event["request"]["useragent"] == "lading-gc" and gc_event["request"]["method"] == "DELETE"
        assert gc_event["request"]["id"] and gc_event["request"]["addr"] == "" and gc_event["source"]["addr"]
        seen += 1
        # A second run finds nothing more to delete, and sends nothing.
        assert "0 manifest(s) deleted" in lading(stack, "gc", "--delete-untagged").stderr

        # Admin deletes: a tag, a manifest, a whole repository.
        lading(stack, "tag", "delete", "ev/app", "b1")
        lading(stack, "manifest", "delete", "ev/app", kept.digest)
        lading(stack, "repo", "delete", "ev/other")
        admin = deletes_after(receiver, 4, seen)
        assert [e["target"] for e in admin] == [
            {"repository": "ev/app", "tag": "b1"},
            {"digest": kept.digest, "repository": "ev/app"},
            # The repository: each manifest it held, then Distribution's repository event.
            {"digest": other.digest, "repository": "ev/other"},
            {"repository": "ev/other"},
        ]
        assert all(e["actor"] == {"name": "lading-admin"} for e in admin)
        assert all(e["request"]["useragent"] == "lading-admin" and e["request"]["method"] == "DELETE" for e in admin)
        # One request per command: the repository's two events share theirs.
        assert admin[2]["request"]["id"] == admin[3]["request"]["id"] != admin[1]["request"]["id"]
        assert oci.get_manifest(client, "ev/app", kept.digest).status_code == 404

    # Nothing else was sent (no duplicates beyond at-least-once, no event for the empty GC run).
    everything = receiver.events
    assert len(everything) == seen + 4 and len({e["id"] for e in everything}) == len(everything)
