"""Pure pieces of the access-control hardening (issue 11, items 1, 2, 4, 6): the login throttle,
the bcrypt lanes, the revocation set, and canonical (low-S) ES256 signatures."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lading.metadata.v1 import changes_pb2

from gateway.auth.accounts import Identity
from gateway.auth.keys import VerificationKey, generate_signing_key_pem, load_signing_key
from gateway.auth.revocations import RevocationSet
from gateway.auth.throttle import LoginThrottle, Throttled, address_bucket
from gateway.auth.tokens import P256_ORDER, InvalidToken, TokenIssuer, TokenVerifier
from services.common.settings import LoginThrottleSettings
from services.metadata.accounts.passwords import PasswordChecksBusy, PasswordSlots

# -- ES256: only the canonical low-S form verifies (item 6) ----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def es256(tmp_path: Path) -> tuple[TokenIssuer, TokenVerifier, ec.EllipticCurvePrivateKey]:
    path = tmp_path / "k.pem"
    path.write_bytes(generate_signing_key_pem())
    key = load_signing_key(path)
    issuer = TokenIssuer(key, issuer="lading", service="lading", lifetime_seconds=300, refresh_lifetime_seconds=600)
    verifier = TokenVerifier([VerificationKey(key.kid, "ES256", key.private_key.public_key(), "lading", "lading")],
                             local_issuer="lading", leeway_seconds=5)
    return issuer, verifier, key.private_key


def _high_s_twin(token: str) -> str:
    """The same token with S replaced by n - S: mathematically as valid a signature."""
    head, payload, signature = token.split(".")
    raw = _unb64(signature)
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{payload}.{_b64(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def test_high_s_twin_of_a_real_signature_is_refused(es256) -> None:
    issuer, verifier, private = es256
    token = issuer.access_token(Identity("alice", "id1", 1), []).token
    assert verifier.verify(token).subject == "alice"
    twin = _high_s_twin(token)
    # The twin is a valid ECDSA signature of the same bytes (so only the S rule can refuse it)...
    head, payload, signature = twin.split(".")
    raw = _unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    private.public_key().verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert int.from_bytes(raw[32:], "big") > P256_ORDER // 2
    # ...and it is refused.
    with pytest.raises(InvalidToken, match="low-S"):
        verifier.verify(twin)


def test_we_issue_only_low_s_and_a_plain_high_s_signature_is_refused(es256) -> None:
    issuer, verifier, private = es256
    for _ in range(40):  # random S: about half of plain ECDSA signatures are high
        token = issuer.access_token(None, []).token
        assert int.from_bytes(_unb64(token.split(".")[2])[32:], "big") <= P256_ORDER // 2
        verifier.verify(token)
    now = int(time.time())
    claims = {"iss": "lading", "sub": "x", "aud": "lading", "exp": now + 60, "iat": now}
    kid = verifier.kids[0]
    refused = 0
    for _ in range(40):
        plain = jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})
        if int.from_bytes(_unb64(plain.split(".")[2])[32:], "big") > P256_ORDER // 2:
            refused += 1
            with pytest.raises(InvalidToken):
                verifier.verify(plain)
        else:
            verifier.verify(plain)
    assert refused > 0  # 40 draws without a high S: chance 2**-40


def test_external_issuer_may_be_let_through_with_high_s(es256) -> None:
    issuer, _, private = es256
    token = issuer.access_token(None, []).token
    kid = jwt.get_unverified_header(token)["kid"]
    lenient = TokenVerifier([VerificationKey(kid, "ES256", private.public_key(), "lading", "lading", True)],
                            local_issuer="lading", leeway_seconds=5)
    lenient.verify(_high_s_twin(token))


# -- the login throttle (item 4) --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(**overrides: object) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(LoginThrottleSettings(**overrides), clock=clock), clock  # type: ignore[arg-type]


def _fail(throttle: LoginThrottle, address: str, account: str) -> None:
    throttle.admit(address, account).release()
    throttle.failed(address, account)


def test_backoff_doubles_past_the_free_failures_and_is_forgotten() -> None:
    throttle, clock = _throttle(free_failures_per_address_account=3, base_delay_seconds=2, max_delay_seconds=10,
                                forget_after_seconds=100)
    for _ in range(3):
        _fail(throttle, "192.0.2.1", "alice")
    throttle.admit("192.0.2.1", "alice").release()  # still free
    throttle.failed("192.0.2.1", "alice")  # 4th: blocked 2 s
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.1", "alice")
    assert caught.value.retry_after == 2 and caught.value.reason == "backoff:pair"
    throttle.admit("192.0.2.2", "alice").release()  # another address is not blocked
    throttle.admit("192.0.2.1", "bob").release()  # nor another account
    clock.now += 2.1
    _fail(throttle, "192.0.2.1", "alice")  # 5th: 4 s
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.1", "alice")
    assert caught.value.retry_after == 4
    for _ in range(5):
        clock.now += 20
        _fail(throttle, "192.0.2.1", "alice")
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.1", "alice")
    assert caught.value.retry_after == 10  # capped
    clock.now += 111  # quiet past forget_after: a fresh start
    throttle.admit("192.0.2.1", "alice").release()
    throttle.failed("192.0.2.1", "alice")
    throttle.admit("192.0.2.1", "alice").release()


def test_account_and_address_keys_catch_spread_out_guessing() -> None:
    throttle, _ = _throttle(free_failures_per_account=4, free_failures_per_address=6)
    for i in range(5):
        _fail(throttle, f"192.0.2.{i}", "alice")  # one guess per address: the pair keys stay free
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.200", "alice")
    assert caught.value.reason == "backoff:account"
    for i in range(7):
        _fail(throttle, "198.51.100.1", f"user{i}")  # one guess per account from one address
    with pytest.raises(Throttled) as caught:
        throttle.admit("198.51.100.1", "someone-else")
    assert caught.value.reason == "backoff:address"


def test_success_clears_only_the_pair() -> None:
    throttle, _ = _throttle(free_failures_per_address_account=2, free_failures_per_account=2)
    for _ in range(2):
        _fail(throttle, "192.0.2.1", "alice")
    throttle.succeeded("192.0.2.1", "alice")
    _fail(throttle, "192.0.2.1", "alice")
    with pytest.raises(Throttled) as caught:  # the account's count was not reset by the success
        throttle.admit("192.0.2.1", "alice")
    assert caught.value.reason == "backoff:account"


def test_checks_in_flight_are_bounded_per_address_and_account() -> None:
    throttle, _ = _throttle(max_concurrent_per_address=2, max_concurrent_per_account=3)
    held = [throttle.admit("192.0.2.1", "a"), throttle.admit("192.0.2.1", "b")]
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.1", "c")
    assert caught.value.reason == "concurrency:address" and caught.value.retry_after == 1
    held.append(throttle.admit("192.0.2.2", "a"))
    held.append(throttle.admit("192.0.2.3", "a"))
    with pytest.raises(Throttled) as caught:
        throttle.admit("192.0.2.4", "a")
    assert caught.value.reason == "concurrency:account"
    for admission in held:
        admission.release()
        admission.release()  # idempotent
    throttle.admit("192.0.2.1", "c").release()


def test_ipv6_is_counted_per_64() -> None:
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_bucket("192.0.2.1") == "192.0.2.1"


# -- bcrypt lanes (item 4) ----------------------------------------------------------------------------


async def test_failed_guesses_cannot_take_the_reserved_slot_and_priority_goes_first() -> None:
    slots = PasswordSlots(2, reserved=1, max_waiting=3)
    order: list[str] = []
    gate = asyncio.Event()

    async def check(name: str, priority: bool) -> None:
        async with slots.slot(priority=priority):
            order.append(name)
            await gate.wait()

    guesses = [asyncio.create_task(check(f"guess{i}", False)) for i in range(4)]
    await asyncio.sleep(0)
    assert order == ["guess0"]  # the normal lane holds one of the two slots only
    assert slots.waiting == (0, 3)
    with pytest.raises(PasswordChecksBusy):
        async with slots.slot(priority=False):
            pass
    known = asyncio.create_task(check("known", True))
    await asyncio.sleep(0)
    assert order == ["guess0", "known"]  # took the reserved slot at once
    later = asyncio.create_task(check("known-2", True))
    await asyncio.sleep(0)
    assert slots.waiting == (1, 3)
    gate.set()
    await asyncio.gather(*guesses, known, later)
    assert order.index("known-2") < order.index("guess1")  # priority waiters are served first


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    slots = PasswordSlots(1, reserved=0, max_waiting=2)
    async with slots.slot(priority=False):
        waiter = asyncio.create_task(slots.slot(priority=False).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with slots.slot(priority=False):  # nothing leaked
        assert slots.waiting == (0, 0)


# -- the revocation set (item 2) ----------------------------------------------------------------------


def _change(uid: str, name: str, generation: int, active: bool, reason: int) -> changes_pb2.AccountChange:
    return changes_pb2.AccountChange(account_id=uid, name=name, credential_generation=generation, active=active,
                                     reason=reason)


def test_revocation_set_refuses_older_generations_and_inactive_accounts() -> None:
    revocations = RevocationSet()
    assert not revocations.refuses("u1", 1)  # no change known: the token stands
    revocations.apply(_change("u1", "alice", 2, True, changes_pb2.ACCOUNT_CHANGE_REASON_PASSWORD_CHANGED), 5000)
    assert revocations.refuses("u1", 1) and not revocations.refuses("u1", 2)
    revocations.apply(_change("u1", "alice", 1, True, changes_pb2.ACCOUNT_CHANGE_REASON_GRANTS_CHANGED), 4000)
    assert revocations.refuses("u1", 1)  # an older change never lowers the generation
    revocations.apply(_change("u1", "alice", 3, False, changes_pb2.ACCOUNT_CHANGE_REASON_DISABLED), 6000)
    assert revocations.refuses("u1", 3)
    revocations.apply(_change("u1", "alice", 3, True, changes_pb2.ACCOUNT_CHANGE_REASON_ENABLED), 7000)
    assert not revocations.refuses("u1", 3) and revocations.refuses("u1", 2)
    # Tokens without an id: by name and issue time.
    assert revocations.refuses_unversioned("alice", 5) and not revocations.refuses_unversioned("alice", 60)
    assert not revocations.refuses_unversioned("bob", 5)
    revocations.apply(_change("u2", "bob", 2, False, changes_pb2.ACCOUNT_CHANGE_REASON_DELETED), 9000)
    revocations.forget_before(7500)  # entries older than every live token are dropped
    assert not revocations.refuses("u1", 2) and revocations.refuses("u2", 5) and len(revocations) == 1
    revocations.reset()
    assert len(revocations) == 0 and not revocations.refuses("u2", 1)
