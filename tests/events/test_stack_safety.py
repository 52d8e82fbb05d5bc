"""Webhook safety end to end: `lading serve` with an endpoint whose URL carries credentials and a
token, real HTTP receivers on 127.0.0.1 (one redirecting to another origin), the planes' real
logging, and `lading events list`."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.events.receiver import Receiver
from tests.support import oci
from tests.support.stack import LadingProcess, Stack, child_env, free_port, lading_command

USER, PASSWORD, TOKEN = "hookuser", "hook-pa55", "t0ken-in-query"


def _env(url: str, **endpoint: object) -> dict[str, str]:
    hook = {"name": "hook", "url": url, "headers": {"X-Signature": "sig"}, "timeout_seconds": 2,
            "max_attempts": 1000, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.2, **endpoint}
    return {"LADING_EVENTS__ENDPOINTS": json.dumps([hook]), "LADING_EVENTS__DELIVERY_INTERVAL_SECONDS": "0.05"}


def _until(condition: Callable[[], bool], what: str, within_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + within_seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_credentials_stay_secret_and_redirects_are_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    other_origin = Receiver().start()
    receiver.status = 307
    receiver.location = f"http://127.0.0.1:{other_origin.port}/collect"
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{receiver.port}/events?token={TOKEN}"
    stack = Stack(tmp_path / "data", env=_env(url)).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            oci.push(client, "hooks/app", oci.image(layers=1), "v1")
        _until(lambda: receiver.attempts >= 3, "three delivery attempts")
        assert other_origin.attempts == 0
        listed = subprocess.run(lading_command("--data-dir", str(stack.data_dir), "events", "list"),
                                env=child_env(), capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert "HTTP 307 redirect to http://127.0.0.1" in listed.stdout and "not followed" in listed.stdout
        _until(lambda: "not followed" in stack.process.log(tail=1_000_000), "the failed attempts in the log")
        assert f"delivery to hook (http://***@127.0.0.1:{receiver.port}/events?token=***)" in stack.process.log(tail=1_000_000)

        receiver.status = 200
        events = receiver.wait_for(3)
        assert [e["action"] for e in events] == ["push"] * 3
        path, headers = receiver.requests[-1]
        assert path == f"/events?token={TOKEN}"
        assert headers["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert headers["x-signature"] == "sig"
    finally:
        stack.stop()
        other_origin.stop()
    everything = stack.process.log(tail=10_000_000) + listed.stdout + listed.stderr
    for secret in (PASSWORD, TOKEN, f"{USER}:"):
        assert secret not in everything


def test_an_endpoint_with_two_credentials_stops_the_metadata_plane_at_start(tmp_path: Path) -> None:
    env = _env(f"http://{USER}:{PASSWORD}@127.0.0.1:9/events", headers={"Authorization": "Bearer other"})
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())),
                          log_dir=tmp_path, env=env)
    try:
        serve.start()
        _until(lambda: serve.poll() is not None, "lading serve stops", within_seconds=60)
    finally:
        serve.stop()
    output = serve.log(tail=1_000_000)
    assert serve.poll() == 1, output
    assert "cannot start: events endpoint 'hook': the url carries credentials" in output
    assert "keep one of them" in output and "the metadata plane exited unexpectedly with status 2" in output
    assert PASSWORD not in output and "Lading is serving" not in output
