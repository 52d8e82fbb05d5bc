"""Real clients through the token flow: skopeo (`--dest-creds`/`--src-creds`, it does the Bearer
dance itself), podman (`login`/`logout`) and oras-py (`login`, then push/pull); anonymous pull only
where granted; a robot limited to `team-a/*`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import oras.provider
import pytest

from tests.auth.conftest import ADMIN, ALICE, Secured, unique
from tests.support.oci import Layout, image, write_layout
from tests.support.podman import Engine, fresh_files

pytestmark = pytest.mark.clients


def test_skopeo_pushes_and_pulls_with_credentials(secured: Secured, skopeo, tmp_path: Path) -> None:
    manifest = image(2, layer_size=32 * 1024)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    repo = unique("team-a/skopeo")
    target = f"docker://{secured.stack.hostport}/{repo}:v1"
    creds = f"{ALICE[0]}:{ALICE[1]}"
    skopeo("copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", creds,
           f"oci:{source}:v1", target)
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, target, f"oci:{pulled}:v1")
    layout = Layout(pulled)
    assert layout.descriptor_for("v1")["digest"] == manifest.digest
    for blob in manifest.all_blobs():
        assert layout.blob(blob.digest) == blob.data
    # Without credentials the private repository cannot be read.
    anonymous = skopeo("inspect", "--tls-verify=false", "--raw", target, check=False)
    assert anonymous.returncode != 0
    # A repository outside alice's grants cannot be written.
    elsewhere = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{source}:v1",
                       f"docker://{secured.stack.hostport}/{unique('team-b/skopeo')}:v1", check=False)
    assert elsewhere.returncode != 0
    assert any(word in elsewhere.stderr.lower() for word in ("unauthorized", "denied", "forbidden"))


def test_anonymous_pull_only_where_granted(secured: Secured, skopeo, tmp_path: Path) -> None:
    manifest = image(1, layer_size=1024)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    admin = f"{ADMIN[0]}:{ADMIN[1]}"
    public = f"docker://{secured.stack.hostport}/{unique('public/img')}:v1"
    private = f"docker://{secured.stack.hostport}/{unique('private/img')}:v1"
    for target in (public, private):
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", admin, f"oci:{source}:v1", target)
    skopeo("copy", "--src-tls-verify=false", public, f"oci:{tmp_path / 'pub'}:v1")
    assert Layout(tmp_path / "pub").descriptor_for("v1")["digest"] == manifest.digest
    refused = skopeo("copy", "--src-tls-verify=false", private, f"oci:{tmp_path / 'priv'}:v1", check=False)
    assert refused.returncode != 0
    # Anonymous push to the public namespace: refused too (anonymous callers only ever pull).
    pushed = skopeo("copy", "--dest-tls-verify=false", f"oci:{source}:v1",
                    f"docker://{secured.stack.hostport}/{unique('public/anon')}:v1", check=False)
    assert pushed.returncode != 0


def test_robot_limited_to_team_a(secured: Secured, skopeo, tmp_path: Path) -> None:
    manifest = image(1, layer_size=2048)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    creds = f"{secured.robot[0]}:{secured.robot[1]}"
    inside = f"docker://{secured.stack.hostport}/{unique('team-a/ci')}:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{source}:v1", inside)
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, inside, f"oci:{tmp_path / 'back'}:v1")
    outside = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{source}:v1",
                     f"docker://{secured.stack.hostport}/{unique('team-b/ci')}:v1", check=False)
    assert outside.returncode != 0
    expired = f"{secured.expired_robot[0]}:{secured.expired_robot[1]}"
    refused = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", expired, f"oci:{source}:v1",
                     f"docker://{secured.stack.hostport}/{unique('team-a/old')}:v1", check=False)
    assert refused.returncode != 0


def test_oras_pushes_and_pulls_after_login(secured: Secured, tmp_path: Path) -> None:
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        files = {"readme.txt": b"hello through the token flow\n", "data.bin": os.urandom(50_000)}
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        registry = oras.provider.Registry(hostname=secured.stack.hostport, insecure=True)
        registry.login(username=ALICE[0], password=ALICE[1], tls_verify=False)
        target = f"{secured.stack.hostport}/{unique('team-a/oras')}:v1"
        response = registry.push(target=target, files=list(files), quiet=True)
        assert response.status_code == 201
        pulled = registry.pull(target=target, outdir=str(tmp_path / "out"))
        assert {Path(p).name: Path(p).read_bytes() for p in pulled} == files
    finally:
        os.chdir(previous)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(tmp_path / "engine") as containers:
        yield containers


def test_podman_login_push_denial_and_logout(secured: Secured, engine: Engine) -> None:
    """podman login as a robot (a `$` in its name), push where granted, a clean denial elsewhere,
    logout, and then the private repository is closed again; a user logs in the same way."""
    registry = secured.stack.hostport
    files = fresh_files(1)
    engine.build_scratch_image("localhost/lading-test/app:1", files)
    robot, secret = secured.robot
    wrong = engine.podman("login", "--tls-verify=false", "-u", robot, "--password-stdin", registry,
                          stdin="not-the-secret\n", check=False)
    assert wrong.returncode != 0 and "invalid username/password" in wrong.stderr
    engine.podman("login", "--tls-verify=false", "-u", robot, "--password-stdin", registry, stdin=secret + "\n")
    assert registry in json.loads(engine.auth_file.read_text())["auths"]

    inside = f"{registry}/{unique('team-a/podman')}:v1"
    engine.podman("push", "--tls-verify=false", "localhost/lading-test/app:1", inside)
    outside = engine.podman("push", "--tls-verify=false", "localhost/lading-test/app:1",
                            f"{registry}/{unique('team-b/podman')}:v1", check=False)
    assert outside.returncode != 0 and "403" in outside.stderr

    engine.podman("logout", registry)
    assert registry not in json.loads(engine.auth_file.read_text())["auths"]
    refused = engine.podman("pull", "--tls-verify=false", inside, check=False)
    assert refused.returncode != 0 and "denied" in refused.stderr

    engine.podman("login", "--tls-verify=false", "-u", ALICE[0], "--password-stdin", registry, stdin=ALICE[1] + "\n")
    engine.podman("rmi", "localhost/lading-test/app:1")
    engine.podman("pull", "--tls-verify=false", inside)
    with engine.mounted(inside) as root:
        assert {name: (root / "data" / name).read_bytes() for name in files} == files


def test_skopeo_delete_needs_the_delete_grant(secured: Secured, skopeo, tmp_path: Path) -> None:
    """skopeo delete (by the digest its tag names) asks for a token with delete on the repository:
    alice's pull,push is not enough (a clean DENIED naming the action); the admin's delete works."""
    manifest = image(1, layer_size=1024)
    source = write_layout(tmp_path / "src", {"v1": manifest})
    target = f"docker://{secured.stack.hostport}/{unique('team-a/delete')}:v1"
    alice = f"{ALICE[0]}:{ALICE[1]}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", alice, f"oci:{source}:v1", target)
    refused = skopeo("delete", "--tls-verify=false", "--creds", alice, target, check=False)
    assert refused.returncode != 0
    assert "DENIED" in refused.stderr and "delete" in refused.stderr
    skopeo("inspect", "--raw", "--tls-verify=false", "--creds", alice, target)
    skopeo("delete", "--tls-verify=false", "--creds", f"{ADMIN[0]}:{ADMIN[1]}", target)
    gone = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", alice, target, check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr
