"""Pure pieces of access control: scope grammar, patterns and intersection, key ids, token
verification rules, upload state MACs, configuration errors, and auth staying off by default."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lading.metadata.v1 import accounts_pb2

from gateway.auth.accounts import Identity
from gateway.auth.keys import (
    KeyFileError,
    VerificationKey,
    generate_signing_key_pem,
    libtrust_kid,
    load_signing_key,
)
from gateway.auth.scopes import Access, Scope, access_claim, parse_scope, parse_scopes
from gateway.auth.setup import AuthConfigError, build_auth
from gateway.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier
from gateway.auth.upload_state import UploadStates
from services.common.errors import RegistryError
from services.common.settings import AuthSettings, load_settings
from services.metadata.accounts.policy import Scope as PolicyScope
from services.metadata.accounts.policy import Subject, intersect, matches, validate_pattern


@pytest.mark.parametrize(("text", "expected"), [
    ("repository:samalba/my-app:pull,push", Scope("repository", "samalba/my-app", ("pull", "push"))),
    ("repository:localhost:5000/app:pull", Scope("repository", "localhost:5000/app", ("pull",))),
    ("repository:host.example:443/a/b:push", Scope("repository", "host.example:443/a/b", ("push",))),
    ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
    ("repository(plugin):x/y:pull", Scope("repository", "x/y", ("pull",))),
    ("repository:app:", Scope("repository", "app", ())),
    ("repository:pull", None),
    ("REPOSITORY:x:pull", None),
    ("repository:x:pu$h", None),
    ("nonsense", None),
])
def test_scope_grammar(text: str, expected: Scope | None) -> None:
    assert parse_scope(text) == expected


def test_several_scopes_space_separated_and_repeated() -> None:
    assert parse_scopes(["repository:a:pull repository:b:push", "registry:catalog:*", "bad"]) == [
        Scope("repository", "a", ("pull",)), Scope("repository", "b", ("push",)), Scope("registry", "catalog", ("*",))]
    assert str(Scope("repository", "h:5000/a", ("pull", "push"))) == "repository:h:5000/a:pull,push"


def test_access_claim_round_trip_and_lenient_reading() -> None:
    claim = access_claim([Scope("repository", "a", ("pull",)), Scope("repository", "a", ("push",)),
                          Scope("repository", "b", ())])
    assert claim == [{"type": "repository", "name": "a", "actions": ["pull", "push"]}]
    access = Access.from_claim([*claim, "junk", {"type": 1}, {"type": "registry", "name": "catalog", "actions": ["*"]}])
    assert access.allows("repository", "a", "push") and not access.allows("repository", "a", "delete")
    assert access.allows("registry", "catalog", "anything")
    assert not access.allows("repository", "b", "pull")
    assert Access.from_claim("not a list").entries == {}


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("team-a/*", "team-a/x", True), ("team-a/*", "team-a/x/y", True), ("team-a/*", "team-a", False),
    ("team-a/*", "team-ab/x", False), ("*", "anything/at/all", True), ("exact/name", "exact/name", True),
    ("exact/name", "exact/name2", False), ("a.b/*", "axb/c", False), ("*/base", "x/y/base", True),
])
def test_patterns(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["", "Team/*", "a b", "a/**", "../x", "a:b"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(RegistryError):
        validate_pattern(pattern)


def test_intersection_never_escalates() -> None:
    subject = Subject(is_admin=False, grants={"team-a/*": ("pull", "push"), "public/*": ("pull",)})
    asked = [PolicyScope("repository", "team-a/x", ("pull", "push", "delete")),
             PolicyScope("repository", "public/y", ("*",)), PolicyScope("repository", "team-b/z", ("pull",)),
             PolicyScope("registry", "catalog", ("*",)), PolicyScope("repository", "team-a/../b", ("pull",)),
             PolicyScope("unknown", "x", ("pull",))]
    granted = intersect(subject, asked, valid_name=lambda n: ".." not in n)
    assert [g.actions for g in granted] == [("pull", "push"), ("pull",), (), (), (), ()]
    admin = intersect(Subject(is_admin=True, grants={}), asked, valid_name=lambda n: ".." not in n)
    assert [g.actions for g in admin] == [("pull", "push", "delete"), ("pull", "push", "delete"), ("pull",),
                                          ("*",), (), ()]


def test_libtrust_kid_shape_and_stability(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(generate_signing_key_pem())
    key = load_signing_key(path)
    groups = key.kid.split(":")
    assert len(groups) == 12 and all(re.fullmatch(r"[A-Z2-7]{4}", g) for g in groups)
    assert key.kid == libtrust_kid(key.private_key.public_key()) == load_signing_key(path).kid
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(*_pkcs8()))
    with pytest.raises(KeyFileError):
        load_signing_key(p384)


def _pkcs8():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()


@pytest.fixture
def issued(tmp_path: Path) -> tuple[TokenIssuer, TokenVerifier, object]:
    path = tmp_path / "k.pem"
    path.write_bytes(generate_signing_key_pem())
    key = load_signing_key(path)
    issuer = TokenIssuer(key, issuer="lading", service="lading", lifetime_seconds=300, refresh_lifetime_seconds=600)
    verifier = TokenVerifier([VerificationKey(key.kid, "ES256", key.private_key.public_key(), "lading", "lading")],
                             local_issuer="lading", leeway_seconds=5)
    return issuer, verifier, key


def test_tokens_verify_and_refresh_tokens_do_not_pass_as_access(issued) -> None:
    issuer, verifier, _ = issued
    alice = Identity("alice", "0123abcd", 3)
    token = issuer.access_token(alice, [Scope("repository", "a", ("pull",))])
    verified = verifier.verify(token.token)
    assert verified.subject == "alice" and verified.local and verified.access.allows("repository", "a", "pull")
    assert (verified.account_id, verified.generation) == ("0123abcd", 3)
    refresh = issuer.refresh_token(alice)
    claims = verifier.verify_refresh(refresh)
    assert (claims.name, claims.account_id, claims.generation) == ("alice", "0123abcd", 3)
    with pytest.raises(InvalidToken):
        verifier.verify(refresh)
    with pytest.raises(InvalidToken):
        verifier.verify_refresh(token.token)


def test_algorithm_confusion_is_refused(issued) -> None:
    _, verifier, key = issued
    claims = {"iss": "lading", "aud": "lading", "sub": "x", "exp": 2**40}
    for alg in ("none", "HS256", "ES384", "RS256"):
        header = base64.urlsafe_b64encode(f'{{"alg":"{alg}","kid":"{key.kid}"}}'.encode()).decode().rstrip("=")
        body = jwt.encode(claims, "k" * 32, algorithm="HS256").split(".")[1]
        with pytest.raises(InvalidToken):
            verifier.verify(f"{header}.{body}.{base64.urlsafe_b64encode(hashlib.sha256(b'x').digest()).decode()}")
    without_exp = jwt.encode({"iss": "lading", "aud": "lading"}, key.private_key, algorithm="ES256",
                             headers={"kid": key.kid})
    with pytest.raises(InvalidToken):
        verifier.verify(without_exp)


def test_upload_state_binds_id_repository_and_account() -> None:
    states = UploadStates(b"key")
    state = states.seal("u1", "team-a/x", "alice")
    assert states.check(state, "u1", "team-a/x", "alice")
    for other in (("u2", "team-a/x", "alice"), ("u1", "team-a/y", "alice"), ("u1", "team-a/x", "bob")):
        assert not states.check(state, *other)
    assert not UploadStates(b"other key").check(state, "u1", "team-a/x", "alice")
    assert not states.check(None, "u1", "team-a/x", "alice")


async def test_auth_is_off_by_default_and_bad_configurations_fail_at_start(tmp_path: Path) -> None:
    # Async: a grpc.aio channel belongs to a running event loop (a sync test has none once an
    # earlier test closed the default loop).
    assert load_settings().auth.mode == "none"
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        assert build_auth(AuthSettings(), channel, timeout=1) is None
        with pytest.raises(AuthConfigError):
            build_auth(AuthSettings(mode="basic"), channel, timeout=1)  # no upload state key
        with pytest.raises(AuthConfigError):
            build_auth(AuthSettings(mode="token", upload_state_key="k"), channel, timeout=1)  # no keys
        with pytest.raises(KeyFileError):
            build_auth(AuthSettings(mode="token", signing_key_file=tmp_path / "missing.pem"), channel, timeout=1)
    finally:
        await channel.close()


@pytest.mark.parametrize(("expires_at", "secret_expires_at", "ends"), [
    (0, 0, 0), (500, 0, 500), (0, 700, 700), (500, 700, 500), (900, 700, 700)])
def test_an_identity_ends_with_its_account_or_its_cli_secret(expires_at: int, secret_expires_at: int,
                                                             ends: int) -> None:
    identity = Identity.of(accounts_pb2.Account(name="carol", id="u1", credential_generation=3, expires_at=expires_at,
                                                secret_expires_at=secret_expires_at))
    assert identity.expires_at == ends
    # Tokens made for it end there too (never later than their lifetime).
    assert TokenIssuer._expiry(100, 300, identity) == (min(400, ends) if ends else 400)
