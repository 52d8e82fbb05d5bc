"""Builds the gateway's AuthGate from settings; refuses an unusable configuration at start-up."""

from __future__ import annotations

import importlib

import grpc

from gateway.auth.account_status import AccountStatus
from gateway.auth.accounts import AccountClient
from gateway.auth.change_feed import RevocationFeed
from gateway.auth.gate import AuthGate
from gateway.auth.keys import VerificationKey, load_jwks, load_public_pem, load_signing_key
from gateway.auth.logins import Logins
from gateway.auth.revocations import RevocationSet
from gateway.auth.throttle import LoginThrottle
from gateway.auth.tokens import TokenIssuer, TokenVerifier
from gateway.auth.upload_state import UploadStates, derive_key
from services.common.metrics import Metrics
from services.common.settings import AuthSettings


class AuthConfigError(ValueError):
    """The auth settings cannot work; the message says which setting to fix."""


def build_auth(settings: AuthSettings, channel: grpc.aio.Channel, *, timeout: float,
               metrics: Metrics | None = None) -> AuthGate | None:
    """None when auth is off (`mode = "none"`). Reads key files (once, at start-up). The gate's
    revocation feed starts with `AuthGate.start()` (the app's lifespan)."""
    if settings.mode == "none":
        return None
    accounts = AccountClient(channel, timeout=timeout)
    revocations = RevocationSet()
    feed = RevocationFeed(channel, settings.revocation_feed, revocations, metrics=metrics)
    status = AccountStatus(revocations, feed, accounts, settings.revocation_feed)
    throttle = LoginThrottle(settings.throttle) if settings.throttle.enabled else None
    logins = Logins(settings, accounts, status, throttle)
    signing = load_signing_key(settings.signing_key_file) if settings.signing_key_file else None
    state_key = settings.upload_state_key.encode() if settings.upload_state_key else None
    if state_key is None and signing is not None:
        state_key = derive_key(signing.private_der())
    if state_key is None:
        raise AuthConfigError(
            "set LADING_AUTH__UPLOAD_STATE_KEY (the same secret on every gateway replica) or "
            "LADING_AUTH__SIGNING_KEY_FILE: upload sessions are bound to accounts with it"
        )
    states = UploadStates(state_key)
    if settings.mode == "basic":
        return AuthGate(settings, accounts=accounts, upload_states=states, status=status, logins=logins, feed=feed)

    keys: list[VerificationKey] = []
    issuer = None
    if signing is not None:
        keys.append(VerificationKey(signing.kid, signing.algorithm, signing.private_key.public_key(),
                                    settings.issuer, settings.service))
        issuer = TokenIssuer(
            signing, issuer=settings.issuer, service=settings.service,
            lifetime_seconds=settings.token_lifetime_seconds,
            refresh_lifetime_seconds=settings.refresh_token_lifetime_seconds,
        )
    for path in settings.verification_key_files:
        keys.append(load_public_pem(path, issuer=settings.issuer, audience=settings.service))
    external = settings.external
    if external.issuer:
        if external.jwks_file is None:
            raise AuthConfigError("auth.external.issuer needs auth.external.jwks_file")
        keys.extend(load_jwks(external.jwks_file, issuer=external.issuer,
                              audience=external.audience or settings.service,
                              allow_high_s=external.accept_high_s_signatures))
    if not keys:
        raise AuthConfigError("token mode needs LADING_AUTH__SIGNING_KEY_FILE (or an external issuer's JWKS)")
    if issuer is None and not settings.realm:
        raise AuthConfigError("without a signing key the gateway issues no tokens: set LADING_AUTH__REALM "
                              "to the external token server")
    # PyJWT (a lazy module of tokens.py) is loaded here, at start-up, before any request: left to
    # the first token, its import cost that request ~50 ms of module reads on the event loop.
    importlib.import_module("jwt")
    verifier = TokenVerifier(keys, local_issuer=settings.issuer, leeway_seconds=settings.leeway_seconds)
    return AuthGate(settings, accounts=accounts, upload_states=states, status=status, logins=logins, feed=feed,
                    verifier=verifier, issuer=issuer)
