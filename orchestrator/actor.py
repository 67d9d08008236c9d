"""One conversation: its Connection, Mailbox, ToolExecutor and Agent instance.

The actor runs in its own nursery. A :class:`~orchestrator.connection.PullConnection`
(under the default ``block`` mailbox policy) is read by the task that serves the
calls, so an event costs no task switch and a busy actor meets backpressure from
the socket; any other connection pumps inbound events into the mailbox (waiting
when it is full). The actor takes events one at a time (the mailbox first: events
handed in from elsewhere wait there), runs tool calls concurrently up to a
per-actor limit and sends each reply back through the connection. A tool failure
is a reply; an exception in a lifecycle hook or a broken link ends the actor, and the
supervisor decides what happens next.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from . import events as ev
from .agent import Agent, call_hook, overrides
from .connection import Connection, PullConnection, pulled
from .errors import ConversationFailedError, ConversationOverError, LinkError
from .mailbox import Mailbox, OverflowPolicy
from .metrics import EVENT_LABELS, Metrics
from .replies import answer_message
from .store import CallOutcome, ConversationRecord
from .tools import RunningCall, ToolExecutor, ToolSettings

log = logging.getLogger("orchestrator.actor")


class ActorExit(enum.Enum):
    """How an actor's run ended without an exception."""

    COMPLETED = "completed"  #: the platform ended the conversation
    IDLE = "idle"  #: nothing happened for ``idle_timeout`` seconds
    STOPPED = "stopped"  #: :meth:`ConversationActor.cancel` was called


@attrs.frozen
class ActorSettings:
    """Per-actor limits."""

    mailbox_capacity: int = 64
    mailbox_policy: OverflowPolicy = attrs.field(default=OverflowPolicy.BLOCK, converter=OverflowPolicy)
    idle_timeout: float | None = None
    shutdown_timeout: float = 5.0
    tools: ToolSettings = attrs.field(factory=ToolSettings)


