"""ConsoleService over real gRPC, against a real metadata process on SQLite and on PostgreSQL:
listings filtered by the session's permissions and paged in the plane, tag details with who
pushed and when, manifests and referrer trees, tag deletes, sessions, and every Admin* call
refused to a non-admin (with nothing changed)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from lading.common.v1 import common_pb2
from lading.metadata.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    admin_pb2,
    console_pb2,
    console_pb2_grpc,
    events_pb2,
    metadata_pb2_grpc,
)
from lading.metadata.v1 import metadata_pb2 as mpb

from services.common.errors import ErrorKind, from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import MetadataSettings
from services.metadata.console.sessions import SessionStore
from services.metadata.migrations import migrate
from services.metadata.store.engine import open_database
from tests.metadata import docs
from tests.metadata.test_service_grpc import wait_until_serving
from tests.support.stack import LadingProcess, wait_until_path_exists

pb = console_pb2
ADMIN = ("root", "root-pw")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def socket(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    url_context = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/registry.db"
    else:
        url_context = request.getfixturevalue("postgres").database()
        url = url_context.__enter__()
    path = tmp / "metadata.sock"
    process = LadingProcess("metadata", [sys.executable, "-m", "services.metadata"], log_dir=tmp, env={
        "LADING_METADATA__LISTEN": f"unix://{path}", "LADING_METADATA__DATABASE_URL": url,
        "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1", "LADING_AUTH__MODE": "token",
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0], "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4", "LADING_AUTH__ANONYMOUS_PULL": '["public/*"]',
    })
    process.start()
    try:
        wait_until_path_exists(path, process)
        assert wait_until_serving(path) == health_pb2.HealthCheckResponse.SERVING, process.log()
        yield path
    finally:
        process.stop()
        if url_context is not None:
            url_context.__exit__(None, None, None)


class Plane:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.console = console_pb2_grpc.ConsoleServiceStub(channel)
        self.accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        self.metadata = metadata_pb2_grpc.MetadataServiceStub(channel)

    async def user(self, name: str, *grants: tuple[str, str]) -> str:
        """Creates `name` with `grants` ((pattern, "pull,push")); returns a console session."""
        await self.accounts.CreateUser(accounts_pb2.CreateUserRequest(name=name, password=f"{name}-pw"))
        for pattern, actions in grants:
            await self.accounts.Grant(accounts_pb2.GrantRequest(account=name, pattern=pattern,
                                                                actions=actions.split(",")))
        return await self.session(name, f"{name}-pw")

    async def session(self, name: str, password: str) -> str:
        account = (await self.accounts.Authenticate(accounts_pb2.AuthenticateRequest(name=name, secret=password))).account
        made = await self.console.CreateSession(pb.CreateSessionRequest(
            account_id=account.id, credential_generation=account.credential_generation))
        return made.session

    async def push(self, repository: str, reference: str, document: dict, *, actor: str = "",
                   media_type: str = docs.OCI_MANIFEST) -> str:
        for digest, size in docs.blobs_of(document):
            await self.metadata.LinkBlob(mpb.LinkBlobRequest(repository=repository, digest=digest, size=size))
        reply = await self.metadata.PutManifest(mpb.PutManifestRequest(
            repository=repository, reference=reference, media_type=media_type, payload=docs.render(document),
            context=common_pb2.RequestContext(actor=actor)))
        return reply.digest


@pytest.fixture(scope="module")
async def plane(socket: Path) -> AsyncIterator[Plane]:
    async with grpc.aio.insecure_channel(f"unix://{socket}", options=CHANNEL_OPTIONS) as channel:
        yield Plane(channel)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def fails(call: object, kind: ErrorKind) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = from_rpc_error(caught.value)
    assert error.kind is kind, error
    return error.message


def page(limit: int, last: str = "") -> common_pb2.PageRequest:
    return common_pb2.PageRequest(limit=limit, has_limit=True, last=last)


async def test_search_lists_only_what_the_session_may_pull_page_by_page(plane: Plane) -> None:
    team = unique("t")
    mine = [f"{team}-a/app{i}" for i in range(5)]
    hidden = [f"{team}-b/app", f"{team}xa/app", f"{team}-a_x/app"]
    underscored = f"{team}_u/app"  # a grant on "<team>_u/*" must not match "<team>xu/app" (LIKE's `_`)
    lookalike = f"{team}xu/app"
    for name in [*mine, *hidden, underscored, lookalike, f"public/{team}"]:
        await plane.push(name, "v1", docs.image())
    session = await plane.user(unique("reader"), (f"{team}-a/*", "pull"), (f"{team}_u/*", "pull"))
    seen: list[str] = []
    last = ""
    while True:
        found = await plane.console.SearchRepositories(pb.SearchRepositoriesRequest(
            session=session, query=team, page=page(2, last)))
        assert len(found.repositories) <= 2
        seen += [r.name for r in found.repositories]
        if not found.page.has_more:
            break
        last = found.repositories[-1].name
    # Anonymous pulls (public/*) count for every account too.
    assert seen == sorted([*mine, underscored, f"public/{team}"]), seen
    assert all(r.tags == 1 for r in found.repositories)
    one = await plane.console.SearchRepositories(pb.SearchRepositoriesRequest(session=session, query=f"{team}-a/app3"))
    assert [r.name for r in one.repositories] == [f"{team}-a/app3"]
    admin = await plane.session(*ADMIN)
    everything = await plane.console.SearchRepositories(pb.SearchRepositoriesRequest(session=admin, query=team))
    assert {r.name for r in everything.repositories} >= {*mine, *hidden}
    await fails(plane.console.SearchRepositories(pb.SearchRepositoriesRequest(session="not-a-session")),
                ErrorKind.UNAUTHORIZED)


async def test_tags_say_what_was_pushed_when_and_by_whom(plane: Plane) -> None:
    repository = unique("tags/")
    before = datetime.now(UTC) - timedelta(seconds=2)
    digests = {}
    for tag in ("a1", "a2", "b1", "b2", "b3"):
        digests[tag] = await plane.push(repository, tag, docs.image(), actor="pusher-1")
    session = await plane.user(unique("viewer"), (repository, "pull"))
    first = await plane.console.ListTagDetails(pb.ListTagDetailsRequest(
        session=session, repository=repository, page=page(3)))
    assert [t.name for t in first.tags] == ["a1", "a2", "b1"] and first.page.has_more
    assert not first.can_delete and not first.can_push
    rest = await plane.console.ListTagDetails(pb.ListTagDetailsRequest(
        session=session, repository=repository, page=page(3, "b1")))
    assert [t.name for t in rest.tags] == ["b2", "b3"] and not rest.page.has_more
    tag = first.tags[0]
    assert tag.digest == digests["a1"] and tag.media_type == docs.OCI_MANIFEST and tag.size > 100
    assert tag.pushed_by == "pusher-1" and tag.pushed_at >= int(before.timestamp())
    filtered = await plane.console.ListTagDetails(pb.ListTagDetailsRequest(
        session=session, repository=repository, query="b"))
    assert [t.name for t in filtered.tags] == ["b1", "b2", "b3"]
    stranger = await plane.user(unique("stranger"))
    await fails(plane.console.ListTagDetails(pb.ListTagDetailsRequest(session=stranger, repository=repository)),
                ErrorKind.NAME_UNKNOWN)
    await fails(plane.console.GetManifestDetails(pb.GetManifestDetailsRequest(
        session=stranger, repository=repository, reference="a1")), ErrorKind.NAME_UNKNOWN)


async def test_manifest_details_and_the_referrer_tree(plane: Plane) -> None:
    repository = unique("tree/")
    image_document = docs.image()
    image_digest = await plane.push(repository, "v1", image_document, actor="ci")
    subject = {"mediaType": docs.OCI_MANIFEST, "digest": image_digest, "size": len(docs.render(image_document))}
    signature = docs.image(layers=1, subject=subject, artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json")
    signature_digest = await plane.push(repository, docs.sha256(docs.render(signature)), signature)
    sbom = docs.image(layers=1, subject=subject, artifact_type="application/spdx+json", annotations={"k": "v"})
    sbom_digest = await plane.push(repository, docs.sha256(docs.render(sbom)), sbom)
    on_signature = docs.image(layers=1, artifact_type="application/vnd.example.attestation", subject={
        "mediaType": docs.OCI_MANIFEST, "digest": signature_digest, "size": len(docs.render(signature))})
    attestation = await plane.push(repository, docs.sha256(docs.render(on_signature)), on_signature)
    session = await plane.user(unique("viewer"), (repository, "pull,delete"))
    details = await plane.console.GetManifestDetails(pb.GetManifestDetailsRequest(
        session=session, repository=repository, reference="v1"))
    assert details.digest == image_digest and details.tags == ["v1"] and details.pushed_by == "ci"
    assert details.payload == docs.render(image_document) and details.can_delete
    by_digest = await plane.console.GetManifestDetails(pb.GetManifestDetailsRequest(
        session=session, repository=repository, reference=image_digest))
    assert by_digest.tags == ["v1"]
    tree = await plane.console.ListReferrerTree(pb.ListReferrerTreeRequest(
        session=session, repository=repository, digest=image_digest))
    nodes = [(n.subject, n.descriptor.digest, n.depth) for n in tree.nodes]
    assert sorted(nodes[:2]) == sorted([(image_digest, signature_digest, 1), (image_digest, sbom_digest, 1)])
    assert nodes[2:] == [(signature_digest, attestation, 2)] and not tree.truncated
    assert dict(next(n for n in tree.nodes if n.descriptor.digest == sbom_digest).descriptor.annotations) == {"k": "v"}
    cut = await plane.console.ListReferrerTree(pb.ListReferrerTreeRequest(
        session=session, repository=repository, digest=image_digest, max_depth=1))
    assert len(cut.nodes) == 2 and cut.truncated


async def test_a_tag_delete_needs_the_delete_action(plane: Plane) -> None:
    repository = unique("del/")
    await plane.push(repository, "keep", docs.image())
    digest = await plane.push(repository, "gone", docs.image())
    reader = await plane.user(unique("reader"), (repository, "pull,push"))
    await fails(plane.console.DeleteTag(pb.ConsoleDeleteTagRequest(session=reader, repository=repository,
                                                                    tag="gone")), ErrorKind.DENIED)
    deleter = await plane.user(unique("deleter"), (repository, "pull,delete"))
    await plane.console.DeleteTag(pb.ConsoleDeleteTagRequest(session=deleter, repository=repository, tag="gone"))
    left = await plane.console.ListTagDetails(pb.ListTagDetailsRequest(session=deleter, repository=repository))
    assert [t.name for t in left.tags] == ["keep"]
    kept = await plane.metadata.GetManifest(mpb.GetManifestRequest(repository=repository, reference=digest))
    assert kept.digest == digest  # the manifest stays, by digest
    await fails(plane.console.DeleteTag(pb.ConsoleDeleteTagRequest(session=deleter, repository=repository,
                                                                    tag="gone")), ErrorKind.MANIFEST_UNKNOWN)


def admin_calls(session: str, name: str) -> dict[str, tuple[str, object]]:
    """Every Admin* call of ConsoleService, with a request that would change or reveal something."""
    return {
        "AdminListAccounts": ("AdminListAccounts", pb.AdminListAccountsRequest(session=session)),
        "AdminCreateUser": ("AdminCreateUser", pb.AdminCreateUserRequest(
            session=session, request=accounts_pb2.CreateUserRequest(name=name, password="pw", is_admin=True))),
        "AdminDeleteAccount": ("AdminDeleteAccount", pb.AdminDeleteAccountRequest(
            session=session, request=accounts_pb2.DeleteAccountRequest(name=ADMIN[0]))),
        "AdminSetAccountDisabled": ("AdminSetAccountDisabled", pb.AdminSetAccountDisabledRequest(
            session=session, request=accounts_pb2.SetAccountDisabledRequest(name=ADMIN[0], disabled=True))),
        "AdminCreateRobot": ("AdminCreateRobot", pb.AdminCreateRobotRequest(
            session=session, request=accounts_pb2.CreateRobotRequest(name=name))),
        "AdminGrant": ("AdminGrant", pb.AdminGrantRequest(
            session=session, request=accounts_pb2.GrantRequest(account=name, pattern="*", actions=["push"]))),
        "AdminRevoke": ("AdminRevoke", pb.AdminRevokeRequest(
            session=session, request=accounts_pb2.RevokeRequest(account=ADMIN[0], pattern="*"))),
        "AdminListGrants": ("AdminListGrants", pb.AdminListGrantsRequest(session=session)),
        "AdminListGroupMappings": ("AdminListGroupMappings", pb.AdminListGroupMappingsRequest(session=session)),
        "AdminMapGroup": ("AdminMapGroup", pb.AdminMapGroupRequest(session=session, request=accounts_pb2.MapGroupRequest(
            mapping=accounts_pb2.GroupMapping(provider="oidc", group=name, admin=True)))),
        "AdminUnmapGroup": ("AdminUnmapGroup", pb.AdminUnmapGroupRequest(
            session=session, request=accounts_pb2.UnmapGroupRequest(
                mapping=accounts_pb2.GroupMapping(provider="oidc", group="admins", admin=True)))),
        "AdminGcStats": ("AdminGcStats", pb.AdminGcStatsRequest(session=session)),
        "AdminGcPlan": ("AdminGcPlan", pb.AdminGcPlanRequest(session=session, request=admin_pb2.GcPlanRequest())),
        "AdminListEvents": ("AdminListEvents", pb.AdminListEventsRequest(session=session)),
        "AdminReplayEvents": ("AdminReplayEvents", pb.AdminReplayEventsRequest(
            session=session, request=events_pb2.ReplayEventsRequest(dead=True))),
        "AdminGetMaintenance": ("AdminGetMaintenance", pb.AdminGetMaintenanceRequest(session=session)),
        "AdminSetMaintenance": ("AdminSetMaintenance", pb.AdminSetMaintenanceRequest(
            session=session, request=admin_pb2.SetMaintenanceRequest(on=True))),
        "AdminStorage": ("AdminStorage", pb.AdminStorageRequest(session=session)),
    }


async def test_every_admin_call_is_refused_to_a_non_admin(plane: Plane) -> None:
    service = console_pb2.DESCRIPTOR.services_by_name["ConsoleService"]
    admin_methods = {m.name for m in service.methods if m.name.startswith("Admin")}
    session = await plane.user(unique("plain"), ("*", "pull,push,delete"))
    name = unique("intruder")
    calls = admin_calls(session, name)
    assert set(calls) == admin_methods, "a new Admin* call needs a case here"
    await plane.accounts.MapGroup(accounts_pb2.MapGroupRequest(
        mapping=accounts_pb2.GroupMapping(provider="oidc", group="admins", admin=True)))
    for method, request in calls.values():
        message = await fails(getattr(plane.console, method)(request), ErrorKind.DENIED)
        assert "not an administrator" in message
    accounts = {a.name: a for a in (await plane.accounts.ListAccounts(accounts_pb2.ListAccountsRequest())).accounts}
    assert name not in accounts and f"robot${name}" not in accounts
    assert not accounts[ADMIN[0]].disabled
    mappings = (await plane.accounts.ListGroupMappings(accounts_pb2.ListGroupMappingsRequest())).mappings
    assert [m.group for m in mappings if m.admin] == ["admins"]
    admin = await plane.session(*ADMIN)
    assert not (await plane.console.AdminGetMaintenance(pb.AdminGetMaintenanceRequest(session=admin))).on
    # The same calls work for the admin (a few, harmlessly).
    listed = await plane.console.AdminListAccounts(pb.AdminListAccountsRequest(session=admin))
    assert ADMIN[0] in {a.name for a in listed.accounts}
    robot = await plane.console.AdminCreateRobot(pb.AdminCreateRobotRequest(
        session=admin, request=accounts_pb2.CreateRobotRequest(name=name)))
    assert robot.account.name == f"robot${name}" and len(robot.secret) >= 40
    storage = await plane.console.AdminStorage(pb.AdminStorageRequest(session=admin, limit=3))
    assert storage.repository_count >= 1 and len(storage.repositories) <= 3
    assert [r.bytes for r in storage.repositories] == sorted((r.bytes for r in storage.repositories), reverse=True)


async def test_sessions_end_with_sign_out_and_with_the_accounts_credentials(plane: Plane) -> None:
    name = unique("sess")
    session = await plane.user(name)
    me = await plane.console.GetSession(pb.SessionRequest(session=session))
    assert me.signed_in and me.account.name == name and me.account.origin == "local" and not me.is_admin
    await plane.console.EndSession(pb.SessionRequest(session=session))
    await fails(plane.console.GetSession(pb.SessionRequest(session=session)), ErrorKind.UNAUTHORIZED)
    second = await plane.session(name, f"{name}-pw")
    await plane.accounts.SetPassword(accounts_pb2.SetPasswordRequest(name=name, password="new-pw"))
    await fails(plane.console.GetSession(pb.SessionRequest(session=second)), ErrorKind.UNAUTHORIZED)
    third = await plane.session(name, "new-pw")
    await plane.accounts.SetAccountDisabled(accounts_pb2.SetAccountDisabledRequest(name=name, disabled=True))
    await fails(plane.console.GetSession(pb.SessionRequest(session=third)), ErrorKind.UNAUTHORIZED)
    await plane.accounts.SetAccountDisabled(accounts_pb2.SetAccountDisabledRequest(name=name, disabled=False))
    account = (await plane.accounts.ListAccounts(accounts_pb2.ListAccountsRequest())).accounts
    stale = next(a for a in account if a.name == name)
    await fails(plane.console.CreateSession(pb.CreateSessionRequest(
        account_id=stale.id, credential_generation=stale.credential_generation - 1)), ErrorKind.UNAUTHORIZED)
    # An OIDC-only call on a local account.
    fourth = await plane.session(name, "new-pw")
    await fails(plane.console.CreateCliSecret(pb.CreateCliSecretRequest(session=fourth)), ErrorKind.DENIED)


async def test_sessions_expire_and_idle_out(tmp_path: Path) -> None:
    database = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/s.db"))
    await migrate(database)
    try:
        # Long enough that the read right after sign-in comes within it on a loaded machine too.
        short = SessionStore(database, lifetime_seconds=2.0, idle_seconds=3600)
        secret, _ = await short.create("uid-1", 1, "127.0.0.1")
        assert (await short.get(secret)) is not None
        await asyncio.sleep(2.1)
        assert (await short.get(secret)) is None
        idle = SessionStore(database, lifetime_seconds=3600, idle_seconds=0.5)
        secret, _ = await idle.create("uid-1", 1, "127.0.0.1")
        await asyncio.sleep(0.6)
        assert (await idle.get(secret)) is None
        assert (await idle.get("")) is None
    finally:
        await database.dispose()
