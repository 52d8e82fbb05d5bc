"""end-1 (GET /v2/), the error envelope, and the `lading serve` process contract."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Profile, unique_repo
from tests.support.oci import assert_error, error_codes, sha256
from tests.support.stack import Stack


def test_v2_base_answers_200_with_api_version_header(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_errors_use_the_oci_envelope(client: httpx.Client) -> None:
    response = client.get(f"/v2/{unique_repo()}/blobs/{sha256(b'nothing here')}")
    assert_error(response, 404, "BLOB_UNKNOWN", "NAME_UNKNOWN")
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errors"}
    for error in body["errors"]:
        assert set(error) <= {"code", "message", "detail"}
        assert error["message"], "the message should say what went wrong"
    assert error_codes(response)


def test_unknown_manifest_is_404_manifest_unknown(client: httpx.Client) -> None:
    assert_error(client.get(f"/v2/{unique_repo()}/manifests/latest"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert_error(client.head(f"/v2/{unique_repo()}/manifests/latest"), 404)


def test_serve_prints_its_address_and_stops_every_child_on_sigterm(
    profile: Profile, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with profile.environment() as env:
        stack = Stack(tmp_path_factory.mktemp("lifecycle") / "data", env=env, name="lifecycle")
        stack.start()
        try:
            # The banner may come a moment after the gateway first answers.
            assert stack.process.wait_for_output(f"Lading is serving on {stack.base_url}"), stack.log()
            children = stack.process.children()
            # The metadata plane runs in `lading serve` itself; blob and gateway are its children.
            names = sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in children)
            assert names == ["lading-blob", "lading-gateway"], f"expected blob and gateway children, got {names}"
            # The planes keep their state where --data-dir says.
            assert (stack.data_dir / "run").is_dir()
            if not env:
                assert (stack.data_dir / "registry.db").is_file()
        finally:
            code = stack.stop()
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit code {code}\n{stack.log()}"
        assert stack.process.leftover_pids == [], (
            f"children outlived `lading serve`: {stack.process.leftover_pids}\n{stack.log()}")
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"child {pid} still running"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
