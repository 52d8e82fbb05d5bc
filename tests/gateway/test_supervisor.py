"""`lading serve`: how settings reach the planes, start order, stop order, and plane deaths.

The planes are stand-ins (tests/gateway/fake_plane.py) that speak the same health protocols: the
blob plane and the gateway as child processes, the metadata plane inside the supervisor, as the
real ones run. These tests pin the supervisor's own behaviour; tests/integration runs it with the
real planes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from services.cli import _parser, main
from services.common.settings import Settings
from services.supervisor import ServePlan, Supervisor, plan_serve, settings_overrides
from tests.gateway.fake_plane import in_process
from tests.support.stack import LadingProcess, free_port, lading_command

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
        # Cold fetches on S3 spool under the data folder (services/blob/fetch_spool.py).
        "LADING_BLOB__FETCH_SPOOL__FOLDER": f"{tmp_path}/fetch-spool",
        # Events name the node as Distribution does: host name and the registry's port.
        "LADING_EVENTS__SOURCE_ADDR": f"{socket.gethostname()}:5123",
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

    # On S3 it serves cold fetches of the pull-through cache only (from their spool files; stored
    # blobs redirect to S3's presigned URLs), which needs those URLs and the spool.
    s3 = Settings()
    s3.blob.backend = "s3"
    assert plan_serve(s3, {}, data_dir=str(tmp_path)).env["LADING_BLOB__DIRECT_READS__ENABLED"] == "true"
    s3.blob.s3.redirect_reads = False
    assert plan_serve(s3, {}, data_dir=str(tmp_path)).env["LADING_BLOB__DIRECT_READS__ENABLED"] == "false"
    s3.blob.s3.redirect_reads = True
    s3.blob.fetch_spool.budget_bytes = 0
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


def test_each_plane_gets_its_own_stop_bound_and_the_margin_before_it_is_killed(tmp_path: Path) -> None:
    """`lading serve` waited a fixed 20 s for every plane: a gateway whose own stop (drain + grace
    + cleanup) is longer was killed before it could kill its workers itself."""
    settings = Settings(gateway={"shutdown_drain_seconds": 5, "shutdown_grace_seconds": 30, "shutdown_cleanup_seconds": 7},
                        blob={"shutdown_grace_seconds": 25, "shutdown_cleanup_seconds": 4},
                        serve={"stop_margin_seconds": 3})
    plan = plan_serve(settings, {}, data_dir=str(tmp_path))
    assert plan.stop_within_seconds == {"gateway": 5 + 30 + 7 + 3, "blob": 25 + 4 + 3}
    # What each plane itself is bounded by.
    assert (settings.gateway.stop_bound_seconds, settings.blob.stop_bound_seconds) == (5 + 30 + 7, 25 + 4)


def test_cli_commands() -> None:
    parser = _parser()
    args = parser.parse_args(["serve", "--data-dir", "/x", "--port", "5001"])
    assert (args.command, args.data_dir, args.port, args.host) == ("serve", "/x", 5001, None)
    for command in ("gateway", "metadata", "blob", "migrate"):
        assert parser.parse_args([command]).command == command
    with pytest.raises(SystemExit):
        parser.parse_args([])



def _fake_python(tmp_path: Path) -> str:
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_PLANE}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: Path) -> ServePlan:
    monkeypatch.setenv("FAKE_PLANE_LOG", str(log))
    return plan_serve(Settings(), {}, data_dir=str(tmp_path / "data"), host="127.0.0.1", port=free_port())


def _supervisor(plan: ServePlan, tmp_path: Path, out: io.StringIO) -> Supervisor:
    """Fake blob and gateway children, a fake metadata plane in the test's process."""
    return Supervisor(plan, python=_fake_python(tmp_path), out=out,
                      metadata=in_process("metadata", {**os.environ, **plan.env}))


async def test_serve_starts_in_order_and_stops_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    out = io.StringIO()
    supervisor = _supervisor(plan, tmp_path, out)
    run = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(60):
        while "serving" not in out.getvalue():
            assert not run.done(), run.result()
            await asyncio.sleep(0.05)
    assert out.getvalue() == f"Lading is serving on http://127.0.0.1:{plan.port}\n"
    started = log.read_text().split("\n")
    # All three start at once, but the gateway serves only once both services are SERVING.
    assert started[-2] == "start gateway" and set(started[:-2]) == {"start metadata", "start blob"}
    assert {child.name for child in supervisor.children} == {"blob", "gateway"}
    supervisor.request_stop()  # what SIGINT/SIGTERM do
    assert await asyncio.wait_for(run, 60) == 0
    stops = [line for line in log.read_text().splitlines() if line.startswith("stop")]
    assert stops == ["stop gateway", "stop blob", "stop metadata"]
    assert all(child.returncode == 0 for child in supervisor.children)


