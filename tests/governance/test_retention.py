"""Retention (issue 16, item 2) on SQLite and PostgreSQL: the plan says exactly what a run
deletes (count and bytes); kept are the newest N tags, tags matching the keep pattern, immutable
tags, index children and referrers of stored subjects; a run under concurrent pushes never
deletes a manifest a tag points at; deletions are delete events and audit rows of
`lading-retention`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.events.receiver import Receiver
from tests.gc.stack_support import gc_stack, push_retrying
from tests.governance.conftest import Policies, delivered
from tests.support import oci
from tests.support.stack import Stack


def _policy(policies: Policies, **fields: object) -> None:
    pb = policies.pb
    policies.stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(policy=pb.RetentionPolicy(**fields),
                                                                  context=policies.context()), timeout=30)


def test_retention_plan_and_run(stack: Stack, client: httpx.Client, policies: Policies, siem: Receiver) -> None:
    repo = "ret/app"
    images = [oci.image(1, layer_size=300) for _ in range(4)]
    children = [oci.image(1, layer_size=300) for _ in range(2)]
    index = oci.index(children)
    oci.push(client, repo, images[0], "v1")                 # kept: matches keep_tags
    oci.push_manifest_only(client, repo, "rel-1", images[0])  # kept: immutable
    oci.push(client, repo, images[1], "t1")
    oci.push(client, repo, images[2], "t2")
    signature = oci.artifact(subject=images[2], artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json")
    oci.push(client, repo, signature)                       # untagged, but its subject is stored
    oci.push(client, repo, images[3], "t3")
    oci.push(client, repo, index, "multi")                  # its children are untagged, listed by it
    untagged = [oci.image(1, layer_size=500) for _ in range(6)]
    for image in untagged:
        oci.push(client, repo, image)
    policies.add_rule("ret-release", "ret/*", "rel-*")
    time.sleep(1.2)
    _policy(policies, name="ret", repository_pattern="ret/*", keep_last=2, keep_tags="v*", untagged_after_seconds=1)

    plan = policies.stub.PlanRetention(policies.pb.PlanRetentionRequest(), timeout=30)
    assert sorted((t.repository, t.tag) for t in plan.tags) == [(repo, "t1"), (repo, "t2")]
    assert sorted(m.digest for m in plan.manifests) == sorted(i.digest for i in untagged)
    # Bytes: each untagged manifest and its own layer and config (nothing else uses them).
    assert plan.bytes == sum(i.size + sum(len(b.data) for b in i.blobs) for i in untagged)

    # Concurrent pushes tag half of the untagged manifests while the run goes: whichever commits
    # first, a tagged manifest is never left deleted.
    retagged = untagged[:3]

    def tag(item: tuple[int, oci.Manifest]) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=30) as own:
            return oci.push_manifest_only(own, repo, f"keep-{item[0]}", item[1]).status_code

    with ThreadPoolExecutor(4) as pool:
        pushes = pool.map(tag, enumerate(retagged))
        ran = policies.stub.RunRetention(policies.pb.RunRetentionRequest(context=policies.context()), timeout=60)
        assert list(pushes) == [201] * len(retagged)
    assert ran.tags_deleted == 2
    for number, image in enumerate(retagged):
        assert oci.get_manifest(client, repo, f"keep-{number}").content == image.payload
    for image in untagged[3:]:
        assert oci.get_manifest(client, repo, image.digest).status_code == 404
    for kept in ("v1", "rel-1", "t3", "multi"):
        assert oci.get_manifest(client, repo, kept).status_code == 200
    for gone in ("t1", "t2"):
        assert oci.get_manifest(client, repo, gone).status_code == 404
    for child in (*children, signature, images[1], images[2]):
        assert oci.get_manifest(client, repo, child.digest).status_code == 200  # untagged only just now

    # The deletions are audited, recorded in the history and sent as delete events, all as lading-retention.
    audited = [r for r in policies.audit(actor="lading-retention", repository=repo, limit=100)]
    assert {r.action for r in audited} == {"tag.delete", "manifest.delete"}
    assert all("retention policy 'ret'" in r.detail for r in audited)
    assert policies.history(repo, "t1")[0] == ("delete", images[1].digest, "")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        deletes = [e for path, body in delivered(siem) if path.endswith("/deletes") for e in body["events"]
                   if e["target"]["repository"] == repo and e["actor"].get("name") == "lading-retention"]
        if len(deletes) >= ran.tags_deleted + ran.manifests_deleted:
            break
        time.sleep(0.1)
    assert {e["action"] for e in deletes} == {"delete"}
    assert {e["target"].get("tag") for e in deletes if "tag" in e["target"]} == {"t1", "t2"}
    assert len(deletes) == ran.tags_deleted + ran.manifests_deleted

    policies.remove_rule("ret-release")
    policies.stub.DeleteRetentionPolicy(policies.pb.DeleteRetentionPolicyRequest(name="ret",
                                                                                 context=policies.context()))


def test_the_gc_loop_applies_retention(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """With the GC loop on (gc.interval_seconds), retention runs before each collection: tags a
    policy does not keep go away without anyone asking for a run, and the collection that follows
    reclaims what only they kept (here the untagged manifests, with delete_untagged_manifests).
    The gateway's manifest cache is on (entries live 30 s while its change feed is up): the polls
    below cache the tags' 200s, so they only see the 404s because retention's and GC's deletes
    are on the change feed."""
    with gc_stack("sqlite", request, tmp_path, LADING_GC__INTERVAL_SECONDS="0.3",
                  LADING_GC__DELETE_UNTAGGED_MANIFESTS="true") as loop_stack, \
            httpx.Client(base_url=loop_stack.base_url, timeout=30) as http:
        repo = "loop-ret/app"
        images = [oci.image(1, layer_size=200) for _ in range(3)]
        for number, image in enumerate(images):
            # Zero review delay and a loop every 0.3 s: a run between a blob's upload and the
            # manifest PUT takes the blob back, and the client pushes again (as documented).
            push_retrying(http, repo, image, f"b{number}")
        helper = Policies(loop_stack)
        try:
            _policy(helper, name="loop", repository_pattern="loop-ret/*", keep_last=1)
            for _ in range(200):  # a deadline, not a timing assertion
                if all(oci.get_manifest(http, repo, f"b{n}").status_code == 404 for n in (0, 1)):
                    break
                time.sleep(0.05)
            for number in (0, 1):
                assert oci.get_manifest(http, repo, f"b{number}").status_code == 404
            oci.assert_pulls_back(http, repo, "b2", images[2])
            audited = helper.audit(actor="lading-retention", repository=repo, limit=100)
            assert {r.action for r in audited} >= {"tag.delete"}
            assert helper.history(repo, "b0")[0] == ("delete", images[0].digest, "")
            # ... then a later collection of the loop removes the manifests they left.
            for _ in range(200):
                if oci.get_manifest(http, repo, images[0].digest).status_code == 404:
                    break
                time.sleep(0.05)
            assert oci.get_manifest(http, repo, images[0].digest).status_code == 404
        finally:
            helper.close()


def test_a_run_answers_after_the_gateway_cache_dropped_what_it_deleted(request: pytest.FixtureRequest,
                                                                        tmp_path: Path) -> None:
    """Retention's deletes are on the change feed, and a run answers only once the gateway's
    manifest cache (on: entries live 30 s while the feed is up) has dropped them: a tag it
    deleted answers 404 right after the run, not the cached 200 (as any other delete)."""
    with gc_stack("sqlite", request, tmp_path) as cached_stack, \
            httpx.Client(base_url=cached_stack.base_url, timeout=30) as http:
        repo = "ret-cache/app"
        images = [oci.image(1, layer_size=200) for _ in range(2)]
        for number, image in enumerate(images):
            assert oci.push(http, repo, image, f"c{number}").status_code == 201
        for number, image in enumerate(images):  # now in the gateway's cache
            assert oci.get_manifest(http, repo, f"c{number}").content == image.payload
            assert oci.get_manifest(http, repo, image.digest).status_code == 200
        helper = Policies(cached_stack)
        try:
            _policy(helper, name="newest", repository_pattern="ret-cache/*", keep_last=1, untagged_after_seconds=1)
            ran = helper.stub.RunRetention(helper.pb.RunRetentionRequest(context=helper.context()), timeout=60)
            assert (ran.tags_deleted, ran.skipped) == (1, 0)
            assert oci.get_manifest(http, repo, "c0").status_code == 404
            assert oci.get_manifest(http, repo, "c1").content == images[1].payload
            time.sleep(1.2)  # c0's manifest has been untagged longer than untagged_after_seconds
            ran = helper.stub.RunRetention(helper.pb.RunRetentionRequest(context=helper.context()), timeout=60)
            assert ran.manifests_deleted == 1
            assert oci.get_manifest(http, repo, images[0].digest).status_code == 404
        finally:
            helper.close()
