"""Event-loop lag: how long the trio loop was held by code that did not yield.

Every conversation shares one thread. A tool or handler that computes or does
blocking I/O without a checkpoint stalls them all. The monitor is a ticker that
asks to wake every ``interval`` seconds and measures how late it actually woke;
the delay is time the loop spent on something else. It feeds
``orchestrator_event_loop_lag_seconds`` and logs a warning (logger
``orchestrator.lag``) when one tick is later than ``warn_after``.

The lag says *that* the loop was blocked, not by whom: the tool executor names
async tools that block (``orchestrator_blocking_tool_detections_total``).

Time comes from :func:`trio.current_time`, so under a :class:`trio.testing.MockClock`
a ``clock.jump(t)`` while the ticker sleeps shows as ``t`` seconds of lag, minus
what was left of the interval.
"""

from __future__ import annotations

import logging
import math

import trio

from orchestrator.errors import ConfigError
from orchestrator.metrics import Metrics

__all__ = ["WARN_EVERY", "monitor_loop_lag"]

log = logging.getLogger(__name__)

#: Seconds between two lag warnings; late ticks in between are counted, not logged.
WARN_EVERY = 10.0


async def monitor_loop_lag(
    metrics: Metrics,
    *,
    interval: float = 0.05,
    warn_after: float = 0.1,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Observe the event loop's lag into ``metrics.loop_lag`` until cancelled.

    Start it with ``await nursery.start(monitor_loop_lag, metrics)``; the value
    handed back is a :class:`trio.CancelScope` that stops this monitor alone.
    It observes one sample per tick (20 a second by default, a negligible cost)
    and warns at most once every :data:`WARN_EVERY` seconds, with the number of
    late ticks it did not log.

    Cancellation stops it at once; it holds nothing that needs cleaning up.
    """
    if not (math.isfinite(interval) and interval > 0):
        raise ConfigError(f"loop lag interval must be a positive number of seconds, not {interval}")
    if not warn_after >= 0:
        raise ConfigError(f"loop lag warn_after must be >= 0 seconds, not {warn_after}")
    with trio.CancelScope() as scope:
        task_status.started(scope)
        last_warning = -math.inf
        unreported = 0
        while True:
            deadline = trio.current_time() + interval
            await trio.sleep_until(deadline)
            now = trio.current_time()
            lag = max(0.0, now - deadline)
            metrics.loop_lag.observe(lag)
            if lag <= warn_after:
                continue
            if now - last_warning < WARN_EVERY:
                unreported += 1
                continue
            since = f"; {unreported} more late ticks since the last warning" if unreported else ""
            log.warning(
                "event loop blocked: a tick ran %.3f s late (warn_after %.3f s)%s; look for "
                "sync I/O or CPU work without a checkpoint in an async tool or handler",
                lag,
                warn_after,
                since,
            )
            last_warning = now
            unreported = 0
