"""`AuthGate`: who is calling, and may they do what the route needs (see gateway.auth.rules).

Answers (documented in gateway/auth/__init__.py):
- no or unusable credentials → 401 UNAUTHORIZED with a challenge (`Bearer realm=...,service=...,
  scope=...` in token mode, with `error="invalid_token"` for a token that failed verification;
  `Basic realm=...` in basic mode);
- token mode, valid token without the scope → 403 DENIED with the Bearer challenge and
  `error="insufficient_scope"` (RFC 6750 section 3.1 and docker-auth-jwt.md ask for 403; CNCF
  Distribution answers 401 instead, but oras-py only fetches a wider token after a 403, and
  Docker, containerd, skopeo, crane and oras-go fetch tokens per scope before the request, so
  they only see this when the account truly lacks the permission);
- basic mode, an authenticated account without the permission → 403 DENIED (a new challenge would
  not help); an anonymous caller → 401 with the Basic challenge;
- an invalid repository name with valid credentials → 400 NAME_INVALID (checked after authentication);
- an upload session of another account → 404 BLOB_UPLOAD_UNKNOWN;
- a token (or remembered Basic check) of an account deleted, disabled or whose tokens were revoked
  → 401 like any invalid token, within the 2 s the revocation feed needs (account_status.py);
- a password check while its address or account backs off → 429 TOOMANYREQUESTS with
  `Retry-After` (logins.py, throttle.py).
The caller's identity is left in the ASGI scope (`PRINCIPAL_KEY`) for handlers that filter
(the catalog) or choose (mount sources) by it.

Basic mode remembers granted actions per (account, scope) for `auth.basic_cache_seconds`; a change
of the account (grants, deletion, disable) drops its entries as the feed reports it, and while the
feed is down only entries younger than `revocation_feed.degraded_check_seconds` count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from lading.metadata.v1 import changes_pb2
from starlette.requests import Request
from starlette.types import Scope as AsgiScope

from gateway.auth.account_status import AccountStatus
from gateway.auth.accounts import AccountClient, Identity
from gateway.auth.basic import TtlCache, bearer_token, credentials_header
from gateway.auth.change_feed import RevocationFeed
from gateway.auth.logins import Logins
from gateway.auth.rules import OPEN, Rule
from gateway.auth.scopes import CATALOG_SCOPE, Scope, repository_scope
from gateway.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier, VerifiedToken
from gateway.auth.upload_state import STATE_PARAM, UploadStates
from gateway.errors import HttpRegistryError
from gateway.middleware import BASE_URL_SCOPE_KEY, CLIENT_ADDRESS_SCOPE_KEY
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository
from services.common.settings import AuthSettings

log = logging.getLogger("lading.gateway.auth")

PRINCIPAL_KEY = "lading.auth.principal"
# The AuthGate that admitted the request (read by `upload_state_query`).
GATE_KEY = "lading.auth.gate"
# Mount without `from`: at most this many pullable repositories of the token are tried.
MAX_MOUNT_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class Principal:
    account: str  # "" when anonymous
    token: VerifiedToken | None = None  # token mode only


def client_address(request: Request) -> str:
    """The client's address: from a trusted proxy's X-Forwarded-For, else the peer's."""
    forwarded = request.scope.get(CLIENT_ADDRESS_SCOPE_KEY)
    if isinstance(forwarded, str):
        return forwarded
    return request.client.host if request.client else ""


