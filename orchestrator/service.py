"""One orchestrator process: supervisor, platform dispatch, HTTP endpoint, signals.

``run_service`` is what ``orchestrator run`` and ``orchestrator demo`` call. The
first SIGTERM or SIGINT starts a drain: ``/readyz`` turns 503 at once, nothing
new is admitted, conversations run on until ``drain_timeout``, then the process
exits 0. A second signal cancels everything at once and exits 1.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

import attrs
import psutil
import trio
import trio.testing
from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics

from . import __version__
from .agent import Agent
from .config import Settings
from .dispatcher import Platform
from .http import make_app, serve_http
from .lag import monitor_loop_lag
from .metrics import Metrics
from .supervisor import Supervisor

log = logging.getLogger("orchestrator.service")

#: Exit codes.
EXIT_OK = 0
EXIT_FORCED = 1
EXIT_PLATFORM_FAILED = 3


@attrs.define(eq=False)
class RssProbe:
    """Resident memory of this process, sampled at most once per ``every`` seconds."""

    every: float = 1.0
    _process: psutil.Process = attrs.field(init=False, factory=psutil.Process)
    _value: int = attrs.field(init=False, default=0)
    _at: float = attrs.field(init=False, default=float("-inf"))

    def __call__(self) -> int:
        now = trio.current_time()
        if now - self._at >= self.every:
            self._value = int(self._process.memory_info().rss)
            self._at = now
        return self._value


#: Allocations between two young-generation collections (CPython: 700). Our
#: garbage is freed by reference counting; what a collection mostly finds is
#: live: every conversation waiting on its socket holds a fresh chain of about
#: twenty coroutines, closures and wait records, which each collection walks
#: (about 0.65 µs an object at 10,000 conversations, the heap being cold) and
#: finds alive. At 10,000 conversations CPython's schedule with a 20,000
#: threshold spent 3.6 s collecting in a 100,000-call run; 100,000 and 100
#: below: 1.2-1.5 s. Fewer collections, fewer chains walked: hence also
#: GC_YOUNG_PER_CONVERSATION.
GC_THRESHOLD_GEN0 = 100_000
#: The young threshold grows by this much per conversation the process hosts,
#: so that the chains walked stay a fixed share of a collection's work. At 10,000
#: conversations (300,000) young collections took 0.76 s of that run instead of
#: 1.2-1.3 s; each pause is longer (0.22 s at most, from 0.14 s), and as rare.
#: It follows the conversations hosted now, not the most the process may host:
#: sized for 10,000 while hosting 1,000, one young collection walked 300,000
#: objects in a single 98 ms pause.
GC_YOUNG_PER_CONVERSATION = 30
#: Seconds between two looks at how many conversations the process hosts.
GC_FOLLOW_INTERVAL = 1.0
#: A young collection is made early, while the process has nothing else to do, once
#: the young generation holds this share of its threshold (see :func:`collect_when_idle`).
GC_IDLE_SHARE = 0.25
#: Seconds between two looks at the young generation's size, and how long (real time)
#: every task must have been waiting for the process to count as idle.
GC_IDLE_CHECK, GC_IDLE_CUSHION = 0.1, 0.005
#: Young collections per middle one (CPython: 10), and middle ones per full
#: collection (CPython's 10). A middle collection walks every live object
#: younger than the full collection's, 0.3 s at 10,000 conversations. Full
#: collections are rare, so nothing a finished conversation leaves behind may
#: need one: the transport breaks the one cycle a link made (see
#: transport.closing.release); the soak checks RSS stays flat.
GC_THRESHOLD_GEN1, GC_THRESHOLD_GEN2 = 100, 10


def young_threshold(conversations: int) -> int:
    """The young generation's threshold for a process hosting ``conversations``."""
    return min(max(GC_THRESHOLD_GEN0, GC_YOUNG_PER_CONVERSATION * conversations), 2**31 - 1)


def tune_gc(conversations: int = 0) -> None:
    """Garbage-collector settings for a long-lived process hosting ``conversations``.

    Everything alive at startup (modules, classes, settings) is moved to the
    permanent generation so collections stop re-scanning it, and the young
    generation collects less often, the more so the more conversations it
    hosts (see :func:`follow_conversations`). Objects made after this are
    collected as usual.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold(conversations), GC_THRESHOLD_GEN1, GC_THRESHOLD_GEN2)
    # One series per metric instead of two: the `_created` timestamps are noise here.
    disable_created_metrics()  # type: ignore[no-untyped-call]


async def follow_conversations(
    hosted: Sized, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keep the young generation's threshold at :func:`young_threshold` of ``len(hosted)``,
    looked at every :data:`GC_FOLLOW_INTERVAL` seconds."""
    task_status.started()
    while True:
        young = young_threshold(len(hosted))
        threshold = gc.get_threshold()
        if threshold[0] != young:
            gc.set_threshold(young, *threshold[1:])
        await trio.sleep(GC_FOLLOW_INTERVAL)


