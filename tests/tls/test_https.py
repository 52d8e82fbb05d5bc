"""The gateway over HTTPS: serves the configured certificate and swaps it without a restart, on
SIGHUP and when the files change, keeping the old one when the new files are unusable."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.stack import LadingProcess, free_port, lading_command
from tests.tls.pki import KeyPair, Pki

WAIT_SECONDS = 20.0


@dataclass
class HttpsGateway:
    process: LadingProcess
    port: int
    served: KeyPair  # the paths the gateway reads

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def install(self, pair: KeyPair) -> None:
        """Replaces the served files the way certificate renewers do: write aside, then rename."""
        for source, target in ((pair.cert, self.served.cert), (pair.key, self.served.key)):
            aside = target.with_suffix(target.suffix + ".new")
            shutil.copyfile(source, aside)
            os.replace(aside, target)


def trusting(*pairs: KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cadata="".join(pair.cert.read_text() for pair in pairs))
    return context


def peer_fingerprint(port: int, context: ssl.SSLContext) -> str:
    """SHA-256 of the certificate a NEW connection to 127.0.0.1:`port` is served."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def wait_for_fingerprint(gateway: HttpsGateway, expected: str, context: ssl.SSLContext) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    seen = None
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            pytest.fail(gateway.process.describe_failure("exited"))
        try:
            seen = peer_fingerprint(gateway.port, context)
        except OSError as error:
            seen = repr(error)
        if seen == expected:
            return
        time.sleep(0.1)
    pytest.fail(f"new connections never got certificate {expected} (last: {seen}):\n{gateway.process.log()}")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def start_gateway(tmp_path: Path, first: KeyPair, *, reload_check_seconds: float) -> HttpsGateway:
    served = KeyPair(tmp_path / "served" / "tls.crt", tmp_path / "served" / "tls.key")
    served.cert.parent.mkdir()
    shutil.copyfile(first.cert, served.cert)
    shutil.copyfile(first.key, served.key)
    port = free_port()
    process = LadingProcess(
        "gateway-https",
        lading_command("gateway"),
        log_dir=tmp_path / "logs",
        env={
            "LADING_GATEWAY__HOST": "127.0.0.1",
            "LADING_GATEWAY__PORT": str(port),
            # No planes: /healthz and the TLS layer do not need them.
            "LADING_GATEWAY__METADATA_TARGET": f"unix:{tmp_path}/none-metadata.sock",
            "LADING_GATEWAY__BLOB_TARGET": f"unix:{tmp_path}/none-blob.sock",
            "LADING_GATEWAY__TLS__CERT_FILE": str(served.cert),
            "LADING_GATEWAY__TLS__KEY_FILE": str(served.key),
            "LADING_GATEWAY__TLS__RELOAD_CHECK_SECONDS": str(reload_check_seconds),
        },
    ).start()
    gateway = HttpsGateway(process, port, served)
    try:
        wait_for_fingerprint(gateway, first.fingerprint(), trusting(first))
    except BaseException:
        process.stop()
        raise
    return gateway


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator:
    started: list[HttpsGateway] = []

    def make(first: KeyPair, *, reload_check_seconds: float) -> HttpsGateway:
        gateway = start_gateway(tmp_path, first, reload_check_seconds=reload_check_seconds)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.process.stop()


def test_serves_https_with_the_configured_certificate(pki: Pki, make_gateway) -> None:
    one = pki.self_signed("one")
    gateway = make_gateway(one, reload_check_seconds=0)
    response = httpx.get(f"{gateway.url}/v2/", verify=trusting(one))
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/v2/", verify=trusting(pki.self_signed("stranger")))


def test_sighup_swaps_the_certificate_for_new_connections(pki: Pki, make_gateway) -> None:
    one, two = pki.self_signed("one"), pki.self_signed("two")
    # Checks only on SIGHUP: the file change alone must not be what swaps it here.
    gateway = make_gateway(one, reload_check_seconds=0)
    with httpx.Client(verify=trusting(one)) as old_connection:
        assert old_connection.get(f"{gateway.url}/healthz").status_code == 200
        gateway.install(two)
        assert peer_fingerprint(gateway.port, trusting(one, two)) == one.fingerprint()
        os.kill(gateway.process.pid, signal.SIGHUP)
        wait_for_fingerprint(gateway, two.fingerprint(), trusting(one, two))
        # The connection opened before the swap keeps working with the certificate it got.
        assert old_connection.get(f"{gateway.url}/healthz").status_code == 200
    assert httpx.get(f"{gateway.url}/v2/", verify=trusting(two)).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/v2/", verify=trusting(one))
    assert gateway.process.poll() is None, "SIGHUP must not stop the gateway"


def test_changed_files_are_picked_up_without_a_signal(pki: Pki, make_gateway) -> None:
    one, two = pki.self_signed("one"), pki.self_signed("two")
    gateway = make_gateway(one, reload_check_seconds=0.2)
    gateway.install(two)
    wait_for_fingerprint(gateway, two.fingerprint(), trusting(one, two))
    assert httpx.get(f"{gateway.url}/v2/", verify=trusting(two)).status_code == 200


def test_unusable_new_files_keep_the_current_certificate(pki: Pki, make_gateway) -> None:
    one, two, three = pki.self_signed("one"), pki.self_signed("two"), pki.self_signed("three")
    gateway = make_gateway(one, reload_check_seconds=0)
    # A certificate with somebody else's key, as a renewal caught half-way would leave it.
    mismatched = KeyPair(two.cert, three.key)
    gateway.install(mismatched)
    os.kill(gateway.process.pid, signal.SIGHUP)
    assert gateway.process.wait_for_output("could not reload the TLS certificate", timeout=WAIT_SECONDS), (
        gateway.process.log()
    )
    assert peer_fingerprint(gateway.port, trusting(one, two)) == one.fingerprint()
    assert httpx.get(f"{gateway.url}/v2/", verify=trusting(one)).status_code == 200
    # Once the files are whole again, the next SIGHUP takes them.
    gateway.install(two)
    os.kill(gateway.process.pid, signal.SIGHUP)
    wait_for_fingerprint(gateway, two.fingerprint(), trusting(one, two))
