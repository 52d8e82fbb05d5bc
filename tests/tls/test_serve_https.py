"""`lading serve` over HTTPS: with the gateway's TLS settings set, the embedded registry serves
HTTPS with that certificate (its gateway child reads the same settings), says so when it is up,
and registry traffic works with the client checking the certificate against its CA."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import oci
from tests.support.clients import require_binary
from tests.support.stack import LadingProcess, free_port, lading_command
from tests.tls.pki import KeyPair, Pki


@dataclass
class HttpsServe:
    process: LadingProcess
    port: int
    ca: KeyPair

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def verifying(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert))


@pytest.fixture(scope="module")
def https_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServe]:
    root = tmp_path_factory.mktemp("serve-https")
    pki = Pki(root / "pki")
    ca = pki.authority("registry-ca")
    server = pki.leaf("registry", ca)  # for localhost and 127.0.0.1
    port = free_port()
    process = LadingProcess(
        "lading-serve-https",
        lading_command("serve", "--data-dir", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)),
        log_dir=root / "logs",
        env={
            "LADING_GATEWAY__TLS__CERT_FILE": str(server.cert),
            "LADING_GATEWAY__TLS__KEY_FILE": str(server.key),
        },
    ).start()
    try:
        # The supervisor probes its gateway over TLS and prints the https:// URL once it answers.
        assert process.wait_for_output(f"Lading is serving on https://127.0.0.1:{port}"), process.log()
        yield HttpsServe(process, port, ca)
    finally:
        process.stop()


def test_serve_pushes_and_pulls_over_https_verified_against_the_ca(https_serve: HttpsServe) -> None:
    manifest = oci.image(layers=2, layer_size=256 * 1024)
    with httpx.Client(base_url=https_serve.url, verify=https_serve.verifying(), timeout=30) as client:
        version = client.get("/v2/")
        assert version.status_code == 200
        assert version.headers["docker-distribution-api-version"] == "registry/2.0"
        oci.push(client, "tls/app", manifest, tag="v1")
        oci.assert_pulls_back(client, "tls/app", "v1", manifest)
        assert client.get("/v2/tls/app/tags/list").json()["tags"] == ["v1"]
    assert https_serve.process.poll() is None


def test_serve_over_https_refuses_plain_http_and_unknown_cas(https_serve: HttpsServe, tmp_path: Path) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_serve.port}/v2/", timeout=5)
    stranger = Pki(tmp_path / "pki").authority("stranger-ca")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{https_serve.url}/v2/", verify=ssl.create_default_context(cafile=str(stranger.cert)), timeout=5)
    assert httpx.get(f"{https_serve.url}/v2/", verify=https_serve.verifying(), timeout=5).status_code == 200


def test_blob_gets_redirect_to_direct_reads_over_https_with_the_same_certificate(https_serve: HttpsServe) -> None:
    data = oci.random_bytes(512 * 1024)
    with httpx.Client(base_url=https_serve.url, verify=https_serve.verifying(), timeout=30) as client:
        oci.push_blob(client, "tls/direct", data)
        answer = client.get(f"/v2/tls/direct/blobs/{oci.sha256(data)}")
    assert answer.status_code == 307, answer.text
    location = httpx.URL(answer.headers["Location"])
    assert location.scheme == "https" and location.host == "127.0.0.1" and location.port != https_serve.port
    fetched = httpx.get(location, verify=https_serve.verifying(), timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == data


@pytest.mark.clients
def test_skopeo_round_trip_over_https_leaves_no_tls_warnings(https_serve: HttpsServe, tmp_path: Path) -> None:
    """skopeo verifies the registry's certificate (and the direct-read server's, the same one)
    against the CA in its cert dir; its blob GETs end at the direct-read server, whose TLS
    connections then close without asyncio's "returning true from eof_received() has no effect
    when using ssl" warning (the server kept half-closed connections open over TLS too, one
    warning per connection)."""
    skopeo = require_binary("skopeo", install_hint="apt-get install skopeo")
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(https_serve.ca.cert.read_bytes())
    manifest = oci.image(layers=2, layer_size=64 * 1024)
    source = oci.write_layout(tmp_path / "src", {"v1": manifest})
    target = f"docker://127.0.0.1:{https_serve.port}/tls/skopeo:v1"
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    (tmp_path / "auth.json").write_text("{}")
    for args in (("--dest-cert-dir", str(certs), f"oci:{source}:v1", target),
                 ("--src-cert-dir", str(certs), target, f"oci:{tmp_path / 'pulled'}:v1")):
        result = subprocess.run([skopeo, "--insecure-policy", "copy", "--preserve-digests", *args], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
    pulled = oci.Layout(tmp_path / "pulled")
    assert pulled.descriptor_for("v1")["digest"] == manifest.digest
    for blob in manifest.all_blobs():
        assert pulled.blob(blob.digest) == blob.data
    assert not https_serve.process.wait_for_output("eof_received", timeout=2), https_serve.process.log()
