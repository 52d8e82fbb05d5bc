"""What every console page receives: the Gateway's console parts, the request, the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lading.metadata.v1 import console_pb2
from starlette.requests import Request

from gateway.console.client import ConsoleClient
from gateway.console.security import OidcStateCookie
from services.common.settings import ConsoleSettings

if TYPE_CHECKING:
    from gateway.context import Gateway


@dataclass(frozen=True, slots=True)
class Console:
    """Built once per gateway process by the app's lifespan."""

    client: ConsoleClient
    settings: ConsoleSettings
    # None when auth is off (there is no single sign-on without accounts).
    oidc_cookies: OidcStateCookie | None


@dataclass
class Page:
    request: Request
    gateway: Gateway
    console: Console
    # The session secret from the cookie ("" when none).
    secret: str
    # Who is signed in (signed_in False: auth is off); None on the pages that need no session.
    me: console_pb2.SessionResponse | None = None
    # The POST body, parsed (CSRF already checked).
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def client(self) -> ConsoleClient:
        return self.console.client
