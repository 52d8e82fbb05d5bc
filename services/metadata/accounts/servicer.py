"""AccountServiceServicer: protobuf <-> `AccountsCore`, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from lading.metadata.v1 import accounts_pb2 as pb
from lading.metadata.v1 import accounts_pb2_grpc

from services.metadata.accounts.core import AccountsCore
from services.metadata.accounts.policy import Scope
from services.metadata.accounts.store import GroupMapping, StoredAccount

_KINDS = {"user": pb.ACCOUNT_KIND_USER, "robot": pb.ACCOUNT_KIND_ROBOT}


def account_message(account: StoredAccount) -> pb.Account:
    return pb.Account(
        name=account.name, kind=_KINDS.get(account.kind, pb.ACCOUNT_KIND_UNSPECIFIED), is_admin=account.is_admin,
        description=account.description,
        expires_at=int(account.expires_at.timestamp()) if account.expires_at else 0,
        created_at=int(account.created_at.timestamp()), id=account.uid,
        credential_generation=account.credential_generation, disabled=account.disabled,
        origin=account.origin, groups=list(account.groups),
        groups_checked_at=int(account.groups_checked_at.timestamp()) if account.groups_checked_at else 0,
        secret_expires_at=int(account.secret_expires_at.timestamp()) if account.secret_expires_at else 0,
    )


def mapping_message(mapping: GroupMapping) -> pb.GroupMapping:
    return pb.GroupMapping(provider=mapping.provider, group=mapping.group, pattern=mapping.pattern,
                           actions=[] if mapping.admin else list(mapping.actions), admin=mapping.admin)


def _permission(name: str, pattern: str, actions: tuple[str, ...]) -> pb.Permission:
    return pb.Permission(account=name, pattern=pattern, actions=list(actions))


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    def __init__(self, core: AccountsCore) -> None:
        self._core = core

    @property
    def core(self) -> AccountsCore:
        return self._core

    async def close(self) -> None:
        """Stops the bcrypt threads (after the server drained)."""
        self._core.close()

    async def CreateUser(self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext
                         ) -> pb.CreateUserResponse:
        account = await self._core.create_user(
            request.name, request.password, is_admin=request.is_admin, description=request.description
        )
        return pb.CreateUserResponse(account=account_message(account))

    async def SetPassword(self, request: pb.SetPasswordRequest, context: grpc.aio.ServicerContext
                          ) -> pb.SetPasswordResponse:
        await self._core.set_password(request.name, request.password)
        return pb.SetPasswordResponse()

    async def DeleteAccount(self, request: pb.DeleteAccountRequest, context: grpc.aio.ServicerContext
                            ) -> pb.DeleteAccountResponse:
        await self._core.delete_account(request.name)
        return pb.DeleteAccountResponse()

    async def CreateRobot(self, request: pb.CreateRobotRequest, context: grpc.aio.ServicerContext
                          ) -> pb.CreateRobotResponse:
        expires = datetime.fromtimestamp(request.expires_at, UTC) if request.expires_at else None
        created = await self._core.create_robot(request.name, description=request.description, expires_at=expires)
        return pb.CreateRobotResponse(account=account_message(created.account), secret=created.secret)

    async def ListAccounts(self, request: pb.ListAccountsRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ListAccountsResponse:
        return pb.ListAccountsResponse(accounts=[account_message(a) for a in await self._core.list_accounts()])

    async def Grant(self, request: pb.GrantRequest, context: grpc.aio.ServicerContext) -> pb.GrantResponse:
        actions = await self._core.grant(request.account, request.pattern, list(request.actions))
        return pb.GrantResponse(permission=_permission(request.account, request.pattern, actions))

    async def Revoke(self, request: pb.RevokeRequest, context: grpc.aio.ServicerContext) -> pb.RevokeResponse:
        return pb.RevokeResponse(
            revoked=await self._core.revoke(request.account, request.pattern, list(request.actions))
        )

    async def ListGrants(self, request: pb.ListGrantsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListGrantsResponse:
        rows = await self._core.list_grants(request.account)
        return pb.ListGrantsResponse(permissions=[_permission(*row) for row in rows])

    async def Authenticate(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext
                           ) -> pb.AuthenticateResponse:
        account = await self._core.authenticate(request.name, request.secret,
                                                verified_recently=request.verified_recently,
                                                client_address=request.client_address)
        return pb.AuthenticateResponse(account=account_message(account))

    async def Authorize(self, request: pb.AuthorizeRequest, context: grpc.aio.ServicerContext
                        ) -> pb.AuthorizeResponse:
        scopes = [Scope(s.type, s.name, tuple(s.actions)) for s in request.scopes]
        granted, valid = await self._core.authorize(request.account, scopes, account_id=request.account_id,
                                                    generation=request.credential_generation)
        return pb.AuthorizeResponse(
            granted=[pb.Scope(type=s.type, name=s.name, actions=list(s.actions)) for s in granted],
            account_valid=valid,
        )

    async def RevokeTokens(self, request: pb.RevokeTokensRequest, context: grpc.aio.ServicerContext
                           ) -> pb.RevokeTokensResponse:
        return pb.RevokeTokensResponse(account=account_message(await self._core.revoke_tokens(request.name)))

    async def RotateRobotSecret(self, request: pb.RotateRobotSecretRequest, context: grpc.aio.ServicerContext
                                ) -> pb.RotateRobotSecretResponse:
        rotated = await self._core.rotate_robot_secret(request.name)
        return pb.RotateRobotSecretResponse(account=account_message(rotated.account), secret=rotated.secret)

    async def SetAccountDisabled(self, request: pb.SetAccountDisabledRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.SetAccountDisabledResponse:
        account = await self._core.set_disabled(request.name, request.disabled)
        return pb.SetAccountDisabledResponse(account=account_message(account))

    async def GetCredentialStates(self, request: pb.GetCredentialStatesRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetCredentialStatesResponse:
        now = datetime.now(UTC)
        return pb.GetCredentialStatesResponse(states=[
            pb.CredentialState(
                account_id=a.uid, name=a.name, credential_generation=a.credential_generation, active=a.active(now),
                expires_at=int(a.expires_at.timestamp()) if a.expires_at else 0,
            )
            for a in await self._core.credential_states(list(request.account_ids))
        ])

    async def MapGroup(self, request: pb.MapGroupRequest, context: grpc.aio.ServicerContext) -> pb.MapGroupResponse:
        wanted = request.mapping
        mapping = await self._core.map_group(wanted.provider, wanted.group, wanted.pattern, list(wanted.actions),
                                             admin=wanted.admin)
        return pb.MapGroupResponse(mapping=mapping_message(mapping))

    async def UnmapGroup(self, request: pb.UnmapGroupRequest, context: grpc.aio.ServicerContext
                         ) -> pb.UnmapGroupResponse:
        wanted = request.mapping
        removed = await self._core.unmap_group(wanted.provider, wanted.group, wanted.pattern, list(wanted.actions),
                                               admin=wanted.admin)
        return pb.UnmapGroupResponse(removed=removed)

    async def ListGroupMappings(self, request: pb.ListGroupMappingsRequest, context: grpc.aio.ServicerContext
                                ) -> pb.ListGroupMappingsResponse:
        return pb.ListGroupMappingsResponse(
            mappings=[mapping_message(m) for m in await self._core.list_mappings(request.provider)])
