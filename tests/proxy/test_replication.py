"""Push-based replication from Lading to CNCF Distribution (`docker-registry`): what is pushed into
matching repositories appears on the target byte-identical (index, children, blobs, a signature
referrer), filters hold, and a target that is down for a while gets everything once it is back,
without blobs sent twice."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.durability.crash import freeze_and_kill
from tests.support import oci
from tests.support.distribution import Distribution
from tests.support.stack import Stack, child_env, lading_command

pytestmark = pytest.mark.clients

TARGET_PREFIX = "copy/"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    with Distribution(tmp_path_factory.mktemp("replication-target")) as registry:
        yield registry


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, target: Distribution) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("replication-source")
    config = root / "lading.toml"
    config.write_text(
        "[events]\ndelivery_interval_seconds = 0.2\n"
        "[[replication.rules]]\n"
        f'name = "dist"\nurl = "{target.url}"\n'
        'repositories = ["team/*"]\ntags = "v[0-9]+"\n'
        f'target_prefix = "{TARGET_PREFIX}"\n'
        "backoff_base_seconds = 0.2\nbackoff_cap_seconds = 1\ntimeout_seconds = 2\n"
    )
    with Stack(root / "data", env={"LADING_CONFIG_FILE": str(config)}) as stack:
        yield stack


def replication_status(stack: Stack) -> dict[str, dict[str, object]]:
    """`lading replication status`, parsed: rule → pending, delivered, dead, error."""
    command = lading_command("replication", "status", "--data-dir", str(stack.data_dir))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {}
    for line in done.stdout.splitlines()[1:]:
        name, pending, delivered, dead, *error = line.split(None, 4)
        rows[name] = {"pending": int(pending), "delivered": int(delivered), "dead": int(dead),
                      "error": error[0] if error else ""}
    return rows


def eventually(check: Callable[[], bool], *, timeout: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def test_pushes_are_copied_byte_identical_and_filters_hold(source: Stack, target: Distribution) -> None:
    index = oci.multi_arch_index(layers=1)
    signature = oci.artifact(artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json", subject=index)
    skipped_tag, other_repo = oci.image(1), oci.image(1)
    with httpx.Client(base_url=source.base_url, timeout=30, follow_redirects=True) as local:
        oci.push(local, "team/app", index, "v1")
        oci.push(local, "team/app", signature)
        oci.push(local, "team/app", skipped_tag, "dev")
        oci.push(local, "other/app", other_repo, "v1")
    with httpx.Client(base_url=target.url, timeout=30) as remote:
        eventually(lambda: oci.get_manifest(remote, f"{TARGET_PREFIX}team/app", "v1").status_code == 200,
                   what="team/app:v1 on the target")
        oci.assert_pulls_back(remote, f"{TARGET_PREFIX}team/app", "v1", index)
        for child in index.children:
            oci.assert_pulls_back(remote, f"{TARGET_PREFIX}team/app", child.digest, child)
        eventually(lambda: oci.get_manifest(remote, f"{TARGET_PREFIX}team/app", signature.digest).status_code == 200,
                   what="the signature on the target")
        oci.assert_pulls_back(remote, f"{TARGET_PREFIX}team/app", signature.digest, signature)
        # The same image in a second repository: its blobs are mounted from the first on the target.
        with httpx.Client(base_url=source.base_url, timeout=30, follow_redirects=True) as local:
            oci.push(local, "team/app2", index, "v1")
        eventually(lambda: oci.get_manifest(remote, f"{TARGET_PREFIX}team/app2", "v1").status_code == 200,
                   what="team/app2:v1 on the target")
        oci.assert_pulls_back(remote, f"{TARGET_PREFIX}team/app2", "v1", index)
        log = Path(target.log_path).read_text()
        mounted = re.findall(rf'"POST /v2/{TARGET_PREFIX}team/app2/blobs/uploads/\?mount=[^ ]* HTTP/1\.1" 201', log)
        assert len(mounted) == len(index.all_blobs()), mounted
        assert f'"PUT /v2/{TARGET_PREFIX}team/app2/blobs/uploads/' not in log
        # Filters: a tag outside `tags`, a repository outside `repositories`.
        assert oci.get_manifest(remote, f"{TARGET_PREFIX}team/app", "dev").status_code == 404
        assert oci.get_manifest(remote, f"{TARGET_PREFIX}other/app", "v1").status_code == 404


def test_a_target_down_for_a_while_gets_everything_once_back(source: Stack, target: Distribution) -> None:
    image = oci.image(2, layer_size=128 * 1024)
    target.stop()
    try:
        with httpx.Client(base_url=source.base_url, timeout=30, follow_redirects=True) as local:
            oci.push(local, "team/outage", image, "v7")
        time.sleep(3)  # several failed attempts (backoff 0.2 s, capped at 1 s)
        status = replication_status(source)
        assert status["dist"]["pending"] >= 1 and status["dist"]["dead"] == 0
        assert target.url in status["dist"]["error"], status
    finally:
        target.start()
    with httpx.Client(base_url=target.url, timeout=30) as remote:
        eventually(lambda: oci.get_manifest(remote, f"{TARGET_PREFIX}team/outage", "v7").status_code == 200,
                   what="team/outage:v7 on the target after its outage")
        oci.assert_pulls_back(remote, f"{TARGET_PREFIX}team/outage", "v7", image)
    eventually(lambda: replication_status(source)["dist"]["pending"] == 0, what="nothing pending")
    listed = subprocess.run(lading_command("replication", "list"), capture_output=True, text=True, timeout=60,
                            env=child_env({"LADING_CONFIG_FILE": str(source.data_dir.parent / "lading.toml")}),
                            check=True).stdout
    assert "dist" in listed and target.url in listed and "team/*" in listed
    assert replication_status(source)["dist"]["dead"] == 0
    text = Path(target.log_path).read_text()
    for blob in image.blobs:
        # Each blob uploaded once (what a retry finds on the target is not sent again).
        hex_ = blob.digest.split(":", 1)[1]
        uploads = re.findall(rf'"PUT /v2/{TARGET_PREFIX}team/outage/blobs/uploads/[^ ]*digest=sha256%3A{hex_}[^ ]* '
                             r'HTTP/1\.1" 201', text)
        assert len(uploads) == 1, uploads
    assert text.count(f'"PUT /v2/{TARGET_PREFIX}team/outage/manifests/v7 HTTP/1.1" 201') == 1


def test_a_source_crash_with_copies_pending_resumes_after_restart(tmp_path: Path, target: Distribution) -> None:
    """Every process of the source dies at once (frozen, then SIGKILLed: tests/durability/crash.py)
    while a pushed image still waits to be copied; the restarted source copies it."""
    config = tmp_path / "lading.toml"
    config.write_text(
        "[events]\ndelivery_interval_seconds = 0.2\n"
        f'[[replication.rules]]\nname = "dist"\nurl = "{target.url}"\nrepositories = ["crash/*"]\n'
        "backoff_base_seconds = 0.2\nbackoff_cap_seconds = 1\ntimeout_seconds = 2\n"
    )
    env = {"LADING_CONFIG_FILE": str(config)}
    image = oci.image(1)
    target.stop()
    try:
        stack = Stack(tmp_path / "data", env=env).start()
        try:
            with httpx.Client(base_url=stack.base_url, timeout=30, follow_redirects=True) as local:
                oci.push(local, "crash/app", image, "v1")
            time.sleep(1)  # a failed attempt or two
        finally:
            freeze_and_kill(stack.process.pid)
            stack.stop()
    finally:
        target.start()
    with Stack(tmp_path / "data", env=env, port=stack.port):
        with httpx.Client(base_url=target.url, timeout=30) as remote:
            eventually(lambda: oci.get_manifest(remote, "crash/app", "v1").status_code == 200,
                       what="crash/app:v1 on the target after the source's crash and restart")
            oci.assert_pulls_back(remote, "crash/app", "v1", image)