async def collect_when_idle(
    collect: Callable[[int], object] = gc.collect,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Make young collections while the process is idle, before the threshold forces one
    in the middle of its work.

    Conversations that connect leave their long-lived objects (links, actors, parsers)
    in the young generation, and the first young collection after walks them all: at
    1,000 conversations a pause of 70 ms, which fell among the first calls. Collected
    while every task waits (a moment between connecting and talking, or between two
    bursts of calls), the same walk costs the same CPU but delays nobody. A process
    that is never idle collects on the usual schedule.
    """
    task_status.started()
    while True:
        await trio.sleep(GC_IDLE_CHECK)
        if gc.get_count()[0] >= GC_IDLE_SHARE * gc.get_threshold()[0]:
            await trio.testing.wait_all_tasks_blocked(GC_IDLE_CUSHION)
            collect(0)


@attrs.frozen
class Running:
    """What ``task_status.started`` hands back once the service is up."""

    supervisor: Supervisor
    metrics: Metrics
    http_port: int | None


async def run_service(
    settings: Settings,
    agents: Sequence[type[Agent]],
    platform: Platform,
    *,
    registry: CollectorRegistry | None = None,
    handle_signals: bool = True,
    stop_when_idle: bool = False,
    on_started: Callable[[Running], None] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run until drained by a signal (or until the platform's finite dispatch is done).

    Returns the process exit code. ``stop_when_idle`` ends a finite run (the
    demo) once the platform's dispatch has returned and no conversation is left.
    """
    tune_gc()
    metrics = Metrics(registry if registry is not None else REGISTRY, process=registry is not None)
    supervisor = Supervisor(
        agents,
        platform.connect,
        settings=settings.supervisor,
        metrics=metrics,
        memory_probe=RssProbe(),
    )
    shutdown = _Shutdown()
    health = _Health(supervisor)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        if handle_signals:  # before anything that may wait, such as reaching the platform
            await nursery.start(shutdown.watch_signals, supervisor, nursery.cancel_scope)
        port: int | None = None
        if settings.http.enabled:
            app = make_app(metrics, health, version=__version__)
            port = await nursery.start(
                functools.partial(serve_http, app, host=settings.http.host, port=settings.http.port)
            )
        await nursery.start(monitor_loop_lag, metrics)
        await nursery.start(follow_conversations, supervisor)
        await nursery.start(collect_when_idle)
        dispatch_done = trio.Event()

        async def dispatch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await platform.run(supervisor, task_status=task_status)
            finally:
                dispatch_done.set()

        await nursery.start(dispatch)
        health.reached = True
        running = Running(supervisor, metrics, port)
        if on_started is not None:
            on_started(running)
        task_status.started(running)
        if stop_when_idle:
            await dispatch_done.wait()
            await supervisor.wait_idle()
            nursery.cancel_scope.cancel()
        else:
            await trio.sleep_forever()
    return shutdown.exit_code


@attrs.define(eq=False)
class _Health:
    """``/readyz`` and ``/status``: the supervisor's answer, and not ready before the
    platform has been reached once (a process that cannot reach it serves nobody)."""

    supervisor: Supervisor
    reached: bool = False

    def readiness(self) -> tuple[bool, str]:
        ready, reason = self.supervisor.readiness()
        if ready and not self.reached:
            return False, "platform_not_reached"
        return ready, reason

    def status(self) -> Mapping[str, Any]:
        return {**self.supervisor.status(), "platform_reached": self.reached}


@attrs.define(eq=False)
class _Shutdown:
    """Signal handling: the first signal drains, a second one forces the exit."""

    exit_code: int = EXIT_OK

    async def watch_signals(
        self,
        supervisor: Supervisor,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async with trio.open_nursery() as nursery:
                draining = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not draining:
                        draining = True
                        log.info("%s: draining (deadline %.1f s)", name, supervisor.settings.drain_timeout)
                        nursery.start_soon(self._drain, supervisor, scope)
                    else:
                        log.warning("%s again: exiting now", name)
                        self.exit_code = EXIT_FORCED
                        scope.cancel()
                        return

    async def _drain(self, supervisor: Supervisor, scope: trio.CancelScope) -> None:
        clean = await supervisor.drain()
        # Past the deadline, the supervisor has said how many it cancelled (a warning).
        log.info("drain %s; exiting", "complete" if clean else "cut short at its deadline")
        scope.cancel()