async def test_a_dying_plane_stops_the_others_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    monkeypatch.setenv("FAKE_PLANE_DIE", "blob")
    supervisor = _supervisor(plan, tmp_path, io.StringIO())
    assert await asyncio.wait_for(supervisor.run(), 60) == 1
    assert all(child.returncode is not None for child in supervisor.children)
    lines = log.read_text().splitlines()
    assert "die blob" in lines and "stop metadata" in lines


async def test_a_metadata_plane_that_cannot_start_stops_the_children_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    supervisor = Supervisor(plan, python=_fake_python(tmp_path), out=io.StringIO(),
                            metadata=in_process("metadata", {**os.environ, **plan.env, "FAKE_PLANE_FAIL": "metadata"}))
    assert await asyncio.wait_for(supervisor.run(), 60) == 1
    assert "the metadata plane exited unexpectedly with status 3" in capsys.readouterr().err
    lines = log.read_text().splitlines()
    # The gateway never served: its gate stayed shut (it is stopped there, or before it got there).
    assert "fail metadata" in lines and "start gateway" not in lines
    assert all(child.returncode in (0, -signal.SIGTERM) for child in supervisor.children)


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
plan = plan_serve(Settings(), {{}}, data_dir={str(tmp_path / "data")!r}, host="127.0.0.1", port={free_port()})
supervisor = Supervisor(plan, python={str(broken)!r}, out=io.StringIO())
code = asyncio.run(asyncio.wait_for(supervisor.run(), 60))
print(json.dumps({{"code": code, "children": [c.returncode for c in supervisor.children]}}))
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


def test_global_flags_work_before_and_after_the_subcommand() -> None:
    parser = _parser()
    for argv in (["--metadata", "unix:/m.sock", "--blob", "unix:/b.sock", "--data-dir", "/d", "check"],
                 ["check", "--metadata", "unix:/m.sock", "--blob", "unix:/b.sock", "--data-dir", "/d"],
                 ["--data-dir", "/d", "check", "--metadata", "unix:/m.sock", "--blob", "unix:/b.sock"]):
        args = parser.parse_args(argv)
        assert (args.command, args.metadata, args.blob, args.data_dir) == ("check", "unix:/m.sock", "unix:/b.sock",
                                                                           "/d"), argv
    assert parser.parse_args(["--metadata", "X", "user", "list"]).metadata == "X"
    assert parser.parse_args(["events", "list", "--metadata", "X"]).metadata == "X"
    assert parser.parse_args(["--data-dir", "/d", "serve"]).data_dir == "/d"
    assert parser.parse_args(["serve"]).data_dir is None


@pytest.mark.parametrize("argv", [["--data-dir", "/d", "gateway"], ["--metadata", "unix:/m.sock", "metadata"],
                                  ["--blob", "unix:/b.sock", "blob"], ["--blob", "unix:/b.sock", "serve"]])
def test_global_flags_a_command_cannot_use_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"lading {argv[-1]}: ")


