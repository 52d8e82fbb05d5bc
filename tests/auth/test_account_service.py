"""AccountService over real gRPC, on SQLite and PostgreSQL (migration 0002 included)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from lading.metadata.v1 import accounts_pb2 as pb
from lading.metadata.v1 import accounts_pb2_grpc

from services.common.errors import ErrorKind, from_rpc_error
from services.common.grpc_server import ErrorMappingInterceptor
from services.common.settings import AuthSettings, MetadataSettings
from services.metadata.accounts.main import bootstrap_admin, build_account_servicer
from services.metadata.migrations import migrate
from services.metadata.store.engine import open_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    else:
        with request.getfixturevalue("postgres").database() as url:
            yield url


@pytest.fixture
async def stub(database_url: str, tmp_path: Path) -> AsyncIterator[accounts_pb2_grpc.AccountServiceStub]:
    database = open_database(MetadataSettings(database_url=database_url))
    await migrate(database)
    settings = AuthSettings(bcrypt_rounds=4, anonymous_pull=["public/*"], bootstrap_admin="root",
                            bootstrap_admin_password="root-pw")
    servicer = build_account_servicer(database, settings)
    await bootstrap_admin(servicer, settings)
    await bootstrap_admin(servicer, settings)  # idempotent
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    accounts_pb2_grpc.add_AccountServiceServicer_to_server(servicer, server)
    address = f"unix:{tmp_path}/accounts.sock"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield accounts_pb2_grpc.AccountServiceStub(channel)
    finally:
        await server.stop(None)
        await database.dispose()


@contextlib.asynccontextmanager
async def fails_with(kind: ErrorKind) -> AsyncIterator[None]:
    with pytest.raises(grpc.RpcError) as caught:
        yield
    assert from_rpc_error(caught.value).kind is kind


def scope(name: str, *actions: str) -> pb.Scope:
    return pb.Scope(type="repository", name=name, actions=list(actions))


async def test_users_robots_grants_and_authorization(stub: accounts_pb2_grpc.AccountServiceStub) -> None:
    admin = await stub.Authenticate(pb.AuthenticateRequest(name="root", secret="root-pw"))
    assert admin.account.is_admin and admin.account.kind == pb.ACCOUNT_KIND_USER
    created = await stub.CreateUser(pb.CreateUserRequest(name="alice", password="pw"))
    assert created.account.name == "alice" and not created.account.is_admin
    async with fails_with(ErrorKind.DENIED):
        await stub.CreateUser(pb.CreateUserRequest(name="alice", password="other"))
    for bad in ("robot$x", "a:b", "", "-x"):
        async with fails_with(ErrorKind.NAME_INVALID):
            await stub.CreateUser(pb.CreateUserRequest(name=bad, password="pw"))
    async with fails_with(ErrorKind.DENIED):
        await stub.CreateUser(pb.CreateUserRequest(name="long", password="x" * 73))

    robot = await stub.CreateRobot(pb.CreateRobotRequest(name="ci", description="CI", expires_at=int(time.time()) + 60))
    assert robot.account.name == "robot$ci" and robot.account.kind == pb.ACCOUNT_KIND_ROBOT and len(robot.secret) >= 40
    listed = await stub.ListAccounts(pb.ListAccountsRequest())
    assert [a.name for a in listed.accounts] == ["alice", "robot$ci", "root"]

    granted = await stub.Grant(pb.GrantRequest(account="alice", pattern="team-a/*", actions=["push"]))
    granted = await stub.Grant(pb.GrantRequest(account="alice", pattern="team-a/*", actions=["pull"]))
    assert list(granted.permission.actions) == ["pull", "push"]
    await stub.Grant(pb.GrantRequest(account="robot$ci", pattern="team-a/*", actions=["pull", "push"]))
    async with fails_with(ErrorKind.NAME_UNKNOWN):
        await stub.Grant(pb.GrantRequest(account="nobody", pattern="*", actions=["pull"]))
    async with fails_with(ErrorKind.NAME_INVALID):
        await stub.Grant(pb.GrantRequest(account="alice", pattern="Bad/*", actions=["pull"]))
    grants = await stub.ListGrants(pb.ListGrantsRequest())
    assert [(p.account, p.pattern, list(p.actions)) for p in grants.permissions] == [
        ("alice", "team-a/*", ["pull", "push"]), ("robot$ci", "team-a/*", ["pull", "push"])]

    asked = [scope("team-a/x", "pull", "push", "delete"), scope("team-b/x", "pull"), scope("public/p", "pull", "push"),
             pb.Scope(type="registry", name="catalog", actions=["*"])]
    answer = await stub.Authorize(pb.AuthorizeRequest(account="alice", scopes=asked))
    assert answer.account_valid
    assert [list(s.actions) for s in answer.granted] == [["pull", "push"], [], ["pull"], []]
    anonymous = await stub.Authorize(pb.AuthorizeRequest(account="", scopes=asked))
    assert [list(s.actions) for s in anonymous.granted] == [[], [], ["pull"], []]
    root = await stub.Authorize(pb.AuthorizeRequest(account="root", scopes=asked))
    assert [list(s.actions) for s in root.granted] == [["pull", "push", "delete"], ["pull"], ["pull", "push"], ["*"]]
    ghost = await stub.Authorize(pb.AuthorizeRequest(account="ghost", scopes=asked))
    assert not ghost.account_valid and [list(s.actions) for s in ghost.granted] == [[], [], ["pull"], []]

    assert (await stub.Authenticate(pb.AuthenticateRequest(name="robot$ci", secret=robot.secret))).account.name == "robot$ci"
    for name, secret in (("alice", "wrong"), ("nobody", "pw"), ("robot$ci", "pw"), ("alice", "")):
        async with fails_with(ErrorKind.UNAUTHORIZED):
            await stub.Authenticate(pb.AuthenticateRequest(name=name, secret=secret))

    assert (await stub.Revoke(pb.RevokeRequest(account="alice", pattern="team-a/*", actions=["push"]))).revoked
    answer = await stub.Authorize(pb.AuthorizeRequest(account="alice", scopes=[scope("team-a/x", "push", "pull")]))
    assert list(answer.granted[0].actions) == ["pull"]
    assert (await stub.Revoke(pb.RevokeRequest(account="alice", pattern="team-a/*"))).revoked
    assert not (await stub.Revoke(pb.RevokeRequest(account="alice", pattern="team-a/*"))).revoked

    await stub.SetPassword(pb.SetPasswordRequest(name="alice", password="new"))
    await stub.Authenticate(pb.AuthenticateRequest(name="alice", secret="new"))
    async with fails_with(ErrorKind.NAME_UNKNOWN):
        await stub.SetPassword(pb.SetPasswordRequest(name="robot$ci", password="x"))
    await stub.DeleteAccount(pb.DeleteAccountRequest(name="robot$ci"))
    async with fails_with(ErrorKind.NAME_UNKNOWN):
        await stub.DeleteAccount(pb.DeleteAccountRequest(name="robot$ci"))
    assert [p.account for p in (await stub.ListGrants(pb.ListGrantsRequest())).permissions] == []


async def test_expired_robot_cannot_authenticate_and_gets_anonymous_rights(
        stub: accounts_pb2_grpc.AccountServiceStub) -> None:
    robot = await stub.CreateRobot(pb.CreateRobotRequest(name="old", expires_at=int(time.time()) - 10))
    await stub.Grant(pb.GrantRequest(account="robot$old", pattern="*", actions=["pull", "push"]))
    async with fails_with(ErrorKind.UNAUTHORIZED):
        await stub.Authenticate(pb.AuthenticateRequest(name="robot$old", secret=robot.secret))
    answer = await stub.Authorize(pb.AuthorizeRequest(account="robot$old", scopes=[scope("team-a/x", "pull")]))
    assert not answer.account_valid and list(answer.granted[0].actions) == []


async def test_credential_generations_ids_and_the_new_calls(stub: accounts_pb2_grpc.AccountServiceStub) -> None:
    alice = (await stub.CreateUser(pb.CreateUserRequest(name="alice", password="pw"))).account
    assert alice.id and alice.credential_generation == 1 and not alice.disabled

    async def valid(account: str, account_id: str, generation: int) -> bool:
        reply = await stub.Authorize(pb.AuthorizeRequest(account=account, scopes=[], account_id=account_id,
                                                         credential_generation=generation))
        return reply.account_valid

    assert await valid("alice", alice.id, 1)
    await stub.SetPassword(pb.SetPasswordRequest(name="alice", password="pw-2"))
    assert not await valid("alice", alice.id, 1) and await valid("alice", alice.id, 2)
    revoked = await stub.RevokeTokens(pb.RevokeTokensRequest(name="alice"))
    assert revoked.account.credential_generation == 3 and not await valid("alice", alice.id, 2)
    await stub.Authenticate(pb.AuthenticateRequest(name="alice", secret="pw-2"))  # the password stays

    disabled = await stub.SetAccountDisabled(pb.SetAccountDisabledRequest(name="alice", disabled=True))
    assert disabled.account.disabled and disabled.account.credential_generation == 4
    async with fails_with(ErrorKind.UNAUTHORIZED):
        await stub.Authenticate(pb.AuthenticateRequest(name="alice", secret="pw-2"))
    assert not await valid("alice", alice.id, 4)
    assert not (await stub.Authorize(pb.AuthorizeRequest(account="alice", scopes=[]))).account_valid
    enabled = await stub.SetAccountDisabled(pb.SetAccountDisabledRequest(name="alice", disabled=False))
    assert not enabled.account.disabled and enabled.account.credential_generation == 4
    await stub.Authenticate(pb.AuthenticateRequest(name="alice", secret="pw-2"))

    robot = await stub.CreateRobot(pb.CreateRobotRequest(name="ci"))
    rotated = await stub.RotateRobotSecret(pb.RotateRobotSecretRequest(name="ci"))
    assert rotated.secret != robot.secret and rotated.account.credential_generation == 2
    assert rotated.account.id == robot.account.id
    async with fails_with(ErrorKind.UNAUTHORIZED):
        await stub.Authenticate(pb.AuthenticateRequest(name="robot$ci", secret=robot.secret))
    await stub.Authenticate(pb.AuthenticateRequest(name="robot$ci", secret=rotated.secret))
    for missing in ("nobody", "alice"):  # a user is not a robot
        async with fails_with(ErrorKind.NAME_UNKNOWN):
            await stub.RotateRobotSecret(pb.RotateRobotSecretRequest(name=missing))
    for call, request in ((stub.RevokeTokens, pb.RevokeTokensRequest(name="nobody")),
                          (stub.SetAccountDisabled, pb.SetAccountDisabledRequest(name="nobody", disabled=True))):
        async with fails_with(ErrorKind.NAME_UNKNOWN):
            await call(request)

    states = await stub.GetCredentialStates(pb.GetCredentialStatesRequest(account_ids=[alice.id, robot.account.id]))
    assert {(s.name, s.credential_generation, s.active) for s in states.states} == {("alice", 4, True),
                                                                                   ("robot$ci", 2, True)}
    # Deleted and created again under the same name: another id, and the old id names nothing.
    await stub.DeleteAccount(pb.DeleteAccountRequest(name="alice"))
    again = (await stub.CreateUser(pb.CreateUserRequest(name="alice", password="pw-2"))).account
    assert again.id != alice.id and again.credential_generation == 1
    assert not await valid("alice", alice.id, 1) and await valid("alice", again.id, 1)
    states = await stub.GetCredentialStates(pb.GetCredentialStatesRequest(account_ids=[alice.id]))
    assert list(states.states) == []


async def test_migration_0005_keeps_accounts_and_grants_and_gives_each_an_id(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from services.metadata.migrations import alembic_config

    database = open_database(MetadataSettings(database_url=database_url))
    try:
        def upgrade_to(connection, revision: str) -> None:  # type: ignore[no-untyped-def]
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with database.writes.begin() as conn:
            await conn.run_sync(upgrade_to, "0004_events")
        async with database.writes.begin() as conn:
            for name in ("alice", "bob"):
                await conn.execute(text(
                    "INSERT INTO accounts (name, kind, password_hash, is_admin, description, created_at) "
                    "VALUES (:name, 'user', 'x', false, '', CURRENT_TIMESTAMP)"), {"name": name})
                await conn.execute(text(
                    "INSERT INTO grants (account_id, pattern, actions) "
                    "SELECT id, 'team/*', 'pull' FROM accounts WHERE name = :name"), {"name": name})
        await migrate(database)
        async with database.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT a.name, a.uid, a.credential_generation, a.disabled, g.pattern FROM accounts a "
                "JOIN grants g ON g.account_id = a.id ORDER BY a.name"))).all()
        assert [(r.name, r.credential_generation, bool(r.disabled), r.pattern) for r in rows] == [
            ("alice", 1, False, "team/*"), ("bob", 1, False, "team/*")]
        assert len({r.uid for r in rows}) == 2 and all(len(r.uid) == 32 for r in rows)
    finally:
        await database.dispose()
