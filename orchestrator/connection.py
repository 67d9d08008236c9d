"""The link between one conversation actor and the platform.

``Connection`` is the interface every transport implements: the in-memory one in
:mod:`orchestrator.testing`, and the resilient WebSocket connections of the
protocol adapters. The actor never sees frames, only :mod:`orchestrator.events`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from .events import InboundEvent, OutboundEvent

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
        Calls ``task_status.started()`` once the first link is up and joined, and
        delivers ``LinkUp`` on that and every later (re)connection. Returns after
        delivering ``ConversationEnded``. Raises a :class:`~orchestrator.errors.LinkError`
        when the link fails for good (permanent error, breaker, retries exhausted).
        Cancellation closes the link.
        """
        ...

    async def send(self, event: OutboundEvent) -> None:
        """Send one command to the platform.

        While the link is down this waits for the reconnect; a send interrupted
        by a drop is sent again on the new link, so a result is never dropped.
        Raises :class:`~orchestrator.errors.LinkError` if the link failed for good.
        """
        ...
