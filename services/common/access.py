"""Who is calling a plane, and may they: the server side of gRPC access control.

Every call is checked by one interceptor (`AccessInterceptor`, installed by GrpcService) against
the method → role table in services/common/rpc_roles.py. A caller's roles come from (all that
apply add up):
  - a unix socket: every role when `grpc_access.trust_unix_socket_peers` (the default). Lading
    binds its sockets 0600 (services/common/grpc_server.py), so only its own user and root can
    connect, and they can read the data folder (database, keys) anyway;
  - its client certificate (mutual TLS): the subject, common name and every subject alternative
    name, matched against `grpc_access.<role>.certificate_names`;
  - a bearer token (`authorization: Bearer <token>`), compared in constant time with the tokens
    in `grpc_access.<role>.token_file`;
  - `grpc_access.allow_unauthenticated`: every caller every role (dangerous, documented so).
Health (OPEN in the table) needs nothing; a method absent from the table is refused to everyone.
No identity at all, or a token matching none → UNAUTHENTICATED; an identity without the role →
PERMISSION_DENIED; both messages name the role and the settings that grant it. Both are bare
gRPC statuses (no registry error detail): services/common/errors.py turns them into a 500 for an
HTTP client, as they mean the deployment's credentials are wrong, not the client's.

`build_access_policy` reads the token files at start-up and refuses settings that cannot work,
including a plane on a TCP address where no caller could be identified (AccessConfigError, whose
message names the settings).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from services.common.paths import unix_socket_path
from services.common.rpc_roles import ROLES, method_roles
from services.common.settings import GrpcAccessSettings, GrpcTlsSettings, RoleCredentials

log = logging.getLogger("lading.access")

# Shorter tokens are refused at start-up: a token is a password that never needs typing.
MIN_TOKEN_CHARACTERS = 32
_BEARER = "bearer "
# auth_context keys that carry the names of a verified client certificate.
_CERTIFICATE_NAME_KEYS = ("x509_subject", "x509_common_name", "x509_subject_alternative_name")


class AccessConfigError(ValueError):
    """Access settings that cannot work (the message names the setting and, for files, the file)."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_tokens(path: Path, setting: str) -> list[str]:
    """The tokens in a token file, one per line (blank lines skipped). Raises AccessConfigError
    naming `setting` when the file is unreadable or empty or a token is too short."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise AccessConfigError(f"`{setting}` = {path}: {reason}") from None
    tokens = [line.strip() for line in text.splitlines() if line.strip()]
    if not tokens:
        raise AccessConfigError(f"`{setting}` = {path} holds no token (one per line)")
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARACTERS:
            raise AccessConfigError(
                f"`{setting}` = {path}: a token is shorter than {MIN_TOKEN_CHARACTERS} characters; "
                "make one with `openssl rand -hex 32`"
            )
    return tokens


@dataclass(frozen=True)
class Caller:
    """What a plane knows about one call's caller."""

    roles: frozenset[str]
    # Something was presented (a certificate, a token, a trusted socket): UNAUTHENTICATED otherwise.
    identified: bool
    # For messages: "certificate CN=...", "a bearer token of gateway", "no credentials".
    described: str


@dataclass
class AccessPolicy:
    """The decisions of one plane's listener (built by `build_access_policy`)."""

    methods: Mapping[str, frozenset[str]]
    # sha256 of each token → its role.
    token_roles: Sequence[tuple[bytes, str]] = ()
    # certificate name → roles.
    certificate_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    trust_unix_socket_peers: bool = True
    allow_unauthenticated: bool = False
    # Every peer arrives on a trusted unix socket (the listener is one): no per-call check needed.
    all_peers_trusted: bool = False

    def roles_of_token(self, metadata: Iterable[tuple[str, Any]] | None) -> tuple[frozenset[str], bool]:
        """(roles, presented) for the bearer token in `metadata`: every stored token is compared
        (in constant time) whatever matched, so timing says nothing about which one did."""
        presented = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER:
                presented = value[len(_BEARER) :].strip()
                break
        if presented is None:
            return frozenset(), False
        digest = _hash(presented)
        roles = {role for stored, role in self.token_roles if hmac.compare_digest(stored, digest)}
        return frozenset(roles), True

    def roles_of_certificate(self, auth_context: Mapping[str, Sequence[bytes]]) -> tuple[frozenset[str], str]:
        """(roles, the certificate's description) from a call's auth context; ("", ...) without one."""
        names = [value.decode(errors="replace") for key in _CERTIFICATE_NAME_KEYS for value in auth_context.get(key, ())]
        if not names:
            return frozenset(), ""
        roles: set[str] = set()
        for name in names:
            roles |= self.certificate_roles.get(name, frozenset())
        subject = next((value.decode(errors="replace") for value in auth_context.get("x509_subject", ())), names[0])
        return frozenset(roles), f"certificate {subject}"

    def identify(self, context: grpc.aio.ServicerContext, metadata: Iterable[tuple[str, Any]] | None) -> Caller:
        token_roles, token_presented = self.roles_of_token(metadata)
        if self.trust_unix_socket_peers and context.peer().startswith("unix:"):
            return Caller(frozenset(ROLES), True, "a unix socket peer")
        certificate_roles, certificate = self.roles_of_certificate(context.auth_context())
        described = [part for part in (
            certificate,
            (f"a bearer token of {_or(token_roles)}" if token_roles else "a bearer token that matches no role")
            if token_presented else "",
        ) if part]
        identified = bool(certificate) or bool(token_roles)
        return Caller(token_roles | certificate_roles, identified, " and ".join(described) or "no credentials")

    def refusal(self, method: str, caller: Caller) -> tuple[grpc.StatusCode, str] | None:
        """None when `caller` may call `method`; else the status and message to answer with."""
        roles = self.methods.get(method)
        if roles is None:
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"{method} is in no role's list (services/common/rpc_roles.py), so nobody may call it"
            )
        if not roles or roles & caller.roles:
            return None
        how = "; ".join(
            f"the {role} role comes from a client certificate named in grpc_access.{role}.certificate_names "
            f"or a bearer token from grpc_access.{role}.token_file" for role in sorted(roles)
        )
        if not caller.identified:
            return grpc.StatusCode.UNAUTHENTICATED, (
                f"{method} needs the {_or(roles)} role; this caller presented {caller.described} ({how})"
            )
        have = f"the {_or(caller.roles)} role" if caller.roles else "no role"
        return grpc.StatusCode.PERMISSION_DENIED, (
            f"{method} needs the {_or(roles)} role; this caller ({caller.described}) has {have} ({how})"
        )


