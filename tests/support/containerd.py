"""A containerd daemon of the tests' own, and `ctr` pointed at it, the way a Kubernetes node pulls.

`Containerd` writes a config from `containerd config default` with its own root, state and gRPC
socket (under a short /tmp folder: unix socket paths are limited to ~107 bytes), the CRI plugin
off (no kubelet here) and content sharing between namespaces off (`isolated`): containerd keeps
one content store for the machine and, when sharing, a pull in a new namespace takes a blob it
already holds without asking the registry. Each test pulls in a namespace of its own, so every
byte it checks came over HTTP. It is started and stopped by pid (its own process group); nothing
touches a containerd of the machine. Images unpack with the `native` snapshotter (plain copies,
no mounts needed).

`ctr ... --http-dump` logs every request and response line of the registry conversation;
`dumped_requests` reads the request lines back (concurrent blob requests interleave, so only
the order of the manifest requests that come first is meaningful).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.clients import missing_tool, require_binary

START_TIMEOUT_SECONDS = 20.0
SNAPSHOTTER = "native"


def _config(default: str, *, root: Path, state: Path, socket: Path) -> str:
    """`default` (the output of `containerd config default`) with this daemon's folders and socket."""
    replacements = [
        (r'(?m)^root = ".*"$', f'root = "{root}"'),
        (r'(?m)^state = ".*"$', f'state = "{state}"'),
        (r'(?m)^(\[grpc\]\n(?:  .*\n)*?)  address = ".*"$', rf'\g<1>  address = "{socket}"'),
        (r"(?m)^disabled_plugins = \[\]$", 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'),
        (r'(?m)^(\s*)content_sharing_policy = ".*"$', r'\g<1>content_sharing_policy = "isolated"'),
    ]
    config = default
    for pattern, replacement in replacements:
        config, count = re.subn(pattern, replacement, config)
        assert count == 1, f"`containerd config default` changed shape: {pattern!r} matched {count} times"
    return config


class Containerd:
    """containerd on its own root/state/socket; `ctr(...)` runs ctr against it. Use as a context
    manager (or `start()`/`stop()`); `stop()` ends the daemon by its pid and removes its folders."""

    def __init__(self) -> None:
        self.containerd_bin = require_binary("containerd", install_hint="apt-get install containerd")
        self.ctr_bin = require_binary("ctr", install_hint="apt-get install containerd")
        if os.geteuid() != 0:
            missing_tool("containerd needs root (it owns its content store and snapshots)")
        self.home = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        self.socket = self.home / "c.sock"
        self.log_path = self.home / "containerd.log"
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Containerd:
        default = subprocess.run([self.containerd_bin, "config", "default"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout
        config = self.home / "config.toml"
        config.write_text(_config(default, root=self.home / "root", state=self.home / "state", socket=self.socket))
        with open(self.log_path, "wb") as log:
            self._popen = subprocess.Popen([self.containerd_bin, "--config", str(config)], stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(f"containerd exited with {self._popen.returncode}:\n{self.log()}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not answer on {self.socket} in {START_TIMEOUT_SECONDS:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=15)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self, tail: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no output)"

    def ctr(self, *args: str, namespace: str = "default", check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`ctr --address <socket> --namespace <namespace> args...`; with `check`, fails with its output."""
        argv = [self.ctr_bin, "--address", str(self.socket), "--namespace", namespace, *args]
        result = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home),
                                     "CONTAINERD_SNAPSHOTTER": SNAPSHOTTER})
        if check:
            assert result.returncode == 0, (f"{' '.join(argv)} failed ({result.returncode}):\n"
                                            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    def content(self, namespace: str, digest: str) -> bytes:
        """The bytes containerd holds under `digest` in `namespace`."""
        argv = [self.ctr_bin, "--address", str(self.socket), "--namespace", namespace, "content", "get", digest]
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"ctr content get {digest}: {result.stderr.decode(errors='replace')}"
        return result.stdout

    def ingest_partial(self, namespace: str, *, ref: str, digest: str, size: int, data: bytes) -> None:
        """Leaves an unfinished ingest `ref` holding `data`, the first bytes of the blob `digest`
        of `size` bytes: what a download cut short leaves behind (`ctr content ingest` given too
        few bytes fails, and the ingest stays active)."""
        argv = [self.ctr_bin, "--address", str(self.socket), "--namespace", namespace, "content", "ingest",
                "--expected-size", str(size), "--expected-digest", digest, ref]
        result = subprocess.run(argv, input=data, capture_output=True, timeout=60, check=False)
        assert result.returncode != 0 and b"unexpected EOF" in result.stderr, result.stderr
        assert ref in self.ctr("content", "active", namespace=namespace).stdout

    def has_content(self, namespace: str, digest: str) -> bool:
        return digest in self.ctr("content", "ls", "--quiet", namespace=namespace).stdout.split()

    def image_digest(self, namespace: str, ref: str) -> str:
        """The target digest containerd recorded for the image `ref`."""
        for line in self.ctr("images", "ls", namespace=namespace).stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise AssertionError(f"no image {ref} in namespace {namespace}")

    def snapshot_files(self) -> dict[str, bytes]:
        """Every regular file in the native snapshotter's snapshots, by name (unpacked layers)."""
        root = self.home / "root" / "io.containerd.snapshotter.v1.native" / "snapshots"
        return {path.name: path.read_bytes() for path in root.rglob("*") if path.is_file()}


_REQUEST_LINE = re.compile(r'msg="(?:.*?)(HEAD|GET|PUT|POST|PATCH|DELETE) (/\S*) HTTP/[\d.]+"$')


def dumped_requests(output: str) -> list[tuple[str, str]]:
    """(method, path with query) of each request in `ctr --http-dump` output, in logged order. A
    request logged right after a body shares its line with the body's end, hence the lazy prefix."""
    found = []
    for line in output.splitlines():
        match = _REQUEST_LINE.search(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def dumped_header(output: str, name: str) -> list[str]:
    """Every value of the header `name` in `ctr --http-dump` output (requests and responses)."""
    prefix = f'msg="{name}: '
    return [line.split(prefix, 1)[1].removesuffix('"') for line in output.splitlines() if prefix in line]
