"""Replication of deletes and `lading replication run`, against CNCF Distribution (`docker-registry`).

One Distribution is both the pull-through cache's upstream (local prefix `cache/`) and the
replication target (target prefix `copy/` for the rule `mirror`, `run/` for the rule `batch`).
- `deletes = true`: a tag deleted in the source is deleted on the target (the manifest and its
  other tags stay); a manifest deleted by digest is deleted on the target. The cache's evictions
  also write delete events, which the rule must not copy: evicted cached content stays on the target.
- `lading replication run RULE` copies now what the rule matches (also cached content, which no
  push event announces), and a second run sends nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy.helpers import PREFIX, proxy_config
from tests.proxy.test_replication import eventually, replication_status
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.stack import Stack, child_env, lading_command

pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    with Distribution(tmp_path_factory.mktemp("distribution")) as registry:
        yield registry


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, dist: Distribution) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("replication-deletes")
    head = "[events]\ndelivery_interval_seconds = 0.2\n"
    rules = (
        "[[replication.rules]]\n"
        f'name = "mirror"\nurl = "{dist.url}"\nrepositories = ["team/*", "{PREFIX}*"]\n'
        'target_prefix = "copy/"\ndeletes = true\n'
        "backoff_base_seconds = 0.2\nbackoff_cap_seconds = 1\ntimeout_seconds = 5\n"
        "[[replication.rules]]\n"
        f'name = "batch"\nurl = "{dist.url}"\nrepositories = ["batch/*"]\ntags = "v[0-9]+"\n'
        'target_prefix = "run/"\n'
        "backoff_base_seconds = 0.2\nbackoff_cap_seconds = 1\ntimeout_seconds = 5\n"
    )
    config = proxy_config(root / "lading.toml", dist.url, head=head, tail=rules)
    with Stack(root / "data", env={"LADING_CONFIG_FILE": str(config)}) as stack:
        yield stack


def lading_cli(stack: Stack, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    command = lading_command(*args, "--data-dir", str(stack.data_dir))
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=child_env(), check=False)
    if ok:
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"
    return done


def status_code(client: httpx.Client, repository: str, reference: str) -> int:
    return oci.get_manifest(client, repository, reference).status_code


def test_deletes_are_replicated_but_cache_evictions_are_not(source: Stack, dist: Distribution) -> None:
    kept, dropped = oci.image(1), oci.image(1)
    with httpx.Client(base_url=source.base_url, timeout=30, follow_redirects=True) as local, \
            httpx.Client(base_url=dist.url, timeout=30) as remote:
        oci.push(local, "team/app", kept, "v1")
        oci.push(local, "team/app", kept, "v2")
        oci.push(local, "team/app", dropped, "v3")
        for tag in ("v1", "v2", "v3"):
            eventually(lambda tag=tag: status_code(remote, "copy/team/app", tag) == 200,
                       what=f"copy/team/app:{tag} on the target")
        # A tag deleted here: deleted there, the manifest (still tagged v2) stays.
        assert local.delete("/v2/team/app/manifests/v1").status_code == 202
        eventually(lambda: status_code(remote, "copy/team/app", "v1") == 404, what="v1 deleted on the target")
        oci.assert_pulls_back(remote, "copy/team/app", "v2", kept)
        # A manifest deleted by digest: deleted there, with its tag.
        assert local.delete(f"/v2/team/app/manifests/{dropped.digest}").status_code == 202
        eventually(lambda: status_code(remote, "copy/team/app", dropped.digest) == 404,
                   what="the deleted manifest gone from the target")
        assert status_code(remote, "copy/team/app", "v3") == 404
        # A blob deleted here (its event has a manifest delete's shape): not deleted there.
        layer = kept.blobs[-1]
        assert local.delete(f"/v2/team/app/blobs/{layer.digest}").status_code == 202

        # Cached content, copied by `replication run` (no push event announces it), then evicted here.
        cached = oci.image(2, layer_size=32 * 1024)
        oci.push(remote, "team/cached", cached, "v1")
        oci.assert_pulls_back(local, f"{PREFIX}team/cached", "v1", cached)
        out = lading_cli(source, "replication", "run", "mirror").stdout
        assert "2 tag(s) matched; 1 copied, 1 already on the target, 0 failed" in out, out
        oci.assert_pulls_back(remote, f"copy/{PREFIX}team/cached", "v1", cached)
        eventually(lambda: replication_status(source)["mirror"]["pending"] == 0, what="nothing pending")
        delivered = replication_status(source)["mirror"]["delivered"]
        evicted = lading_cli(source, "proxy", "evict", "--older-than", "0.001").stdout
        removed = re.search(r"(\d+) cached manifest\(s\) removed", evicted)
        assert removed and int(removed.group(1)) >= 1, evicted
        # The eviction's delete event went through the rule (delivered), and copied no delete.
        eventually(lambda: replication_status(source)["mirror"]["delivered"] > delivered
                   and replication_status(source)["mirror"]["pending"] == 0,
                   what="the eviction's delete event handled")
        oci.assert_pulls_back(remote, f"copy/{PREFIX}team/cached", "v1", cached)
        assert oci.get_manifest(remote, f"copy/{PREFIX}team/cached", cached.digest).status_code == 200
        eventually(lambda: replication_status(source)["mirror"]["pending"] == 0, what="nothing pending")
        oci.assert_pulls_back(remote, "copy/team/app", "v2", kept)
    log = Path(dist.log_path).read_text()
    assert f'"DELETE /v2/copy/{PREFIX}team/cached/' not in log
    assert f'"DELETE /v2/copy/team/app/manifests/{layer.digest}' not in log


def test_run_copies_what_the_rule_matches_once(source: Stack, dist: Distribution) -> None:
    index = oci.multi_arch_index(layers=1)
    signature = oci.artifact(artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json", subject=index)
    other = oci.image(1)
    with httpx.Client(base_url=source.base_url, timeout=30, follow_redirects=True) as local, \
            httpx.Client(base_url=dist.url, timeout=30) as remote:
        oci.push(local, "batch/a", index, "v1")
        oci.push(local, "batch/a", signature)
        oci.push(local, "batch/a", other, "dev")  # outside the rule's tags
        oci.push(local, "batch/b", other, "v2")
        eventually(lambda: status_code(remote, "run/batch/b", "v2") == 200
                   and status_code(remote, "run/batch/a", "v1") == 200
                   and status_code(remote, "run/batch/a", signature.digest) == 200,
                   what="the pushed copies on the target")
        eventually(lambda: replication_status(source)["batch"]["pending"] == 0, what="nothing pending")
        # The target loses what was copied (deleted there directly); a run puts it back.
        for repository, digest in (("run/batch/a", index.digest), ("run/batch/a", signature.digest),
                                   ("run/batch/b", other.digest)):
            assert remote.delete(f"/v2/{repository}/manifests/{digest}").status_code == 202
        assert status_code(remote, "run/batch/a", "v1") == 404
        out = lading_cli(source, "replication", "run", "batch").stdout
        assert "2 repository(ies), 2 tag(s) matched; 2 copied, 0 already on the target, 0 failed" in out, out
        oci.assert_pulls_back(remote, "run/batch/a", "v1", index)
        for child in index.children:
            oci.assert_pulls_back(remote, "run/batch/a", child.digest, child)
        oci.assert_pulls_back(remote, "run/batch/a", signature.digest, signature)
        oci.assert_pulls_back(remote, "run/batch/b", "v2", other)
        assert status_code(remote, "run/batch/a", "dev") == 404
        # Idempotent: a second run sends no manifest and no blob.
        before = Path(dist.log_path).read_text()
        out = lading_cli(source, "replication", "run", "batch").stdout
        assert "2 tag(s) matched; 0 copied, 2 already on the target, 0 failed" in out, out
        added = Path(dist.log_path).read_text()[len(before):]
        assert not re.findall(r'"(PUT|POST|PATCH) /v2/run/', added), added
    unknown = lading_cli(source, "replication", "run", "nope", ok=False)
    assert unknown.returncode != 0 and "no replication rule named 'nope'" in unknown.stderr, unknown.stderr
