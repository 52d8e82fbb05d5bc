"""The audit writer groups the rows of concurrent calls into one transaction, and each call still
returns only after its own row is committed (services/metadata/policies/audit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from services.metadata.policies.audit import AuditWriter


class _Connection:
    def __init__(self, committed: list[dict[str, Any]]) -> None:
        self._committed = committed

    def execute(self, _statement: Any, rows: list[dict[str, Any]]) -> None:
        self._committed.extend(rows)


class _Access:
    """A writer that takes 10 ms per transaction, as the database's single writer thread would."""

    def __init__(self, fail: bool = False) -> None:
        self.transactions = 0
        self.committed: list[dict[str, Any]] = []
        self._fail = fail

    async def write(self, work: Callable[[Any], None], *, durable: bool = True) -> None:
        assert durable is False  # audit rows never wait for an fsync of their own
        self.transactions += 1
        await asyncio.sleep(0.01)
        if self._fail:
            raise RuntimeError("database gone")
        work(_Connection(self.committed))


async def test_concurrent_rows_share_transactions_and_each_waits_for_its_own() -> None:
    access = _Access()
    writer = AuditWriter(SimpleNamespace(access=access))  # type: ignore[arg-type]

    async def call(number: int) -> bool:
        await writer.write({"n": number})
        return {"n": number} in access.committed  # committed before the call returns

    answered = await asyncio.gather(*(call(n) for n in range(50)))
    assert all(answered)
    assert sorted(row["n"] for row in access.committed) == list(range(50))
    assert access.transactions <= 3, f"{access.transactions} transactions for 50 concurrent rows"


async def test_a_failed_batch_fails_each_of_its_calls() -> None:
    writer = AuditWriter(SimpleNamespace(access=_Access(fail=True)))  # type: ignore[arg-type]
    results = await asyncio.gather(*(writer.write({"n": n}) for n in range(5)), return_exceptions=True)
    assert [type(result) for result in results] == [RuntimeError] * 5
    with pytest.raises(RuntimeError):
        await writer.write({"n": 99})
