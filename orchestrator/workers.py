"""``orchestrator run --workers N``: one dispatcher process, N worker processes.

One trio process uses one core; this spreads conversations over N processes on
one host. The parent holds the platform's control connection, so each
``conversation_ready`` is seen once, and routes it to the worker that owns the
conversation by rendezvous hashing of the conversation id over worker indexes:
deterministic, no coordination, and a restarted worker (same index) owns the
same conversations again. Each worker runs its own supervisor and opens the
conversations' own connections; the parent tells it about new and ended
conversations over its stdin, one JSON object per line, and the worker tells the
parent, over a pipe of their own (:data:`REPORTS_FD_ENV`; stdout stays the agents'),
which port its HTTP endpoint got, which conversations ended or were refused
(their own sockets say so even when the control connection was down then), and
the announcements and other conversations' ends its own sockets heard (the platform
announces on the earliest-joined socket still connected: a conversation's, while the
control connection is down), for the parent to route.

The parent restarts a worker that dies (full-jitter backoff) and re-announces
the conversations it owned, so none is dropped and none is handled twice. It
serves its own ``/metrics`` (workers alive, restarts, routing) while every
worker serves its own. SIGTERM drains every worker and exits 0 when they all
drained; a second signal kills them and exits 1. A parent that fails (the platform
refuses its key, say) drains its workers before it exits; a worker whose parent is
gone (its stdin ends) drains and exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from . import __version__
from .backoff import Backoff, BackoffPolicy
from .config import Settings
from .config import _converter as settings_converter
from .dispatcher import admit
from .errors import ConfigError
from .events import ConversationEnded, LinkUp
from .http import make_app, serve_http
from .link import ResilientConnection
from .metrics import Metrics
from .platforms.conversimple import ChannelEvent, ControlEnded, ConversimplePlatform
from .protocols import conversimple as wire
from .store import ConversationRecord
from .supervisor import Supervisor

log = logging.getLogger("orchestrator.workers")


def owner(conversation_id: str, workers: int) -> int:
    """The worker index owning ``conversation_id``: highest rendezvous score wins."""

    def score(index: int) -> bytes:
        return hashlib.blake2b(f"{index}:{conversation_id}".encode(), digest_size=8).digest()

    return max(range(workers), key=score)


@attrs.define(eq=False)
class Worker:
    """One worker process as the parent sees it."""

    index: int
    process: trio.Process | None = None
    http_port: int | None = None
    restarts: int = 0
    owned: dict[str, str] = attrs.field(factory=dict)  # conversation id -> agent id
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def send(self, message: Mapping[str, Any]) -> bool:
        """Write one line to the worker's stdin; False if it is not running."""
        process = self.process
        if process is None or process.returncode is not None or process.stdin is None:
            await trio.lowlevel.checkpoint()
            return False
        async with self._lock:
            try:
                await process.stdin.send_all((json.dumps(message) + "\n").encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True


@attrs.define(eq=False, slots=False)
class WorkerPool:
    """The parent: spawns and restarts workers, routes announcements, drains on signals."""

    settings: Settings
    worker_argv: Sequence[str]
    count: int
    env: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    workers: list[Worker] = attrs.field(init=False)
    draining: bool = attrs.field(init=False, default=False)
    exit_code: int = attrs.field(init=False, default=0)
    reached: bool = attrs.field(init=False, default=False)
    _platform: ConversimplePlatform | None = attrs.field(init=False, default=None)
    """The control connection has been up once (``/readyz`` waits for it, as one process's does)."""

    def __attrs_post_init__(self) -> None:
        self.workers = [Worker(i) for i in range(self.count)]
        self.metrics = Metrics(self.registry, process=True)
        self.alive = Gauge("orchestrator_workers_alive", "Worker processes running.", registry=self.registry)
        self.worker_restarts = Counter(
            "orchestrator_worker_restarts_total",
            "Worker processes restarted after dying.",
            registry=self.registry,
        )
        self.routed = Counter(
            "orchestrator_conversations_routed_total",
            "Conversations announced to a worker, by worker index.",
            ["worker"],
            registry=self.registry,
        )

    # -------------------------------------------------------------- StatusProvider

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.reached:
            return False, "platform_not_reached"
        running = sum(1 for w in self.workers if w.process is not None and w.process.returncode is None)
        return (True, "ok") if running == self.count else (False, "admission_stopped")

    def status(self) -> Mapping[str, Any]:
        return {
            "workers": [
                {
                    "index": w.index,
                    "pid": None if w.process is None else w.process.pid,
                    "alive": w.process is not None and w.process.returncode is None,
                    "http_port": w.http_port,
                    "restarts": w.restarts,
                    "conversations": len(w.owned),
                }
                for w in self.workers
            ],
            "draining": self.draining,
            "platform_reached": self.reached,
        }

    # -------------------------------------------------------------- running

    async def run(self) -> int:
        platform = self._platform = ConversimplePlatform.from_settings(self.settings.platform)
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                await nursery.start(self._keep_alive, worker)
            if self.settings.http.enabled:
                app = make_app(self.metrics, self, version=__version__)
                await nursery.start(
                    lambda task_status: serve_http(
                        app,
                        host=self.settings.http.host,
                        port=self.settings.http.port,
                        task_status=task_status,
                    )
                )
            control = platform.control_connection(self.metrics)
            nursery.start_soon(control.run, self._route)
            nursery.start_soon(self._signals, nursery.cancel_scope)
        return self.exit_code

    async def _route(self, event: Any) -> None:
        if isinstance(event, wire.ConversationReady) and event.agent_id is not None:
            if self.draining:
                log.info("draining: conversation %s not routed", event.conversation_id)
            else:
                worker = self.workers[owner(event.conversation_id, self.count)]
                if event.conversation_id not in worker.owned:
                    worker.owned[event.conversation_id] = event.agent_id
                    self.routed.labels(str(worker.index)).inc()
                    await worker.send({"start": event.conversation_id, "agent_id": event.agent_id})
        elif isinstance(event, ControlEnded):
            worker = self.workers[owner(event.conversation_id, self.count)]
            if worker.owned.pop(event.conversation_id, None) is not None:
                await worker.send({"end": event.conversation_id})
        else:
            self.reached = self.reached or isinstance(event, LinkUp)
            if self._platform is not None:
                self._platform.note(event, self.metrics)  # as one process logs it
        await trio.lowlevel.checkpoint()

    def _grace(self) -> float:
        """How long a worker told to stop may take to drain before it is killed."""
        supervisor = self.settings.supervisor
        return supervisor.drain_timeout + supervisor.actor.shutdown_timeout + 2.0

    async def _keep_alive(self, worker: Worker, *, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff(BackoffPolicy(base=1.0, cap=30.0, floor=0.5), random.Random())
        started = False
        while True:
            argv = [*self.worker_argv, "--worker-index", str(worker.index), "--worker-count", str(self.count)]
            reports, theirs = os.pipe()
            try:
                # A session of its own: a terminal's Ctrl-C reaches the parent only, which
                # then drains the workers itself (two signals would force their exit).
                process = await trio.lowlevel.open_process(
                    argv,
                    stdin=subprocess.PIPE,
                    env={**self.env, REPORTS_FD_ENV: str(theirs)},
                    pass_fds=(theirs,),
                    start_new_session=True,
                )
            except BaseException:
                os.close(reports)
                raise
            finally:
                os.close(theirs)
            worker.process = process
            if self.draining:  # the drain began while it started: _signals did not see it
                process.send_signal(signal.SIGTERM)
            self.alive.inc()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_worker, worker, trio.lowlevel.FdStream(reports))
                for cid, agent_id in list(worker.owned.items()):  # a restart gets its conversations back
                    await worker.send({"start": cid, "agent_id": agent_id})
                if not started:
                    started = True
                    task_status.started()
                try:
                    code = await process.wait()
                except BaseException:  # the parent is exiting at once: the worker goes too
                    with trio.CancelScope(shield=True):
                        await _stop(process, self._grace(), signalled=self.draining)
                    raise
            self.alive.dec()
            if self.draining:
                if code != 0:
                    self.exit_code = self.exit_code or 1
                return
            worker.restarts += 1
            self.worker_restarts.inc()
            log.warning("worker %d exited with status %s: restarting", worker.index, code)
            await trio.sleep(backoff.next_delay())
            if self.draining:  # not restarted into a drain: what it owned was not drained
                self.exit_code = self.exit_code or 1
                return

    async def _read_worker(self, worker: Worker, reports: trio.lowlevel.FdStream) -> None:
        """What the worker reports on its pipe: its HTTP port, its conversations' ends,
        conversations announced on its sockets."""
        buffer = b""
        async with reports:
            async for chunk in reports:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(message, dict):
                        continue
                    if isinstance(message.get("http_port"), int):
                        worker.http_port = message["http_port"]
                    elif isinstance(message.get("ended"), str):
                        worker.owned.pop(message["ended"], None)  # a restart must not bring it back
                    elif isinstance(message.get("ready"), str) and isinstance(message.get("agent_id"), str):
                        # Heard on a socket of that worker's (see platforms.conversimple).
                        await self._route(wire.ConversationReady(message["ready"], message["agent_id"]))
                    elif isinstance(message.get("heard_end"), str):
                        await self._route(ControlEnded(message["heard_end"]))

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self.draining:
                    log.info("%s: draining %d workers", signal.Signals(signum).name, self.count)
                    self.draining = True
                    self.metrics.draining.set(1)
                    for worker in self.workers:
                        if worker.process is not None and worker.process.returncode is None:
                            worker.process.send_signal(signal.SIGTERM)
                    trio.lowlevel.spawn_system_task(self._stop_when_drained, scope)
                else:
                    log.warning("second signal: killing workers")
                    self.exit_code = 1
                    for worker in self.workers:
                        if worker.process is not None and worker.process.returncode is None:
                            worker.process.kill()
                    scope.cancel()
                    return

    async def _stop_when_drained(self, scope: trio.CancelScope) -> None:
        for worker in self.workers:
            if worker.process is not None:
                await worker.process.wait()
        log.info("every worker has drained: exiting")
        scope.cancel()


async def _stop(process: trio.Process, grace: float, *, signalled: bool) -> None:
    """Drain a worker as SIGTERM does (unless it has had its SIGTERM: a second one would
    force it out); kill it if that takes longer than ``grace`` seconds."""
    if process.returncode is None:
        if not signalled:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
            return
        log.warning("worker process %d did not drain within %.0f s: killing it", process.pid, grace)
        process.kill()
    await process.wait()


@attrs.define(eq=False)
class PipePlatform:
    """A worker's platform: conversations come from the parent over stdin.

    Each conversation's own connection is an ordinary Conversimple connection.
    What the worker tells the parent (:meth:`tell`) leaves on the pipe the parent
    gave it (:data:`REPORTS_FD_ENV`) from a task of its own, so a parent slow to read
    never stalls this process's event loop.
    """

    inner: ConversimplePlatform
    _out: trio.MemorySendChannel[bytes] = attrs.field(init=False)
    _lines: trio.MemoryReceiveChannel[bytes] = attrs.field(init=False)
    _reports_fd: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._out, self._lines = trio.open_memory_channel[bytes](math.inf)
        raw = os.environ.get(REPORTS_FD_ENV, "")
        if not raw.isdigit():
            raise ConfigError(
                f"{REPORTS_FD_ENV} is not set: `orchestrator worker` is started by `run --workers`"
            )
        self._reports_fd = int(raw)

    def tell(self, message: Mapping[str, Any]) -> None:
        """Send the parent one JSON line (dropped once the parent is gone)."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._out.send_nowait((json.dumps(message) + "\n").encode())

    def connect(self, record: ConversationRecord) -> ResilientConnection:
        return self.inner.connect(record)

    def _heard(self, event: ChannelEvent) -> None:
        """An announcement or another conversation's end heard on one of this worker's
        sockets (see platforms.conversimple): the parent routes it."""
        if isinstance(event, ControlEnded):
            self.tell({"heard_end": event.conversation_id})
        elif event.agent_id is not None:
            self.tell({"ready": event.conversation_id, "agent_id": event.agent_id})

    async def run(
        self, supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.inner.bind(supervisor)
        self.inner.on_channel = self._heard
        supervisor.watch_ends(lambda conversation_id, _: self.tell({"ended": conversation_id}))
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_lines)
            task_status.started()
            buffer = b""
            async with stdin:
                async for chunk in stdin:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        self._handle(supervisor, line)
            # The parent is gone: nothing more will be routed here. Serve what is here
            # until it ends (within the drain timeout), then this process exits.
            log.warning("the parent process is gone: draining")
            self._out.close()
            await supervisor.drain()

    async def _write_lines(self) -> None:
        reports = trio.lowlevel.FdStream(self._reports_fd)
        try:
            async with reports, self._lines:
                async for line in self._lines:
                    await reports.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the parent is gone: its end of the pipe with it
        finally:
            self._out.close()  # what is told from now on goes nowhere, quietly

    def _handle(self, supervisor: Supervisor, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("ignoring a malformed line from the parent process")
            return
        if not isinstance(message, dict):
            return
        if isinstance(message.get("start"), str) and isinstance(message.get("agent_id"), str):
            cid = message["start"]
            metadata = {"customer_id": self.inner.customer_id, "platform": "conversimple"}
            if not admit(supervisor, cid, message["agent_id"], metadata) and cid not in supervisor:
                self.tell({"ended": cid})  # refused (capacity, breaker, unknown agent): not here
        elif isinstance(message.get("end"), str):
            supervisor.notify(message["end"], ConversationEnded())


SETTINGS_ENV = "ORCHESTRATOR_WORKER_SETTINGS"
REPORTS_FD_ENV = "ORCHESTRATOR_WORKER_REPORTS_FD"
"""The worker's end of the pipe it reports on (a file descriptor number the parent passed)."""


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment a worker reads its settings from (secrets stay out of argv)."""
    data = settings_converter.unstructure(settings)
    data["http"]["port"] = 0  # each worker picks a free port and announces it
    return {**os.environ, SETTINGS_ENV: json.dumps(data)}


def settings_from_env() -> Settings:
    """A worker's settings, as its parent passed them."""
    raw = os.environ.get(SETTINGS_ENV)
    if raw is None:
        raise ConfigError(f"{SETTINGS_ENV} is not set: `orchestrator worker` is started by `run --workers`")
    return settings_converter.structure(json.loads(raw), Settings)
