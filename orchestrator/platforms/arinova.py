"""Arinova over WebSocket: one bot socket per bot token carries every conversation.

``run`` holds the shared socket with :class:`~orchestrator.link.ResilientConnection`
(``agent_auth`` first; ``auth_error`` opens the breaker; ``ping`` every heartbeat
interval; nothing heard for two intervals means reconnect). Each ``task`` is routed
by ``conversationId``: the first task of an unknown conversation admits it with the
supervisor, and every task is queued for that conversation's actor, whose
:class:`ArinovaConnection` is a *logical* link over the shared socket.

Design choices:

* **Agent.** A bot token serves one Agent class: ``agent_id`` if given, else the
  supervisor's first agent (logged when several are loaded). To serve several agents,
  run one platform per bot token, each with its own ``name``.
* **Backpressure.** Each conversation has a small FIFO (``queue_size`` tasks). When it
  is full the shared reader waits for room, so every conversation on the socket pauses
  and the server meets TCP backpressure: simple, and memory stays bounded. The task is
  queued *before* the wait, and one wait lasts at most a quarter heartbeat interval:
  ResilientConnection runs ``deliver`` under its heartbeat deadline and counts time
  spent there as silence, so a longer pause would cancel the wait or be taken for a
  dead link (and lose the unread tasks). Past that, the FIFO may grow to twice its
  size; a task beyond gets an ``agent_error`` (never silently dropped).
* **Cut replies.** A task whose chunks went out on a socket that dropped before its
  ``agent_complete`` gets ``agent_error "reply interrupted by a disconnect"`` after the
  reconnect; the actor's later frames for it are dropped. A reply sent whole into a
  dead socket before the drop is noticed cannot be detected (Arinova has no acks).
* **End of a conversation.** Arinova never says a conversation ended: the actor ends
  after ``actor.idle_timeout`` seconds without a task, and the next task for it
  admits it afresh. Tasks an ended actor left unanswered are handed to the next
  actor (restart, or re-admission after an idle end) unless their reply had begun,
  or the conversation ended for good; then they get an ``agent_error``.
* **Drain.** Arinova has no end of a conversation to wait for, so once the supervisor
  drains, each conversation ends (``ConversationEnded``, outcome ``completed``) as soon
  as none of its tasks is queued or unanswered: one answering still ends after its
  reply's final frame. A task arriving after that gets an ``agent_error`` (the ended
  actor's ``UNANSWERED``, or ``REFUSED`` by admission), as above.
* **Writes.** Replies go straight to the current socket (captured through ``dial``),
  not through ``ResilientConnection.send``, so a reply's frames are known to share one
  socket; a write waits while the socket is down and is retried on the next one.
* The bot token is in no URL, log line, error or repr (the transport's wire log of the
  ``agent_auth`` frame is masked by the log handler's SecretFilter).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from .. import events as ev
from .. import transport
from ..config import PlatformSettings
from ..connection import Deliver, Dial, LinkPolicy, Received
from ..dispatcher import admit
from ..errors import ConfigError, ConversationNotFoundError, LinkClosedError, LinkError
from ..link import ResilientConnection
from ..metrics import Metrics
from ..protocols import arinova as wire
from ..store import ConversationRecord
from ..supervisor import Supervisor
from ..transport import WebSocket, parse_target
from .conversimple import policy_from_settings

log = logging.getLogger("orchestrator.platforms.arinova")

INTERRUPTED = "reply interrupted by a disconnect"
UNANSWERED = "the conversation ended before this message was answered"
STOPPED = "reply interrupted: the agent stopped"
REFUSED = "the agent cannot take this conversation now"
OVERLOADED = "too many messages waiting in this conversation"
_Status = ev.LinkUp | ev.LinkDown


@attrs.define(eq=False, slots=True)
class BotSession:
    """The :class:`~orchestrator.connection.LinkSession` of the shared bot socket."""

    server_url: str
    client: wire.ArinovaClient
    subprotocols: Sequence[str] = ()

    def url(self) -> str:
        return wire.agent_url(self.server_url)

    def open(self) -> list[str]:
        return [self.client.auth()]

    def after_join(self) -> list[str]:
        return []

    def heartbeat(self) -> str | None:
        return self.client.ping()

    def encode(self, event: ev.OutboundEvent) -> str:
        return self.client.send(event)

    def receive(self, text: str) -> Received:
        events: list[Any] = []
        replies: list[str] = []
        joined, rejected = False, None
        for result in self.client.receive(text):
            if isinstance(result, wire.AuthOk):
                joined = True
                log.info("authenticated with Arinova as %r", result.agent_name)
            elif isinstance(result, wire.AuthError):
                rejected = result.exception()
            elif isinstance(result, wire.Outgoing):
                replies.append(result.frame)
            elif not isinstance(result, wire.Pong):  # a pong only proves the link alive
                events.append(result)  # Routed, ProtocolViolation, UnknownEvent
        return Received(tuple(events), tuple(replies), joined, rejected)


@attrs.define(eq=False, slots=True)
class _Route:
    """One conversation's share of the socket: its queue and its tasks' reply state."""

    capacity: int
    queue: deque[ev.InboundEvent] = attrs.field(factory=deque)
    messages: int = 0  # CustomerMessages in ``queue`` (link statuses are coalesced, not counted)
    open: dict[str, ev.CustomerMessage] = attrs.field(factory=dict)  # delivered, not yet answered
    streaming: set[str] = attrs.field(factory=set)  # a chunk went out, the final frame not yet
    cut: set[str] = attrs.field(factory=set)  # answered with our agent_error: drop the rest
    changed: trio.Event = attrs.field(factory=trio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def put(self, message: ev.CustomerMessage, patience: float) -> bool:
        """Queue ``message``, then wait up to ``patience`` s while full. False: refused (twice full)."""
        if self.messages >= 2 * self.capacity:
            return False
        self.queue.append(message)
        self.messages += 1
        self.notify()
        with trio.move_on_after(patience):
            while self.messages >= self.capacity:
                await self.changed.wait()
        return True

    def post(self, status: _Status) -> None:
        """Queue a link status; one that was not delivered yet is replaced (coalesced)."""
        if self.queue and isinstance(self.queue[-1], _Status):
            self.queue[-1] = status
        else:
            self.queue.append(status)
        self.notify()

    def take(self) -> ev.InboundEvent | None:
        if not self.queue:
            return None
        event = self.queue.popleft()
        if isinstance(event, ev.CustomerMessage):
            self.messages -= 1
            self.notify()
        return event

    def requeue(self, messages: Sequence[ev.CustomerMessage]) -> None:
        self.queue.extendleft(reversed(messages))
        self.messages += len(messages)


@attrs.frozen
class ArinovaStatistics:
    """A snapshot of the platform: link state, routed conversations, tasks waiting."""

    link_up: bool
    conversations: int
    queued: int
    streaming: int


@attrs.define(eq=False, slots=True)
class ArinovaConnection:
    """One conversation's logical :class:`~orchestrator.connection.Connection` over the bot socket."""

    platform: ArinovaPlatform
    route: _Route

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver ``LinkUp``, then this conversation's statuses and messages in order.

        Waits for the shared socket to be up first; raises its LinkError once it
        failed for good. While draining, returns after delivering ``ConversationEnded``
        once nothing is queued or unanswered. On cancellation (the actor stopped)
        unanswered messages are handed on (see :meth:`ArinovaPlatform.abandon`).
        """
        platform, route = self.platform, self.route
        route.queue = deque(e for e in route.queue if isinstance(e, ev.CustomerMessage))
        await platform.wait_up()
        await deliver(ev.LinkUp())
        task_status.started()
        try:
            while True:
                event = route.take()
                if event is None:
                    platform.check()
                    if platform.draining and not route.open:  # every task delivered was answered
                        await deliver(ev.ConversationEnded("drained"))
                        return
                    await route.changed.wait()
                    continue
                if isinstance(event, ev.CustomerMessage):
                    route.open[event.task_id] = event  # if the delivery is cancelled, abandon() requeues it
                await deliver(event)
        finally:
            platform.abandon(route)

    async def send(self, event: ev.OutboundEvent) -> None:
        """Write a reply to the shared socket, waiting through a reconnect (tools do not exist here)."""
        await self.platform.send(self.route, event)


@attrs.define(eq=False)
class ArinovaPlatform:
    """A :class:`~orchestrator.dispatcher.Platform` for one Arinova bot token. ``run`` once."""

    url: str
    bot_token: str = attrs.field(repr=False)
    agent_id: str | None = None
    name: str = "arinova"  # metadata["platform"] of its conversations (for CompositePlatform)
    policy: LinkPolicy = attrs.field(factory=LinkPolicy)
    handshake_limit: int = 200
    queue_size: int = 8
    max_depth: int = 32
    metrics: Metrics | None = None
    dial: Dial | None = attrs.field(default=None, repr=False)
    _routes: dict[str, _Route] = attrs.field(init=False, factory=dict, repr=False)
    _client: wire.ArinovaClient = attrs.field(init=False, repr=False)
    _ws: WebSocket | None = attrs.field(init=False, default=None, repr=False)
    _dialed: WebSocket | None = attrs.field(init=False, default=None, repr=False)
    _up: trio.Event = attrs.field(init=False, factory=trio.Event, repr=False)
    _failed: LinkError | None = attrs.field(init=False, default=None)
    _stopped: bool = attrs.field(init=False, default=False)
    """``run`` was cancelled (not failed): the socket went away on purpose."""
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None, repr=False)
    _supervisor: Supervisor | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._client = wire.ArinovaClient(self.bot_token, self.policy.max_frame_bytes, self.max_depth)

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> ArinovaPlatform:
        """Validate settings up front: a missing token or an unsafe URL is a ConfigError."""
        if not settings.url:
            raise ConfigError("an Arinova server URL is required: --url or ORCHESTRATOR_PLATFORM_URL")
        if not settings.bot_token:
            raise ConfigError("an Arinova bot token is required: --bot-token or ARINOVA_BOT_TOKEN")
        url = settings.url.rstrip("/").removesuffix("/ws/agent")
        parse_target(wire.agent_url(url), allow_insecure=settings.allow_insecure)
        policy = policy_from_settings(settings)
        return cls(
            url,
            settings.bot_token,
            policy=policy,
            handshake_limit=settings.handshake_limit,
            max_depth=settings.max_json_depth,
        )

    def connect(self, record: ConversationRecord) -> ArinovaConnection:
        return ArinovaConnection(self, self._route_for(record.conversation_id))

    async def run(
        self, supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the bot socket and route its tasks until cancelled or failed for good (raised)."""
        if self.agent_id is None:
            if not supervisor.agents:
                raise ConfigError("no agent to serve on this Arinova bot token")
            self.agent_id = next(iter(supervisor.agents))
            if len(supervisor.agents) > 1:
                log.warning(
                    "one agent per Arinova bot token: serving %r of %s",
                    self.agent_id,
                    ", ".join(supervisor.agents),
                )
        if supervisor.settings.actor.idle_timeout is None:
            log.warning("Arinova never ends conversations: set actor.idle_timeout or they stay hosted")
        self._supervisor = supervisor
        self.metrics = self.metrics or supervisor.metrics
        link = ResilientConnection(
            BotSession(self.url, self._client),
            self.policy,
            trio.CapacityLimiter(self.handshake_limit),
            self.metrics,
            dial=self._dial,
        )
        failure: LinkError | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._end_on_drain, supervisor)
            try:
                await link.run(self._on_link, task_status=task_status)
            except LinkError as exc:
                failure = exc
            finally:
                # The nursery takes no new task from here: actors that stop later (they
                # may outlive the platform) have no socket left to report on.
                self._nursery = None
                self._stopped = failure is None
                self._fail(failure or LinkClosedError("the Arinova platform stopped"))
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    @property
    def draining(self) -> bool:
        """True once the supervisor drains: each conversation ends when it has nothing to answer."""
        return self._supervisor is not None and self._supervisor.draining

    async def _end_on_drain(self, supervisor: Supervisor) -> None:
        await supervisor.wait_draining()
        for route in self._routes.values():
            route.notify()  # a connection waiting for its next task sees the drain

    def statistics(self) -> ArinovaStatistics:
        routes = self._routes.values()
        return ArinovaStatistics(
            self._ws is not None,
            len(self._routes),
            sum(r.messages for r in routes),
            sum(len(r.streaming) for r in routes),
        )

    # ------------------------------------------------------------ the shared socket

    async def _dial(self, url: str, **options: Any) -> WebSocket:
        ws = await (self.dial or transport.connect)(url, **options)
        self._dialed = ws  # becomes the socket replies go to once its LinkUp arrives
        return ws

    async def _on_link(self, event: Any) -> None:
        if isinstance(event, wire.Routed) and isinstance(event.event, ev.CustomerMessage):
            await self._dispatch(event.conversation_id, event.event)
        elif isinstance(event, ev.LinkUp | ev.LinkDown):
            for route in self._routes.values():
                if isinstance(event, ev.LinkUp) and event.reconnect:  # replies cut by the drop
                    for task_id in route.streaming:
                        self._report(task_id, INTERRUPTED)
                    route.cut |= route.streaming
                    route.streaming.clear()
                route.post(event)
            if isinstance(event, ev.LinkUp):
                self._ws = self._dialed
                self._up.set()
            else:
                self._down()
        elif isinstance(event, ev.ProtocolViolation):
            log.warning("bot socket: protocol error (%s): %s", event.reason, event.message)
            self._count("protocol_errors", event.reason)
        else:
            log.info("bot socket: ignoring %s", getattr(event, "event", type(event).__name__)[:64])
            self._count("events_ignored", "unknown_event")
        await trio.lowlevel.checkpoint()

    async def _dispatch(self, conversation_id: str, message: ev.CustomerMessage) -> None:
        route = self._routes.get(conversation_id)
        if route is None:
            assert self._supervisor is not None and self.agent_id is not None
            if not admit(self._supervisor, conversation_id, self.agent_id, {"platform": self.name}):
                self._report(message.task_id, REFUSED)
                return
            route = self._route_for(conversation_id)
        if not await route.put(message, self.policy.heartbeat_interval / 4 or math.inf):
            log.warning("conversation over its queue limit: task refused")
            self._count("mailbox_overflows", "reject")
            self._report(message.task_id, OVERLOADED)

    def _route_for(self, conversation_id: str) -> _Route:
        route = self._routes.get(conversation_id)
        if route is None:
            route = self._routes[conversation_id] = _Route(self.queue_size)
            if self._nursery is not None:
                self._nursery.start_soon(self._watch, conversation_id, route)
        return route

    async def _watch(self, conversation_id: str, route: _Route) -> None:
        """When the conversation ends, forget its route; tasks still queued re-admit it after
        an idle end, else each gets an agent_error."""
        assert self._supervisor is not None and self.agent_id is not None
        while True:
            try:
                outcome = await self._supervisor.wait_ended(conversation_id)
            except ConversationNotFoundError:
                outcome = "ended"
            if self._routes.get(conversation_id) is route:
                del self._routes[conversation_id]
            pending = [e for e in route.queue if isinstance(e, ev.CustomerMessage)]
            route.queue = deque(pending)
            if not pending:
                return
            if outcome == "idle" and admit(
                self._supervisor, conversation_id, self.agent_id, {"platform": self.name}
            ):
                self._routes[conversation_id] = route
                continue
            for message in pending:
                self._report(message.task_id, UNANSWERED)
            route.queue.clear()
            route.messages = 0
            route.notify()  # a reader waiting for room goes on
            return

    # ------------------------------------------------------------ writing

    async def send(self, route: _Route, event: ev.OutboundEvent) -> None:
        """Write one reply frame for ``route``'s conversation; see :meth:`ArinovaConnection.send`."""
        if not isinstance(event, ev.ReplyChunk | ev.ReplyComplete | ev.ReplyFailure):
            log.debug("Arinova has no %s: not sent", type(event).__name__)
            await trio.lowlevel.checkpoint()
            return
        final = not isinstance(event, ev.ReplyChunk)
        await self._write(self._client.send(event), route, event.task_id, final)

    async def _write(self, frame: str, route: _Route | None, task_id: str, final: bool) -> None:
        while True:
            if route is not None and task_id in route.cut:  # already answered with an error
                if final:
                    route.cut.discard(task_id)
                    self._answered(route, task_id)
                await trio.lowlevel.checkpoint()
                return
            ws = self._ws
            if ws is None:
                self.check()
                await self._up.wait()
                continue
            if route is not None and not final:
                route.streaming.add(task_id)  # from here a drop cuts this reply
            try:
                await ws.send_text(frame)
            except LinkClosedError:
                if self._ws is ws:
                    self._down()
                continue
            if route is not None and final:
                route.streaming.discard(task_id)
                self._answered(route, task_id)
            return

    def _answered(self, route: _Route, task_id: str) -> None:
        route.open.pop(task_id, None)
        if self.draining and not route.open:
            route.notify()  # its connection may end the conversation now

    def _report(self, task_id: str, error: str) -> None:
        """Send ``agent_error`` for a task in the background (waiting through reconnects)."""

        async def write() -> None:
            try:
                await self._write(self._client.send(ev.ReplyFailure(task_id, error)), None, task_id, True)
            except LinkError:
                if not self._stopped:  # stopping, the platform has no socket to report on
                    log.warning("could not report a task's error: the bot socket failed")

        log.info("task answered with an error: %s", error)
        if self._nursery is not None:
            self._nursery.start_soon(write)

    def abandon(self, route: _Route) -> None:
        """An actor stopped: its unanswered messages go to the next actor, unless their reply began."""
        for task_id in route.streaming - route.cut:
            self._report(task_id, STOPPED)
        route.requeue([m for t, m in route.open.items() if t not in route.cut and t not in route.streaming])
        route.open.clear()
        route.streaming.clear()
        route.cut.clear()
        route.notify()

    # ------------------------------------------------------------ link state

    async def wait_up(self) -> None:
        while self._ws is None:
            self.check()
            await self._up.wait()

    def check(self) -> None:
        """Raise the LinkError the bot socket failed with, if it did."""
        if self._failed is not None:
            raise self._failed

    def _down(self) -> None:
        self._ws = None
        if self._up.is_set():
            self._up = trio.Event()

    def _fail(self, exc: LinkError) -> None:
        self._down()
        self._failed = exc
        self._up.set()  # wake writers and waiters so they see the failure
        for route in self._routes.values():
            route.notify()

    def _count(self, metric: str, label: str) -> None:
        if self.metrics is not None:
            self.metrics.child(getattr(self.metrics, metric), label).inc()
