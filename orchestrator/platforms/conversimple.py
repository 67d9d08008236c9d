"""Conversimple over WebSocket: a control connection plus one connection per conversation.

The control connection joins ``customer:<id>`` and receives ``conversation_ready
{conversation_id, agent_id}``; each one is admitted to the supervisor, whose new
actor opens its own connection, joins the same channel, registers its tools for
its conversation and answers ``tool_call_request`` until ``conversation_ended``
(on either connection, or as the reason its registration is refused). A registration
refused as ``unknown_conversation`` ends it too: the platform restarted and lost it
(logged as a warning, counted in ``orchestrator_platform_refusals_total``). An unknown
agent id or a duplicate announcement is refused by admission (logged, counted).

The platform announces a conversation once, on the earliest-joined socket of the
customer still connected: while the control connection is down, and after it comes
back (it joined last then), that is a conversation's socket, which also hears the
ends of the conversations announced on it. A ``conversation_ready`` or another
conversation's ``conversation_ended`` heard there is taken as if the control connection
had heard it (with ``--workers`` the worker tells the parent, which routes it); any
other event for another conversation on an actor's socket is logged and counted, never
acted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from .. import events as ev
from ..config import PlatformSettings
from ..connection import LinkPolicy, Received
from ..dispatcher import admit
from ..errors import ConfigError
from ..link import ResilientConnection
from ..metrics import Metrics
from ..protocols import conversimple as wire
from ..redact import redact_url
from ..store import ConversationRecord
from ..supervisor import Supervisor
from ..transport import parse_target

log = logging.getLogger("orchestrator.platforms.conversimple")


@attrs.frozen
class ControlEnded:
    """``conversation_ended`` seen on the control connection (or on another
    conversation's socket: see the module's docs)."""

    conversation_id: str


ChannelEvent = wire.ConversationReady | ControlEnded
"""What any socket of the customer may hear for the channel as a whole."""

ENDING_REFUSALS = ("conversation_ended", "unknown_conversation")
"""The reasons a refused push gives that end the conversation (see ChannelSession._refused)."""


@attrs.define(eq=False, slots=True)
class ChannelSession:
    """The :class:`~orchestrator.connection.LinkSession` of one Conversimple socket.

    With ``conversation_id`` it serves that conversation's actor; without, it is
    the control connection.
    """

    platform_url: str
    api_key: str = attrs.field(repr=False)
    client: wire.ConversimpleClient
    subprotocols: Sequence[str] = (wire.SUBPROTOCOL,)
    channel: Callable[[ChannelEvent], None] | None = None
    """Where a conversation's socket hands what it heard for the customer's channel as a
    whole: announcements, and other conversations' ends (see the module's docs)."""
    metrics: Metrics | None = None
    _registration: ev.RegisterTools | None = None

    def url(self) -> str:
        return wire.ConversimpleClient.url(self.platform_url, self.api_key, self.client.customer_id)

    def open(self) -> list[str]:
        return [self.client.join()]

    def after_join(self) -> list[str]:
        """On a rejoin, the tools again, before any result waiting to be sent.

        The platform matches a conversation to the socket that registered its
        tools; a result arriving on a socket that has not registered yet would be
        refused, so registration must come first.
        """
        return [] if self._registration is None else [self.client.send(self._registration)]

    def heartbeat(self) -> str | None:
        return self.client.heartbeat()

    def _refused(self, reason: object) -> ev.ConversationEnded | None:
        """Count a push the platform refused; its end if the refusal means one.

        A registration refused because the conversation has ended is its end; so is one
        refused because the platform does not know the conversation (it restarted and
        lost its state): nothing will ever come for it, and hosting it on would hold its
        place until the next drain's deadline.
        """
        label = reason if isinstance(reason, str) and reason in ENDING_REFUSALS else "other"
        if self.metrics is not None:
            self.metrics.child(self.metrics.platform_refusals, label).inc()
        if label == "unknown_conversation":
            cid = self.client.conversation_id
            log.warning(
                "the platform does not know this conversation (did it restart?): ending it",
                extra={"conversation_id": cid},
            )
        return None if label == "other" else ev.ConversationEnded(f"registration refused: {label}")

    def encode(self, event: ev.OutboundEvent) -> str:
        if isinstance(event, ev.RegisterTools):
            self._registration = event
        return self.client.send(event)

    def receive(self, text: str) -> Received:
        got = self.client.receive_call(text)
        control = self.client.conversation_id is None
        if isinstance(got, list):
            results: list[Any] = got
        elif not control:
            # The everyday frame, as the loop below takes it (built as the named tuple's
            # own constructor would, without its frame: one per call).
            return tuple.__new__(Received, ((got,), (), False, None, None, False))
        else:
            results = [got]
        events: list[Any] = []
        joined = closed = False
        rejected = None
        ignored = None
        for result in results:
            if isinstance(result, wire.JoinOk):
                joined = True
            elif isinstance(result, wire.JoinRejected):
                rejected = result.exception()
            elif isinstance(result, wire.PhxError | wire.PhxClose):
                closed = True
            elif isinstance(result, wire.PhxReply):
                # Acknowledgements (heartbeats, pushes), or a push refused.
                if result.status == "error" and not control:
                    end = self._refused(result.response.get("reason"))
                    if end is not None:
                        events.append(end)
            elif isinstance(result, wire.ConversationReady):
                if control:
                    events.append(result)
                elif self.channel is not None:
                    self.channel(result)
                else:
                    log.warning("ignoring an announcement of another conversation on this socket")
                    ignored = "foreign_conversation"
            elif isinstance(result, wire.ForeignEvent):
                ended = isinstance(result.event, ev.ConversationEnded)
                if ended and control:
                    events.append(ControlEnded(result.conversation_id))
                elif ended and self.channel is not None:
                    self.channel(ControlEnded(result.conversation_id))
                elif not control:
                    log.warning("ignoring an event for another conversation on this socket")
                    ignored = "foreign_conversation"
            elif control:
                if isinstance(result, ev.ProtocolViolation):
                    events.append(result)
            else:
                events.append(result)
        return Received(tuple(events), (), joined, rejected, ignored, closed)


@attrs.define(eq=False)
class ConversimplePlatform:
    """A :class:`~orchestrator.dispatcher.Platform` speaking Conversimple's Phoenix channels."""

    url: str
    api_key: str = attrs.field(repr=False)
    customer_id: str
    policy: LinkPolicy = attrs.field(factory=LinkPolicy)
    handshake_limit: int = 200
    metrics: Metrics | None = None
    _handshakes: trio.CapacityLimiter | None = attrs.field(init=False, default=None)
    _supervisor: Supervisor | None = attrs.field(init=False, default=None)
    on_channel: Callable[[ChannelEvent], None] | None = attrs.field(init=False, default=None)
    """What becomes of an announcement or another conversation's end that a
    conversation's socket heard (see the module's docs): :meth:`run` takes them as the
    control connection's; a worker, which does not run it, routes them to its parent."""

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> ConversimplePlatform:
        """Validate settings up front: a missing key or an unsafe URL is a ConfigError."""
        if not settings.url:
            raise ConfigError("a platform URL is required: --url or CONVERSIMPLE_PLATFORM_URL")
        if not settings.api_key:
            raise ConfigError("an API key is required: --api-key or CONVERSIMPLE_API_KEY")
        parse_target(settings.url, allow_insecure=settings.allow_insecure)
        return cls(
            settings.url,
            settings.api_key,
            settings.customer_id or wire.customer_id_from_key(settings.api_key),
            policy_from_settings(settings),
            settings.handshake_limit,
        )

    @property
    def handshakes(self) -> trio.CapacityLimiter:
        """The process-wide limit on simultaneous handshakes."""
        if self._handshakes is None:
            self._handshakes = trio.CapacityLimiter(self.handshake_limit)
        return self._handshakes

    def _session(self, conversation_id: str | None, metrics: Metrics | None = None) -> ChannelSession:
        policy = self.policy
        client = wire.ConversimpleClient(self.customer_id, conversation_id, max_bytes=policy.max_frame_bytes)
        channel = None if conversation_id is None else self._heard
        return ChannelSession(self.url, self.api_key, client, channel=channel, metrics=metrics)

    def _heard(self, event: ChannelEvent) -> None:
        if self.on_channel is not None:
            self.on_channel(event)

    def bind(self, supervisor: Supervisor) -> None:
        """Use ``supervisor``'s metrics for the connections this platform makes."""
        self._supervisor = supervisor

    def control_connection(self, metrics: Metrics | None) -> ResilientConnection:
        """A connection to the customer channel that serves no conversation (it hears
        ``conversation_ready``)."""
        return ResilientConnection(self._session(None), self.policy, self.handshakes, metrics)

    def connect(self, record: ConversationRecord) -> ResilientConnection:
        metrics = self.metrics or (self._supervisor.metrics if self._supervisor else None)
        return ResilientConnection(
            self._session(record.conversation_id, metrics), self.policy, self.handshakes, metrics
        )

    def note(self, event: Any, metrics: Metrics | None) -> None:
        """Log what the control connection says about itself (up, back, lost, a bad frame)."""
        if isinstance(event, ev.LinkUp):
            where = redact_url(self.url)
            log.info("control connection %s: %s", "back" if event.reconnect else "up", where)
        elif isinstance(event, ev.LinkDown):
            log.warning("control connection lost (%s): reconnecting", event.reason)
        elif isinstance(event, ev.ProtocolViolation):
            log.warning("control connection: protocol error (%s): %s", event.reason, event.message)
            if metrics is not None:
                metrics.child(metrics.protocol_errors, event.reason).inc()

    async def run(
        self, supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the control connection and admit every announced conversation."""
        self.bind(supervisor)
        metrics = self.metrics or supervisor.metrics
        control = self.control_connection(metrics)

        def heard(event: ChannelEvent) -> None:
            if isinstance(event, ControlEnded):
                supervisor.notify(event.conversation_id, ev.ConversationEnded())
            elif event.agent_id is None:
                log.warning("conversation_ready without an agent_id: ignored")
                if metrics is not None:
                    metrics.child(metrics.events_ignored, "no_agent_id").inc()
            else:
                admit(supervisor, event.conversation_id, event.agent_id, {"customer_id": self.customer_id})

        self.on_channel = heard

        async def deliver(event: Any) -> None:
            if isinstance(event, wire.ConversationReady | ControlEnded):
                heard(event)
            else:
                self.note(event, metrics)
            # No checkpoint of its own: the reader checks for cancellation at every frame
            # and yields at least every YIELD_EVERY frames (see transport.pipe), and at
            # conversations' ends a yield here was a scheduler pass for each of
            # thousands of notices.

        await control.run(deliver, task_status=task_status)


def policy_from_settings(settings: PlatformSettings) -> LinkPolicy:
    """The link policy a platform's settings describe."""
    return LinkPolicy(
        backoff_initial=settings.backoff_initial,
        backoff_multiplier=settings.backoff_multiplier,
        backoff_max=settings.backoff_max,
        max_attempts=settings.max_attempts,
        total_retry_duration=settings.total_retry_duration,
        circuit_breaker=settings.circuit_breaker,
        heartbeat_interval=settings.heartbeat_interval,
        connect_timeout=settings.connect_timeout,
        max_frame_bytes=settings.max_frame_bytes,
        allow_insecure=settings.allow_insecure,
    )
