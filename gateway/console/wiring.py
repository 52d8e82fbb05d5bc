"""Builds the console's parts for the gateway's lifespan (gateway/app.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from gateway.console.client import ConsoleClient
from gateway.console.context import Console
from gateway.console.security import OidcStateCookie
from services.common.settings import Settings

if TYPE_CHECKING:
    from gateway.auth.gate import AuthGate


def build_console(settings: Settings, metadata_channel: grpc.aio.Channel, auth: AuthGate | None) -> Console:
    cookies = None
    if auth is not None:
        cookies = OidcStateCookie(auth.upload_states.derived_key(b"lading console oidc sign-in v1"))
    return Console(
        client=ConsoleClient(metadata_channel, timeout=settings.gateway.grpc.timeout_seconds),
        settings=settings.console,
        oidc_cookies=cookies,
    )
