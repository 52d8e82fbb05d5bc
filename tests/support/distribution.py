"""CNCF Distribution (`docker-registry`, Debian package of that name) as a real upstream registry.

`Distribution` runs `docker-registry serve` on a free 127.0.0.1 port with filesystem storage of
its own, optionally with htpasswd Basic auth. Its access log (one Apache-style line per request)
lets tests count the requests it answered. Stopped (or SIGKILLed) by pid; restartable on the
same port and storage. As a context manager: started on entry, stopped on exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.clients import require_binary
from tests.support.stack import free_port


class Distribution:
    def __init__(self, root: Path, *, htpasswd: Path | None = None) -> None:
        self.binary = require_binary("docker-registry", install_hint="apt-get install -y docker-registry")
        self.root = root
        self.port = free_port()
        self.storage = root / "storage"
        self.log_path = root / "registry.log"
        auth = ""
        if htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: upstream\n    path: {htpasswd}\n"
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}"
        )
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Distribution:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._popen = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if self._popen.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 20 s")

    def __enter__(self) -> Distribution:
        try:
            return self.start()
        except BaseException:
            self.kill()  # started but never answered: not left running
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._popen is None or self._popen.poll() is not None:
            return
        os.kill(self._popen.pid, sig)
        try:
            self._popen.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self._popen.pid, signal.SIGKILL)
            self._popen.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def requests(self, method: str, path: str) -> int:
        """How many `method path` requests the access log shows so far."""
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(rf'"{method} {re.escape(path)} HTTP/1\.1" ', text))

    def blob_file(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"
