"""`python -m services.blob` as a real child process, configured through LADING_* variables.

Each child runs in a session of its own and is stopped by its pid (SIGTERM, then SIGKILL of its
own process group after a timeout); nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without LADING_* settings (a developer's shell must not leak in), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADING_") or k.startswith("LADING_TEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class BlobServiceProcess:
    """One blob-service process; `target` is the gRPC address clients dial."""

    def __init__(self, name: str, *, listen: str, env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.target = listen
        self.log_path = workdir / f"{name}.log"
        self._env = child_env({"LADING_BLOB__LISTEN": listen, **env})
        self._workdir = workdir
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> BlobServiceProcess:
        self._workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "services.blob"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env, cwd=self._workdir, start_new_session=True,
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no output)"

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def wait_serving(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Waits until grpc.health.v1 reports SERVING for the blob service."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.poll()} before serving:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service="lading.blob.v1.BlobService"), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as error:
                    last = f"{error.code()}"
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not SERVING within {timeout:.0f}s (last: {last}):\n{self.log()}")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, then SIGKILL of its process group after `timeout`; returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        return self._popen.returncode

    def run_to_exit(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """For processes expected to exit by themselves (bad settings); kills them on timeout."""
        assert self._popen is not None
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
