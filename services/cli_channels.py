"""gRPC channels of the operator commands (`lading gc|repo|tag|manifest|blob|check|maintenance`,
`lading events ...`, `lading user|robot|grant ...`).

They dial the planes the way the gateway does: with `gateway.grpc.tls.enabled`
(`LADING_GATEWAY__GRPC__TLS__*`) the channel speaks TLS, verifying the planes with `ca_file`,
presenting `cert_file`/`key_file` for mutual TLS and checking `server_name_override` when the
certificate's name differs from the target's host (services/common/tls.py); otherwise plaintext.
An operator host therefore needs the same client settings as a gateway to reach TLS planes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from services.cli_targets import UNREACHABLE_EXIT, PlaneFailed, PlaneTarget, check_reachable
from services.common.errors import from_rpc_error
from services.common.grpc_server import CHANNEL_OPTIONS
from services.common.settings import Settings
from services.common.tls import TlsConfigError, channel_credentials, channel_options

TLS_SECTION = "gateway.grpc.tls"
# Exit code of a command whose TLS settings cannot work (missing or unreadable files).
TLS_CONFIG_EXIT = 2


def open_channel(target: str, settings: Settings) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` with the gateway's client TLS settings (plaintext when
    `gateway.grpc.tls.enabled` is false). Raises TlsConfigError for unusable TLS settings."""
    tls = settings.gateway.grpc.tls
    options: list[tuple[str, Any]] = [*CHANNEL_OPTIONS, *channel_options(tls)]
    if tls.enabled:
        return grpc.aio.secure_channel(target, channel_credentials(tls, section=TLS_SECTION), options=options)
    return grpc.aio.insecure_channel(target, options=options)


def report_tls_error(command: str, error: TlsConfigError) -> int:
    """Prints why the TLS settings cannot work; returns the exit code."""
    print(f"lading {command}: {error}", file=sys.stderr)
    return TLS_CONFIG_EXIT


async def with_planes(command: str, targets: Mapping[str, PlaneTarget], settings: Settings,
                      dispatch: Callable[[dict[str, grpc.aio.Channel]], Awaitable[int]]) -> int:
    """Runs one operator command: opens a channel to each named plane target (see `open_channel`;
    targets from services/cli_targets.py), checks that every one accepts a connection, calls
    `dispatch` with them and closes them. Unusable TLS settings end the command with
    TLS_CONFIG_EXIT, an unreachable plane (at the start, or `PlaneFailed` later) with
    UNREACHABLE_EXIT naming its target and where it came from, a failed call with exit code 1;
    each prints `lading <command>: <why>`."""
    try:
        channels = {name: open_channel(target.address, settings) for name, target in targets.items()}
    except TlsConfigError as error:
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
