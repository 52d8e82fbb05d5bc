"""Builds the ConsoleService of the metadata process from Settings (used by main.py)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from lading.metadata.v1 import console_pb2_grpc

from services.common.settings import Settings
from services.metadata.accounts.servicer import AccountServicer
from services.metadata.console.core import ConsoleCore
from services.metadata.console.reads import ConsoleReads
from services.metadata.console.servicer import ConsoleServicer
from services.metadata.console.sessions import SessionStore
from services.metadata.core import MetadataCore
from services.metadata.events.servicer import EventsServicer
from services.metadata.gc.servicer import AdminServicer
from services.metadata.store.engine import Database

CONSOLE_SERVICE_NAME = "lading.metadata.v1.ConsoleService"


def build_console(settings: Settings, database: Database, *, metadata: MetadataCore, accounts: AccountServicer,
                  admin: AdminServicer, events: EventsServicer,
                  on_change: Callable[[], None] | None = None) -> ConsoleServicer:
    oidc = None
    if settings.auth.oidc.issuer:  # httpx and PyJWT load only when a provider is configured
        from services.metadata.accounts.oidc import OidcProvider

        oidc = OidcProvider(settings.auth.oidc)
    core = ConsoleCore(
        accounts.core,
        SessionStore(database, lifetime_seconds=settings.console.session_seconds,
                     idle_seconds=settings.console.idle_seconds),
        ConsoleReads(database),
        auth_enabled=settings.auth.mode != "none",
    )
    return ConsoleServicer(core, metadata=metadata, accounts=accounts, admin=admin, events=events, oidc=oidc,
                           cli_secret_max_seconds=settings.auth.oidc.cli_secret_max_seconds, on_change=on_change)


def add_to_server(servicer: ConsoleServicer, server: grpc.aio.Server) -> None:
    console_pb2_grpc.add_ConsoleServiceServicer_to_server(servicer, server)
