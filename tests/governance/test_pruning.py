"""Pruning of the audit log and the tag history (services/metadata/policies/pruning.py): rows past
their retention are deleted in batches, oldest first, on SQLite and PostgreSQL; the tag history
inside the restore window is kept; a running metadata plane prunes on its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from services.common.settings import GovernanceSettings
from services.metadata.policies.pruning import RecordPruner
from services.metadata.policies.tables import audit_log, tag_history
from services.metadata.store.engine import Database
from tests.gc.stack_support import gc_stack
from tests.governance.conftest import Policies
from tests.support import oci
from tests.support.metadata_db import migrated_database

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request, tmp_path) as db:
        yield db


def _audit(at: datetime, n: int) -> dict[str, object]:
    return {"at": at, "actor": "alice", "action": "manifest.push", "target": f"app:v{n}", "repository": "app",
            "client_address": "127.0.0.1", "request_id": f"r{n}", "outcome": "ok", "detail": ""}


def _history(at: datetime, n: int) -> dict[str, object]:
    return {"repository": "app", "tag": f"v{n}", "old_digest": None, "new_digest": "sha256:" + "a" * 64,
            "action": "push", "actor": "alice", "at": at}


async def _count(database: Database, table, *where) -> int:  # noqa: ANN001 - a Table
    async with database.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar())


async def test_rows_past_their_retention_are_deleted_in_batches(database: Database) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=5)
    async with database.engine.begin() as conn:
        # More old rows than one batch holds (1,000), written in time order, as the planes write them.
        await conn.execute(insert(audit_log), [_audit(old + timedelta(seconds=i), i) for i in range(2500)])
        await conn.execute(insert(audit_log), [_audit(recent, i) for i in range(3)])
        await conn.execute(insert(tag_history), [_history(old + timedelta(seconds=i), i) for i in range(1200)])
        await conn.execute(insert(tag_history), [_history(NOW - timedelta(days=20), 0),
                                                 _history(recent, 1)])
    settings = GovernanceSettings(audit_retention_seconds=30 * DAY, tag_history_retention_seconds=10 * DAY,
                                  history_window_seconds=25 * DAY)
    pruner = RecordPruner(database, settings)
    assert pruner.enabled and pruner.history_retention_seconds == 25 * DAY  # never inside the restore window
    done = await pruner.prune_once(NOW)
    assert (done.audit_rows, done.history_rows) == (2500, 1200)
    assert await _count(database, audit_log) == 3
    # The 20-day-old row is inside the 25-day restore window: kept, as is the recent one.
    assert await _count(database, tag_history) == 2
    assert await _count(database, tag_history, tag_history.c.at < NOW - timedelta(days=25)) == 0
    again = await pruner.prune_once(NOW)
    assert (again.audit_rows, again.history_rows) == (0, 0)


async def test_no_retention_keeps_every_row(database: Database) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(insert(audit_log), [_audit(NOW - timedelta(days=4000), 0)])
        await conn.execute(insert(tag_history), [_history(NOW - timedelta(days=4000), 0)])
    pruner = RecordPruner(database, GovernanceSettings(history_window_seconds=DAY))
    assert not pruner.enabled
    done = await pruner.prune_once(NOW)
    assert (done.audit_rows, done.history_rows) == (0, 0)
    assert await _count(database, audit_log) == 1
    assert await _count(database, tag_history) == 1


def test_a_running_metadata_plane_prunes_on_its_own(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with gc_stack("sqlite", request, tmp_path, LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS="0",
                  LADING_GOVERNANCE__AUDIT_RETENTION_SECONDS="3", LADING_GOVERNANCE__TAG_HISTORY_RETENTION_SECONDS="3",
                  LADING_GOVERNANCE__PRUNE_INTERVAL_SECONDS="0.2") as stack, \
            httpx.Client(base_url=stack.base_url, timeout=30) as http:
        policies = Policies(stack)
        try:
            oci.push(http, "prune/app", oci.image(1, layer_size=100), "v1")
            assert policies.audit(repository="prune/app") and policies.history("prune/app", "v1")
            deadline = time.monotonic() + 20
            while policies.audit(repository="prune/app") or policies.history("prune/app", "v1"):
                assert time.monotonic() < deadline, "audit and history rows still there 20 s after a 3 s retention"
                time.sleep(0.2)
        finally:
            policies.close()
