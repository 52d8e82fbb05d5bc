"""gRPC channels of the operator commands (`lading gc|repo|tag|manifest|blob|check|maintenance`,
`lading events ...`, `lading user|robot|grant ...`).

They present the `operator` role (services/common/rpc_roles.py): on a plane's unix socket (what
`lading serve` uses) that needs nothing, the socket's permissions do; over TCP, the token in
`operator.token_file` (`LADING_OPERATOR__TOKEN_FILE`) and/or a client certificate named in the
planes' `grpc_access.operator.certificate_names`. TLS: `operator.tls` when enabled, else the
gateway's `gateway.grpc.tls` (`LADING_GATEWAY__GRPC__TLS__*`): the channel verifies the planes
with `ca_file`, presents `cert_file`/`key_file` for mutual TLS and checks `server_name_override`
when the certificate's name differs from the target's host (services/common/tls.py). A plane
that refuses the command's identity ends it with ACCESS_REFUSED_EXIT and a message naming the role
and these settings, even inside loops that tolerate other failures (`lading check`, `lading gc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from services.cli_targets import UNREACHABLE_EXIT, PlaneFailed, PlaneTarget, check_reachable
from services.common.access import AccessConfigError
from services.common.bearer import token_file_interceptors
from services.common.errors import from_rpc_error, is_access_refusal
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import GrpcTlsSettings, Settings
from services.common.tls import TlsConfigError, channel_credentials, channel_options

TLS_SECTION = "gateway.grpc.tls"
# Exit code of a command whose TLS or token settings cannot work (missing or unreadable files).
TLS_CONFIG_EXIT = 2
# Exit code of a command a plane refused for lack of the operator role.
ACCESS_REFUSED_EXIT = 2
OPERATOR_CREDENTIALS_HINT = (
    "operator commands need the operator role: set LADING_OPERATOR__TOKEN_FILE to a file holding a token "
    "listed in the planes' grpc_access.operator.token_file, or present a client certificate named in "
    "grpc_access.operator.certificate_names (LADING_OPERATOR__TLS__ENABLED=true, __CERT_FILE, __KEY_FILE, "
    "__CA_FILE); on the plane's own host, its unix socket needs none"
)


class PlaneRefused(Exception):
    """A plane refused the command's identity. Deliberately not a grpc.RpcError, so that loops
    which tolerate failed calls (`lading check` counting missing blobs) do not swallow it."""

    def __init__(self, plane: str, target: str, error: grpc.RpcError) -> None:
        self.plane, self.target = plane, target
        self.code = error.code()
        self.details = error.details() or str(self.code)
        super().__init__(f"the {plane} plane at {target} refused the call: {self.details}")


class _RefusalUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, plane: str, target: str) -> None:
        self._plane, self._target = plane, target

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        call = await continuation(client_call_details, request)
        try:
            return await call
        except grpc.RpcError as error:
            if is_access_refusal(error):
                raise PlaneRefused(self._plane, self._target, error) from None
            raise


class _RefusalUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, plane: str, target: str) -> None:
        self._plane, self._target = plane, target

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        call = await continuation(client_call_details, request)
        plane, target = self._plane, self._target

        async def messages():  # type: ignore[no-untyped-def]
            try:
                async for message in call:
                    yield message
            except grpc.RpcError as error:
                if is_access_refusal(error):
                    raise PlaneRefused(plane, target, error) from None
                raise

        return messages()


def command_tls(settings: Settings) -> tuple[GrpcTlsSettings, str]:
    """The TLS settings of the commands' channels and their section name: `operator.tls` when
    enabled, else the gateway's `gateway.grpc.tls`."""
    if settings.operator.tls.enabled:
        return settings.operator.tls, "operator.tls"
    return settings.gateway.grpc.tls, TLS_SECTION


def open_channel(target: str, settings: Settings, plane: str = "") -> grpc.aio.Channel:
    """A grpc.aio channel to `target` with the command's TLS (`command_tls`; plaintext when it is
    off) and the operator's token (`operator.token_file`) on every call. A refusal of the
    command's identity raises PlaneRefused naming `plane`. Raises TlsConfigError /
    AccessConfigError for unusable TLS or token settings."""
    tls, section = command_tls(settings)
    options: list[tuple[str, Any]] = [*CHANNEL_OPTIONS, *channel_options(tls)]
    interceptors = [
        *token_file_interceptors(settings.operator.token_file, "operator.token_file"),
        _RefusalUnaryUnary(plane or "a", target),
        _RefusalUnaryStream(plane or "a", target),
    ]
    if tls.enabled:
        return grpc.aio.secure_channel(target, channel_credentials(tls, section=section), options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


def report_tls_error(command: str, error: TlsConfigError | AccessConfigError) -> int:
    """Prints why the TLS or token settings cannot work; returns the exit code."""
    print(f"lading {command}: {error}", file=sys.stderr)
    return TLS_CONFIG_EXIT


def report_refusal(command: str, refused: PlaneRefused) -> int:
    """Prints which role the plane wanted and how to present it; returns the exit code."""
    print(f"lading {command}: {refused}", file=sys.stderr)
    print(f"lading {command}: {OPERATOR_CREDENTIALS_HINT}", file=sys.stderr)
    return ACCESS_REFUSED_EXIT


async def with_planes(command: str, targets: Mapping[str, PlaneTarget], settings: Settings,
                      dispatch: Callable[[dict[str, grpc.aio.Channel]], Awaitable[int]]) -> int:
    """Runs one operator command: opens a channel to each named plane target (see `open_channel`;
    targets from services/cli_targets.py), checks that every one accepts a connection, calls
    `dispatch` with them and closes them. Unusable TLS or token settings end the command with
    TLS_CONFIG_EXIT, a refusal of its identity with ACCESS_REFUSED_EXIT, an unreachable plane (at
    the start, or `PlaneFailed` later) with UNREACHABLE_EXIT naming its target and where it came
    from, a failed call with exit code 1; each prints `lading <command>: <why>`."""
    try:
        channels = {name: open_channel(target.address, settings, name) for name, target in targets.items()}
    except (TlsConfigError, AccessConfigError) as error:
        return report_tls_error(command, error)
    async with contextlib.AsyncExitStack() as opened:
        for channel in channels.values():
            await opened.enter_async_context(channel)
        problems = await asyncio.gather(*(check_reachable(channels[name], target) for name, target in targets.items()))
        if any(problems):
            for problem in filter(None, problems):
                print(f"lading {command}: {problem}", file=sys.stderr)
            return UNREACHABLE_EXIT
        try:
            return await dispatch(channels)
        except PlaneRefused as refused:
            return report_refusal(command, refused)
        except PlaneFailed as failed:
            print(f"lading {command}: {targets[failed.plane].failed(failed.message)}", file=sys.stderr)
            return UNREACHABLE_EXIT
        except grpc.RpcError as error:
            print(f"lading {command}: {from_rpc_error(error).message}", file=sys.stderr)
            return 1


def admin_request_context() -> Any:
    """The RequestContext the admin commands send with deletes, so that their delete events name
    the actor `lading-admin` (services/metadata/events/envelope.py)."""
    from lading.common.v1 import common_pb2

    from services.metadata.events.envelope import ADMIN_ACTOR, internal_request

    info = internal_request(ADMIN_ACTOR)
    return common_pb2.RequestContext(request_id=info.request_id, method=info.method, user_agent=info.user_agent,
                                     actor=info.actor)
