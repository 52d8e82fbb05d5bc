"""The metadata plane's change feed (ChangeService.WatchChanges) and the gateway's subscriber
(RevocationFeed), over real gRPC, on SQLite and PostgreSQL (issue 11, item 2):

- account changes stream as they commit; a subscriber resumes from its position and gets only
  what it missed; a position it cannot resume from (pruned, or from another database) resets it;
- heartbeats keep an idle stream visibly alive;
- two metadata replicas on one PostgreSQL database: a change made through replica A reaches a
  stream served by replica B through LISTEN/NOTIFY (B's poll is set to 60 s, so nothing else could
  deliver it in time);
- the gateway's subscriber: live once caught up, `lading_auth_revocation_feed_up` 0 while the
  metadata plane is gone, and on its return it resubscribes and applies what changed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from lading.metadata.v1 import accounts_pb2 as pb
from lading.metadata.v1 import accounts_pb2_grpc, changes_pb2, changes_pb2_grpc

from gateway.auth.change_feed import RevocationFeed
from gateway.auth.revocations import RevocationSet
from services.common.grpc_server import ErrorMappingInterceptor
from services.common.metrics import Metrics
from services.common.settings import (
    AuthSettings,
    ChangeFeedSettings,
    MetadataSettings,
    RevocationFeedSettings,
)
from services.metadata.accounts.main import build_account_servicer
from services.metadata.accounts.servicer import AccountServicer
from services.metadata.changes.wiring import ChangeParts, build_changes
from services.metadata.migrations import migrate
from services.metadata.store.engine import Database, open_database

# The bound, used as the deadline of waits that must hold.
BOUND_SECONDS = 2.0
FEED = RevocationFeedSettings(heartbeat_seconds=0.2, stale_after_seconds=0.6, reconnect_max_seconds=0.3)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    else:
        with request.getfixturevalue("postgres").database() as url:
            yield url


@dataclass
class Replica:
    """One metadata "process": its own pool, hub and gRPC server on a unix socket."""

    database: Database
    changes: ChangeParts
    accounts: AccountServicer
    address: str
    server: grpc.aio.Server | None = None

    async def serve(self) -> None:
        self.server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        accounts_pb2_grpc.add_AccountServiceServicer_to_server(self.accounts, self.server)
        self.changes.add_to_server(self.server)
        self.server.add_insecure_port(self.address)
        await self.server.start()

    async def stop_serving(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None


@contextlib.asynccontextmanager
async def replica(url: str, address: str, *, poll_seconds: float = 1.0) -> AsyncIterator[Replica]:
    database = open_database(MetadataSettings(database_url=url))
    await migrate(database)
    changes = build_changes(database, ChangeFeedSettings(poll_seconds=poll_seconds))
    accounts = build_account_servicer(database, AuthSettings(bcrypt_rounds=4), changes.log)
    await changes.start()
    node = Replica(database, changes, accounts, address)
    await node.serve()
    try:
        yield node
    finally:
        await changes.close()
        await node.stop_serving()
        await accounts.close()
        await database.dispose()


async def _next(stream: grpc.aio.UnaryStreamCall, seconds: float = BOUND_SECONDS) -> changes_pb2.WatchChangesResponse:
    return await asyncio.wait_for(stream.read(), seconds)


async def _next_with_changes(stream: grpc.aio.UnaryStreamCall) -> changes_pb2.WatchChangesResponse:
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        answer = await _next(stream, max(0.01, deadline - time.monotonic()))
        if answer.changes:
            return answer


async def test_changes_stream_resume_and_reset(database_url: str, tmp_path: Path) -> None:
    async with replica(database_url, f"unix:{tmp_path}/m.sock") as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        feed = changes_pb2_grpc.ChangeServiceStub(channel)
        created = (await accounts.CreateUser(pb.CreateUserRequest(name="carol", password="pw"))).account
        stream = feed.WatchChanges(changes_pb2.WatchChangesRequest(after=0, heartbeat_ms=100))
        first = await _next(stream)
        assert first.reset and first.caught_up and not first.changes  # creating an account changes nothing
        await accounts.RevokeTokens(pb.RevokeTokensRequest(name="carol"))
        answer = await _next_with_changes(stream)
        [change] = answer.changes
        assert change.account.account_id == created.id and change.account.name == "carol"
        assert change.account.credential_generation == 2 and change.account.active
        assert change.account.reason == changes_pb2.ACCOUNT_CHANGE_REASON_TOKENS_REVOKED
        assert answer.position == change.position and not answer.reset
        heartbeat = await _next(stream, 1.0)  # nothing happens: a heartbeat, well within a second
        assert not heartbeat.changes and heartbeat.position == change.position and heartbeat.caught_up
        stream.cancel()

        await accounts.Grant(pb.GrantRequest(account="carol", pattern="c/*", actions=["pull"]))
        await accounts.DeleteAccount(pb.DeleteAccountRequest(name="carol"))
        resumed = feed.WatchChanges(changes_pb2.WatchChangesRequest(after=change.position, heartbeat_ms=100))
        missed = await _next(resumed)
        assert not missed.reset
        assert [c.account.reason for c in missed.changes] == [
            changes_pb2.ACCOUNT_CHANGE_REASON_GRANTS_CHANGED, changes_pb2.ACCOUNT_CHANGE_REASON_DELETED]
        assert not missed.changes[1].account.active
        resumed.cancel()

        ahead = feed.WatchChanges(changes_pb2.WatchChangesRequest(after=missed.position + 1000))
        assert (await _next(ahead)).reset  # a position this feed never had: start over
        ahead.cancel()

        await node.changes.log.prune(0)  # everything is now older than the retention
        behind = feed.WatchChanges(changes_pb2.WatchChangesRequest(after=change.position))
        rebuilt = await _next(behind)
        assert rebuilt.reset and not rebuilt.changes
        behind.cancel()


@pytest.mark.postgres
async def test_a_change_through_one_replica_reaches_a_stream_of_another(tmp_path: Path, postgres) -> None:
    with postgres.database() as url:
        async with replica(url, f"unix:{tmp_path}/a.sock", poll_seconds=60) as a, \
                replica(url, f"unix:{tmp_path}/b.sock", poll_seconds=60) as b, \
                grpc.aio.insecure_channel(a.address) as to_a, grpc.aio.insecure_channel(b.address) as to_b:
            accounts_a = accounts_pb2_grpc.AccountServiceStub(to_a)
            stream = changes_pb2_grpc.ChangeServiceStub(to_b).WatchChanges(
                changes_pb2.WatchChangesRequest(after=0, heartbeat_ms=100))
            assert (await _next(stream)).reset
            await accounts_a.CreateUser(pb.CreateUserRequest(name="dave", password="pw"))
            for _ in range(2):  # the LISTEN connection is set up: repeatedly, not once by luck
                started = time.monotonic()
                await accounts_a.RevokeTokens(pb.RevokeTokensRequest(name="dave"))
                answer = await _next_with_changes(stream)
                assert answer.changes[-1].account.name == "dave"
                assert time.monotonic() - started < BOUND_SECONDS
            assert b.changes.hub.listening
            stream.cancel()


async def test_gateway_feed_goes_down_fail_safe_and_catches_up(database_url: str, tmp_path: Path) -> None:
    async with replica(database_url, f"unix:{tmp_path}/m.sock") as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        erin = (await accounts.CreateUser(pb.CreateUserRequest(name="erin", password="pw"))).account
        metrics = Metrics("gateway")
        revocations = RevocationSet()
        feed = RevocationFeed(channel, FEED, revocations, metrics=metrics)
        seen: list[str] = []
        feed.listen(on_change=lambda change: seen.append(change.name), on_reset=lambda: seen.append("<reset>"))
        feed.start()
        try:
            await _until(lambda: feed.live)
            assert _gauge(await metrics.render(), "lading_auth_revocation_feed_up") == 1.0
            await accounts.RevokeTokens(pb.RevokeTokensRequest(name="erin"))
            await _until(lambda: revocations.refuses(erin.id, 1))
            assert seen == ["<reset>", "erin"]

            await node.stop_serving()  # the metadata plane is gone
            await _until(lambda: not feed.live)
            assert _gauge(await metrics.render(), "lading_auth_revocation_feed_up") == 0.0
            await node.accounts.core.delete_account("erin")  # a change the feed cannot deliver now
            assert not revocations.refuses(erin.id, 2)

            await node.serve()  # back: the feed resubscribes from its position
            await _until(lambda: feed.live and revocations.refuses(erin.id, 2))
            assert seen == ["<reset>", "erin", "erin"]  # resumed, not reset
            rendered = await metrics.render()
            assert _gauge(rendered, "lading_auth_revocation_feed_up") == 1.0
            assert _gauge(rendered, "lading_auth_revocation_feed_reconnects_total") >= 1
        finally:
            await feed.close()


async def _until(condition, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Waits for `condition`; the deadline is generous (a loaded CI machine), not a bound."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


def _gauge(rendered: tuple[bytes, str], name: str) -> float:
    for line in rendered[0].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in the metrics")
