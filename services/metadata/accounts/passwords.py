"""bcrypt hashing and checking on a bounded pool of threads of its own, in two lanes.

bcrypt only reads the first 72 bytes of a secret (bcrypt 5 refuses longer ones): longer passwords
are refused when set (`PasswordTooLong`) and never match when checked. Checking an unknown name
still runs bcrypt against a dummy hash of the same cost, so the answer takes as long either way.

Lanes (`PasswordSlots`): bcrypt is slow on purpose (~0.3 s at cost 12), so a crowd of wrong
guesses would otherwise queue in front of every real login. A check runs in the *priority* lane
when the gateway says it verified these exact credentials before (`verified_recently`), and so do
hashes (operators setting passwords); everything else runs in the *normal* lane. With two or more
workers, the normal lane may use all but one of them: failed guesses can never take every thread,
and a priority check waits at most for one running bcrypt. Within the normal lane, client
addresses take turns (one address's pile of guesses delays another's login by one check per
thread, not by the whole pile). The normal lane's queue is bounded (`password_check_queue`); past
it a check is refused at once (`PasswordChecksBusy`, 429) instead of waiting behind hundreds. The
normal lane's threads also run at a lower CPU priority (niceness 10): a thread of its own is not
enough when the cores are busy, and guesses must not slow a known user's bcrypt down either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

MAX_SECRET_BYTES = 72
# Niceness added to the normal lane's threads: checks of unverified credentials (where failed
# guesses land) get the CPU only after verified logins, the event loops and the rest of the machine.
NORMAL_LANE_NICENESS = 10
T = TypeVar("T")


class PasswordTooLong(ValueError):
    """The secret is longer than bcrypt's 72 bytes."""


class PasswordChecksBusy(Exception):
    """The normal lane's queue is full: refuse the check now (retry later)."""


class PasswordSlots:
    """`workers` slots; the normal lane holds at most `workers - reserved` of them at once and at
    most `max_waiting` callers wait for one. Priority waiters are always served first; normal
    waiters take turns by `source` (the client address), so one address with many checks queued
    delays another address's check by at most one check per slot."""

    def __init__(self, workers: int, *, reserved: int, max_waiting: int) -> None:
        self._free = workers
        self._normal_cap = max(1, workers - reserved)
        self._normal_busy = 0
        self._max_waiting = max_waiting
        self._priority: deque[asyncio.Future[None]] = deque()
        # source → its waiters; the first source is served next, then moves to the end.
        self._normal: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._normal_waiting = 0

    @property
    def waiting(self) -> tuple[int, int]:
        """(priority, normal) callers waiting."""
        return len(self._priority), self._normal_waiting

    @contextlib.asynccontextmanager
    async def slot(self, *, priority: bool, source: str = "") -> AsyncIterator[None]:
        """Holds a slot of the lane for the block. Raises PasswordChecksBusy when the normal queue is full."""
        await self._acquire(priority, source)
        try:
            yield
        finally:
            self._release(priority)

    def _can_take(self, priority: bool) -> bool:
        if self._free <= 0:
            return False
        return priority or (self._normal_busy < self._normal_cap and not self._priority)

    def _take(self, priority: bool) -> None:
        self._free -= 1
        if not priority:
            self._normal_busy += 1

    async def _acquire(self, priority: bool, source: str) -> None:
        waiting = self._priority if priority else self._normal_waiting
        if not waiting and self._can_take(priority):
            self._take(priority)
            return
        if not priority and self._normal_waiting >= self._max_waiting:
            raise PasswordChecksBusy
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if priority:
            self._priority.append(waiter)
        else:
            self._normal.setdefault(source, deque()).append(waiter)
            self._normal_waiting += 1
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(priority)  # handed a slot while being cancelled: give it back
            else:
                self._forget(waiter, priority, source)
            raise

    def _forget(self, waiter: asyncio.Future[None], priority: bool, source: str) -> None:
        if priority:
            with contextlib.suppress(ValueError):
                self._priority.remove(waiter)
            return
        queue = self._normal.get(source)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._normal_waiting -= 1
            if not queue:
                del self._normal[source]

    def _release(self, priority: bool) -> None:
        self._free += 1
        if not priority:
            self._normal_busy -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._priority and self._can_take(True):
            self._take(True)
            self._priority.popleft().set_result(None)
        while self._normal and self._can_take(False):
            source, queue = next(iter(self._normal.items()))
            waiter = queue.popleft()
            self._normal_waiting -= 1
            if queue:
                self._normal.move_to_end(source)
            else:
                del self._normal[source]
            self._take(False)
            waiter.set_result(None)


def _lower_thread_priority() -> None:
    """Runs in each normal-lane thread: the kernel schedules it after everything else (Linux
    `setpriority` on a thread id applies to that thread only)."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + NORMAL_LANE_NICENESS))


class Passwords:
    """bcrypt with a fixed work factor on `workers` threads of its own, in two lanes (see above)."""

    def __init__(self, *, rounds: int, workers: int = 2, max_waiting: int = 32) -> None:
        self._rounds = rounds
        self.slots = PasswordSlots(workers, reserved=1 if workers > 1 else 0, max_waiting=max_waiting)
        # The slots bound how many run at once; each lane has threads of its own so that the
        # normal lane's can run at a lower CPU priority.
        self._priority_threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")
        self._normal_threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt-normal",
                                                  initializer=_lower_thread_priority)
        # Compared against when the account does not exist (see the module docstring); made on
        # first use, in a worker thread like every other hash.
        self._dummy: str | None = None

    async def _run(self, priority: bool, fn: Callable[..., T], *args: object, source: str = "") -> T:
        threads = self._priority_threads if priority else self._normal_threads
        async with self.slots.slot(priority=priority, source=source):
            return await asyncio.get_running_loop().run_in_executor(threads, fn, *args)

    async def hash(self, secret: str) -> str:
        """The bcrypt hash of `secret` (priority lane). Raises PasswordTooLong past 72 bytes,
        ValueError when empty."""
        raw = secret.encode()
        if not raw:
            raise ValueError("empty secret")
        if len(raw) > MAX_SECRET_BYTES:
            raise PasswordTooLong(f"passwords are limited to {MAX_SECRET_BYTES} bytes (bcrypt)")
        hashed = await self._run(True, bcrypt.hashpw, raw, bcrypt.gensalt(self._rounds))
        return hashed.decode()

    async def check(self, secret: str, hashed: str | None, *, priority: bool = False, source: str = "") -> bool:
        """True when `secret` matches `hashed`; `hashed=None` (no such account) is checked against
        the dummy hash and is always False. `source` (the client address) takes turns with other
        sources in the normal lane. Raises PasswordChecksBusy (normal lane full)."""
        raw = secret.encode()
        if hashed is None and self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        target = (hashed or self._dummy or "").encode()
        if not raw or len(raw) > MAX_SECRET_BYTES:
            raw = b"\x00"  # still pay for one bcrypt, then fail
            hashed = None
        matched = await self._run(priority, _checkpw, raw, target, source=source)
        return matched and hashed is not None

    def close(self) -> None:
        self._priority_threads.shutdown(wait=False, cancel_futures=True)
        self._normal_threads.shutdown(wait=False, cancel_futures=True)


def _checkpw(raw: bytes, target: bytes) -> bool:
    try:
        return bcrypt.checkpw(raw, target)
    except ValueError:  # a corrupt stored hash never matches
        return False


def new_robot_secret() -> str:
    """43 URL-safe characters (256 bits), within bcrypt's 72 bytes."""
    return secrets.token_urlsafe(32)
