"""The admin CLI (`lading repo|tag|manifest|blob|check|gc|maintenance`) against a real
`lading serve` stack on SQLite, as an operator runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.gc.stack_support import gc_stack, image_of, layer, targets, try_push
from tests.support import oci
from tests.support.stack import Stack, child_env, lading_command


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Deletes through the CLI bypass the gateway: its manifest cache would show them after its TTL.
    with gc_stack("sqlite", request, tmp_path_factory.mktemp("admin"),
                  LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS="0") as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http


def lading(stack: Stack, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    metadata, blob = targets(stack)
    done = subprocess.run(lading_command(*args, "--metadata", metadata, "--blob", blob), env=child_env(),
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def push(client: httpx.Client, repo: str, tag: str, layers: list[oci.Blob]) -> oci.Manifest:
    image = image_of(layers)
    ok, why = try_push(client, repo, image, tag)
    assert ok, why
    return image


def test_listings_where_and_deletes(stack: Stack, client: httpx.Client) -> None:
    shared = layer(10_000)
    one = push(client, "adm/one", "v1", [shared])
    client.put("/v2/adm/one/manifests/latest", content=one.payload, headers={"Content-Type": one.media_type})
    two = push(client, "adm/two", "v1", [shared, layer(500)])

    repos = lading(stack, "repo", "list").stdout
    assert "adm/one\t2 tag(s)\t1 manifest(s)" in repos and "adm/two\t1 tag(s)\t1 manifest(s)" in repos
    assert lading(stack, "tag", "list", "adm/one").stdout.splitlines() == [f"latest\t{one.digest}", f"v1\t{one.digest}"]
    manifests = lading(stack, "manifest", "list", "adm/one").stdout
    assert manifests.strip() == f"{one.digest}\t{oci.OCI_MANIFEST}\t{one.size}\tlatest,v1"
    where = lading(stack, "blob", "where", shared.digest).stdout
    assert "state=active" in where and "linked\tadm/one" in where and "linked\tadm/two" in where
    assert f"used-by\tadm/one@{one.digest}" in where and f"used-by\tadm/two@{two.digest}" in where

    lading(stack, "tag", "delete", "adm/one", "latest")
    assert oci.get_manifest(client, "adm/one", "latest").status_code == 404
    assert oci.get_manifest(client, "adm/one", "v1").status_code == 200
    lading(stack, "manifest", "delete", "adm/one", one.digest)
    assert oci.get_manifest(client, "adm/one", "v1").status_code == 404
    deleted = lading(stack, "repo", "delete", "adm/two").stdout
    assert "1 manifest(s)" in deleted and "3 blob link(s)" in deleted  # config, shared, own layer
    assert client.get("/v2/adm/two/tags/list").status_code == 404
    missing = lading(stack, "tag", "list", "adm/two", ok=False)
    assert missing.returncode == 1 and "not known" in missing.stderr

    # The bytes: the dry run says what goes, the run frees exactly that, stats show it.
    dry = lading(stack, "gc", "--dry-run").stdout
    run = lading(stack, "gc", "--progress-every", "1")
    # adm/one's links (config, shared); blobs: shared, the 500 B layer and both configs.
    assert "gc: 0 manifest(s) deleted, 2 link(s) removed" in run.stderr
    assert "gc: 4 blob(s) marked for deletion" in run.stderr and "gc: 4/4 blobs deleted" in run.stderr
    assert dry.startswith("would free: 0 manifest(s) (0 B), 2 link(s), 4 blob(s)")
    assert run.stdout.startswith("freed: 0 manifest(s), 2 link(s), 4 blob(s)")
    freed_blobs = "4"
    assert lading(stack, "blob", "where", shared.digest).stdout.startswith(f"{shared.digest}\tstate=unknown")
    stats = lading(stack, "gc", "stats").stdout
    assert "queue: 0 manifest(s), 0 link(s), 0 blob(s)" in stats and f"{freed_blobs} blob(s)" in stats


def test_check_finds_every_referenced_blob(stack: Stack, client: httpx.Client) -> None:
    push(client, "chk/app", "v1", [layer(3000), layer(4000)])
    checked = lading(stack, "check", "--verify-sample", "2", "--progress-every", "1")
    assert "0 missing" in checked.stdout and "re-hashed 2: 0 corrupt" in checked.stdout
    assert "check: 1 blobs checked" in checked.stderr


def test_maintenance_mode_blocks_pushes_not_pulls(stack: Stack, client: httpx.Client) -> None:
    kept = push(client, "mnt/app", "v1", [layer(1000)])
    assert "on (read-only)" in lading(stack, "maintenance", "on").stdout
    try:
        assert "on (read-only)" in lading(stack, "maintenance").stdout
        refused = oci.push_manifest_only(client, "mnt/app", "v2", kept)
        oci.assert_error(refused, 405, "UNSUPPORTED")
        assert "registry is in read-only maintenance mode" in refused.text
        blob = layer(100)
        upload = client.post("/v2/mnt/app/blobs/uploads/", params={"digest": blob.digest}, content=blob.data,
                             headers={"Content-Type": "application/octet-stream"})
        oci.assert_error(upload, 405, "UNSUPPORTED")
        assert client.delete(f"/v2/mnt/app/manifests/{kept.digest}").status_code == 405
        pulled = oci.get_manifest(client, "mnt/app", "v1")
        assert pulled.status_code == 200 and pulled.content == kept.payload
        gc = lading(stack, "gc", ok=False)
        assert gc.returncode == 1 and "maintenance" in gc.stderr
    finally:
        assert "off" in lading(stack, "maintenance", "off").stdout
    assert oci.push_manifest_only(client, "mnt/app", "v2", kept).status_code == 201
