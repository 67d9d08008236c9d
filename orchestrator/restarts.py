"""Restart policy: one conversation's budget, and the process-wide storm breaker.

:class:`RestartBudget` decides, crash by crash, whether a conversation gets
another actor and how long to wait first: more than ``budget`` crashes within
``window`` seconds ends it. The window counts time the conversation spent
*running*, not time spent waiting in backoff, so a growing backoff cannot hide a
crash loop. Delays are full-jitter (``floor`` to a growing cap) and start over
after a healthy run.

:class:`StormBreaker` watches restarts across all conversations: a storm
(``threshold`` restarts within ``window`` seconds) opens it, which stops
admission until ``cooldown`` seconds after the last restart.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable

import attrs
import trio

from .backoff import Backoff, BackoffPolicy

log = logging.getLogger("orchestrator.supervisor")


@attrs.define(eq=False, slots=True)
class RestartBudget:
    """The crash history of one conversation. Made on its first crash."""

    budget: int
    window: float
    healthy_after: float
    backoff: Backoff
    run_clock: float = 0.0  # seconds the conversation spent running, backoff excluded
    _crashes: list[float] = attrs.field(factory=list)

    @classmethod
    def create(
        cls,
        *,
        budget: int,
        window: float,
        healthy_after: float,
        delay_min: float,
        delay_max: float,
        rng: random.Random,
    ) -> RestartBudget:
        policy = BackoffPolicy(base=delay_min * 2, cap=delay_max, floor=delay_min)
        return cls(budget, window, healthy_after, Backoff(policy, rng))

    def after_crash(self, ran: float) -> float | None:
        """Record a crash after ``ran`` seconds of running: the delay before the restart,
        or None when the conversation is over its budget."""
        self.run_clock += ran
        if ran >= self.healthy_after:
            self.backoff.reset()
            self._crashes.clear()
        self._crashes.append(self.run_clock)
        self._crashes[:] = [t for t in self._crashes if t >= self.run_clock - self.window]
        if len(self._crashes) > self.budget:
            return None
        return self.backoff.next_delay()


@attrs.define(eq=False, slots=True)
class StormBreaker:
    """Process-wide: too many restarts too fast stop admission for a while."""

    threshold: int
    window: float
    cooldown: float
    on_change: Callable[[bool], None] = lambda is_open: None
    _recent: deque[float] = attrs.field(factory=deque)
    _open_until: float | None = None

    def note_restart(self) -> None:
        now = trio.current_time()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - self.window:
            self._recent.popleft()
        if len(self._recent) >= self.threshold:
            if not self.is_open:
                log.error(
                    "restart storm (%d restarts in %.0f s): breaker open, admission stopped",
                    len(self._recent),
                    self.window,
                )
                self.on_change(True)
            self._open_until = now + self.cooldown

    @property
    def is_open(self) -> bool:
        """True until ``cooldown`` seconds after the last restart of a storm."""
        until = self._open_until
        if until is None:
            return False
        if trio.current_time() < until:
            return True
        self._open_until = None
        log.info("breaker closed: restart storm over")
        self.on_change(False)
        return False
