"""The gateway's client of AccountService (served by the metadata plane), with deadlines.

Every gRPC failure leaves as a RegistryError (`from_rpc_error`), as in gateway.clients.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from gateway.auth.scopes import Scope
from services.common.errors import from_rpc_error


class AccountClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = accounts_pb2_grpc.AccountServiceStub(channel)
        self._timeout = timeout

    async def authenticate(self, name: str, secret: str) -> accounts_pb2.Account:
        """The account; raises UNAUTHORIZED for bad credentials (UNAVAILABLE when the plane is down)."""
        try:
            response = await self._stub.Authenticate(
                accounts_pb2.AuthenticateRequest(name=name, secret=secret), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response.account

    async def authorize(self, account: str, scopes: Sequence[Scope]) -> tuple[list[Scope], bool]:
        """(granted scopes, in request order; whether `account` is valid). "" is anonymous."""
        if not scopes and not account:
            return [], True
        request = accounts_pb2.AuthorizeRequest(
            account=account,
            scopes=[accounts_pb2.Scope(type=s.type, name=s.name, actions=list(s.actions)) for s in scopes],
        )
        try:
            response = await self._stub.Authorize(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        granted = [Scope(s.type, s.name, tuple(s.actions)) for s in response.granted]
        return granted, response.account_valid
