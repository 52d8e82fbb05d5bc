"""podman and buildah on a storage of their own, the way a CI job or a developer runs them.

`Engine` runs both tools on one storage under the test's folder (never the machine's), with its
own registries.conf (no search registries), a policy that accepts anything, an auth file of its
own (`podman login` writes there) and TMPDIR. vfs storage needs no kernel overlay support; pass
`storage_conf` for another driver (the zstd:chunked partial pulls need overlay).

Note for tests: as root, containers/image keeps one blob-info cache for the whole machine
(/var/lib/containers/cache), so it knows where earlier runs pushed the same layers and may mount
or reuse them (even one compressed otherwise) instead of uploading. Tests that mean to see an
upload build images from fresh random content (`build_scratch_image`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support.clients import require_binary


class Engine:
    """podman and buildah sharing one storage under `home`; `close()` (or leaving its `with`
    block) removes its images and the run folder."""

    def __init__(self, home: Path, *, storage_conf: Path | None = None) -> None:
        self.podman_bin = require_binary("podman", install_hint="apt-get install podman")
        self.buildah_bin = require_binary("buildah", install_hint="apt-get install buildah")
        self.home = home
        self.storage = home / "storage"
        self.tmp = home / "tmp"
        for folder in (self.home / "home", self.storage, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        # podman wants its run folder path under 50 characters: tmp_path is longer.
        self.runroot = Path(tempfile.mkdtemp(prefix="lading-engine-"))
        self.auth_file = home / "auth.json"
        self.auth_file.write_text("{}")
        (home / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        (home / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.storage_conf = storage_conf

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.podman("rmi", "--all", "--force", check=False, timeout=60)
        shutil.rmtree(self.runroot, ignore_errors=True)

    @property
    def env(self) -> dict[str, str]:
        env = {"HOME": str(self.home / "home"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "CONTAINERS_REGISTRIES_CONF": str(self.home / "registries.conf"),
               "CONTAINERS_POLICY_JSON": str(self.home / "policy.json"),
               "REGISTRY_AUTH_FILE": str(self.auth_file), "TMPDIR": str(self.tmp)}
        if self.storage_conf is not None:
            env["CONTAINERS_STORAGE_CONF"] = str(self.storage_conf)
        return env

    def _storage_args(self) -> list[str]:
        if self.storage_conf is not None:
            return []
        return ["--root", str(self.storage), "--runroot", str(self.runroot), "--storage-driver", "vfs"]

    def _run(self, argv: list[str], *, check: bool, timeout: float,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env,
                                input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                                check=False)
        if check:
            assert result.returncode == 0, (f"{' '.join(argv)} failed ({result.returncode}):\n"
                                            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    def podman(self, *args: str, check: bool = True, timeout: float = 180,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.podman_bin, *self._storage_args(), "--events-backend", "none", *args]
        return self._run(argv, check=check, timeout=timeout, stdin=stdin)

    def buildah(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self._run([self.buildah_bin, *self._storage_args(), *args], check=check, timeout=timeout)

    def build_scratch_image(self, name: str, files: Mapping[str, bytes], *, platform: str = "linux/amd64") -> str:
        """`buildah build` of `FROM scratch` + COPY of `files` (no RUN: nothing is started) under
        the local name `name`; returns the image ID (its config's digest, without `sha256:`)."""
        context = Path(tempfile.mkdtemp(prefix="context-", dir=self.tmp))
        for relative, data in files.items():
            (context / relative).write_bytes(data)
        (context / "Containerfile").write_text("FROM scratch\nCOPY . /data/\nLABEL org.example.test=lading\n")
        image_id = self.buildah("build", "--quiet", "--platform", platform, "-f", str(context / "Containerfile"),
                                "-t", name, str(context)).stdout.strip().splitlines()[-1]
        shutil.rmtree(context, ignore_errors=True)
        return image_id.removeprefix("sha256:")

    def inspect(self, image: str) -> dict[str, Any]:
        (record,) = json.loads(self.podman("image", "inspect", image).stdout)
        return record

    @contextlib.contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """The image's root filesystem, mounted while the block runs."""
        path = Path(self.podman("image", "mount", image).stdout.strip())
        try:
            yield path
        finally:
            self.podman("image", "unmount", image, check=False)


def fresh_files(count: int = 2, size: int = 64 * 1024) -> dict[str, bytes]:
    """Files of random content (so no earlier run's layer matches them)."""
    return {f"file-{index}.bin": os.urandom(size) for index in range(count)}