def _foreign_listener(port: int) -> socket.socket:
    """Another process's server on the port, as far as `lading serve` can tell."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


async def test_a_port_another_process_holds_stops_serve_before_any_plane_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tmp_path, monkeypatch, tmp_path / "planes.log")
    out = io.StringIO()
    supervisor = _supervisor(plan, tmp_path, out)
    with _foreign_listener(plan.port):
        assert await asyncio.wait_for(supervisor.run(), 60) == 2
    assert supervisor.children == [] and not (tmp_path / "planes.log").exists()
    assert out.getvalue() == ""
    assert capsys.readouterr().err == (
        f"lading serve: cannot listen on 127.0.0.1:{plan.port} (the registry port): the address is already in use "
        "(another process holds the port); stop that process, or choose another port with --port or "
        "LADING_GATEWAY__PORT (gateway.port)\n")
    assert not (plan.data_dir / "run").exists()


async def test_the_gateway_child_serves_the_port_the_supervisor_bound_and_the_run_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path, monkeypatch, tmp_path / "planes.log")
    out = io.StringIO()
    supervisor = _supervisor(plan, tmp_path, out)
    run = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(60):
        while "serving" not in out.getvalue():
            assert not run.done(), run.result()
            await asyncio.sleep(0.05)
    record = json.loads((plan.data_dir / "run" / "serve.json").read_text())
    assert (plan.data_dir / "run" / "serve.json").stat().st_mode & 0o777 == 0o600
    assert record == {"pid": os.getpid(), "metadata_target": plan.metadata_target, "blob_target": plan.blob_target,
                      "url": f"http://127.0.0.1:{plan.port}"}
    # The port is the gateway child's alone: the supervisor let go of its copy.
    gateway = next(child for child in supervisor.children if child.name == "gateway")
    assert _listening_inodes(gateway.pid, plan.port) and not _listening_inodes(os.getpid(), plan.port)
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 60) == 0
    assert not (plan.data_dir / "run" / "serve.json").exists()


def _listening_inodes(pid: int, port: int) -> set[str]:
    """Inodes of TCP sockets listening on `port` that process `pid` holds open (Linux /proc)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(fields[9])
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in listening:
                held.add(target[8:-1])
    return held


def test_lading_serve_refuses_a_port_another_registry_answers_on(tmp_path: Path) -> None:
    # Another registry on the port, answering 200 to GET /v2/ as a healthy Lading gateway would.
    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = other.server_address[1]
    data_dir = tmp_path / "data"
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(data_dir), "--port", str(port)),
                          log_dir=tmp_path)
    try:
        serve.start()
        deadline = time.monotonic() + 60
        while serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        code = serve.poll()
    finally:
        serve.stop()
        other.shutdown()
        other.server_close()
    output = serve.log()
    assert code == 2, output
    assert "Lading is serving" not in output
    assert f"cannot listen on 127.0.0.1:{port} (the registry port): the address is already in use" in output
    assert "--port or LADING_GATEWAY__PORT" in output
    # Stopped before any plane started: no database, no sockets.
    assert not (data_dir / "registry.db").exists() and not (data_dir / "run").exists()


