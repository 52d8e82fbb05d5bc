"""Acknowledged means durable on SQLite (issue 18 item 1): every connection commits with
`synchronous=FULL` unless the operator trades it away (`metadata.sqlite_durable_commits`), and
the writer thread groups the transactions queued meanwhile into one COMMIT, so concurrent writers
share one fsync of the WAL. (The power-cut test shows what FULL buys: test_power_cut.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy import exc as sa_exc

from services.common.settings import MetadataSettings
from services.metadata.store.engine import Database, open_database

FULL, NORMAL = 2, 1


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    opened = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/registry.db"))
    await opened.writer.run(lambda conn: conn.execute(text("CREATE TABLE t (x INTEGER UNIQUE)")))
    try:
        yield opened
    finally:
        await opened.dispose()


async def _synchronous(database: Database) -> tuple[int, int]:
    """PRAGMA synchronous of the writer thread's connection and of the async engine's."""
    on_writer = await database.writer.run(lambda conn: conn.execute(text("PRAGMA synchronous")).scalar())
    async with database.engine.connect() as conn:
        on_engine = (await conn.execute(text("PRAGMA synchronous"))).scalar()
    return on_writer, on_engine


async def test_commits_wait_for_the_disk(database: Database) -> None:
    assert await _synchronous(database) == (FULL, FULL)


async def test_an_operator_can_trade_durability_away(tmp_path: Path) -> None:
    traded = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/fast.db",
                                            sqlite_durable_commits=False))
    try:
        assert await _synchronous(traded) == (NORMAL, NORMAL)
    finally:
        await traded.dispose()


def _level(conn: Connection) -> int:
    return conn.execute(text("PRAGMA synchronous")).scalar()


async def test_a_commit_nobody_is_answered_on_skips_the_fsync(database: Database) -> None:
    # A reservation that a later durable commit completes (and makes durable: one WAL fsync
    # covers every frame before it) need not wait for the disk itself.
    assert await database.writer.run(_level, durable=False) == NORMAL
    assert await database.writer.run(_level) == FULL
    assert await database.writer.run(_level, durable=False) == NORMAL


async def test_the_traded_setting_never_waits_for_the_disk(tmp_path: Path) -> None:
    traded = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/fast.db",
                                            sqlite_durable_commits=False))
    try:
        assert await traded.writer.run(_level) == NORMAL
        assert await traded.writer.run(_level, durable=False) == NORMAL
    finally:
        await traded.dispose()


def _count_commits(database: Database) -> list[int]:
    commits: list[int] = []
    event.listen(database.write_engine, "commit", lambda conn: commits.append(1))
    return commits


def _insert(value: int, *, fail: bool = False) -> Any:
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": value})
        if fail:
            raise ValueError(f"job {value} fails after its insert")
        return value

    return work


async def _rows(database: Database) -> list[int]:
    return await database.writer.run(lambda conn: [row[0] for row in conn.execute(text("SELECT x FROM t ORDER BY x"))])


async def test_concurrent_transactions_share_one_commit(database: Database) -> None:
    commits = _count_commits(database)
    results = await asyncio.gather(*(database.writer.run(_insert(value)) for value in range(40)))
    assert results == list(range(40))
    assert await _rows(database) == list(range(40))
    # Queued together, committed together: far fewer COMMITs (WAL fsyncs) than transactions.
    assert 1 <= len(commits) <= 10, len(commits)


async def test_a_failing_transaction_leaves_its_group_committed(database: Database) -> None:
    jobs = [database.writer.run(_insert(value, fail=value % 5 == 0)) for value in range(20)]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for value, result in enumerate(results):
        if value % 5 == 0:
            assert isinstance(result, ValueError) and str(value) in str(result)
        else:
            assert result == value
    # The failed ones are rolled back whole (their insert too); the others all committed.
    assert await _rows(database) == [value for value in range(20) if value % 5]


async def test_a_constraint_error_stays_with_its_transaction(database: Database) -> None:
    await database.writer.run(_insert(7))
    results = await asyncio.gather(*(database.writer.run(_insert(value)) for value in (6, 7, 8)),
                                   return_exceptions=True)
    assert results[0] == 6 and results[2] == 8
    assert isinstance(results[1], sa_exc.IntegrityError)
    assert await _rows(database) == [6, 7, 8]


async def test_a_group_whose_commit_fails_runs_each_transaction_alone(database: Database) -> None:
    inserts: list[int] = []
    failed: list[int] = []

    def count_insert(conn: Connection, cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("INSERT"):
            inserts.append(1)

    def fail_first_group_commit(conn: Connection) -> None:
        # The first COMMIT of a group (several transactions' inserts) fails as a whole, once.
        grouped = len(inserts) > 1
        inserts.clear()
        if grouped and not failed:
            failed.append(1)
            raise sa_exc.OperationalError("COMMIT", {}, Exception("disk I/O error (simulated)"))

    event.listen(database.write_engine, "before_cursor_execute", count_insert)
    event.listen(database.write_engine, "commit", fail_first_group_commit)
    results = await asyncio.gather(*(database.writer.run(_insert(value)) for value in range(30)))
    assert failed, "no group was formed: the test did not exercise the fallback"
    # Nobody saw the failure, and nothing was written twice (x is UNIQUE).
    assert results == list(range(30))
    assert await _rows(database) == list(range(30))
