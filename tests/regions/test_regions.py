"""Two regions on loopback (issue 15, items 2, 4, 7, 8): a primary region ("eu": PostgreSQL
primary, its metadata plane) and a replica region ("us": the hot standby made with
`pg_basebackup -R`, its own metadata plane reading it, its own blob plane and gateway).

- Pushes through the replica region's gateway are forwarded to the primary region's metadata plane
  (the rows are on the primary) and are pulled back through the same region at once (the write
  waited until the region's standby replayed the primary's commit position).
- skopeo copies images (one multi-arch) into the replica region and back out of it.
- `lading region status` names the region, its role and the primary, and reports the standby lag
  and the forwarded writes.
- Cut off from the primary (its metadata plane stopped), the replica region keeps serving reads;
  writes answer 503 UNAVAILABLE with a message naming the primary region; `lading region status`
  says the primary is unreachable (exit 1). Once the primary is back, writes go through again.
- kill -9 of the replica region's metadata plane, then of the primary region's, while a client
  pushes through the replica region: every push that was acknowledged (201) is there afterwards,
  and pushes go on once the planes are back.
- A directory (LDAP, real slapd) user's first login through the replica region's metadata plane
  creates the account on the primary and is answered once the standby has it; later logins are
  answered in the region.
- The failover runbook (README "Failover"), end to end: the primary region lost (its database and
  metadata plane stopped), the standby promoted, the replica region's metadata plane restarted as
  the primary: writes are accepted there and what was pushed before is still served; then the old
  primary rejoins as a standby of the new one and its metadata plane runs as a replica region.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from tests.regions.skopeo_trips import skopeo_round_trip
from tests.regions.two_regions import wait_for_schema
from tests.support import standby
from tests.support.clients import require_binary
from tests.support.oci import (
    error_codes,
    get_manifest,
    image,
    push,
    push_manifest_only,
)
from tests.support.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SLAPD, Slapd
from tests.support.stack import (
    LadingProcess,
    child_env,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)
from tests.tls.pki import Pki

pytestmark = pytest.mark.postgres
PUSHES = 6


@dataclass
class Regions:
    pair: standby.Pair
    primary_metadata: LadingProcess
    primary_socket: Path
    replica_metadata: LadingProcess
    replica_socket: Path
    replica_gateway: str
    root: Path


@contextlib.contextmanager
def _directory(root: Path) -> Iterator[Slapd]:
    server = Slapd(root / "slapd", Pki(root / "pki")).start()
    try:
        yield server.load()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    root = tmp_path_factory.mktemp("regions")
    run_dir, logs = root / "run", root / "logs"
    run_dir.mkdir()
    primary_socket, replica_socket, blob_socket = run_dir / "eu.sock", run_dir / "us.sock", run_dir / "b.sock"
    port = free_port()
    require_binary(SLAPD, install_hint="apt-get install slapd")
    with _directory(root) as directory, standby.primary_and_standby() as pair:
        ldap = {  # both regions log directory users in (the same settings, as every plane has)
            "LADING_AUTH__LDAP__URL": directory.url, "LADING_AUTH__LDAP__START_TLS": "true",
            "LADING_AUTH__LDAP__CA_FILE": str(directory.ca.cert), "LADING_AUTH__LDAP__BIND_DN": SERVICE_DN,
            "LADING_AUTH__LDAP__BIND_PASSWORD": SERVICE_PASSWORD, "LADING_AUTH__LDAP__USER_BASE_DN": PEOPLE,
        }
        pair.primary.psql("CREATE DATABASE lading")
        primary = LadingProcess("metadata-eu", lading_command("metadata"), log_dir=logs, cwd=root, env={
            "LADING_METADATA__LISTEN": f"unix://{primary_socket}",
            "LADING_METADATA__DATABASE_URL": pair.primary.database_url("lading"),
            "LADING_REGIONS__LOCAL": "eu", "LADING_REGIONS__PRIMARY": "eu",
            "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1", **ldap,
        })
        peers = json.dumps([{"name": "eu", "metadata_target": f"unix://{primary_socket}"}])
        replica = LadingProcess("metadata-us", lading_command("metadata"), log_dir=logs, cwd=root, env={
            "LADING_METADATA__LISTEN": f"unix://{replica_socket}",
            "LADING_METADATA__DATABASE_URL": pair.standby.database_url("lading"),
            "LADING_METADATA__CHANGE_FEED__POLL_SECONDS": "0.2",
            "LADING_REGIONS__LOCAL": "us", "LADING_REGIONS__PRIMARY": "eu", "LADING_REGIONS__PEERS": peers,
            "LADING_REGIONS__FORWARD_TIMEOUT_SECONDS": "3",
            "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1", **ldap,
        })
        blob = LadingProcess("blob-us", lading_command("blob"), log_dir=logs, cwd=root, env={
            "LADING_BLOB__LISTEN": f"unix://{blob_socket}", "LADING_BLOB__FILESYSTEM__ROOT": str(root / "blobs"),
        })
        gateway = LadingProcess("gateway-us", lading_command("gateway"), log_dir=logs, cwd=root, env={
            "LADING_GATEWAY__HOST": "127.0.0.1", "LADING_GATEWAY__PORT": str(port),
            "LADING_GATEWAY__METADATA_TARGET": f"unix://{replica_socket}",
            "LADING_GATEWAY__BLOB_TARGET": f"unix://{blob_socket}",
            "LADING_GATEWAY__GRPC__TIMEOUT_SECONDS": "8",
            "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "1",
        })
        with running(primary):
            wait_until_path_exists(primary_socket, primary)
            wait_for_schema(pair)
            with running(replica, blob, gateway):
                wait_until_path_exists(replica_socket, replica)
                wait_until_path_exists(blob_socket, blob)
                url = f"http://127.0.0.1:{port}"
                wait_until_http_ok(f"{url}/v2/", gateway)
                yield Regions(pair, primary, primary_socket, replica, replica_socket, url, root)


def region_status(regions: Regions) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lading_command("region", "status", "--json", "--metadata", f"unix:{regions.replica_socket}"),
                          capture_output=True, text=True, timeout=60, env=child_env())


def test_writes_in_a_replica_region_go_to_the_primary_and_are_read_back_at_once(regions: Regions) -> None:
    repo = f"regions/{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=regions.replica_gateway, timeout=30) as us:
        for n in range(PUSHES):
            manifest = image(layers=1)
            push(us, repo, manifest, tag=f"v{n}")
            pulled = get_manifest(us, repo, f"v{n}")
            assert pulled.status_code == 200, f"push {n} not readable in its own region: {pulled.text}"
            assert pulled.headers["docker-content-digest"] == manifest.digest
            assert us.head(f"/v2/{repo}/blobs/{manifest.blobs[0].digest}").status_code == 200
    on_primary = regions.pair.primary.psql(
        f"SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = '{repo}'",
        database="lading")
    assert on_primary == str(PUSHES)
    # The blobs' bytes are in region us (where they were pushed), and the metadata says so.
    held = regions.pair.primary.psql(
        f"SELECT region FROM blob_regions WHERE digest = '{manifest.blobs[0].digest}'", database="lading")
    assert held == "us"
    status = region_status(regions)
    assert status.returncode == 0, status.stdout + status.stderr
    reply = json.loads(status.stdout)
    assert (reply["local"], reply["role"], reply["primary"]) == ("us", "replica", "eu")
    assert int(reply["forwardedWrites"]) >= PUSHES * 3  # each push: 2 blob links + the manifest
    assert reply["replicationLagSeconds"] >= 0
    assert reply["peers"][0]["reachable"] is True


def test_skopeo_round_trips_images_through_the_replica_region(regions: Regions, tmp_path: Path) -> None:
    hostport = regions.replica_gateway.removeprefix("http://")
    skopeo_round_trip(tmp_path, "skopeo/us", hostport, hostport)


def test_oras_pushes_an_artifact_and_its_referrer_through_the_replica_region(
    regions: Regions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """oras-py (the other client the issue names) through the replica region: an artifact pushed
    there pulls back byte-identical, and a referrer pushed there is listed by its subject there
    (the writes were forwarded to the primary; the reads come from the region's standby)."""
    import oras.oci
    import oras.provider

    monkeypatch.chdir(tmp_path)  # oras-py pushes only files under the working directory
    files = {"readme.txt": b"through the replica region\n", "data.bin": os.urandom(100_000)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    hostport = regions.replica_gateway.removeprefix("http://")
    client = oras.provider.Registry(hostname=hostport, insecure=True)
    repo = f"oras/us-{uuid.uuid4().hex[:8]}"
    assert client.push(target=f"{hostport}/{repo}:v1", files=list(files), quiet=True).status_code == 201
    pulled = client.pull(target=f"{hostport}/{repo}:v1", outdir=str(tmp_path / "out"))
    assert {Path(p).name: Path(p).read_bytes() for p in pulled} == files

    with httpx.Client(base_url=regions.replica_gateway, timeout=30) as http:
        subject = get_manifest(http, repo, "v1")
        assert subject.status_code == 200
        (tmp_path / "sbom.json").write_text('{"packages": []}')
        described = oras.oci.Subject(mediaType=subject.headers["Content-Type"],
                                     digest=subject.headers["Docker-Content-Digest"], size=len(subject.content))
        pushed = client.push(target=f"{hostport}/{repo}:sbom", files=["sbom.json:application/vnd.example.sbom+json"],
                             subject=described, quiet=True)
        assert pushed.status_code == 201
        assert pushed.headers["OCI-Subject"] == described.digest
        referrer = get_manifest(http, repo, "sbom").headers["Docker-Content-Digest"]
        listing = http.get(f"/v2/{repo}/referrers/{described.digest}")
        assert listing.status_code == 200
        assert [d["digest"] for d in listing.json()["manifests"]] == [referrer]


def test_a_replica_region_cut_off_from_the_primary_serves_reads_and_refuses_writes(regions: Regions) -> None:
    repo = f"regions/{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=regions.replica_gateway, timeout=30) as us:
        kept = image(layers=1)
        push(us, repo, kept, tag="kept")
        regions.primary_metadata.stop()
        try:
            assert get_manifest(us, repo, "kept").status_code == 200  # reads go on
            assert us.head(f"/v2/{repo}/blobs/{kept.blobs[0].digest}").status_code == 200
            refused = push_manifest_only(us, repo, "new", kept)
            assert refused.status_code == 503, refused.text
            assert error_codes(refused) == ["UNAVAILABLE"]
            assert "primary region 'eu'" in refused.json()["errors"][0]["message"]
            status = region_status(regions)
            assert status.returncode == 1
            assert json.loads(status.stdout)["peers"][0]["reachable"] is False
        finally:
            regions.primary_metadata.start()
        wait_until_path_exists(regions.primary_socket, regions.primary_metadata)
        deadline = time.monotonic() + 20
        while (answer := push_manifest_only(us, repo, "new", kept)).status_code != 201:
            assert time.monotonic() < deadline, f"writes did not recover: {answer.status_code} {answer.text}"
            time.sleep(0.2)
        assert get_manifest(us, repo, "new").headers["docker-content-digest"] == kept.digest


def test_a_directory_users_first_login_in_a_replica_region_creates_the_account_on_the_primary(
        regions: Regions) -> None:
    """LDAP: the first login of a directory user creates the account, a write; in a replica region
    the login is passed on to the primary region (where the account is created) and answered once
    the region's standby has it. Later logins are answered in the region itself."""
    forwarded = int(json.loads(region_status(regions).stdout)["forwardedWrites"])
    with grpc.insecure_channel(f"unix:{regions.replica_socket}") as channel:
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        first = accounts.Authenticate(accounts_pb2.AuthenticateRequest(name="gwen", secret="gwen-pw"), timeout=30)
        assert first.account.name == "gwen"
        assert regions.pair.primary.psql("SELECT origin FROM accounts WHERE name = 'gwen'", database="lading") == "ldap"
        # Replayed by the region's standby before the first login was answered: the next is local.
        assert regions.pair.standby.psql("SELECT count(*) FROM accounts WHERE name = 'gwen'", database="lading") == "1"
        again = accounts.Authenticate(accounts_pb2.AuthenticateRequest(name="gwen", secret="gwen-pw"), timeout=30)
        assert again.account.name == "gwen"
        with pytest.raises(grpc.RpcError) as refused:
            accounts.Authenticate(accounts_pb2.AuthenticateRequest(name="gwen", secret="wrong"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert int(json.loads(region_status(regions).stdout)["forwardedWrites"]) == forwarded + 1


def _kill_and_restart(process: LadingProcess) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the process group: the plane and anything it forked
    process.stop(timeout=5)
    process.start()


def test_kill_9_of_either_regions_metadata_plane_mid_push_loses_nothing_acknowledged(regions: Regions) -> None:
    repo = f"regions/{uuid.uuid4().hex[:10]}"
    acknowledged: dict[str, str] = {}
    failed = 0
    stop = threading.Event()

    def pusher() -> None:
        nonlocal failed
        with httpx.Client(base_url=regions.replica_gateway, timeout=15) as us:
            n = 0
            while not stop.is_set():
                manifest = image(layers=1, layer_size=1024)
                try:
                    push(us, repo, manifest, tag=f"k{n}")
                    acknowledged[f"k{n}"] = manifest.digest
                except (AssertionError, httpx.HTTPError):
                    failed += 1  # refused while a plane was down: allowed, it was never acknowledged
                    time.sleep(0.05)
                n += 1

    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    try:
        for process in (regions.replica_metadata, regions.primary_metadata):
            before = len(acknowledged)
            deadline = time.monotonic() + 20
            while len(acknowledged) < before + 3:  # pushes go through before each kill
                assert time.monotonic() < deadline, f"pushes did not go on before killing {process.name}"
                time.sleep(0.05)
            _kill_and_restart(process)
        before = len(acknowledged)
        deadline = time.monotonic() + 30
        while len(acknowledged) < before + 3:  # and after both came back
            assert time.monotonic() < deadline, "pushes did not recover after the kills"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    with httpx.Client(base_url=regions.replica_gateway, timeout=30) as us:
        for tag, digest in acknowledged.items():
            pulled = get_manifest(us, repo, tag)
            assert pulled.status_code == 200, f"{tag} was acknowledged and is gone"
            assert pulled.headers["docker-content-digest"] == digest
    on_primary = regions.pair.primary.psql(
        f"SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = '{repo}'",
        database="lading")
    assert int(on_primary) >= len(acknowledged)


def test_failover_runbook_promotes_the_replica_region_and_the_old_primary_rejoins(regions: Regions) -> None:
    pair, logs = regions.pair, regions.root / "logs"
    repo = f"regions/{uuid.uuid4().hex[:10]}"
    before = image(layers=1)
    with httpx.Client(base_url=regions.replica_gateway, timeout=30) as us:
        push(us, repo, before, tag="before")
        # 1. The primary region is lost.
        regions.primary_metadata.stop()
        pair.primary.stop()
        # 2. Promote the standby; 3. run region us's metadata plane as the primary region.
        pair.standby.promote()
        regions.replica_metadata.stop()
        promoted = LadingProcess("metadata-us-primary", lading_command("metadata"), log_dir=logs, cwd=regions.root,
                                 env={
            "LADING_METADATA__LISTEN": f"unix://{regions.replica_socket}",
            "LADING_METADATA__DATABASE_URL": pair.standby.database_url("lading"),
            "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
            "LADING_REGIONS__LOCAL": "us", "LADING_REGIONS__PRIMARY": "us",
        })
        rejoined: LadingProcess | None = None
        with running(promoted):
            wait_until_path_exists(regions.replica_socket, promoted)
            after = image(layers=1)
            deadline = time.monotonic() + 20
            while True:
                try:
                    push(us, repo, after, tag="after")  # writes accepted in the promoted region
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, "the promoted region does not accept writes"
                    time.sleep(0.2)
            assert get_manifest(us, repo, "before").headers["docker-content-digest"] == before.digest
            assert get_manifest(us, repo, "after").headers["docker-content-digest"] == after.digest
            # 4. The old primary rejoins as a standby of the new primary, its region as a replica.
            pair.primary.rejoin_as_standby_of(pair.standby)
            assert pair.primary.psql("SELECT pg_is_in_recovery()") == "t"
            peers = json.dumps([{"name": "us", "metadata_target": f"unix://{regions.replica_socket}"}])
            rejoined = LadingProcess("metadata-eu-replica", lading_command("metadata"), log_dir=logs, cwd=regions.root,
                                     env={
                "LADING_METADATA__LISTEN": f"unix://{regions.primary_socket}",
                "LADING_METADATA__DATABASE_URL": pair.primary.database_url("lading"),
                "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
                "LADING_REGIONS__LOCAL": "eu", "LADING_REGIONS__PRIMARY": "us", "LADING_REGIONS__PEERS": peers,
            })
            with running(rejoined):
                wait_until_path_exists(regions.primary_socket, rejoined)
                status = subprocess.run(
                    lading_command("region", "status", "--json", "--metadata", f"unix:{regions.primary_socket}"),
                    capture_output=True, text=True, timeout=60, env=child_env())
                assert status.returncode == 0, status.stdout + status.stderr
                reply = json.loads(status.stdout)
                assert (reply["local"], reply["role"], reply["primary"]) == ("eu", "replica", "us")
                assert reply["peers"][0]["reachable"] is True
            tags = pair.primary.psql(
                f"SELECT string_agg(t.name, ',' ORDER BY t.name) FROM tags t JOIN repositories r "
                f"ON r.id = t.repository_id WHERE r.name = '{repo}'", database="lading")
            assert tags == "after,before"  # the rejoined standby has the new primary's writes

