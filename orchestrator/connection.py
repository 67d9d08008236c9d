"""The link between one conversation actor and the platform: the interfaces.

``Connection`` is the interface every transport implements: the in-memory one in
:mod:`orchestrator.testing`, and the resilient WebSocket connection of
:mod:`orchestrator.link` that the protocol adapters build on. The actor never sees
frames, only :mod:`orchestrator.events`. ``LinkSession`` is what a wire protocol
tells that resilient connection; ``LinkPolicy`` is how it retries and times out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import attrs
import trio

from .backoff import BackoffPolicy
from .errors import (
    LinkError,
)
from .events import InboundEvent, OutboundEvent
from .transport import WebSocket

Deliver = Callable[[InboundEvent], Awaitable[None]]


class Connection(Protocol):
    """One conversation's logical link to the platform."""

    async def run(
        self,
        deliver: Deliver,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold the link up and hand every inbound event to ``deliver``.

        ``deliver`` may wait (mailbox backpressure); the connection then stops
        reading, so a fast peer meets TCP backpressure, not an unbounded queue.
        Calls ``task_status.started()`` once the first link is up and joined (and never
        returns before that: it raises instead), and delivers ``LinkUp`` on that and
        every later (re)connection. Returns after delivering ``ConversationEnded``.
        Raises a :class:`~orchestrator.errors.LinkError` when the link fails for good
        (permanent error, breaker, retries exhausted).
        Cancellation closes the link.
        """
        ...

    async def send(self, event: OutboundEvent) -> None:
        """Send one command to the platform.

        While the link is down this waits for the reconnect; a send interrupted
        by a drop is sent again on the new link, so a result is never dropped.
        Raises :class:`~orchestrator.errors.LinkError` if the link failed for good,
        and :class:`~orchestrator.errors.ConversationOverError` once the platform
        has ended the conversation (a call still running then has nowhere to answer).
        """
        ...


class PullConnection(Connection, Protocol):
    """A connection its actor reads itself: no task between the socket and the call.

    The actor runs :meth:`maintain` (not ``run``) and takes each event with
    :meth:`receive` in the task that serves its calls, so an event costs no task
    switch. The link is read only while a task waits in ``receive``: a busy
    actor meets backpressure from the socket, and time it spends busy is not
    silence from the peer.
    """

    async def maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the link up for ``receive`` as ``run`` does for ``deliver``: the same
        reconnects, heartbeats and failures; returns once ``receive`` has handed out
        ``ConversationEnded``."""
        ...

    async def receive(self) -> InboundEvent | None:
        """The next inbound event (``LinkUp`` and ``LinkDown`` included), waiting for it.

        Returns None after :meth:`wake`. One task at a time may receive.
        Cancellation loses no event.
        """
        ...

    def wake(self) -> None:
        """Make a ``receive`` in progress return None soon (its caller has news
        from elsewhere). A protocol with a heartbeat sends one now; the reply wakes
        the reader within a round trip."""
        ...

    @property
    def ended(self) -> bool:
        """``receive`` has handed out ``ConversationEnded``: ``maintain`` closes the link
        and returns by itself, with nothing to cancel. Optional: without it, the actor
        cancels ``maintain`` to close the link, as it does while the link is up."""
        ...


def pulled(connection: Connection) -> PullConnection | None:
    """``connection`` as a :class:`PullConnection`, if it is one (a class check: cheap)."""
    kind = type(connection)
    if hasattr(kind, "maintain") and hasattr(kind, "receive") and hasattr(kind, "wake"):
        return cast(PullConnection, connection)
    return None


class Received(NamedTuple):
    """What a session made of one inbound frame.

    A named tuple, not an attrs class: one is made per inbound frame.
    """

    events: tuple[Any, ...] = ()
    replies: tuple[str, ...] = ()
    joined: bool = False
    rejected: LinkError | None = None
    ignored: str | None = None
    closed: bool = False


class LinkSession(Protocol):
    """Sans-IO rules of one wire protocol for one logical link (join, heartbeat, codec)."""

    subprotocols: Sequence[str]

    def url(self) -> str:
        """The URL to dial (may carry a token: never logged unredacted)."""
        ...

    def open(self) -> list[str]:
        """Frames to send right after connecting (join, auth); resets per-link state."""
        ...

    def receive(self, text: str) -> Received:
        """Interpret one frame. Never raises."""
        ...

    def heartbeat(self) -> str | None:
        """The keepalive frame to send every interval, if the protocol has one."""
        ...

    def after_join(self) -> list[str]:
        """Frames to send once joined, before anything waiting to be sent (re-registration)."""
        ...

    def encode(self, event: OutboundEvent) -> str:
        """One outbound command as a frame; ProtocolError if it cannot be sent here."""
        ...


@attrs.frozen
class LinkPolicy:
    """Reconnects, heartbeats and limits, configurable like the platform SDKs."""

    backoff_initial: float = 2.0
    backoff_multiplier: float = 2.0
    backoff_max: float = 30.0
    max_attempts: int | None = None
    total_retry_duration: float | None = None
    circuit_breaker: bool = True
    heartbeat_interval: float = 30.0
    connect_timeout: float = 10.0
    join_timeout: float = 10.0
    max_frame_bytes: int = 1 << 20
    allow_insecure: bool = False

    def backoff(self) -> BackoffPolicy:
        return BackoffPolicy(
            base=self.backoff_initial, cap=self.backoff_max, multiplier=self.backoff_multiplier
        )


Dial = Callable[..., Awaitable[WebSocket]]
