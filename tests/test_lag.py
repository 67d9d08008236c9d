"""The event-loop lag monitor, on trio's mock clock and once for real."""

from __future__ import annotations

import logging
import time
from functools import partial

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from orchestrator import lag
from orchestrator.errors import ConfigError
from orchestrator.lag import monitor_loop_lag
from orchestrator.metrics import Metrics

LAG = "orchestrator_event_loop_lag_seconds"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def _count(registry: CollectorRegistry) -> float:
    return registry.get_sample_value(f"{LAG}_count") or 0.0


def _at_most(registry: CollectorRegistry, le: str) -> float:
    return registry.get_sample_value(f"{LAG}_bucket", {"le": le}) or 0.0


async def test_lag_monitor_observes_zero_lag_on_an_idle_loop(
    autojump_clock: trio.testing.MockClock, metrics: Metrics, registry: CollectorRegistry
) -> None:
    async with trio.open_nursery() as nursery:
        scope = await nursery.start(partial(monitor_loop_lag, metrics, interval=0.05))
        await trio.sleep(1.0)
        scope.cancel()
    assert _count(registry) == pytest.approx(20, abs=1)
    assert registry.get_sample_value(f"{LAG}_sum") == 0


async def test_lag_monitor_measures_a_clock_jump_as_lag(
    mock_clock: trio.testing.MockClock,
    metrics: Metrics,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(monitor_loop_lag, metrics, interval=0.05, warn_after=0.1))
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.3)  # the loop "was busy" for 0.3 s while the ticker slept
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert _count(registry) == 1
    assert registry.get_sample_value(f"{LAG}_sum") == pytest.approx(0.25)
    [warning] = [r for r in caplog.records if r.name == "orchestrator.lag"]
    assert warning.levelno == logging.WARNING
    assert "0.250 s late" in warning.getMessage()


async def test_lag_monitor_warns_at_most_once_per_window(
    mock_clock: trio.testing.MockClock,
    metrics: Metrics,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(monitor_loop_lag, metrics, interval=0.05, warn_after=0.1))
        for _ in range(5):  # five late ticks inside one warning window
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.5)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(lag.WARN_EVERY)  # the window has passed: one more warning
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.name == "orchestrator.lag"]
    assert len(warnings) == 2
    assert "4 more late ticks since the last warning" in warnings[1]
    assert _count(registry) == 6


async def test_lag_monitor_stays_quiet_under_warn_after(
    mock_clock: trio.testing.MockClock,
    metrics: Metrics,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(monitor_loop_lag, metrics, interval=0.05, warn_after=0.1))
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.1)  # 0.05 s late: observed, not worth a warning
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert _at_most(registry, "0.05") == 1
    assert not [r for r in caplog.records if r.name == "orchestrator.lag"]


async def test_lag_monitor_sees_a_real_blocking_call(metrics: Metrics, registry: CollectorRegistry) -> None:
    """The behaviour under test is a real block, so this one test blocks for real."""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(monitor_loop_lag, metrics, interval=0.01))
        await trio.testing.wait_all_tasks_blocked()
        before = _count(registry) - _at_most(registry, "0.25")
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert _count(registry) - _at_most(registry, "0.25") == before + 1


async def test_lag_monitor_hands_back_its_own_cancel_scope(
    autojump_clock: trio.testing.MockClock, metrics: Metrics
) -> None:
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(monitor_loop_lag, metrics)
            await trio.sleep(0.2)
            scope.cancel()  # the nursery exits: the monitor was its only child


@pytest.mark.parametrize(("interval", "warn_after"), [(0, 0.1), (-1, 0.1), (float("nan"), 0.1), (0.05, -0.5)])
async def test_lag_monitor_rejects_bad_settings(metrics: Metrics, interval: float, warn_after: float) -> None:
    with pytest.raises(ConfigError):
        await monitor_loop_lag(metrics, interval=interval, warn_after=warn_after)
