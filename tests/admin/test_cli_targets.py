"""How the operator commands find the planes, and what they do when one cannot be reached, against
a real `lading serve` (its metadata plane on TCP, so only the record it writes in its data folder,
`run/serve.json`, tells where it is) and commands run from another folder."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import oci
from tests.support.grpc_tokens import write_role_tokens
from tests.support.stack import Stack, child_env, free_port, lading_command


@dataclass(frozen=True)
class Running:
    stack: Stack
    metadata: str  # the metadata plane's gRPC target (TCP)
    blob: str  # the blob plane's (its default unix socket)
    elsewhere: Path  # a folder without a ./data of its own
    image: oci.Manifest


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("targets")
    metadata = f"127.0.0.1:{free_port()}"
    # A plane on TCP identifies its callers: the gateway and the commands present role tokens.
    tokens = write_role_tokens(root / "tokens")
    _OPERATOR_ENV.update(tokens.operator_env())
    env = {"LADING_METADATA__LISTEN": metadata, **tokens.plane_env(), **tokens.gateway_env()}
    with Stack(root / "data", env=env) as stack:
        image = oci.image(layers=2)
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            oci.push(client, "targets/app", image, "v1")
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        yield Running(stack, metadata, f"unix:{stack.data_dir / 'run' / 'blob.sock'}", elsewhere, image)


# The operator's token for the commands, written by the `running` fixture.
_OPERATOR_ENV: dict[str, str] = {}


def lading(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lading_command(*args), env=child_env({**_OPERATOR_ENV, **env}), cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def exit_status(stack: Stack, within_seconds: float) -> int | None:
    """The exit status of `stack`'s process once it exits by itself (None if it is still running)."""
    deadline = time.monotonic() + within_seconds
    while stack.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return stack.process.poll()


def test_lading_serve_records_where_its_planes_are(running: Running) -> None:
    record = json.loads((running.stack.data_dir / "run" / "serve.json").read_text())
    assert record["metadata_target"] == running.metadata and record["blob_target"] == running.blob
    assert record["url"] == running.stack.base_url


def test_commands_find_the_serve_of_their_data_folder_from_any_folder(running: Running) -> None:
    data = str(running.stack.data_dir)
    here = running.elsewhere
    for args, env in (
        (("--data-dir", data, "repo", "list"), {}),  # global flag before the subcommand
        (("repo", "list", "--data-dir", data), {}),  # or after it
        (("tag", "list", "targets/app"), {"LADING_DATA_DIR": data}),
        (("--metadata", running.metadata, "tag", "list", "targets/app"), {}),
    ):
        done = lading(here, *args, **env)
        assert done.returncode == 0, (args, done.stderr)
        assert "targets/app" in done.stdout or running.image.digest in done.stdout, (args, done.stdout)
    for args, env in ((("--data-dir", data, "check"), {}),
                      (("--metadata", running.metadata, "--blob", running.blob, "check"), {}),
                      (("check",), {"LADING_DATA_DIR": data})):
        done = lading(here, *args, **env)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.startswith("checked 3 blobs: 0 missing"), (args, done.stdout)
    for args in (("--data-dir", data, "user", "list"), ("events", "list", "--data-dir", data),
                 ("--data-dir", data, "gc", "stats"), ("--data-dir", data, "maintenance")):
        done = lading(here, *args)
        assert done.returncode == 0, (args, done.stderr)
    # From the folder that holds ./data, no flag is needed.
    assert lading(running.stack.data_dir.parent, "repo", "list").returncode == 0


def test_a_blob_plane_that_cannot_be_reached_is_an_error_not_missing_data(running: Running) -> None:
    # What the issue saw: only --metadata given, from another folder.
    for args in (("check",), ("gc", "--dry-run"), ("gc",)):
        done = lading(running.elsewhere, *args, "--metadata", running.metadata)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "missing" not in done.stdout + done.stderr
        expected = f"unix:{running.elsewhere / 'data' / 'run' / 'blob.sock'}"
        assert f"cannot reach the blob plane at {expected}: no such socket file" in done.stderr, done.stderr
        assert "./data in the current folder: neither --data-dir nor LADING_DATA_DIR is set" in done.stderr
        assert "--data-dir DIR" in done.stderr and "--blob TARGET or LADING_GC__BLOB_TARGET" in done.stderr
        assert done.stdout == ""
    # Each origin is named.
    closed = f"127.0.0.1:{free_port()}"
    by_setting = lading(running.elsewhere, "check", "--metadata", running.metadata, LADING_GC__BLOB_TARGET=closed)
    assert by_setting.returncode == 2
    assert f"cannot reach the blob plane at {closed}" in by_setting.stderr
    assert "The target is the setting gc.blob_target (LADING_GC__BLOB_TARGET" in by_setting.stderr
    by_flag = lading(running.elsewhere, "check", "--metadata", running.metadata, "--blob", "unix:/nonexistent.sock")
    assert by_flag.returncode == 2 and "The target is the value of --blob." in by_flag.stderr


def test_a_blob_plane_that_fails_during_the_check_is_not_missing_data(running: Running) -> None:
    # A live gRPC server that is not a blob plane (the metadata plane) answers every StatBlob
    # with an error that says nothing about the blob.
    done = lading(running.elsewhere, "check", "--metadata", running.metadata, "--blob", running.metadata)
    assert done.returncode == 2, done.stderr
    assert "missing:" not in done.stderr and "missing;" not in done.stdout
    assert f"the blob plane at {running.metadata} (the value of --blob) failed:" in done.stderr
    assert "the check stopped after 0 blob(s), 0 of them missing" in done.stderr


def test_every_operator_command_reports_an_unreachable_metadata_plane(running: Running) -> None:
    # One per way a command reaches the planes (services/cli_accounts.py, cli_events.py, cli_admin.py
    # with the metadata plane alone and with both); all go through cli_channels.with_planes.
    commands = [("user", "delete", "x"), ("events", "list"), ("repo", "list"), ("gc", "stats"), ("check",)]
    started = [(args, subprocess.Popen(lading_command(*args), env=child_env(), cwd=running.elsewhere, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)) for args in commands]
    for args, process in started:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (args, out, err)
        assert f"cannot reach the metadata plane at unix:{running.elsewhere / 'data' / 'run' / 'metadata.sock'}" \
               in err, (args, err)


def test_a_second_serve_on_the_same_data_folder_is_refused(running: Running) -> None:
    second = Stack(running.stack.data_dir, name="second-serve")
    second.process.start()
    try:
        code = exit_status(second, within_seconds=30)
    finally:
        second.stop()
    assert code == 2, second.log()
    assert f"{running.metadata} (the metadata plane's gRPC address)" in second.log() or \
        "(the blob plane's gRPC address): another process is serving on that socket" in second.log()
    assert "Lading is serving" not in second.log()
    # The first one is untouched, its record too.
    assert httpx.get(f"{running.stack.base_url}/v2/", timeout=10).status_code == 200
    assert lading(running.elsewhere, "--data-dir", str(running.stack.data_dir), "repo", "list").returncode == 0