@attrs.define(eq=False, slots=True)
class _LinkStarted:
    """The ``task_status`` an actor hands its connection: what ``nursery.start`` does,
    without the nursery of its own that ``start`` opens for every call (about 40 µs
    a conversation). The connection runs in the actor's nursery from the start; the
    actor waits here until the link is up. If the connection fails first, the nursery
    cancels the wait and raises the failure, as ``start`` would. A connection calls
    ``started()`` before it ever returns (see Connection.run)."""

    _waiter: trio.lowlevel.Task | None = None
    _up: bool = False

    def started(self, value: None = None) -> None:
        if self._up:
            raise RuntimeError("called task_status.started() twice")
        self._up = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        if self._up:
            await trio.lowlevel.checkpoint()
            return
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def hold(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run a connection that is not this package's: one that returned without calling
        ``started()`` would leave its actor waiting for ever, so it fails here, as it
        would under ``nursery.start``. (This package's connections keep the rule, and
        run without this frame: memory every idle conversation would hold.)"""
        await run()
        if not self._up:
            raise RuntimeError("the connection returned without calling task_status.started()")


@attrs.define(eq=False, slots=True)
class ConversationActor:
    """Hosts one conversation until it ends, crashes or is cancelled.

    Tool calls run in place, in the task serving the mailbox: a call that
    completes without waiting (validation, a pure async tool, a cached reply)
    costs no task and no cancel scope. When a call has to wait, the task keeps
    that call, enforces its deadline on a scope entered once per task, and a new
    task takes over the mailbox, so calls still run concurrently up to
    ``max_concurrent_calls``.
    """

    record: ConversationRecord
    agent_cls: type[Agent]
    connection: Connection
    thread_limiter: trio.CapacityLimiter
    settings: ActorSettings = attrs.field(factory=ActorSettings)
    metrics: Metrics | None = None
    mailbox: Mailbox[ev.InboundEvent] = attrs.field(init=False)
    executor: ToolExecutor | None = attrs.field(init=False, default=None)
    _pull: PullConnection | None = attrs.field(init=False, default=None)
    _last_activity: float = attrs.field(init=False, default=0.0)
    _active_calls: int = attrs.field(init=False, default=0)
    _slot_freed: trio.lowlevel.ParkingLot | None = attrs.field(init=False, default=None)
    _calls_done: trio.Event | None = attrs.field(init=False, default=None)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _cancelled: bool = attrs.field(init=False, default=False)
    # Set once the mailbox loop has moved to another task: how it ended there.
    _loop_over: trio.Event | None = attrs.field(init=False, default=None)
    _loop_exit: ActorExit = attrs.field(init=False, default=ActorExit.COMPLETED)
    _crashed: bool = attrs.field(init=False, default=False)
    # The run's clock, read directly: trio.current_time() is three calls deep, once a reply.
    _clock: trio.abc.Clock = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.mailbox = Mailbox(self.settings.mailbox_capacity, self.settings.mailbox_policy)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> ActorExit:
        """Connect, then serve events until the conversation ends.

        ``task_status.started()`` fires once the link is up. Returns how it ended;
        raises ConversationFailedError when the link failed for good (after calling
        the agent's ``on_error`` once), or whatever a lifecycle hook raised. On
        cancellation the agent's ``on_conversation_ended`` still runs, shielded,
        within ``shutdown_timeout``; in-flight calls are cancelled.
        """
        self._clock = trio.lowlevel.current_clock()
        agent = self.agent_cls()
        agent.conversation = self.record
        self.executor = ToolExecutor(
            agent, self.record, self.thread_limiter, self.settings.tools, self.metrics
        )
        exit_ = ActorExit.COMPLETED
        try:
            # One nursery holds the connection and the tool calls: fewer cancel
            # scopes per actor is memory that 10,000 actors do not spend.
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancelled:
                    nursery.cancel_scope.cancel()
                # A drop policy needs events queued to drop: those actors are pushed to.
                if self.settings.mailbox_policy is OverflowPolicy.BLOCK:
                    self._pull = pulled(self.connection)
                link = _LinkStarted()
                if self._pull is not None:
                    hold = functools.partial(self._pull.maintain, task_status=link)
                else:
                    hold = functools.partial(self.connection.run, self._deliver, task_status=link)
                if type(self.connection).__module__.partition(".")[0] != __package__:
                    hold = functools.partial(link.hold, hold)  # see _LinkStarted.hold
                nursery.start_soon(hold, name="orchestrator.connection")
                await link.wait()
                task_status.started()
                try:
                    await call_hook(agent, "on_conversation_started", self.record)
                    self._last_activity = trio.current_time()
                    served = await self._serve(agent)
                    if served is None:  # this task kept a call; the loop went on elsewhere
                        assert self._loop_over is not None
                        await self._loop_over.wait()
                        served = self._loop_exit
                    exit_ = served
                    await self._calls_finished()
                except trio.Cancelled:
                    if not self._crashed:
                        with trio.move_on_after(self.settings.shutdown_timeout, shield=True):
                            await call_hook(agent, "on_conversation_ended", self.record)
                    raise
                await call_hook(agent, "on_conversation_ended", self.record)
                # The connection closes when cancelled, or by itself once it has handed
                # out the end: then nothing is cancelled, and no Cancelled is raised here.
                if not getattr(self._pull, "ended", False):
                    nursery.cancel_scope.cancel()
            return ActorExit.STOPPED if self._cancelled else exit_
        except BaseExceptionGroup as group:
            failure = _terminal_link_error(group)
            if failure is None:
                raise
            log.warning("conversation link failed for good: %s", failure)
            with trio.move_on_after(self.settings.shutdown_timeout, shield=True):
                await call_hook(
                    agent, "on_error", "connection", str(failure), {"reason": type(failure).__name__}
                )
            raise ConversationFailedError(f"link failed: {failure}") from failure

    def cancel(self) -> None:
        """Stop this actor: in-flight calls are cancelled, ``on_conversation_ended`` runs
        (shielded, within ``shutdown_timeout``) and :meth:`run` returns ``STOPPED``."""
        self._cancelled = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def notify(self, event: ev.InboundEvent) -> None:
        """Hand in an event that arrived elsewhere (the control connection).

        Raises MailboxFullError or MailboxClosedError if the mailbox refuses it.
        """
        self.mailbox.put_nowait(event)
        if self._pull is not None:
            self._pull.wake()  # its reader may be in the socket, not at the mailbox

    async def _deliver(self, event: ev.InboundEvent) -> None:
        mailbox = self.mailbox
        if self.metrics is not None:
            self.metrics.received(event, len(mailbox))
        if not await mailbox.put(event) and self.metrics is not None:
            self.metrics.child(self.metrics.mailbox_overflows, mailbox.policy.value).inc()

    async def _serve(self, agent: Agent) -> ActorExit | None:
        """Serve the mailbox in this task: how the conversation ended, or None once
        this task kept a call that had to wait (the loop then goes on in another)."""
        event = await self._next_event()
        # Until its first call a task needs no scope: idle actors stay small.
        while type(event) is not ev.ToolCallRequest:
            if event is None:
                return ActorExit.IDLE
            if type(event) is ev.ConversationEnded:
                self.record.record(trio.current_time(), "ended", {"reason": event.reason})
                return ActorExit.COMPLETED
            await self._handle(agent, event)
            event = await self._next_event()
        keeper = _Keeper(self, agent)
        with keeper.scope:
            exit_ = await self._serve_calls(agent, event, keeper)
        if keeper.call is None:
            return exit_
        # This task kept a call that waited. Its reply goes out here, outside the
        # call's timeout scope: a call that completed is answered with its result
        # even if its deadline passed in the meantime.
        assert self.executor is not None
        try:
            reply = keeper.reply
            if keeper.scope.cancelled_caught:
                reply = self.executor.timed_out(keeper.call)
            if reply is not None:
                await self._send_reply(reply)
        finally:
            self._end_call()
        return None

    async def _serve_calls(
        self, agent: Agent, event: ev.InboundEvent | None, keeper: _Keeper
    ) -> ActorExit | None:
        pull, mailbox, metrics = self._pull, self.mailbox, self.metrics
        # The everyday wait reads the socket from this frame, not through _take's: one
        # coroutine less to make, and to wake through, per call.
        direct = pull is not None and self.settings.idle_timeout is None
        while True:
            if event is None:
                return ActorExit.IDLE
            if type(event) is ev.ToolCallRequest:
                if await self._call(event, keeper):
                    return None
            elif type(event) is ev.ConversationEnded:
                self.record.record(trio.current_time(), "ended", {"reason": event.reason})
                return ActorExit.COMPLETED
            else:
                await self._handle(agent, event)
            if direct and not mailbox:
                assert pull is not None
                event = await pull.receive()
                if event is None:  # woken: what woke it is in the mailbox
                    event = await self._take()
                elif metrics is not None:
                    metrics.received(event, 0)
            else:
                event = await self._next_event()

    def _next_event(self) -> Awaitable[ev.InboundEvent | None]:
        """The next event, or None after ``idle_timeout`` seconds without activity.

        Activity is an inbound event or a tool call finishing; a call still
        running keeps the conversation alive. (Not a coroutine of its own without
        an idle timeout: one frame less for every idle conversation to hold.)
        """
        if self.settings.idle_timeout is None:
            return self._take()
        return self._next_event_or_idle(self.settings.idle_timeout)

    async def _next_event_or_idle(self, idle: float) -> ev.InboundEvent | None:
        while True:
            with trio.CancelScope(deadline=self._last_activity + idle):
                event = await self._take()
                self._last_activity = trio.current_time()
                return event
            if self._active_calls:
                self._last_activity = trio.current_time()
            elif trio.current_time() >= self._last_activity + idle:
                return None

    async def _take(self) -> ev.InboundEvent:
        pull = self._pull
        if pull is None:
            return await self.mailbox.get()
        mailbox = self.mailbox
        while not mailbox:
            event = await pull.receive()
            if event is not None:
                if self.metrics is not None:
                    self.metrics.received(event, 0)
                return event
        return mailbox.get_nowait()

    async def _calls_finished(self) -> None:
        """Wait until every started call has sent its reply."""
        while self._active_calls:
            self._calls_done = trio.Event()
            await self._calls_done.wait()

    async def _call(self, request: ev.ToolCallRequest, keeper: _Keeper) -> bool:
        """Run one call in this task; True if it had to wait (this task then kept it).

        Waits first for a free slot under ``max_concurrent_calls`` (backpressure).
        """
        limit = self.settings.tools.max_concurrent_calls
        while self._active_calls >= limit:
            if self._slot_freed is None:
                self._slot_freed = trio.lowlevel.ParkingLot()
            await self._slot_freed.park()
        self._active_calls += 1
        assert self.executor is not None
        # A timeout cancels out of here into _serve, which answers and ends the call.
        reply = await self.executor.execute_inline(request, keeper.suspend)
        if keeper.call is not None:
            keeper.reply = reply  # _serve sends it and ends the call, outside the timeout
            return True
        try:
            if reply is not None:
                sending = self._reply_soon(reply)
                if sending is not None:
                    await sending
        finally:
            self._end_call()
        return False

    def _end_call(self) -> None:
        if self.settings.idle_timeout is not None:  # a call ending is activity
            self._last_activity = trio.current_time()
        self._active_calls -= 1
        if not self._active_calls and self._calls_done is not None:
            self._calls_done.set()
        if self._slot_freed:
            self._slot_freed.unpark()

    async def _send_reply(self, reply: CallOutcome) -> None:
        sending = self._reply_soon(reply)
        if sending is not None:
            await sending

    def _reply_soon(self, reply: CallOutcome) -> Awaitable[None] | None:
        """Record and send a reply, at once where the connection can (``send_soon``, the
        resilient link's): None once it has left, else what to await to finish it. No
        cancellation check (unlike :meth:`send`): the actor's next read of its socket
        or mailbox makes one. An actor that reads its socket yields there too; one served
        through its mailbox might not, so its at-once writes yield every few frames."""
        self.record.record(
            self._clock.current_time(),
            "tool_call",
            {"call_id": reply.call_id, "tool": reply.tool_name, "ok": type(reply) is ev.ToolResult},
        )
        send_soon = getattr(self.connection, "send_soon", None)
        if send_soon is None:
            return self.send(reply)
        sending = send_soon(reply) if self._pull is None else send_soon(reply, yielding=False)
        if sending is None:
            if self.metrics is not None:
                self.metrics.sent(reply)
            return None
        return self._sending(reply, sending)

    def _hand_off(self, agent: Agent) -> None:
        """This task keeps a waiting call: a new task takes over the mailbox."""
        if self._loop_over is None:
            self._loop_over = trio.Event()
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_elsewhere, agent, name="orchestrator.mailbox")

    async def _serve_elsewhere(self, agent: Agent) -> None:
        try:
            exit_ = await self._serve(agent)
        except Exception:
            self._crashed = True  # the nursery fails the actor; on_conversation_ended is skipped
            raise
        if exit_ is not None:
            assert self._loop_over is not None
            self._loop_exit = exit_
            self._loop_over.set()

    async def send(self, event: ev.OutboundEvent) -> None:
        """Send one command to the platform (waits through a reconnect).

        Once the platform has ended the conversation there is nowhere to send: a
        call that finishes after the end is logged and counted as unsent, and the
        actor goes on to end (it never waits for a link that will not come back).
        """
        await self._sending(event, self.connection.send(event))

    async def _sending(self, event: ev.OutboundEvent, sending: Awaitable[None]) -> None:
        try:
            await sending
        except ConversationOverError:
            call_id = getattr(event, "call_id", None)
            log.info(
                "%s%s not sent: the conversation has ended",
                type(event).__name__,
                "" if call_id is None else f" for call {call_id}",
            )
            if self.metrics is not None:
                self.metrics.child(self.metrics.messages_unsent, EVENT_LABELS[type(event)]).inc()
            return
        if self.metrics is not None:
            self.metrics.sent(event)

    async def _handle(self, agent: Agent, event: ev.InboundEvent) -> None:
        if isinstance(event, ev.LinkUp):
            tools = tuple(d.schema() for d in self.agent_cls.__tools__.values())
            if tools:
                await self.send(ev.RegisterTools(tools))
        elif isinstance(event, ev.CustomerMessage):
            self.record.record(trio.current_time(), "message", {"task_id": event.task_id})
            await answer_message(agent, event, self.send)
        elif isinstance(event, ev.ConfigUpdate):
            if overrides(agent, "on_config_update"):
                await call_hook(agent, "on_config_update", event.config)
        elif isinstance(event, ev.PlatformError):
            log.warning("platform error %s: %s", event.error_type, event.message)
            if overrides(agent, "on_error"):
                await call_hook(agent, "on_error", event.error_type, event.message, event.details)
        elif isinstance(event, ev.ProtocolViolation):
            log.warning("protocol error (%s): %s", event.reason, event.message)
            if self.metrics is not None:
                self.metrics.child(self.metrics.protocol_errors, event.reason).inc()
        elif isinstance(event, ev.UnknownEvent):
            log.info("ignoring unknown platform event %r", event.event[:64])
            if self.metrics is not None:
                self.metrics.child(self.metrics.events_ignored, "unknown_event").inc()
        elif isinstance(event, ev.LinkDown):
            log.info("link down (%s); reconnecting", event.reason)
        else:
            log.debug("event %s", type(event).__name__)
        await trio.lowlevel.checkpoint()


def _terminal_link_error(group: BaseExceptionGroup[Any]) -> LinkError | None:
    """The LinkError inside ``group`` if that is all it holds (no cancellation)."""
    links, rest = group.split(LinkError)
    if links is None or rest is not None:
        return None
    leaf: BaseException = links
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, LinkError) else None


def summarize(actor: ConversationActor) -> Mapping[str, Any]:
    """A JSON-ready view of an actor for the inspection API."""
    stats = actor.mailbox.statistics()
    return {
        "mailbox_depth": stats.depth,
        "mailbox_capacity": stats.capacity,
        "mailbox_dropped": stats.dropped,
        "inflight_calls": 0 if actor.executor is None else actor.executor.inflight,
    }


@attrs.define(eq=False, slots=True)
class _Keeper:
    """One mailbox task's cancel scope, and the call it kept if one had to wait."""

    actor: ConversationActor
    agent: Agent
    scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    call: RunningCall | None = attrs.field(init=False, default=None)
    reply: CallOutcome | None = attrs.field(init=False, default=None)

    def suspend(self, call: RunningCall) -> None:
        """The executor's ``on_suspend``: keep ``call`` here, under its deadline (told
        again whenever the deadline changes)."""
        self.scope.deadline = call.deadline
        if self.call is None:
            self.call = call
            self.actor._hand_off(self.agent)
