"""`lading serve` whose data folder's disk is full (the database on another disk): it starts and
serves pulls, and a push answers 507 with what the operator must do, end to end. Before, the
serve record and then the blob plane's readiness probe failed, and the registry did not start."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.full_disk import fill, small_disk
from tests.support.stack import Stack


def test_a_registry_started_on_a_full_disk_serves_and_answers_507(tmp_path: Path) -> None:
    database = tmp_path / "db" / "registry.db"
    # No free-space reserve: this is the disk without room at all (ENOSPC), which a reserve
    # above the tmpfs's size would hide (tests/durability/test_free_space_reserve.py has that).
    env = {
        "LADING_METADATA__DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "LADING_BLOB__FILESYSTEM__MIN_FREE_BYTES": "0",
    }
    with small_disk(tmp_path / "disk", size="1m") as disk:
        fill(disk)
        # The data folder is the disk itself: the processes' logs go beside it, on another disk.
        with Stack(disk, env=env) as stack:
            assert httpx.get(f"{stack.base_url}/v2/").status_code == 200
            pushed = httpx.post(f"{stack.base_url}/v2/team/app/blobs/uploads/")
            assert pushed.status_code == 507, pushed.text
            error = pushed.json()["errors"][0]
            assert error["code"] == "UNAVAILABLE"
            assert "storage is full" in error["message"] and "free or add space" in error["message"]
            assert httpx.get(f"{stack.base_url}/v2/_catalog").status_code == 200
        assert "disk is full" in stack.log()

