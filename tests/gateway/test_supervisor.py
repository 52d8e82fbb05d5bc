"""`lading serve`: how settings reach the children, start order, stop order, and child deaths.

The planes are stand-ins (tests/gateway/fake_plane.py) that speak the same health protocols, so
these tests pin the supervisor's own behaviour; tests/integration runs it with the real planes.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import _parser
from services.common.settings import Settings
from services.supervisor import ServePlan, Supervisor, plan_serve

FAKE_PLANE = Path(__file__).with_name("fake_plane.py")


def test_plan_fills_in_the_embedded_layout(tmp_path: Path) -> None:
    plan = plan_serve(Settings(), {}, data_dir=str(tmp_path), host="0.0.0.0", port=5123)
    assert plan.env == {
        "LADING_DATA_DIR": str(tmp_path),
        "LADING_METADATA__LISTEN": f"unix:{tmp_path}/run/metadata.sock",
        "LADING_BLOB__LISTEN": f"unix:{tmp_path}/run/blob.sock",
        "LADING_GATEWAY__METADATA_TARGET": f"unix:{tmp_path}/run/metadata.sock",
        "LADING_GATEWAY__BLOB_TARGET": f"unix:{tmp_path}/run/blob.sock",
        "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/registry.db",
        "LADING_BLOB__FILESYSTEM__ROOT": f"{tmp_path}/blobs",
        "LADING_GATEWAY__HOST": "0.0.0.0",
        "LADING_GATEWAY__PORT": "5123",
        "LADING_GC__BLOB_TARGET": f"unix:{tmp_path}/run/blob.sock",
        # Blob GETs redirect to the blob plane's own file server, on the gateway's host.
        "LADING_BLOB__DIRECT_READS__ENABLED": "true",
        "LADING_BLOB__DIRECT_READS__LISTEN": "0.0.0.0:0",
    }
    assert (plan.host, plan.port) == ("0.0.0.0", 5123)
    assert plan.metadata_target == f"unix:{tmp_path}/run/metadata.sock"


def test_plan_keeps_what_the_user_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        "LADING_METADATA__DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db",
        "LADING_BLOB__LISTEN": "0.0.0.0:6001",
        "LADING_GATEWAY__PORT": "5999",
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    plan = plan_serve(Settings(), environ, data_dir=str(tmp_path))
    assert "LADING_METADATA__DATABASE_URL" not in plan.env
    assert "LADING_BLOB__LISTEN" not in plan.env
    assert "LADING_GATEWAY__PORT" not in plan.env
    # the gateway follows the user's blob address
    assert plan.env["LADING_GATEWAY__BLOB_TARGET"] == "127.0.0.1:6001"
    assert plan.blob_target == "127.0.0.1:6001"
    assert plan.port == 5999


def test_plan_direct_reads_follow_the_backend_and_the_gateway_certificate(tmp_path: Path) -> None:
    settings = Settings()
    settings.gateway.tls.cert_file = tmp_path / "chain.pem"
    plan = plan_serve(settings, {}, data_dir=str(tmp_path), host="127.0.0.1", port=5123)
    assert plan.env["LADING_BLOB__DIRECT_READS__LISTEN"] == "127.0.0.1:0"
    # The key may sit in the certificate's file: the gateway's certificate serves both.
    assert plan.env["LADING_BLOB__DIRECT_READS__CERT_FILE"] == str(tmp_path / "chain.pem")
    assert plan.env["LADING_BLOB__DIRECT_READS__KEY_FILE"] == str(tmp_path / "chain.pem")

    # S3 redirects reads itself (presigned URLs): no local files to serve.
    s3 = Settings()
    s3.blob.backend = "s3"
    assert plan_serve(s3, {}, data_dir=str(tmp_path)).env["LADING_BLOB__DIRECT_READS__ENABLED"] == "false"
    # A user who turns direct reads off keeps blob GETs streaming through the gateway.
    off = {"LADING_BLOB__DIRECT_READS__ENABLED": "false"}
    assert "LADING_BLOB__DIRECT_READS__ENABLED" not in plan_serve(Settings(), off, data_dir=str(tmp_path)).env


def test_plan_respects_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "lading.toml"
    config.write_text('data_dir = "%s"\n[blob.filesystem]\nroot = "/srv/blobs"\n' % (tmp_path / "d"))
    monkeypatch.setenv("LADING_CONFIG_FILE", str(config))
    plan = plan_serve(Settings(), {"LADING_CONFIG_FILE": str(config)})
    assert plan.data_dir == tmp_path / "d"
    assert "LADING_BLOB__FILESYSTEM__ROOT" not in plan.env
    assert plan.env["LADING_METADATA__DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'd'}/registry.db"


def test_cli_commands() -> None:
    parser = _parser()
    args = parser.parse_args(["serve", "--data-dir", "/x", "--port", "5001"])
    assert (args.command, args.data_dir, args.port, args.host) == ("serve", "/x", 5001, None)
    for command in ("gateway", "metadata", "blob", "migrate"):
        assert parser.parse_args([command]).command == command
    with pytest.raises(SystemExit):
        parser.parse_args([])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_python(tmp_path: Path) -> str:
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_PLANE}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: Path) -> ServePlan:
    monkeypatch.setenv("FAKE_PLANE_LOG", str(log))
    return plan_serve(Settings(), {}, data_dir=str(tmp_path / "data"), host="127.0.0.1", port=_free_port())


async def test_serve_starts_in_order_and_stops_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    out = io.StringIO()
    supervisor = Supervisor(plan, python=_fake_python(tmp_path), out=out)
    run = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(60):
        while "serving" not in out.getvalue():
            assert not run.done(), run.result()
            await asyncio.sleep(0.05)
    assert out.getvalue() == f"Lading is serving on http://127.0.0.1:{plan.port}\n"
    started = log.read_text().split("\n")
    assert started[-2] == "start gateway"  # the gateway only after both services were SERVING
    supervisor.request_stop()  # what SIGINT/SIGTERM do
    assert await asyncio.wait_for(run, 60) == 0
    stops = [line for line in log.read_text().splitlines() if line.startswith("stop")]
    assert stops == ["stop gateway", "stop blob", "stop metadata"]
    assert all(child.process.returncode == 0 for child in supervisor.children)


async def test_a_dying_plane_stops_the_others_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    monkeypatch.setenv("FAKE_PLANE_DIE", "blob")
    supervisor = Supervisor(plan, python=_fake_python(tmp_path), out=io.StringIO())
    assert await asyncio.wait_for(supervisor.run(), 60) == 1
    assert all(child.process.returncode is not None for child in supervisor.children)
    lines = log.read_text().splitlines()
    assert "die blob" in lines and "stop metadata" in lines


def test_a_plane_that_cannot_start_fails_the_command(tmp_path: Path) -> None:
    # Runs in a fresh interpreter: inside the test process, other tests' event loops and child
    # watchers may reap the supervisor's children first and hide their exit statuses.
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\nexit 7\n")
    broken.chmod(0o755)
    script = f"""
import asyncio, io, json
from services.common.settings import Settings
from services.supervisor import Supervisor, plan_serve
plan = plan_serve(Settings(), {{}}, data_dir={str(tmp_path / "data")!r}, host="127.0.0.1", port={_free_port()})
supervisor = Supervisor(plan, python={str(broken)!r}, out=io.StringIO())
code = asyncio.run(asyncio.wait_for(supervisor.run(), 60))
print(json.dumps({{"code": code, "children": [c.process.returncode for c in supervisor.children]}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 1
    # The first to die stops the rest: one still starting under load is SIGTERMed (-15) instead.
    assert 7 in result["children"] and set(result["children"]) <= {7, -15}
    assert "exited unexpectedly with status 7" in done.stderr
