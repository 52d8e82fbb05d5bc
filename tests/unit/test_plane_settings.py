"""Each plane reads only its own sections of the settings (issue 13, Part 1 item 5).

The metadata and blob planes are started for real (SQLite and the filesystem in a temporary
folder, gRPC on a unix socket) with a settings object that fails the test the moment anything
reads a section the plane does not own; their `main()`s (logging set-up) are checked the same way.
Shared sections are owned by every plane that reads them: `observability` and `grpc_access` (every
process of a deployment reads the same), `auth` (the gateway checks credentials, the metadata plane
keeps the accounts), and `gc`/`events`/`console`, which are the metadata plane's, and `proxy`, the pull-through cache's upstreams, read by the
metadata plane (manifests) and the blob plane (blob bytes) (the console's
service, sessions included, runs in the metadata process; the gateway only serves its pages).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.blob import main as blob_main
from services.common.plane_control import PlaneControl
from services.common.settings import BlobSettings, GcSettings, MetadataSettings, Settings
from services.metadata import main as metadata_main

OWNED = {
    "metadata": {"metadata", "gc", "events", "auth", "console", "proxy", "replication", "governance",
                 "observability", "grpc_access", "regions"},
    "blob": {"blob", "proxy", "observability", "grpc_access", "regions"},
}


class OwnSectionsOnly:
    """A Settings that answers only `plane`'s sections and fails on any other."""

    def __init__(self, settings: Settings, plane: str) -> None:
        self._settings = settings
        self._plane = plane
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name not in OWNED[self._plane]:
            raise AssertionError(f"the {self._plane} plane read settings.{name}, a section it does not own")
        self.read.add(name)
        return getattr(self._settings, name)


async def _serve_until_serving(run: Any, settings: OwnSectionsOnly) -> None:
    control = PlaneControl()
    task = asyncio.ensure_future(run(settings, control))
    serving = asyncio.ensure_future(control.serving.wait())
    done, _ = await asyncio.wait({task, serving}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    control.stop.set()
    if task in done:
        serving.cancel()
        task.result()  # the plane's failure (the AssertionError above) is the test's
        pytest.fail("the plane stopped before it served")
    assert serving in done, "the plane did not report SERVING within 60 s"
    await asyncio.wait_for(task, 60)


def _metadata_settings(tmp_path: Path) -> Settings:
    return Settings(
        metadata=MetadataSettings(listen=f"unix:{tmp_path}/metadata.sock",
                                  database_url=f"sqlite+aiosqlite:///{tmp_path}/registry.db",
                                  shutdown_grace_seconds=1, max_manifest_bytes=1234),
        gc=GcSettings(blob_target=""),
    )


def _blob_settings(tmp_path: Path) -> Settings:
    blob = BlobSettings(listen=f"unix:{tmp_path}/blob.sock", shutdown_grace_seconds=1, io_threads=2)
    blob.filesystem.root = tmp_path / "blobs"
    return Settings(blob=blob)


async def test_the_metadata_plane_runs_on_its_own_sections(tmp_path: Path) -> None:
    settings = OwnSectionsOnly(_metadata_settings(tmp_path), "metadata")
    await _serve_until_serving(metadata_main.run, settings)
    assert "metadata" in settings.read


async def test_the_blob_plane_runs_on_its_own_sections(tmp_path: Path) -> None:
    settings = OwnSectionsOnly(_blob_settings(tmp_path), "blob")
    await _serve_until_serving(blob_main.run, settings)
    assert "blob" in settings.read


@pytest.mark.parametrize("plane", ["metadata", "blob"])
def test_a_planes_log_level_is_its_own(plane: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = metadata_main if plane == "metadata" else blob_main
    real = _metadata_settings(tmp_path) if plane == "metadata" else _blob_settings(tmp_path)
    getattr(real, plane).log_level = "warning"
    real.gateway.log_level = "debug"
    settings = OwnSectionsOnly(real, plane)
    levels: list[str] = []

    async def run(_settings: Any, _control: Any = None, *, freeze_start_up: bool = False) -> None:
        return None

    monkeypatch.setattr(module, "load_settings", lambda: settings)
    monkeypatch.setattr(module, "configure_logging", lambda level, *_args: levels.append(level))
    monkeypatch.setattr(module, "run", run)
    # Process-wide effects the test process must not take on.
    monkeypatch.setattr(module, "restrict_new_files", lambda: None)
    if plane == "blob":
        monkeypatch.setattr(module, "make_private_folder", lambda *_args, **_kwargs: None)
        monkeypatch.setattr(module, "tune_allocator", lambda: None)
    assert module.main() == 0
    assert levels == ["warning"]
