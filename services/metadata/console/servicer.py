"""ConsoleServiceServicer: protobuf <-> ConsoleCore; the Admin* calls hand the inner request to the
operator servicers (accounts, GC/admin, events) once the session is an admin's, so the console
and the `lading` commands run the very same code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import orjson
from lading.common.v1 import common_pb2
from lading.metadata.v1 import accounts_pb2, admin_pb2, console_pb2, console_pb2_grpc, events_pb2

from services.common.digests import Digest
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag
from services.metadata.accounts.oidc_errors import ProviderUnavailable, SignInRefused
from services.metadata.accounts.servicer import AccountServicer, account_message
from services.metadata.console.core import Actor, ConsoleCore
from services.metadata.core import MetadataCore
from services.metadata.events import context as event_context
from services.metadata.events.servicer import EventsServicer
from services.metadata.gc.servicer import AdminServicer, run_message

if TYPE_CHECKING:  # httpx and PyJWT load only where an OIDC provider is configured (wiring.py)
    from services.metadata.accounts.oidc import OidcProvider

pb = console_pb2
_DEFAULT_PAGE, _MAX_PAGE = 50, 1000
_DEFAULT_DEPTH, _MAX_DEPTH = 4, 16
_DEFAULT_NODES, _MAX_NODES = 200, 2000
_DEFAULT_STORAGE_ROWS, _MAX_STORAGE_ROWS = 20, 500
# Tags of a page whose pull policies are evaluated at once (each takes a database connection for
# its reads: a 1000-tag page must not take the whole pool).
_REFUSAL_CHECKS = 4


def _seconds(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def _page(page: common_pb2.PageRequest) -> int:
    if not page.has_limit:
        return _DEFAULT_PAGE
    if page.limit < 0:
        raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID, f"invalid page size {page.limit}")
    return min(page.limit, _MAX_PAGE)


def _bounded(value: int, default: int, maximum: int) -> int:
    return default if value <= 0 else min(value, maximum)


class ConsoleServicer(console_pb2_grpc.ConsoleServiceServicer):
    def __init__(self, core: ConsoleCore, *, metadata: MetadataCore, accounts: AccountServicer,
                 admin: AdminServicer, events: EventsServicer, oidc: OidcProvider | None,
                 cli_secret_max_seconds: int, on_change: Callable[[], None] | None = None) -> None:
        self._core = core
        self._metadata = metadata
        self._accounts = accounts
        self._admin = admin
        self._events = events
        self._oidc = oidc
        self._cli_secret_max = cli_secret_max_seconds
        self._changed = on_change or (lambda: None)

    async def close(self) -> None:
        if self._oidc is not None:
            await self._oidc.close()

    def _session(self, actor: Actor, secret: str = "") -> pb.SessionResponse:
        answer = pb.SessionResponse(session=secret, is_admin=actor.is_admin, signed_in=actor.account is not None)
        if actor.account is not None:
            answer.account.CopyFrom(account_message(actor.account))
        if actor.session is not None:
            answer.expires_at = _seconds(actor.session.expires_at)
        return answer

    # -- signing in and out ---------------------------------------------------------------------

    async def GetSignInOptions(self, request: pb.GetSignInOptionsRequest, context: grpc.aio.ServicerContext
                               ) -> pb.SignInOptions:
        return pb.SignInOptions(
            auth_enabled=self._core.auth_enabled, oidc=self._oidc is not None,
            oidc_display_name=self._oidc.display_name if self._oidc is not None else "",
            ldap=self._core.accounts.directory is not None,
        )

    async def CreateSession(self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
                            ) -> pb.SessionResponse:
        secret, actor = await self._core.create_session(request.account_id, request.credential_generation,
                                                        request.client_address)
        return self._session(actor, secret)

    def _provider(self) -> OidcProvider:
        if self._oidc is None or not self._core.auth_enabled:
            raise RegistryError(ErrorKind.UNSUPPORTED, "single sign-on is not configured (auth.oidc.issuer)")
        return self._oidc

    async def OidcAuthorizationUrl(self, request: pb.OidcAuthorizationUrlRequest,
                                   context: grpc.aio.ServicerContext) -> pb.OidcAuthorizationUrlResponse:
        provider = self._provider()
        try:
            url = await provider.authorization_url(redirect_uri=request.redirect_uri, state=request.state,
                                                   nonce=request.nonce, code_challenge=request.code_challenge)
        except ProviderUnavailable as exc:
            raise RegistryError(ErrorKind.UNAVAILABLE, str(exc)) from None
        return pb.OidcAuthorizationUrlResponse(url=url)

    async def CompleteOidcSignIn(self, request: pb.CompleteOidcSignInRequest,
                                 context: grpc.aio.ServicerContext) -> pb.SessionResponse:
        provider = self._provider()
        try:
            identity = await provider.complete(code=request.code, code_verifier=request.code_verifier,
                                               redirect_uri=request.redirect_uri, nonce=request.nonce)
        except ProviderUnavailable as exc:
            raise RegistryError(ErrorKind.UNAVAILABLE, str(exc)) from None
        except SignInRefused as exc:
            raise RegistryError(ErrorKind.UNAUTHORIZED, str(exc)) from None
        account = await self._core.accounts.oidc_account(username=identity.username,
                                                         external_id=identity.external_id, groups=identity.groups)
        if not account.active(datetime.now(UTC)):
            raise RegistryError(ErrorKind.UNAUTHORIZED, f"the account {account.name!r} is disabled")
        secret, actor = await self._core.open_session(account, request.client_address)
        return self._session(actor, secret)

    async def GetSession(self, request: pb.SessionRequest, context: grpc.aio.ServicerContext) -> pb.SessionResponse:
        return self._session(await self._core.actor(request.session))

    async def EndSession(self, request: pb.SessionRequest, context: grpc.aio.ServicerContext
                         ) -> pb.EndSessionResponse:
        await self._core.end_session(request.session)
        return pb.EndSessionResponse()

    async def CreateCliSecret(self, request: pb.CreateCliSecretRequest, context: grpc.aio.ServicerContext
                              ) -> pb.CreateCliSecretResponse:
        secret, expires, actor = await self._core.create_cli_secret(request.session, request.lifetime_seconds,
                                                                    self._cli_secret_max)
        return pb.CreateCliSecretResponse(secret=secret, expires_at=_seconds(expires), session=self._session(actor))

    async def RevokeCliSecret(self, request: pb.SessionRequest, context: grpc.aio.ServicerContext
                              ) -> pb.SessionResponse:
        return self._session(await self._core.revoke_cli_secret(request.session))

    # -- browsing -------------------------------------------------------------------------------

    async def SearchRepositories(self, request: pb.SearchRepositoriesRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.SearchRepositoriesResponse:
        actor = await self._core.actor(request.session)
        rows, more = await self._core.reads.search_repositories(
            query=request.query.strip().lower()[:255], pull_patterns=actor.pull_patterns(),
            last=request.page.last, limit=_page(request.page))
        return pb.SearchRepositoriesResponse(
            repositories=[pb.RepositoryEntry(name=r.name, tags=r.tags) for r in rows],
            page=common_pb2.PageResponse(has_more=more))

    async def ListTagDetails(self, request: pb.ListTagDetailsRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ListTagDetailsResponse:
        actor = await self._core.actor(request.session)
        repository_id = await self._core.pullable_repository(actor, request.repository)
        rows, more = await self._core.reads.tags(repository_id, query=request.query.strip()[:128],
                                                 last=request.page.last, limit=_page(request.page))
        refusals = await self._pull_refusals(request.repository, [(t.name, t.digest) for t in rows])
        return pb.ListTagDetailsResponse(
            tags=[pb.TagDetail(name=t.name, digest=t.digest, media_type=t.media_type, size=t.size,
                               pushed_at=_seconds(t.pushed_at), pushed_by=t.pushed_by, pull_refusal=refusal)
                  for t, refusal in zip(rows, refusals, strict=True)],
            page=common_pb2.PageResponse(has_more=more),
            can_delete=actor.may(request.repository, "delete"), can_push=actor.may(request.repository, "push"))

    async def GetManifestDetails(self, request: pb.GetManifestDetailsRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.GetManifestDetailsResponse:
        actor = await self._core.actor(request.session)
        repository_id = await self._core.pullable_repository(actor, request.repository)
        reference = request.reference
        if ":" in reference:
            row = await self._core.reads.manifest(repository_id, digest=str(Digest.parse(reference)))
        else:
            row = await self._core.reads.manifest(repository_id, tag=validate_tag(reference))
        if row is None:
            raise RegistryError(ErrorKind.MANIFEST_UNKNOWN, f"manifest {reference!r} is not known in "
                                f"{request.repository!r}", {"name": request.repository, "reference": reference})
        return pb.GetManifestDetailsResponse(
            digest=row.digest, media_type=row.media_type, size=row.size, payload=row.payload,
            pushed_at=_seconds(row.pushed_at), pushed_by=row.pushed_by, tags=list(row.tags),
            can_delete=actor.may(request.repository, "delete"),
            pull_refusal=await self._pull_refusal_message(request.repository,
                                                          None if ":" in reference else reference, row.digest))

    async def _pull_refusal_message(self, repository: str, tag: str | None, digest: str) -> str:
        refusal = await self._pull_refusal(repository, tag, digest)
        return refusal.message if refusal is not None else ""

    async def _pull_refusal(self, repository: str, tag: str | None, digest: str) -> pb.PullRefusal | None:
        """Why the first pull policy that refuses `digest` does (services/metadata/policies: the
        pull gates themselves, so the console says what a pull gets), or None: the console shows a
        refused manifest, and says that pulls of it are refused."""
        for gate in self._metadata.pull_gates:
            try:
                await gate.check(repository, tag, digest)
            except RegistryError as error:
                if error.kind is not ErrorKind.DENIED:
                    raise
                detail = error.detail if isinstance(error.detail, dict) else {}
                return pb.PullRefusal(policy_type=str(detail.get("policy", "")), policy=str(detail.get("rule", "")),
                                      reason=str(detail.get("reason", "")), message=error.message)
        return None

    async def _pull_refusals(self, repository: str, tags: list[tuple[str, str]]) -> list[pb.PullRefusal | None]:
        """`_pull_refusal` of each (tag, digest) of a page, `_REFUSAL_CHECKS` at a time. A
        repository no policy covers costs one in-memory pattern check per tag; a covered one the
        gates' few indexed reads per tag (their caches keep verified signatures and parsed reports)."""
        if not self._metadata.pull_gates:
            return [None] * len(tags)
        room = asyncio.Semaphore(_REFUSAL_CHECKS)

        async def one(tag: str, digest: str) -> pb.PullRefusal | None:
            async with room:
                return await self._pull_refusal(repository, tag, digest)

        return list(await asyncio.gather(*(one(tag, digest) for tag, digest in tags)))

    async def ListReferrerTree(self, request: pb.ListReferrerTreeRequest, context: grpc.aio.ServicerContext
                               ) -> pb.ListReferrerTreeResponse:
        actor = await self._core.actor(request.session)
        repository_id = await self._core.pullable_repository(actor, request.repository)
        rows, truncated = await self._core.reads.referrer_tree(
            repository_id, str(Digest.parse(request.digest)),
            max_depth=_bounded(request.max_depth, _DEFAULT_DEPTH, _MAX_DEPTH),
            max_nodes=_bounded(request.max_nodes, _DEFAULT_NODES, _MAX_NODES))
        return pb.ListReferrerTreeResponse(truncated=truncated, nodes=[
            pb.ReferrerNode(subject=r.subject, depth=r.depth, descriptor=common_pb2.Descriptor(
                media_type=r.media_type, digest=r.digest, size=r.size, artifact_type=r.artifact_type,
                annotations=orjson.loads(r.annotations) if r.annotations else None))
            for r in rows])

    async def DeleteTag(self, request: pb.ConsoleDeleteTagRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ConsoleDeleteTagResponse:
        actor = await self._core.actor(request.session)
        validate_repository(request.repository)
        await self._core.pullable_repository(actor, request.repository)
        self._core.check_delete(actor, request.repository, request.tag)
        # Events name the session's account, whatever the gateway sent.
        bound = pb.ConsoleDeleteTagRequest()
        bound.context.CopyFrom(request.context)
        bound.context.actor = actor.name
        event_context.bind(bound)
        await self._metadata.delete_manifest(request.repository, request.tag)
        self._changed()
        return pb.ConsoleDeleteTagResponse()

    # -- administration: the operator servicers, behind an admin check ---------------------------

    async def AdminListAccounts(self, request: pb.AdminListAccountsRequest, context: grpc.aio.ServicerContext
                                ) -> accounts_pb2.ListAccountsResponse:
        await self._core.admin(request.session)
        return await self._accounts.ListAccounts(accounts_pb2.ListAccountsRequest(), context)

    async def AdminCreateUser(self, request: pb.AdminCreateUserRequest, context: grpc.aio.ServicerContext
                              ) -> accounts_pb2.CreateUserResponse:
        await self._core.admin(request.session)
        return await self._accounts.CreateUser(request.request, context)

    async def AdminDeleteAccount(self, request: pb.AdminDeleteAccountRequest, context: grpc.aio.ServicerContext
                                 ) -> accounts_pb2.DeleteAccountResponse:
        actor = await self._core.admin(request.session)
        if request.request.name == actor.name:
            raise RegistryError(ErrorKind.DENIED, "you cannot delete your own account from the console")
        return await self._accounts.DeleteAccount(request.request, context)

    async def AdminSetAccountDisabled(self, request: pb.AdminSetAccountDisabledRequest,
                                      context: grpc.aio.ServicerContext) -> accounts_pb2.SetAccountDisabledResponse:
        actor = await self._core.admin(request.session)
        if request.request.name == actor.name and request.request.disabled:
            raise RegistryError(ErrorKind.DENIED, "you cannot disable your own account from the console")
        return await self._accounts.SetAccountDisabled(request.request, context)

    async def AdminCreateRobot(self, request: pb.AdminCreateRobotRequest, context: grpc.aio.ServicerContext
                               ) -> accounts_pb2.CreateRobotResponse:
        await self._core.admin(request.session)
        return await self._accounts.CreateRobot(request.request, context)

    async def AdminGrant(self, request: pb.AdminGrantRequest, context: grpc.aio.ServicerContext
                         ) -> accounts_pb2.GrantResponse:
        await self._core.admin(request.session)
        return await self._accounts.Grant(request.request, context)

    async def AdminRevoke(self, request: pb.AdminRevokeRequest, context: grpc.aio.ServicerContext
                          ) -> accounts_pb2.RevokeResponse:
        await self._core.admin(request.session)
        return await self._accounts.Revoke(request.request, context)

    async def AdminListGrants(self, request: pb.AdminListGrantsRequest, context: grpc.aio.ServicerContext
                              ) -> accounts_pb2.ListGrantsResponse:
        await self._core.admin(request.session)
        return await self._accounts.ListGrants(request.request, context)

    async def AdminListGroupMappings(self, request: pb.AdminListGroupMappingsRequest,
                                     context: grpc.aio.ServicerContext) -> accounts_pb2.ListGroupMappingsResponse:
        await self._core.admin(request.session)
        return await self._accounts.ListGroupMappings(request.request, context)

    async def AdminMapGroup(self, request: pb.AdminMapGroupRequest, context: grpc.aio.ServicerContext
                            ) -> accounts_pb2.MapGroupResponse:
        await self._core.admin(request.session)
        return await self._accounts.MapGroup(request.request, context)

    async def AdminUnmapGroup(self, request: pb.AdminUnmapGroupRequest, context: grpc.aio.ServicerContext
                              ) -> accounts_pb2.UnmapGroupResponse:
        await self._core.admin(request.session)
        return await self._accounts.UnmapGroup(request.request, context)

    async def AdminGcStats(self, request: pb.AdminGcStatsRequest, context: grpc.aio.ServicerContext
                           ) -> admin_pb2.GcStatsResponse:
        await self._core.admin(request.session)
        # Blob rows by state, review holds and the last runs: cheap. What a run would collect now
        # scans manifests and links, so it is the dry run's (AdminGcPlan), not every page view's.
        states, held = await self._admin.gc.summary()
        runs = await self._admin.gc.recent_runs(request.request.last_runs or 5)
        return admin_pb2.GcStatsResponse(
            active_blobs=states["active"][0], active_bytes=states["active"][1], pending_blobs=states["pending"][0],
            deleting_blobs=states["deleting"][0], held=held,
            runs=[run_message(r) for r in runs])

    async def AdminGcPlan(self, request: pb.AdminGcPlanRequest, context: grpc.aio.ServicerContext
                          ) -> admin_pb2.GcPlanResponse:
        await self._core.admin(request.session)
        return await self._admin.GcPlan(request.request, context)

    async def AdminListEvents(self, request: pb.AdminListEventsRequest, context: grpc.aio.ServicerContext
                              ) -> events_pb2.ListEventsResponse:
        await self._core.admin(request.session)
        return await self._events.ListEvents(request.request, context)

    async def AdminReplayEvents(self, request: pb.AdminReplayEventsRequest, context: grpc.aio.ServicerContext
                                ) -> events_pb2.ReplayEventsResponse:
        await self._core.admin(request.session)
        answer = await self._events.ReplayEvents(request.request, context)
        self._changed()
        return answer

    async def AdminGetMaintenance(self, request: pb.AdminGetMaintenanceRequest, context: grpc.aio.ServicerContext
                                  ) -> admin_pb2.MaintenanceStatus:
        await self._core.admin(request.session)
        return await self._admin.GetMaintenance(admin_pb2.GetMaintenanceRequest(), context)

    async def AdminSetMaintenance(self, request: pb.AdminSetMaintenanceRequest, context: grpc.aio.ServicerContext
                                  ) -> admin_pb2.MaintenanceStatus:
        await self._core.admin(request.session)
        return await self._admin.SetMaintenance(request.request, context)

    async def AdminStorage(self, request: pb.AdminStorageRequest, context: grpc.aio.ServicerContext
                           ) -> pb.AdminStorageResponse:
        await self._core.admin(request.session)
        rows, total, count = await self._core.reads.storage(
            _bounded(request.limit, _DEFAULT_STORAGE_ROWS, _MAX_STORAGE_ROWS))
        return pb.AdminStorageResponse(
            repositories=[admin_pb2.RepositorySummary(name=r.name, tags=r.tags, manifests=r.manifests, bytes=r.bytes)
                          for r in rows],
            total_bytes=total, repository_count=count)
