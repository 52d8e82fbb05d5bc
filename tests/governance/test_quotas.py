"""Storage quotas (issue 16, item 3) on SQLite and PostgreSQL: 16 concurrent pushers against one
namespace quota never take it past its limit (overshoot 0, inside the bound of the pushes in
flight), usage equals a full recount afterwards, a shared layer counts once, refusals carry the
documented message, and deletes, repository deletes and GC bring the count down exactly."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.gc.stack_support import image_of
from tests.governance.conftest import Policies, run_gc
from tests.support import oci
from tests.support.stack import Stack

PUSHERS = 16
LAYER = 8192
SHARED = 16384


def test_quota_holds_under_concurrent_pushers(stack: Stack, client: httpx.Client, policies: Policies) -> None:
    shared = oci.Blob(os.urandom(SHARED), oci.OCI_LAYER)
    images = [image_of([shared, oci.Blob(os.urandom(LAYER), oci.OCI_LAYER)]) for _ in range(PUSHERS)]
    config_size = max(len(image.blobs[0].data) for image in images)
    # Room for the shared layer and about half of the images' own blobs.
    limit = SHARED + (PUSHERS // 2) * (LAYER + config_size) + LAYER // 2
    created = policies.set_quota("team-q", "quota/*", limit)
    assert (created.used_bytes, created.limit_bytes) == (0, limit)

    def push(index: int) -> tuple[list[oci.Blob], str]:
        repo = f"quota/app{index % 4}"
        linked: list[oci.Blob] = []
        with httpx.Client(base_url=stack.base_url, timeout=60) as own:
            for blob in images[index].blobs:
                answer = own.post(f"/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data,
                                  headers={"Content-Type": "application/octet-stream"})
                if answer.status_code != 201:
                    oci.assert_error(answer, 403, "DENIED")
                    return linked, answer.json()["errors"][0]["message"]
                linked.append(blob)
            put = oci.push_manifest_only(own, repo, "v1", images[index])
            assert put.status_code == 201, put.text
        return linked, ""

    with ThreadPoolExecutor(PUSHERS) as pool:
        outcomes = list(pool.map(push, range(PUSHERS)))
    refusals = [why for _, why in outcomes if why]
    assert refusals, "the limit was never reached: the test checks nothing"
    assert all(why.startswith("quota exceeded: used ") and " of " in why and "this push needs" in why
               and "quota 'team-q'" in why for why in refusals), refusals
    counted = {blob.digest: len(blob.data) for linked, _ in outcomes for blob in linked}
    usage = policies.quota("team-q").used_bytes
    # Exact: never over the limit (overshoot 0 <= pushes in flight), and the usage is the bytes of
    # the distinct blobs that were linked (the shared layer once).
    assert usage <= limit
    assert usage == sum(counted.values())
    assert policies.recount()["team-q"] == (usage, usage)

    # Deletes and GC bring it down: a blob link deleted (the last one of that digest in the quota),
    # a repository deleted, then GC (which also recounts).
    first = next(i for i, (_, why) in enumerate(outcomes) if not why and i % 4 != 3)
    own_layer = outcomes[first][0][-1]
    assert client.delete(f"/v2/quota/app{first % 4}/blobs/{own_layer.digest}").status_code == 202
    assert policies.quota("team-q").used_bytes == usage - len(own_layer.data)
    asyncio.run(_delete_repository(stack, "quota/app3"))
    after_repo_delete = policies.quota("team-q").used_bytes
    assert after_repo_delete <= usage - len(own_layer.data)
    # GC removes the links the refused pushes left (no manifest uses them) and recounts.
    run_gc(stack)
    after_gc = policies.quota("team-q").used_bytes
    assert after_gc <= after_repo_delete
    assert policies.recount()["team-q"] == (after_gc, after_gc)

    # Over quota (the limit lowered below the usage): a manifest push is refused too.
    policies.set_quota("team-q", "quota/*", 1024)
    survivor = next(i for i, (_, why) in enumerate(outcomes) if not why and i % 4 != 3 and i != first)
    refused = oci.push_manifest_only(client, f"quota/app{survivor % 4}", "v2", images[survivor])
    oci.assert_error(refused, 403, "DENIED")
    assert refused.json()["errors"][0]["detail"]["policy"] == "quota"
    assert policies.remove_quota("team-q") and not policies.remove_quota("team-q")
    assert oci.push_manifest_only(client, f"quota/app{survivor % 4}", "v2", images[survivor]).status_code == 201


async def _delete_repository(stack: Stack, name: str) -> None:
    from lading.metadata.v1 import admin_pb2

    from tests.gc.stack_support import stubs

    async with stubs(stack) as (admin, _):
        await admin.DeleteRepository(admin_pb2.DeleteRepositoryRequest(repository=name), timeout=30)


def test_quota_metrics_from_the_metadata_plane(stack: Stack, client: httpx.Client, policies: Policies,
                                               metrics_port: int) -> None:
    """The running metadata plane's /metrics reports each quota's usage and limit, and follows a
    push into the quota."""
    policies.set_quota("metrics-a", "qmetrics/*", 1_000_000)
    policies.set_quota("metrics-b", "qmetrics-none/*", 50)
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def gauges() -> dict[str, float]:
        text = httpx.get(url, timeout=10).text
        found = {}
        for line in text.splitlines():
            for quota in ("metrics-a", "metrics-b"):
                for name in ("lading_quota_used_bytes", "lading_quota_limit_bytes"):
                    prefix = f'{name}{{quota="{quota}"}} '
                    if line.startswith(prefix):
                        found[f"{name}/{quota}"] = float(line[len(prefix):])
        return found

    before = gauges()
    assert before == {"lading_quota_used_bytes/metrics-a": 0.0, "lading_quota_limit_bytes/metrics-a": 1_000_000.0,
                      "lading_quota_used_bytes/metrics-b": 0.0, "lading_quota_limit_bytes/metrics-b": 50.0}
    blob = oci.Blob(os.urandom(3000), oci.OCI_LAYER)
    assert oci.push_blob(client, "qmetrics/app", blob).status_code == 201
    after = gauges()
    assert after["lading_quota_used_bytes/metrics-a"] == 3000.0
    assert after["lading_quota_used_bytes/metrics-b"] == 0.0
    usage = {q.name: q.used_bytes for q in policies.stub.ListQuotas(policies.pb.ListQuotasRequest(),
                                                                       timeout=30).quotas}
    assert usage["metrics-a"] == 3000
    assert policies.remove_quota("metrics-a") and policies.remove_quota("metrics-b")
    assert "metrics-a" not in httpx.get(url, timeout=10).text
