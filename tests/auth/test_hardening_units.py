"""Pure pieces of the access-control hardening (issue 11, items 2 and 4): the login throttle, the
bcrypt lanes and the revocation set."""

from __future__ import annotations

import asyncio

import pytest
from lading.metadata.v1 import changes_pb2

from gateway.auth.revocations import RevocationSet
from gateway.auth.throttle import LoginThrottle, Throttled, address_bucket
from services.common.settings import LoginThrottleSettings
from services.metadata.accounts.passwords import PasswordChecksBusy, PasswordSlots

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


async def test_addresses_take_turns_in_the_normal_lane() -> None:
    slots = PasswordSlots(1, reserved=0, max_waiting=20)
    order: list[str] = []

    async def check(name: str, source: str) -> None:
        async with slots.slot(priority=False, source=source):
            order.append(name)
            await asyncio.sleep(0)

    async with slots.slot(priority=False, source="busy"):  # a check is running
        tasks = [asyncio.create_task(check(f"guess{i}", "198.51.100.1")) for i in range(6)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(check("newcomer", "203.0.113.5")))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order.index("newcomer") == 1  # after one guess, not after all six


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


async def test_normal_lane_threads_run_at_a_lower_cpu_priority() -> None:
    import os
    import threading

    from services.metadata.accounts.passwords import Passwords

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    passwords = Passwords(rounds=4, workers=2)
    try:
        assert await passwords._run(False, niceness) > niceness() or niceness() == 19
        assert await passwords._run(True, niceness) == niceness()
    finally:
        passwords.close()
