"""The gateway's client of AccountService (served by the metadata plane), with deadlines.

Every gRPC failure leaves as a RegistryError (`from_rpc_error`), as in gateway.clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from gateway.auth.scopes import Scope
from services.common.errors import from_rpc_error


@dataclass(frozen=True, slots=True)
class Identity:
    """An account as of a successful check: tokens and caches carry its immutable id and the
    credential generation they were made for."""

    name: str
    account_id: str
    generation: int
    # Unix seconds; 0 = never expires. The credential's end: the account's expiry or, for an OIDC
    # account, its CLI secret's, whichever comes first. Tokens made for the identity and the
    # gateway's memory of the check end there too.
    expires_at: int = 0

    @classmethod
    def of(cls, account: accounts_pb2.Account) -> Identity:
        ends = [moment for moment in (account.expires_at, account.secret_expires_at) if moment]
        return cls(account.name, account.id, account.credential_generation, min(ends, default=0))


@dataclass(frozen=True, slots=True)
class CredentialState:
    account_id: str
    name: str
    generation: int
    active: bool


class AccountClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = accounts_pb2_grpc.AccountServiceStub(channel)
        self._timeout = timeout

    async def authenticate(self, name: str, secret: str, *, client_address: str = "",
                           verified_recently: bool = False) -> Identity:
        """The account; raises UNAUTHORIZED for bad credentials, TOOMANYREQUESTS when the metadata
        plane's password checks are saturated (UNAVAILABLE when the plane is down)."""
        try:
            response = await self._stub.Authenticate(
                accounts_pb2.AuthenticateRequest(name=name, secret=secret, client_address=client_address,
                                                 verified_recently=verified_recently),
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return Identity.of(response.account)

    async def authorize(self, account: str, scopes: Sequence[Scope], *, identity: Identity | None = None
                        ) -> tuple[list[Scope], bool]:
        """(granted scopes, in request order; whether `account` is valid). "" is anonymous. With
        `identity`, the account must still have its id and credential generation to be valid."""
        if not scopes and not account:
            return [], True
        request = accounts_pb2.AuthorizeRequest(
            account=account,
            scopes=[accounts_pb2.Scope(type=s.type, name=s.name, actions=list(s.actions)) for s in scopes],
        )
        if identity is not None:
            request.account_id = identity.account_id
            request.credential_generation = identity.generation
        try:
            response = await self._stub.Authorize(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        granted = [Scope(s.type, s.name, tuple(s.actions)) for s in response.granted]
        return granted, response.account_valid

    async def credential_states(self, account_ids: Sequence[str]) -> dict[str, CredentialState]:
        """{account id: its current state}; deleted accounts are absent."""
        try:
            response = await self._stub.GetCredentialStates(
                accounts_pb2.GetCredentialStatesRequest(account_ids=list(account_ids)), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return {
            s.account_id: CredentialState(s.account_id, s.name, s.credential_generation, s.active)
            for s in response.states
        }