def _or(roles: Iterable[str]) -> str:
    return " or ".join(sorted(roles))


def build_access_policy(
    settings: GrpcAccessSettings,
    *,
    listen: str,
    tls: GrpcTlsSettings | None,
    plane: str,
    methods: Mapping[str, frozenset[str]] | None = None,
) -> AccessPolicy:
    """The policy of the listener on `listen` of `plane` ("metadata" or "blob": setting names in
    messages). Reads the token files. Raises AccessConfigError for settings that cannot work:
    unreadable, empty or short token files, one token in two roles, certificate names without
    mutual TLS, or a TCP listener (or untrusted unix socket) where no caller could be identified
    and `allow_unauthenticated` is off."""
    roles: dict[str, RoleCredentials] = {role: getattr(settings, role) for role in ROLES}
    mutual_tls = tls is not None and tls.enabled and tls.require_client_cert
    token_roles: list[tuple[bytes, str]] = []
    certificate_roles: dict[str, set[str]] = {}
    for role, credentials in roles.items():
        if credentials.token_file is not None:
            for token in read_tokens(credentials.token_file, f"grpc_access.{role}.token_file"):
                digest = _hash(token)
                other = next((r for d, r in token_roles if d == digest), None)
                if other is not None and other != role:
                    raise AccessConfigError(
                        f"the same token is in grpc_access.{other}.token_file and grpc_access.{role}.token_file; "
                        "give each role its own"
                    )
                token_roles.append((digest, role))
        if credentials.certificate_names and not mutual_tls:
            raise AccessConfigError(
                f"grpc_access.{role}.certificate_names needs mutual TLS on the {plane} plane "
                f"({plane}.tls.enabled and {plane}.tls.require_client_cert, with {plane}.tls.ca_file): "
                "without it clients send no certificate"
            )
        for name in credentials.certificate_names:
            certificate_roles.setdefault(name, set()).add(role)
    on_unix_socket = unix_socket_path(listen) is not None
    trusted_socket = on_unix_socket and settings.trust_unix_socket_peers
    if not (token_roles or certificate_roles or trusted_socket or settings.allow_unauthenticated):
        where = "a TCP address" if not on_unix_socket else "a unix socket whose peers are not trusted"
        raise AccessConfigError(
            f"{plane}.listen = {listen} is {where}, and no caller could be identified there: give the "
            "roles that call this plane (gateway, operator" + (", metadata" if plane == "blob" else "")
            + ") a token (grpc_access.<role>.token_file, e.g. LADING_GRPC_ACCESS__GATEWAY__TOKEN_FILE) or "
            f"client-certificate names (grpc_access.<role>.certificate_names, with {plane}.tls.require_client_cert), "
            "or set grpc_access.allow_unauthenticated = true to let anyone who reaches the port call everything "
            "(dangerous); README.md, \"Access control between planes\", shows both"
        )
    if settings.allow_unauthenticated:
        log.warning("grpc_access.allow_unauthenticated is on: every caller of %s may call everything", listen)
    return AccessPolicy(
        methods=method_roles() if methods is None else methods,
        token_roles=tuple(token_roles),
        certificate_roles={name: frozenset(r) for name, r in certificate_roles.items()},
        trust_unix_socket_peers=settings.trust_unix_socket_peers,
        allow_unauthenticated=settings.allow_unauthenticated,
        all_peers_trusted=trusted_socket,
    )


def _checked_unary(
    behavior: Callable[..., Awaitable[Any]], check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await behavior(request_or_iterator, context)

    return wrapped


def _checked_stream(
    behavior: Callable[..., AsyncIterator[Any]], check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        async for item in behavior(request_or_iterator, context):
            yield item

    return wrapped


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Applies an AccessPolicy to every call (see the module docstring).

    Calls that need no per-connection facts are decided here, without wrapping the handler:
    open methods, a listener whose every peer is trusted, a matching bearer token. The others
    (client certificates, unix peers next to TCP ones, refusals) are checked when the call starts,
    where the connection's auth context is known.
    """

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        roles = self.policy.methods.get(method)
        if roles is not None:
            if not roles or self.policy.allow_unauthenticated or self.policy.all_peers_trusted:
                return handler
            token_roles, _ = self.policy.roles_of_token(handler_call_details.invocation_metadata)
            if token_roles & roles:
                return handler
        metadata = handler_call_details.invocation_metadata

        async def check(context: grpc.aio.ServicerContext) -> None:
            refusal = self.policy.refusal(method, self.policy.identify(context, metadata))
            if refusal is not None:
                code, message = refusal
                log.warning("refused %s from %s: %s", method, context.peer(), message)
                await context.abort(code, message)

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _checked_unary(handler.unary_unary, check), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _checked_unary(handler.stream_unary, check), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _checked_stream(handler.unary_stream, check), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _checked_stream(handler.stream_stream, check), handler.request_deserializer,
                handler.response_serializer,
            )
        return handler