class AuthGate:
    def __init__(self, settings: AuthSettings, *, accounts: AccountClient, upload_states: UploadStates,
                 status: AccountStatus, logins: Logins, feed: RevocationFeed,
                 verifier: TokenVerifier | None = None, issuer: TokenIssuer | None = None) -> None:
        self.settings = settings
        self.mode: Literal["basic", "token"] = "token" if settings.mode == "token" else "basic"
        self.accounts = accounts
        self.verifier = verifier
        self.issuer = issuer
        self.upload_states = upload_states
        self.status = status
        self.logins = logins
        self.feed = feed
        self._grants = TtlCache(settings.basic_cache_seconds)
        # Bumped by every account change the feed reports: a grants answer asked before a change
        # and arriving after it is not remembered.
        self._grants_epoch = 0
        feed.listen(on_change=self.account_changed, on_reset=self.feed_reset)

    # -- lifecycle (the app's lifespan) ---------------------------------------------------------

    def start(self) -> None:
        self.feed.start()

    async def close(self) -> None:
        await self.feed.close()

    def account_changed(self, change: changes_pb2.AccountChange) -> None:
        """The feed reported a change of `change.name`: forget its remembered grants (every
        account's for a change without a name: a directory group mapping changed)."""
        self._grants_epoch += 1
        if not change.name:
            self._grants.clear()
            return
        self._grants.drop_where(lambda key, _value: isinstance(key, tuple) and key[0] == change.name)

    def feed_reset(self) -> None:
        """The feed starts over: whatever it reported before may be incomplete."""
        self._grants_epoch += 1
        self._grants.clear()

    # -- challenges -----------------------------------------------------------------------------

    def realm(self, request: Request) -> str:
        if self.settings.realm:
            return self.settings.realm
        base = request.scope.get(BASE_URL_SCOPE_KEY)
        if not base:
            host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
            base = f"{request.url.scheme}://{host}"
        return f"{base}/token"

    def challenge(self, request: Request, scope: Scope | None = None, error: str | None = None) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.settings.service}"'
        parts = [f'realm="{self.realm(request)}"', f'service="{self.settings.service}"']
        if scope is not None:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def unauthorized(self, request: Request, message: str, scope: Scope | None = None,
                     error: str | None = None) -> HttpRegistryError:
        detail = None
        if scope is not None:
            detail = [{"Type": scope.type, "Name": scope.name, "Action": a} for a in scope.actions]
        return HttpRegistryError(
            ErrorKind.UNAUTHORIZED, message, detail,
            headers={"www-authenticate": self.challenge(request, scope, error)},
        )

    # -- identity -------------------------------------------------------------------------------

    async def authenticate_basic(self, request: Request, header: str) -> Identity | None:
        """The account for valid Basic credentials (see gateway.auth.logins), None for invalid
        ones. Raises 429 TOOMANYREQUESTS (throttled), UNAVAILABLE (metadata plane down)."""
        return await self.logins.check(header, client_address(request))

    async def _token_current(self, verified: VerifiedToken) -> bool:
        """False when the token's account was deleted, disabled or revoked since it was issued."""
        if not verified.local or not verified.subject:
            return True  # anonymous, or another issuer's account
        if verified.account_id:
            return await self.status.current(verified.account_id, verified.generation)
        return self.status.current_unversioned(verified.subject, verified.issued_at)

    async def identify(self, request: Request, needed: Scope | None) -> Principal:
        header = request.headers.get("authorization")
        if self.mode == "token":
            token = bearer_token(header)
            if token is None:
                raise self.unauthorized(request, "authentication required: get a token from the realm", needed)
            assert self.verifier is not None
            try:
                verified = self.verifier.verify(token)
            except InvalidToken as exc:
                log.info("refused a token: %s", exc)
                raise self.unauthorized(request, "the token is invalid or expired", needed, "invalid_token") from None
            if not await self._token_current(verified):
                log.info("refused a token of %r: the account was deleted, disabled or its tokens revoked",
                         verified.subject)
                raise self.unauthorized(request, "the token was revoked: log in again", needed, "invalid_token")
            return Principal(verified.subject, verified)
        header = credentials_header(header)
        if header is None:
            return Principal("")
        identity = await self.authenticate_basic(request, header)
        if identity is None:
            raise self.unauthorized(request, "invalid username or password", needed)
        return Principal(identity.name)

    # -- permissions ----------------------------------------------------------------------------

    async def allows(self, principal: Principal, scope: Scope) -> bool:
        """True when the caller holds every action of `scope`."""
        if principal.token is not None:
            return all(principal.token.access.allows(scope.type, scope.name, a) for a in scope.actions)
        key = (principal.account, scope)
        max_age = None if self.status.live else self.settings.revocation_feed.degraded_check_seconds
        cached = self._grants.get(key, max_age=max_age)
        if cached is None:
            epoch = self._grants_epoch
            granted, _ = await self.accounts.authorize(principal.account, [scope])
            cached = set(granted[0].actions) if granted else set()
            if epoch == self._grants_epoch:
                self._grants.put(key, cached)
        assert isinstance(cached, set)
        return all(a in cached or "*" in cached for a in scope.actions)

    async def _allows_alternative(self, principal: Principal, name: str, rule: Rule) -> bool:
        """True when the caller holds one of `rule`'s alternative actions on repository `name`."""
        for action in rule.alternatives:
            if await self.allows(principal, repository_scope(name, action)):
                return True
        return False

    async def enforce(self, request: Request, rule: Rule) -> None:
        """Raises the refusal `rule` calls for, or records the caller in the scope and returns."""
        if rule == OPEN:
            return
        needed: Scope | None = None
        name = ""
        if rule.kind in ("repository", "upload"):
            name = request.path_params.get("name", "")
            needed = repository_scope(name, *rule.challenge_actions.split(","))
        elif rule.kind == "catalog" and self.settings.require_catalog_scope:
            needed = CATALOG_SCOPE
        principal = await self.identify(request, needed if name == "" or _valid(name) else None)
        request.scope[PRINCIPAL_KEY] = principal
        request.scope[GATE_KEY] = self
        if rule.kind == "login" or (rule.kind == "catalog" and needed is None):
            if self.mode == "basic" and not principal.account:
                raise self.unauthorized(request, "authentication required")
            return
        if rule.kind in ("repository", "upload"):
            validate_repository(name)  # NAME_INVALID (400) for traversal, odd encodings, uppercase
            needed = repository_scope(name, rule.action)
        assert needed is not None
        if not await self.allows(principal, needed) and not await self._allows_alternative(principal, name, rule):
            challenge_scope = (
                repository_scope(name, *rule.challenge_actions.split(",")) if name else needed
            )
            if self.mode == "token":
                # 403 with the challenge (RFC 6750 3.1, docker-auth-jwt.md "Verifying the token"):
                # clients that cache one token (oras-py) fetch a wider one on a 403 only.
                message = (
                    f"the token does not grant {needed}" if principal.account else
                    f"an anonymous token does not grant {needed}: log in (docker login, podman "
                    "login) as an account that has this permission, then retry"
                )
                raise HttpRegistryError(
                    ErrorKind.DENIED, message,
                    [{"Type": needed.type, "Name": needed.name, "Action": a} for a in needed.actions],
                    headers={"www-authenticate": self.challenge(request, challenge_scope, "insufficient_scope")},
                )
            if not principal.account:
                raise self.unauthorized(request, "authentication required", challenge_scope)
            raise RegistryError(ErrorKind.DENIED, f"{principal.account} may not {rule.action} {name}",
                                [{"Type": needed.type, "Name": needed.name, "Action": rule.action}])
        if rule.kind == "upload":
            upload_id = request.path_params.get("upload_id", "")
            if not self.upload_states.check(request.query_params.get(STATE_PARAM), upload_id, name,
                                            principal.account):
                raise RegistryError(
                    ErrorKind.BLOB_UPLOAD_UNKNOWN,
                    "upload unknown: sessions continue only with the Location (and account) that started them",
                    {"upload_id": upload_id},
                )

    # -- helpers for handlers -------------------------------------------------------------------

    def upload_query(self, scope: AsgiScope, repository: str, upload_id: str) -> str:
        principal = scope.get(PRINCIPAL_KEY)
        account = principal.account if isinstance(principal, Principal) else ""
        return f"?{STATE_PARAM}={self.upload_states.seal(upload_id, repository, account)}"

    async def mount_sources(self, request: Request, target: str, source: str) -> list[str]:
        """Repositories a mount into `target` may link from: `source` only if the caller may pull
        it; without `source`, the repositories the caller's token grants pull on (basic mode: none),
        so a mount never reveals or copies a blob from a repository the caller cannot pull."""
        principal = request.scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):
            return []
        if source:
            return [source] if await self.allows(principal, repository_scope(source, "pull")) else []
        if principal.token is None:
            return []
        names = principal.token.access.names_with("repository", "pull")
        return [n for n in names if n != target and _valid(n)][:MAX_MOUNT_CANDIDATES]

    async def pullable(self, request: Request, names: list[str]) -> list[str]:
        """The subset of `names` the caller may pull, in order."""
        principal = request.scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal) or not names:
            return []
        allowed: set[str] = set()
        token = principal.token
        if token is not None:
            allowed.update(n for n in names if token.access.allows("repository", n, "pull"))
        if token is None or token.local:
            # Our own accounts (and anonymous): their grants decide, not only the token's scopes.
            granted, _ = await self.accounts.authorize(
                principal.account, [repository_scope(n, "pull") for n in names]
            )
            allowed.update(s.name for s in granted if "pull" in s.actions)
        return [n for n in names if n in allowed]


def upload_state_query(scope: AsgiScope, repository: str, upload_id: str) -> str:
    """`?_state=...` for an upload session URL when auth is on (see gateway.auth.upload_state), else ""."""
    gate = scope.get(GATE_KEY)
    return gate.upload_query(scope, repository, upload_id) if isinstance(gate, AuthGate) else ""


def _valid(name: str) -> bool:
    try:
        validate_repository(name)
    except RegistryError:
        return False
    return True
