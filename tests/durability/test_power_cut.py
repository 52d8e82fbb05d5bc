"""A push that got 201 survives a power cut (issue 18).

The embedded registry (`lading serve`: SQLite + filesystem) keeps its database and blobs on the
power-cut file system (tests/support/powercut_fs.py), which holds every write that was not
fsynced in memory. Several clients push small images over HTTP (monolithic and chunked blob
uploads, then the manifest by tag) and leave chunked uploads half done. At a moment drawn from a
fixed seed, every process of `lading serve` is frozen and killed (tests/durability/crash.py),
everything not durable is dropped, and the registry restarts on what is left. Then:

- every image whose manifest PUT answered 201, in this round or an earlier one, pulls back
  byte-identical (manifest by tag, every blob);
- `lading check` re-hashes every blob the metadata references: none missing, none corrupt;
- every interrupted upload either reports an offset (never below what its client was told, a
  202 being an acknowledgement too) and completes when the client resumes from it, or answers a
  clear error; only a session that never got a chunk acknowledged may be gone.

Several rounds on the same disk, so a cut must also keep what earlier rounds stored.
"""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.durability.crash import freeze_and_kill
from tests.gc.stack_support import targets
from tests.support import oci
from tests.support.powercut import PowerCutDisk, require_fuse
from tests.support.stack import Stack, child_env, lading_command

SEED = 1818
ROUNDS = 4
CLIENTS = 6
# The cut comes once this many images were acknowledged in the round (drawn per round), then
# after a few more milliseconds (drawn too), so it lands mid-request whatever the machine's speed.
IMAGES_BEFORE_CUT = (8, 24)
EXTRA_MILLISECONDS = (0, 300)
PUSH_TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 6 * 1024
REQUEST_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Acknowledged:
    repo: str
    tag: str
    image: oci.Manifest


@dataclass(frozen=True)
class AcknowledgedBlob:
    repo: str
    blob: oci.Blob


@dataclass
class OpenUpload:
    """A chunked upload left unfinished: what its client knows about it."""

    repo: str
    location: str
    data: bytes
    # Bytes the registry acknowledged (the end of the last 202's Range, plus one).
    acknowledged: int = 0


@dataclass
class Workload:
    """What the clients were told: acknowledged images and unfinished uploads."""

    round_no: int
    acknowledged: list[Acknowledged] = field(default_factory=list)
    # Blobs whose upload answered 201 (linked in the repository), images complete or not.
    blobs: list[AcknowledgedBlob] = field(default_factory=list)
    uploads: list[OpenUpload] = field(default_factory=list)
    # Answers that are wrong even before the crash (anything but the expected status).
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run_client(self, base_url: str, index: int, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS) as http:
            serial = 0
            while not self.stop.is_set():
                serial += 1
                try:
                    if serial % 3 == 0:
                        self._leave_upload_open(http, f"cut/r{self.round_no}c{index}", rng)
                    else:
                        self._push_image(http, f"cut/r{self.round_no}c{index}", f"t{serial}", rng)
                except httpx.HTTPError as error:
                    if not self.stop.is_set():
                        with self.lock:
                            self.unexpected.append(f"client {index}: {error!r}")
                    return  # after the stop: the registry died under this request, unacknowledged

    def _expect(self, response: httpx.Response, status: int) -> bool:
        if response.status_code == status:
            return True
        if not self.stop.is_set():
            with self.lock:
                self.unexpected.append(f"{response.request.method} {response.request.url.path}: "
                                       f"{response.status_code} {response.text[:200]}")
        return False

    def _push_image(self, http: httpx.Client, repo: str, tag: str, rng: random.Random) -> None:
        layers = [oci.Blob(rng.randbytes(rng.randint(1024, 3 * CHUNK_BYTES)), oci.OCI_LAYER) for _ in range(2)]
        config = oci.image_config([layer.digest for layer in layers])
        document = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config.descriptor(),
                    "layers": [layer.descriptor() for layer in layers]}
        image = oci.Manifest(oci.render(document), oci.OCI_MANIFEST, blobs=(config, *layers))
        for position, blob in enumerate(image.blobs):
            # The last layer goes in chunks (staged file renamed at commit); the others whole.
            pushed = self._push_chunked(http, repo, blob.data) if position == 2 else self._push_whole(
                http, repo, blob.data)
            if not pushed:
                return
            with self.lock:
                self.blobs.append(AcknowledgedBlob(repo, blob))
        put = oci.push_manifest_only(http, repo, tag, image)
        if self._expect(put, 201):
            with self.lock:
                self.acknowledged.append(Acknowledged(repo, tag, image))

    def _push_whole(self, http: httpx.Client, repo: str, data: bytes) -> bool:
        started = http.post(f"/v2/{repo}/blobs/uploads/")
        if not self._expect(started, 202):
            return False
        location = oci.with_digest(oci.absolute(http, started.headers["Location"]), oci.sha256(data))
        return self._expect(http.put(location, content=data, headers={"Content-Type": "application/octet-stream"}), 201)

    def _push_chunked(self, http: httpx.Client, repo: str, data: bytes) -> bool:
        upload = self._start(http, repo, data)
        if upload is None or not self._send_chunks(http, upload, len(data)):
            return False
        done = http.put(oci.with_digest(upload.location, oci.sha256(data)))
        return self._expect(done, 201)

    def _leave_upload_open(self, http: httpx.Client, repo: str, rng: random.Random) -> None:
        data = rng.randbytes(3 * CHUNK_BYTES)
        upload = self._start(http, repo, data)
        if upload is None:
            return
        with self.lock:
            self.uploads.append(upload)
        self._send_chunks(http, upload, rng.choice([CHUNK_BYTES, 2 * CHUNK_BYTES]))

    def _start(self, http: httpx.Client, repo: str, data: bytes) -> OpenUpload | None:
        started = http.post(f"/v2/{repo}/blobs/uploads/")
        if not self._expect(started, 202):
            return None
        return OpenUpload(repo, oci.absolute(http, started.headers["Location"]), data)

    def _send_chunks(self, http: httpx.Client, upload: OpenUpload, until: int) -> bool:
        while upload.acknowledged < until:
            start = upload.acknowledged
            chunk = upload.data[start : min(until, start + CHUNK_BYTES)]
            patched = http.patch(upload.location, content=chunk, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(chunk) - 1}",
            })
            if not self._expect(patched, 202):
                return False
            upload.location = oci.absolute(http, patched.headers["Location"])
            upload.acknowledged = int(patched.headers["Range"].split("-")[1]) + 1
        return True


