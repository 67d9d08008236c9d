"""Spawns, watches, restarts and drains conversation actors.

The contract (each line has a test):

* A crash in one conversation never disturbs another.
* Restart types: ``transient`` restarts on a crash; ``permanent`` also after an
  idle timeout; ``temporary`` never. A platform-ended conversation and an
  operator's stop are never restarted.
* Restart budget per conversation: more than ``restart_budget`` crashes within
  ``restart_window`` seconds ends that conversation alone as failed. The window
  counts time the conversation spent running, not time waiting in backoff, so a
  growing backoff cannot hide a crash loop. Restarts wait a full-jitter backoff
  (min 0.5 s, max 30 s), reset after ``healthy_after`` seconds of healthy running.
* A restart storm across conversations opens the process-wide breaker: admission
  stops and readiness fails; running conversations are untouched.
* The admission cap counts starting, running and restarting actors and is
  checked and taken synchronously, so no burst can overshoot it. A memory
  ceiling also stops admission.
* Drain: no new admissions, conversations run on until ``drain_timeout``, then
  each is cancelled with ``shutdown_timeout`` to clean up.
* Across a restart a conversation keeps its record (id, history, results).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from .actor import ActorExit, ConversationActor, summarize
from .agent import Agent
from .connection import Connection
from .errors import (
    AdmissionError,
    ConversationFailedError,
    ConversationNotFoundError,
    MailboxClosedError,
    MailboxFullError,
    describe_error,
)
from .events import ConversationEnded, InboundEvent
from .logs import agent_id_var, conversation_id_var
from .metrics import OUTCOMES, RESTART_REASONS, Metrics
from .restarts import RestartBudget, StormBreaker
from .slot import Slot
from .store import ConversationRecord, ConversationStore, MemoryStore, ResultCache
from .supervision import ConversationInfo, SupervisorSettings, SupervisorStatistics

log = logging.getLogger("orchestrator.supervisor")

ConnectionFactory = Callable[[ConversationRecord], Connection]
MemoryProbe = Callable[[], int]

STATES = ("starting", "running", "restarting", "stopping")
CRASH, IDLE, MANUAL = RESTART_REASONS  # the restart reasons, as the metric's HELP lists them


class Supervisor:
    """Hosts conversation actors in one nursery. Start with ``await nursery.start(sup.run)``."""

    def __init__(
        self,
        agents: Iterable[type[Agent]],
        connect: ConnectionFactory,
        *,
        settings: SupervisorSettings | None = None,
        metrics: Metrics | None = None,
        store: ConversationStore | None = None,
        thread_limiter: trio.CapacityLimiter | None = None,
        memory_probe: MemoryProbe | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or SupervisorSettings()
        self.agents: dict[str, type[Agent]] = {}
        for agent_cls in agents:
            if not isinstance(agent_cls.agent_id, str) or not agent_cls.agent_id.strip():
                # The base class itself (the loader refuses it too): the platform routes by id.
                raise ValueError(f"{agent_cls.__qualname__} has no agent_id to be hosted under")
            if agent_cls.agent_id in self.agents:
                raise ValueError(f"two agent classes share agent_id {agent_cls.agent_id!r}")
            self.agents[agent_cls.agent_id] = agent_cls
        self._connect = connect
        self.metrics = metrics
        self.store: ConversationStore = store if store is not None else MemoryStore()
        self.thread_limiter = thread_limiter or trio.to_thread.current_default_thread_limiter()
        self._memory_probe = memory_probe
        self._rng = rng or random.Random()
        self._slots: dict[str, Slot] = {}
        self._nursery: trio.Nursery | None = None
        self._drain_started = trio.Event()  # set once: draining from then on
        self._breaker = StormBreaker(
            self.settings.breaker_threshold,
            self.settings.breaker_window,
            self.settings.breaker_cooldown,
            self._breaker_changed,
        )
        self._idle = trio.Event()
        self._idle.set()
        self._started_total = 0
        self._restarts_total = 0
        self._ended: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._rejected: dict[str, int] = {}
        self._by_state: dict[str, int] = dict.fromkeys(STATES, 0)
        self._end_watchers: list[Callable[[str, str], object]] = []
        self.refusal_lines: dict[str, tuple[float, int]] = {}
        """Per refusal reason, until when :func:`~orchestrator.dispatcher.admit` only counts
        refusals, and how many it has counted (its log lines are one a second a reason)."""

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Host actors until cancelled. Cancellation cancels every actor."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - a drain deadline, then cancel
        """Stop admitting, let conversations end until the deadline, then cancel the rest.

        Returns True if every conversation ended on its own before the deadline.
        Each cancelled actor gets its ``shutdown_timeout`` to clean up, so this
        returns within ``timeout + shutdown_timeout`` (plus scheduling).
        """
        self._drain_started.set()
        if self.metrics is not None:
            self.metrics.draining.set(1)
        deadline = self.settings.drain_timeout if timeout is None else timeout
        log.info("draining %s (deadline %.1f s)", _plural(len(self._slots), "conversation"), deadline)
        with trio.move_on_after(deadline):
            await self._idle.wait()
            return True
        stragglers = list(self._slots.values())
        executors = [slot.actor.executor for slot in stragglers if slot.actor is not None]
        calls = sum(executor.inflight for executor in executors if executor is not None)
        log.warning(
            "drain deadline reached (%.1f s), stragglers cancelled: %s, %s in flight",
            deadline,
            _plural(len(stragglers), "conversation"),
            _plural(calls, "tool call"),
        )
        for slot in stragglers:
            slot.cancel()
        grace = self.settings.actor.shutdown_timeout + 1.0
        with trio.move_on_after(grace):
            await self._idle.wait()
            return False
        log.warning(
            "%s still not stopped %.1f s after the deadline", _plural(len(self._slots), "conversation"), grace
        )
        return False

    @property
    def draining(self) -> bool:
        return self._drain_started.is_set()

    # ------------------------------------------------------------ admission

    def start_conversation_nowait(
        self, conversation_id: str, agent_id: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Admit and spawn a conversation, or raise AdmissionError. Never waits.

        The check and the reservation happen with no checkpoint in between, so
        concurrent callers can never overshoot ``max_conversations``.
        """
        if self._nursery is None:
            raise RuntimeError("supervisor is not running; start it with nursery.start(sup.run)")
        agent_cls = self.agents.get(agent_id)
        reason = self._refusal(conversation_id, agent_id, agent_cls)
        if reason is not None:
            self._rejected[reason[0]] = self._rejected.get(reason[0], 0) + 1
            if self.metrics is not None:
                self.metrics.admissions_rejected.labels(reason[0]).inc()
            raise AdmissionError(*reason)
        assert agent_cls is not None
        record = self.store.get(conversation_id) or ConversationRecord(
            conversation_id,
            agent_id,
            dict(metadata or {}),
            ResultCache(self.settings.actor.tools.result_cache_size),
        )
        self.store.add(record)
        slot = Slot(record, agent_cls, started_at=trio.current_time())
        self._slots[conversation_id] = slot
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._set_state(slot, "starting", new=True)
        self._started_total += 1
        if self.metrics is not None:
            self.metrics.child(self.metrics.conversations_started, agent_id).inc()
        # A shared name: trio would format one string per task, 10,000 of them.
        self._nursery.start_soon(self._supervise, slot, name="orchestrator.conversation")

    async def start_conversation(
        self, conversation_id: str, agent_id: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Admit and spawn, then wait until the actor is running (or already ended)."""
        self.start_conversation_nowait(conversation_id, agent_id, metadata)
        await self.wait_running(conversation_id)

    def _refusal(
        self, conversation_id: str, agent_id: str, agent_cls: type[Agent] | None
    ) -> tuple[str, str] | None:
        if self.draining:
            return ("draining", "shutting down: no new conversations")
        if agent_cls is None:  # the id comes from the platform: shown cut short
            served = ", ".join(sorted(self.agents)) or "none"
            return ("unknown_agent", f"no agent class has agent_id {agent_id[:64]!r} (served: {served})")
        if conversation_id in self._slots:
            return ("duplicate", "conversation is already hosted")
        if self.breaker_open:
            return ("breaker", "restart storm: the breaker is open")
        if len(self._slots) >= self.settings.max_conversations:
            return ("capacity", f"at capacity ({_plural(self.settings.max_conversations, 'conversation')})")
        limit = self.settings.memory_limit_bytes
        if limit is not None and self._memory_probe is not None:
            rss = self._memory_probe()
            if rss >= limit:
                return ("memory", f"memory ceiling reached (RSS {rss:,} bytes, limit {limit:,} bytes)")
        return None

    # ------------------------------------------------------------ supervision

    async def _supervise(self, slot: Slot) -> None:
        settings = self.settings
        budget: RestartBudget | None = None  # made on the first crash
        outcome = "failed"
        # This task's context is its own copy: set, never reset (records carry the ids).
        conversation_id_var.set(slot.record.conversation_id)
        agent_id_var.set(slot.record.agent_id)
        try:
            while True:
                actor = ConversationActor(
                    slot.record,
                    slot.agent_cls,
                    self._connect(slot.record),
                    self.thread_limiter,
                    settings.actor,
                    self.metrics,
                )
                slot.actor = actor
                began = trio.current_time()
                reason: str | None = None
                exit_: ActorExit | None = None
                if slot.stop_requested:
                    actor.cancel()
                try:
                    exit_ = await actor.run(task_status=_Started(self, slot))
                except ConversationFailedError as exc:
                    log.warning("conversation failed: %s", exc)
                    outcome = "failed"
                    return
                except Exception as exc:  # the supervisor decides on a restart here
                    reason = CRASH
                    log.warning("actor crashed: %s", describe_error(exc), exc_info=exc)
                ran = trio.current_time() - began
                if exit_ is ActorExit.STOPPED or slot.stop_requested:
                    if slot.restart_requested and not self.draining:
                        slot.restart_requested = slot.stop_requested = False
                        self._count_restart(slot, MANUAL)
                        self._set_state(slot, "restarting")
                        continue
                    outcome = "stopped" if not self.draining else "cancelled"
                    return
                if exit_ is ActorExit.COMPLETED:
                    outcome = "completed"
                    return
                if exit_ is ActorExit.IDLE:
                    if slot.agent_cls.restart != "permanent":
                        outcome = "idle"
                        return
                    reason = IDLE
                # A crash (or a permanent agent's idle end): restart or give up.
                if slot.agent_cls.restart == "temporary":
                    outcome = "failed"
                    return
                if budget is None:
                    budget = RestartBudget.create(
                        budget=settings.restart_budget,
                        window=settings.restart_window,
                        healthy_after=settings.healthy_after,
                        delay_min=settings.backoff_min,
                        delay_max=settings.backoff_max,
                        rng=self._rng,
                    )
                delay = budget.after_crash(ran)
                if delay is None:
                    log.error(
                        "conversation over its restart budget (%d in %.1f s): failed",
                        settings.restart_budget,
                        settings.restart_window,
                    )
                    outcome = "failed"
                    return
                self._count_restart(slot, reason or CRASH)
                self._breaker.note_restart()
                self._set_state(slot, "restarting")
                with slot.new_scope() as scope:
                    await trio.sleep(delay)
                slot.scope = None
                if scope.cancelled_caught:
                    if slot.restart_requested and not self.draining:
                        slot.restart_requested = slot.stop_requested = False
                        continue
                    outcome = "stopped" if not self.draining else "cancelled"
                    return
        finally:
            self._finish(slot, outcome)

    def _count_restart(self, slot: Slot, reason: str) -> None:
        slot.record.restarts += 1
        self._restarts_total += 1
        if self.metrics is not None:
            self.metrics.child(self.metrics.restarts, slot.record.agent_id, reason).inc()

    def _finish(self, slot: Slot, outcome: str) -> None:
        self._set_state(slot, None)
        self._slots.pop(slot.record.conversation_id, None)
        self.store.remove(slot.record.conversation_id)
        self._ended[outcome] = self._ended.get(outcome, 0) + 1
        if self.metrics is not None:
            self.metrics.child(self.metrics.conversations_ended, slot.record.agent_id, outcome).inc()
        slot.mark_ended(outcome)
        for watcher in self._end_watchers:
            try:
                watcher(slot.record.conversation_id, outcome)
            except Exception:
                log.exception("a watcher of conversations' ends failed")
        if not self._slots:
            self._idle.set()

    def _set_state(self, slot: Slot, state: str | None, *, new: bool = False) -> None:
        agent = slot.record.agent_id
        if not new:
            self._by_state[slot.state] -= 1
            if self.metrics is not None:
                self.metrics.child(self.metrics.conversations, slot.state, agent).dec()
        if state is not None:
            slot.state = state
            self._by_state[state] += 1
            if self.metrics is not None:
                self.metrics.child(self.metrics.conversations, state, agent).inc()

    # ------------------------------------------------------------ breaker

    def _breaker_changed(self, is_open: bool) -> None:
        if self.metrics is not None:
            self.metrics.breaker_open.set(1 if is_open else 0)

    @property
    def breaker_open(self) -> bool:
        """True while a restart storm keeps admission stopped (cooldown after the last restart)."""
        return self._breaker.is_open

    # ------------------------------------------------------------ inspection

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def list_conversations(self) -> list[ConversationInfo]:
        """Every hosted conversation, in admission order."""
        return [self._info(slot) for slot in self._slots.values()]

    def inspect(self, conversation_id: str) -> ConversationInfo:
        """One conversation's state; raises ConversationNotFoundError."""
        return self._info(self._slot(conversation_id))

    def stop(self, conversation_id: str) -> None:
        """Cancel one conversation; it ends as ``stopped`` and is not restarted."""
        slot = self._slot(conversation_id)
        slot.cancel()

    def notify(self, conversation_id: str, event: InboundEvent) -> bool:
        """Hand an event that arrived elsewhere (the control connection) to a conversation's actor.

        Returns False if the conversation is not hosted or its mailbox refused the
        event (it is full); a ``ConversationEnded`` that cannot be queued stops
        the conversation instead, so an end is never lost.
        """
        slot = self._slots.get(conversation_id)
        if slot is None or slot.actor is None:
            return False
        try:
            slot.actor.notify(event)
        except (MailboxFullError, MailboxClosedError):
            if isinstance(event, ConversationEnded):
                self.stop(conversation_id)
            return False
        return True

    def restart(self, conversation_id: str) -> None:
        """Cancel one conversation's actor and start a fresh one (not counted against the budget)."""
        slot = self._slot(conversation_id)
        slot.restart_requested = True
        slot.cancel()

    async def wait_running(self, conversation_id: str) -> None:
        """Wait until the conversation's actor is running or the conversation ended."""
        slot = self._slots.get(conversation_id)
        if slot is None:
            await trio.lowlevel.checkpoint()
            return
        await slot.wait_running()

    async def wait_idle(self) -> None:
        """Wait until no conversation is hosted."""
        await self._idle.wait()

    async def wait_draining(self) -> None:
        """Wait until a drain has begun (a platform whose conversations never end on their
        own ends each one once it has nothing left to answer)."""
        await self._drain_started.wait()

    def watch_ends(self, watcher: Callable[[str, str], object]) -> None:
        """Call ``watcher(conversation_id, outcome)`` each time a conversation ends, once it
        has left the supervisor (synchronously: it must not block). One that raises is
        logged, and called again at the next end."""
        self._end_watchers.append(watcher)

    async def wait_ended(self, conversation_id: str) -> str:
        """Wait until the conversation ends; returns its outcome."""
        return await self._slot(conversation_id).wait_ended()

    def _slot(self, conversation_id: str) -> Slot:
        try:
            return self._slots[conversation_id]
        except KeyError:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r}") from None

    def _info(self, slot: Slot) -> ConversationInfo:
        details = summarize(slot.actor) if slot.actor is not None else {}
        return ConversationInfo(
            slot.record.conversation_id,
            slot.record.agent_id,
            slot.state,
            slot.record.restarts,
            slot.started_at,
            details,
        )

    def statistics(self) -> SupervisorStatistics:
        """The live state of the supervisor as a frozen value."""
        by_agent: dict[str, int] = {}
        for slot in self._slots.values():
            by_agent[slot.record.agent_id] = by_agent.get(slot.record.agent_id, 0) + 1
        return SupervisorStatistics(
            by_state=dict(self._by_state),
            by_agent=by_agent,
            active=len(self._slots),
            capacity=self.settings.max_conversations,
            started_total=self._started_total,
            ended_total=dict(self._ended),
            restarts_total=self._restarts_total,
            rejected_total=dict(self._rejected),
            breaker_open=self.breaker_open,
            draining=self.draining,
        )

    # ------------------------------------------------------------ http StatusProvider

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) for ``/readyz``."""
        if self.draining:
            return False, "draining"
        if self.breaker_open:
            return False, "breaker_open"
        if self._nursery is None:
            return False, "admission_stopped"
        limit = self.settings.memory_limit_bytes
        if limit is not None and self._memory_probe is not None and self._memory_probe() >= limit:
            return False, "admission_stopped"
        return True, "ok"

    def status(self) -> Mapping[str, Any]:
        """A JSON-ready summary for ``/status`` (no ids, no secrets)."""
        stats = self.statistics()
        return {
            "conversations": {
                "active": stats.active,
                "capacity": stats.capacity,
                "by_state": stats.by_state,
                "by_agent": stats.by_agent,
            },
            "started_total": stats.started_total,
            "ended_total": stats.ended_total,
            "restarts_total": stats.restarts_total,
            "rejected_total": stats.rejected_total,
            "breaker_open": stats.breaker_open,
            "draining": stats.draining,
            "agents": sorted(self.agents),
        }


@attrs.define(eq=False, slots=True)
class _Started:
    """A task_status that moves a slot to ``running`` when its actor is up."""

    supervisor: Supervisor
    slot: Slot

    def started(self, value: None = None) -> None:
        self.supervisor._set_state(self.slot, "running")
        self.slot.mark_running()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
