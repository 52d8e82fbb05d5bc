"""The gateway's client of ConsoleService (served by the metadata plane), with deadlines.

Every gRPC failure leaves as a RegistryError (`from_rpc_error`), as in gateway.clients.
"""

from __future__ import annotations

from typing import Any

import grpc
from lading.common.v1 import common_pb2
from lading.metadata.v1 import accounts_pb2, admin_pb2, console_pb2, console_pb2_grpc, events_pb2

from gateway import request_context
from services.common.errors import from_rpc_error

pb = console_pb2


class ConsoleClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = console_pb2_grpc.ConsoleServiceStub(channel)
        self._timeout = timeout

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # -- sessions -----------------------------------------------------------------------------

    async def sign_in_options(self) -> pb.SignInOptions:
        return await self._call("GetSignInOptions", pb.GetSignInOptionsRequest())

    async def create_session(self, account_id: str, generation: int, client_address: str) -> pb.SessionResponse:
        return await self._call("CreateSession", pb.CreateSessionRequest(
            account_id=account_id, credential_generation=generation, client_address=client_address))

    async def oidc_url(self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        answer = await self._call("OidcAuthorizationUrl", pb.OidcAuthorizationUrlRequest(
            redirect_uri=redirect_uri, state=state, nonce=nonce, code_challenge=code_challenge))
        return answer.url

    async def complete_oidc(self, *, code: str, code_verifier: str, redirect_uri: str, nonce: str,
                            client_address: str) -> pb.SessionResponse:
        return await self._call("CompleteOidcSignIn", pb.CompleteOidcSignInRequest(
            code=code, code_verifier=code_verifier, redirect_uri=redirect_uri, nonce=nonce,
            client_address=client_address))

    async def session(self, session: str) -> pb.SessionResponse:
        return await self._call("GetSession", pb.SessionRequest(session=session))

    async def end_session(self, session: str) -> None:
        await self._call("EndSession", pb.SessionRequest(session=session))

    async def create_cli_secret(self, session: str, lifetime_seconds: int) -> pb.CreateCliSecretResponse:
        return await self._call("CreateCliSecret", pb.CreateCliSecretRequest(
            session=session, lifetime_seconds=lifetime_seconds))

    async def revoke_cli_secret(self, session: str) -> pb.SessionResponse:
        return await self._call("RevokeCliSecret", pb.SessionRequest(session=session))

    # -- browsing -------------------------------------------------------------------------------

    async def search(self, session: str, query: str, last: str, limit: int) -> pb.SearchRepositoriesResponse:
        return await self._call("SearchRepositories", pb.SearchRepositoriesRequest(
            session=session, query=query, page=common_pb2.PageRequest(limit=limit, has_limit=True, last=last)))

    async def tags(self, session: str, repository: str, query: str, last: str, limit: int
                   ) -> pb.ListTagDetailsResponse:
        return await self._call("ListTagDetails", pb.ListTagDetailsRequest(
            session=session, repository=repository, query=query,
            page=common_pb2.PageRequest(limit=limit, has_limit=True, last=last)))

    async def manifest(self, session: str, repository: str, reference: str) -> pb.GetManifestDetailsResponse:
        return await self._call("GetManifestDetails", pb.GetManifestDetailsRequest(
            session=session, repository=repository, reference=reference))

    async def referrers(self, session: str, repository: str, digest: str) -> pb.ListReferrerTreeResponse:
        return await self._call("ListReferrerTree", pb.ListReferrerTreeRequest(
            session=session, repository=repository, digest=digest))

    async def delete_tag(self, session: str, repository: str, tag: str) -> None:
        context = request_context.current() or common_pb2.RequestContext()
        await self._call("DeleteTag", pb.ConsoleDeleteTagRequest(
            session=session, repository=repository, tag=tag, context=context))

    # -- administration ---------------------------------------------------------------------------

    async def accounts(self, session: str) -> accounts_pb2.ListAccountsResponse:
        return await self._call("AdminListAccounts", pb.AdminListAccountsRequest(session=session))

    async def create_user(self, session: str, name: str, password: str, is_admin: bool) -> accounts_pb2.CreateUserResponse:
        return await self._call("AdminCreateUser", pb.AdminCreateUserRequest(
            session=session, request=accounts_pb2.CreateUserRequest(name=name, password=password, is_admin=is_admin)))

    async def delete_account(self, session: str, name: str) -> None:
        await self._call("AdminDeleteAccount", pb.AdminDeleteAccountRequest(
            session=session, request=accounts_pb2.DeleteAccountRequest(name=name)))

    async def set_disabled(self, session: str, name: str, disabled: bool) -> None:
        await self._call("AdminSetAccountDisabled", pb.AdminSetAccountDisabledRequest(
            session=session, request=accounts_pb2.SetAccountDisabledRequest(name=name, disabled=disabled)))

    async def create_robot(self, session: str, name: str, description: str, expires_at: int
                           ) -> accounts_pb2.CreateRobotResponse:
        return await self._call("AdminCreateRobot", pb.AdminCreateRobotRequest(
            session=session, request=accounts_pb2.CreateRobotRequest(name=name, description=description,
                                                                     expires_at=expires_at)))

    async def grant(self, session: str, account: str, pattern: str, actions: list[str]) -> None:
        await self._call("AdminGrant", pb.AdminGrantRequest(
            session=session, request=accounts_pb2.GrantRequest(account=account, pattern=pattern, actions=actions)))

    async def revoke(self, session: str, account: str, pattern: str, actions: list[str]) -> bool:
        answer = await self._call("AdminRevoke", pb.AdminRevokeRequest(
            session=session, request=accounts_pb2.RevokeRequest(account=account, pattern=pattern, actions=actions)))
        return answer.revoked

    async def grants(self, session: str) -> accounts_pb2.ListGrantsResponse:
        return await self._call("AdminListGrants", pb.AdminListGrantsRequest(
            session=session, request=accounts_pb2.ListGrantsRequest()))

    async def mappings(self, session: str) -> accounts_pb2.ListGroupMappingsResponse:
        return await self._call("AdminListGroupMappings", pb.AdminListGroupMappingsRequest(
            session=session, request=accounts_pb2.ListGroupMappingsRequest()))

    async def map_group(self, session: str, mapping: accounts_pb2.GroupMapping) -> None:
        await self._call("AdminMapGroup", pb.AdminMapGroupRequest(
            session=session, request=accounts_pb2.MapGroupRequest(mapping=mapping)))

    async def unmap_group(self, session: str, mapping: accounts_pb2.GroupMapping) -> bool:
        answer = await self._call("AdminUnmapGroup", pb.AdminUnmapGroupRequest(
            session=session, request=accounts_pb2.UnmapGroupRequest(mapping=mapping)))
        return answer.removed

    async def gc_stats(self, session: str) -> admin_pb2.GcStatsResponse:
        return await self._call("AdminGcStats", pb.AdminGcStatsRequest(
            session=session, request=admin_pb2.GcStatsRequest(last_runs=5)))

    async def gc_plan(self, session: str, delete_untagged: bool) -> admin_pb2.GcPlanResponse:
        return await self._call("AdminGcPlan", pb.AdminGcPlanRequest(
            session=session, request=admin_pb2.GcPlanRequest(delete_untagged=delete_untagged)))

    async def events(self, session: str, state: str, before_id: int, limit: int) -> events_pb2.ListEventsResponse:
        return await self._call("AdminListEvents", pb.AdminListEventsRequest(
            session=session, request=events_pb2.ListEventsRequest(state=state, limit=limit, before_id=before_id)))

    async def replay(self, session: str, row_id: int, dead: bool) -> int:
        answer = await self._call("AdminReplayEvents", pb.AdminReplayEventsRequest(
            session=session, request=events_pb2.ReplayEventsRequest(id=row_id, dead=dead)))
        return answer.replayed

    async def maintenance(self, session: str) -> bool:
        return (await self._call("AdminGetMaintenance", pb.AdminGetMaintenanceRequest(session=session))).on

    async def set_maintenance(self, session: str, on: bool) -> bool:
        return (await self._call("AdminSetMaintenance", pb.AdminSetMaintenanceRequest(
            session=session, request=admin_pb2.SetMaintenanceRequest(on=on)))).on

    async def storage(self, session: str, limit: int) -> pb.AdminStorageResponse:
        return await self._call("AdminStorage", pb.AdminStorageRequest(session=session, limit=limit))
