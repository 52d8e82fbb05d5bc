"""A hand-moved clock for code that takes `clock: Callable[[], float]`: tests set or advance
`now`, so nothing sleeps or depends on timing."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