@dataclass
class Outcome:
    acknowledged: int = 0
    # Images that did not pull back whole; what went wrong with each.
    lost: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lost_manifests: int = 0
    blobs: int = 0
    lost_blobs: list[str] = field(default_factory=list)
    resumed: int = 0
    refused_cleanly: int = 0
    broken_uploads: list[str] = field(default_factory=list)


def _verify_images(http: httpx.Client, acknowledged: list[Acknowledged], outcome: Outcome) -> None:
    for item in acknowledged:
        outcome.acknowledged += 1
        name = f"{item.repo}:{item.tag}"
        pulled = oci.get_manifest(http, item.repo, item.tag)
        if pulled.status_code != 200 or pulled.content != item.image.payload:
            outcome.lost.append(name)
            outcome.lost_manifests += 1
            outcome.problems.append(f"{name} manifest: {pulled.status_code}")
            continue
        for blob in item.image.blobs:
            got = http.get(f"/v2/{item.repo}/blobs/{blob.digest}", follow_redirects=True)
            if got.status_code != 200 or got.content != blob.data:
                outcome.problems.append(f"{name} blob {blob.digest}: {got.status_code}, "
                                        f"{len(got.content)} bytes of {blob.size}: {got.text[:120]!r}")
                if outcome.lost[-1:] != [name]:
                    outcome.lost.append(name)


def _verify_blobs(http: httpx.Client, blobs: list[AcknowledgedBlob], outcome: Outcome) -> None:
    for item in blobs:
        outcome.blobs += 1
        got = http.get(f"/v2/{item.repo}/blobs/{item.blob.digest}", follow_redirects=True)
        if got.status_code != 200 or got.content != item.blob.data:
            outcome.lost_blobs.append(f"{item.repo}@{item.blob.digest}: {got.status_code}, {len(got.content)} "
                                      f"bytes of {item.blob.size}")


