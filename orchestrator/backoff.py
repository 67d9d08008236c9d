"""Exponential backoff with full jitter, shared by restarts and reconnects.

Full jitter: the n-th delay is uniform in ``[0, min(max, base * multiplier**n)]``,
so a crowd of clients that failed together spreads out instead of retrying in
lock-step. The first attempt is jittered too.
"""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class BackoffPolicy:
    """How delays grow: ``base`` seconds times ``multiplier`` per attempt, capped at ``cap``."""

    base: float = 0.5
    cap: float = 30.0
    multiplier: float = 2.0
    floor: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.floor < 0:
            raise ValueError("backoff delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")
        if self.floor > self.cap:
            raise ValueError("backoff floor must not exceed the cap")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent so huge attempt counts do not overflow floats.
        growth = self.multiplier ** min(attempt, 64)
        return min(self.cap, self.base * growth)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter delay for retry number ``attempt``, at least ``floor``."""
        upper = max(self.ceiling(attempt), self.floor)
        return rng.uniform(self.floor, upper)


@attrs.define(eq=False)
class Backoff:
    """Stateful attempt counter over a :class:`BackoffPolicy`."""

    policy: BackoffPolicy = attrs.field(factory=BackoffPolicy)
    rng: random.Random = attrs.field(factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the counter."""
        delay = self.policy.delay(self.attempt, self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the smallest delay (after a healthy period)."""
        self.attempt = 0