async def test_the_gateway_answers_only_once_both_planes_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three planes start at once (their imports overlap); the gateway child waits at its
    start gate, so a client that connects early gets its answer only once the planes are up."""
    log = tmp_path / "planes.log"
    plan = _plan(tmp_path, monkeypatch, log)
    release = asyncio.Event()
    fake_metadata = in_process("metadata", {**os.environ, **plan.env})

    async def slow_metadata(control) -> int:  # type: ignore[no-untyped-def]
        await release.wait()
        return await fake_metadata(control)

    out = io.StringIO()
    supervisor = Supervisor(plan, python=_fake_python(tmp_path), out=out, metadata=slow_metadata)
    run = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(60):
        while not (log.exists() and "start blob" in log.read_text()):
            assert not run.done(), run.result()
            await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
    writer.write(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{plan.port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = asyncio.ensure_future(reader.readline())
    await asyncio.sleep(1.0)  # the gateway child is up and waiting; the metadata plane is not
    assert not answer.done() and "start gateway" not in log.read_text()
    release.set()
    assert (await asyncio.wait_for(answer, 30)).startswith(b"HTTP/1.1 200")
    writer.close()
    async with asyncio.timeout(60):
        while "serving" not in out.getvalue():  # noqa: ASYNC110 - the supervisor prints; nothing to await
            await asyncio.sleep(0.05)
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 60) == 0


def test_plan_keeps_the_limits_both_planes_enforce_equal(tmp_path: Path) -> None:
    for plane, other in (("GATEWAY", "METADATA"), ("METADATA", "GATEWAY")):
        environ = {f"LADING_{plane}__MAX_MANIFEST_BYTES": "8388608", f"LADING_{plane}__MAX_PAGE_SIZE": "500"}
        env = plan_serve(Settings(**settings_overrides(environ)), environ, data_dir=str(tmp_path)).env
        assert env[f"LADING_{other}__MAX_MANIFEST_BYTES"] == "8388608"
        assert env[f"LADING_{other}__MAX_PAGE_SIZE"] == "500"
        assert f"LADING_{plane}__MAX_MANIFEST_BYTES" not in env and f"LADING_{other}__DEFAULT_PAGE_SIZE" not in env
    both = {"LADING_GATEWAY__MAX_PAGE_SIZE": "500", "LADING_METADATA__MAX_PAGE_SIZE": "700"}
    env = plan_serve(Settings(**settings_overrides(both)), both, data_dir=str(tmp_path)).env
    assert not {"LADING_GATEWAY__MAX_PAGE_SIZE", "LADING_METADATA__MAX_PAGE_SIZE"} & set(env)


def test_settings_overrides_nest_like_the_environment() -> None:
    assert settings_overrides({"LADING_DATA_DIR": "/d", "LADING_BLOB__FILESYSTEM__ROOT": "/b",
                               "LADING_BLOB__LISTEN": "unix:/s"}) == {
        "data_dir": "/d", "blob": {"filesystem": {"root": "/b"}, "listen": "unix:/s"}}


def test_the_gateways_start_gate() -> None:
    from gateway.main import wait_for_start_gate

    assert wait_for_start_gate(None)
    opened, writer = os.pipe()
    os.write(writer, b"1")
    os.close(writer)
    assert wait_for_start_gate(opened)
    closed, writer = os.pipe()
    os.close(writer)
    assert not wait_for_start_gate(closed)  # whoever held it gave up on this start


def test_the_forked_planes_are_apart_and_leave_with_the_supervisor(tmp_path: Path) -> None:
    """`lading serve` forks its blob and gateway children: each in a process group of its own,
    named for its plane, holding no descriptor of the registry port but the gateway's, and gone
    when the supervisor dies (even by SIGKILL, which it cannot answer)."""
    port = free_port()
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
                          log_dir=tmp_path)
    try:
        serve.start()
        assert serve.wait_for_output("Lading is serving", timeout=60), serve.log()
        children = {Path(f"/proc/{pid}/comm").read_text().strip(): pid for pid in serve.children()}
        assert sorted(children) == ["lading-blob", "lading-gateway"], children
        groups = {os.getpgid(pid) for pid in [serve.pid, *children.values()]}
        assert len(groups) == 3, "each plane in a process group of its own"
        assert _listening_inodes(children["lading-gateway"], port)
        assert not _listening_inodes(children["lading-blob"], port) and not _listening_inodes(serve.pid, port)
        os.kill(serve.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children.values()), serve.log()
    finally:
        serve.stop()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_gateway_killed_by_lading_serve_leaves_no_worker_behind(tmp_path: Path) -> None:
    """With `gateway.workers` > 1 the gateway is uvicorn's supervisor and its workers hold the
    registry port. A gateway that does not stop in time (frozen here with SIGSTOP, so it never
    hears its SIGTERM) is killed by `lading serve` at its bound plus the margin; the kill reached
    the gateway's pid only and left its workers running, orphaned, on the port. Now it reaches its
    whole process group."""
    port = free_port()
    env = {"LADING_GATEWAY__WORKERS": "2",
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "0.5",
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": "0.5",
           "LADING_SERVE__STOP_MARGIN_SECONDS": "1"}
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
                          log_dir=tmp_path, env=env)
    workers: list[int] = []
    gateway = None
    try:
        gateway = _serving_gateway(serve)
        guard = time.monotonic() + 60
        while len(workers := _gateway_workers(gateway)) < 2:
            assert time.monotonic() < guard, f"no two gateway workers\n{serve.log()}"
            time.sleep(0.05)
        os.kill(gateway, signal.SIGSTOP)
        os.kill(serve.pid, signal.SIGTERM)
        guard = time.monotonic() + 60
        while serve.poll() is None and time.monotonic() < guard:
            time.sleep(0.05)
        assert serve.poll() is not None, f"lading serve still runs\n{serve.log()}"
        assert "the gateway plane was still running" in serve.log(), serve.log()
        # SIGKILL is delivered at once; the processes take a moment to go.
        guard = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < guard:
            time.sleep(0.05)
        left = [pid for pid in workers if _alive(pid)]
        assert not left, f"gateway workers {left} outlived the killed gateway\n{serve.log()}"
    finally:
        for pid in [*workers, *([gateway] if gateway is not None else [])]:  # their own group: serve.stop() misses them
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        serve.stop()


def _serving_gateway(serve: LadingProcess) -> int:
    """Starts `lading serve`, waits until it serves, and returns its gateway plane's pid."""
    serve.start()
    assert serve.wait_for_output("Lading is serving", timeout=60), serve.log()
    return next(pid for pid in serve.children() if Path(f"/proc/{pid}/comm").read_text().strip() == "lading-gateway")