def _verify_uploads(http: httpx.Client, uploads: list[OpenUpload], outcome: Outcome) -> None:
    for upload in uploads:
        status = http.get(upload.location)
        if status.status_code in (400, 404):
            codes = oci.error_codes(status)
            if not {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"} & set(codes) or upload.acknowledged:
                outcome.broken_uploads.append(f"{upload.location}: {status.status_code} {codes} after "
                                              f"{upload.acknowledged} acknowledged bytes")
            else:
                outcome.refused_cleanly += 1
            continue
        if status.status_code != 204:
            outcome.broken_uploads.append(f"{upload.location}: status {status.status_code} {status.text[:200]}")
            continue
        offset = int(status.headers["Range"].split("-")[1]) + 1
        if not upload.acknowledged <= offset <= len(upload.data):
            outcome.broken_uploads.append(f"{upload.location}: reports {offset} bytes, "
                                          f"{upload.acknowledged} were acknowledged")
            continue
        rest = upload.data[offset:]
        location = oci.absolute(http, status.headers["Location"])
        if rest:
            patched = http.patch(location, content=rest, headers={
                "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{len(upload.data) - 1}"})
            if patched.status_code != 202:
                outcome.broken_uploads.append(f"{location}: resume at {offset}: {patched.status_code}")
                continue
            location = oci.absolute(http, patched.headers["Location"])
        digest = oci.sha256(upload.data)
        done = http.put(oci.with_digest(location, digest))
        got = http.get(f"/v2/{upload.repo}/blobs/{digest}", follow_redirects=True)
        if done.status_code != 201 or got.content != upload.data:
            outcome.broken_uploads.append(f"{location}: commit after resume: {done.status_code} {done.text[:200]}")
            continue
        outcome.resumed += 1


def _check(stack: Stack) -> subprocess.CompletedProcess[str]:
    metadata, blob = targets(stack)
    return subprocess.run(
        lading_command("check", "--verify-sample", "1000000000", "--metadata", metadata, "--blob", blob),
        env=child_env(), capture_output=True, text=True, timeout=120,
    )


def _wait_for(workload: Workload, images: int, clients: list[threading.Thread]) -> None:
    deadline = time.monotonic() + PUSH_TIMEOUT_SECONDS
    while len(workload.acknowledged) < images:
        assert not workload.unexpected, workload.unexpected[:5]
        assert any(client.is_alive() for client in clients), "every client stopped"
        assert time.monotonic() < deadline, f"only {len(workload.acknowledged)} images pushed in time"
        time.sleep(0.01)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    require_fuse()
    with PowerCutDisk(tmp_path / "disk") as mounted:
        yield mounted


def _serve(tmp_path: Path, disk: PowerCutDisk, round_no: int, port: int | None = None) -> Stack:
    env = {
        "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{disk.path / 'registry.db'}",
        "LADING_BLOB__FILESYSTEM__ROOT": str(disk.path / "blobs"),
        # Reads after the restart must see the restarted registry, never a cache.
        "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": "0",
    }
    # The same port after a restart: clients keep the upload URLs they were given.
    return Stack(tmp_path / "data", env=env, port=port, name=f"lading-serve-{round_no}").start()


def test_acknowledged_pushes_survive_power_cuts(tmp_path: Path, disk: PowerCutDisk) -> None:
    rng = random.Random(SEED)
    acknowledged: list[Acknowledged] = []
    blobs: list[AcknowledgedBlob] = []
    report: list[str] = []
    stack = _serve(tmp_path, disk, 0)
    try:
        for round_no in range(1, ROUNDS + 1):
            workload = Workload(round_no)
            clients = [threading.Thread(target=workload.run_client, args=(stack.base_url, index, rng.random()),
                                        daemon=True) for index in range(CLIENTS)]
            for client in clients:
                client.start()
            _wait_for(workload, rng.randint(*IMAGES_BEFORE_CUT), clients)
            time.sleep(rng.randint(*EXTRA_MILLISECONDS) / 1000)
            workload.stop.set()
            killed = freeze_and_kill(stack.process.pid)
            stack.stop()  # reaps the supervisor; nothing is left to stop gracefully
            for client in clients:
                client.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)
            assert not workload.unexpected, workload.unexpected[:5]
            disk.cut()
            stack = _serve(tmp_path, disk, round_no, stack.port)

            acknowledged.extend(workload.acknowledged)
            blobs.extend(workload.blobs)
            outcome = Outcome()
            with httpx.Client(base_url=stack.base_url, timeout=REQUEST_TIMEOUT_SECONDS) as http:
                _verify_images(http, acknowledged, outcome)
                _verify_blobs(http, blobs, outcome)
                _verify_uploads(http, workload.uploads, outcome)
            report.append(
                f"round {round_no}: killed {killed} processes; {outcome.acknowledged} acknowledged images, "
                f"{len(outcome.lost)} lost ({outcome.lost_manifests} by their manifest); {outcome.blobs} "
                f"acknowledged blobs, {len(outcome.lost_blobs)} lost; {len(workload.uploads)} open uploads: "
                f"{outcome.resumed} resumed, {outcome.refused_cleanly} refused cleanly, "
                f"{len(outcome.broken_uploads)} broken")
            print(report[-1])
            assert not outcome.lost and not outcome.lost_blobs, "\n".join(
                [*report, *outcome.problems[:10], *outcome.lost_blobs[:10]])
            assert not outcome.broken_uploads, "\n".join([*report, *outcome.broken_uploads[:10]])
            # Every blob the metadata references is there and hashes to its digest.
            checked = _check(stack)
            assert checked.returncode == 0 and " 0 missing" in checked.stdout and " 0 corrupt" in checked.stdout, (
                f"{checked.stdout}\n{checked.stderr[-2000:]}")
            counts = re.search(r"checked (\d+) blobs: .* re-hashed (\d+):", checked.stdout)
            assert counts and counts[1] == counts[2] != "0", checked.stdout
    finally:
        with contextlib.suppress(Exception):
            freeze_and_kill(stack.process.pid)
        stack.stop()