def _gateway_workers(gateway: int) -> list[int]:
    """The uvicorn workers among the gateway's children (not multiprocessing's resource tracker)."""
    workers = []
    for task in Path(f"/proc/{gateway}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for pid in task.read_text().split():
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and _alive(int(pid)):
                        workers.append(int(pid))
    return sorted(workers)



# The gateway's stop in the test below: grace and cleanup (settings), then the margin of a busy machine.
_GRACE, _CLEANUP, _MARGIN = 1.0, 1.0, 3.0


def test_a_gateway_whose_supervisor_died_stops_in_time_whatever_its_peers_do(tmp_path: Path) -> None:
    """A forked gateway told to stop by its supervisor's death (SIGKILL: the metadata plane, in the
    supervisor, goes with it) exits within drain + grace + cleanup, even when its trace collector
    takes its spans and never answers (the flush held the stop for the exporter's 10 s timeout per
    batch, up to 30 s) and a client holds an idle keep-alive connection."""
    port = free_port()
    collector = socket.socket()  # listens, never accepts: requests to it wait for an answer
    collector.bind(("127.0.0.1", 0))
    collector.listen(8)
    env = {"LADING_OBSERVABILITY__OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": str(_GRACE),
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": str(_CLEANUP)}
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
                          log_dir=tmp_path, env=env)
    keep_alive = None
    gateway = None
    try:
        gateway = _serving_gateway(serve)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(20):
                assert client.get("/v2/r/tags/list").status_code == 404  # traced
        keep_alive = socket.create_connection(("127.0.0.1", port))
        keep_alive.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        keep_alive.recv(65536)
        time.sleep(1.5)  # the span exporter's first batch (every second) waits on the collector
        killed = time.monotonic()
        os.kill(serve.pid, signal.SIGKILL)
        bound = _GRACE + _CLEANUP + _MARGIN
        while _alive(gateway) and time.monotonic() - killed < bound + 30:
            time.sleep(0.05)
        took = time.monotonic() - killed
        assert not _alive(gateway), f"the gateway still runs {took:.1f} s after its supervisor died\n{serve.log()}"
        assert took < bound, f"the gateway took {took:.1f} s to stop (bound {bound:.0f} s)\n{serve.log()}"
    finally:
        if keep_alive is not None:
            keep_alive.close()
        collector.close()
        serve.stop()
        if gateway is not None and _alive(gateway):  # its own process group: serve.stop() misses it
            os.kill(gateway, signal.SIGKILL)


def test_lading_serve_stops_in_time_when_its_trace_collector_never_answers(tmp_path: Path) -> None:
    """`lading serve` told to stop (SIGTERM) while its collector takes spans and never answers:
    every plane's last flush is bounded by `observability.otlp_timeout_seconds` (the exporter's
    default, 10 s per attempt and 30 s per flush, held the metadata and blob planes that long)."""
    port = free_port()
    collector = socket.socket()  # listens, never accepts: requests to it wait for an answer
    collector.bind(("127.0.0.1", 0))
    collector.listen(8)
    export_timeout = 1.0
    env = {"LADING_OBSERVABILITY__OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
           "LADING_OBSERVABILITY__OTLP_TIMEOUT_SECONDS": str(export_timeout),
           "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": str(_GRACE),
           "LADING_GATEWAY__SHUTDOWN_CLEANUP_SECONDS": str(_CLEANUP)}
    serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
                          log_dir=tmp_path, env=env)
    try:
        serve.start()
        assert serve.wait_for_output("Lading is serving", timeout=60), serve.log()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(20):  # spans in every plane: the gateway's, and the calls it makes
                assert client.get("/v2/r/tags/list").status_code == 404
        time.sleep(1.5)  # each plane's first batch (every second) now waits on the collector
        planes = [serve.pid, *serve.children()]
        stopping = time.monotonic()
        os.kill(serve.pid, signal.SIGTERM)
        # Each plane: its flush (export_timeout per attempt, a retry or two) after the gateway's own stop.
        bound = _GRACE + _CLEANUP + 3 * export_timeout + _MARGIN
        while any(_alive(pid) for pid in planes) and time.monotonic() - stopping < bound + 60:
            time.sleep(0.05)
        took = time.monotonic() - stopping
        assert not any(_alive(pid) for pid in planes), f"lading serve still runs {took:.1f} s after SIGTERM"
        assert took < bound, f"lading serve took {took:.1f} s to stop (bound {bound:.0f} s)\n{serve.log()}"
    finally:
        collector.close()
        serve.stop()
