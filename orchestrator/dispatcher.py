"""Where conversations come from.

A :class:`Platform` pairs a dispatch loop (the platform's control channel
announcing ``conversation_ready``, the first message of a new Arinova
conversation, or an explicit start) with the factory that gives each actor its
own :class:`~orchestrator.connection.Connection`. The service runs
``platform.run(supervisor)`` next to the supervisor; announcements that cannot
be admitted are logged and counted, never a second actor or a crash.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

import trio

from .connection import Connection
from .errors import AdmissionError
from .store import ConversationRecord
from .supervisor import Supervisor

log = logging.getLogger("orchestrator.dispatcher")


class Platform(Protocol):
    """A source of conversations and the connections that serve them."""

    def connect(self, record: ConversationRecord) -> Connection:
        """A new connection for one conversation's actor (called again after a restart)."""
        ...

    async def run(
        self, supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Announce conversations to ``supervisor`` until cancelled (or until done, for finite sources).

        ``task_status.started()`` fires once the source is connected. Raises a
        LinkError if the source fails for good.
        """
        ...


QUIET_FOR = 1.0
"""Seconds after a refusal's line in which refusals for the same reason are only counted:
a full host refuses every announcement, and one line each would be a flood."""


def admit(
    supervisor: Supervisor,
    conversation_id: str,
    agent_id: str,
    metadata: Mapping[str, Any] | None = None,
) -> bool:
    """Start a conversation if the supervisor admits it; log and count a refusal.

    Returns whether an actor was started. The refusal is already counted in
    ``orchestrator_admissions_rejected_total{reason}`` by the supervisor. Its line
    carries the conversation's id and agent id as the actors' lines do; for
    :data:`QUIET_FOR` seconds after one, refusals for the same reason are only counted,
    and the next line says how many there were.
    """
    try:
        supervisor.start_conversation_nowait(conversation_id, agent_id, metadata)
    except AdmissionError as exc:
        reason = exc.reason
        now = trio.current_time()
        held = supervisor.refusal_lines
        until, count = held.get(reason, (-math.inf, 0))
        if now < until:
            held[reason] = (until, count + 1)
            return False
        held[reason] = (now + QUIET_FOR, 0)
        level = logging.INFO if reason in ("duplicate", "draining") else logging.WARNING
        more = f" (and {count} more since the last such line)" if count else ""
        context = {"conversation_id": conversation_id, "agent_id": agent_id[:64]}  # from the network
        log.log(level, "conversation not admitted (%s): %s%s", reason, exc, more, extra=context)
        return False
    return True


class CompositePlatform:
    """Several platforms in one process (the demo serves Conversimple and Arinova at once).

    Each platform admits its conversations with ``metadata["platform"]`` set to
    its name; ``connect`` hands the conversation to that platform, and ``run``
    runs every platform's dispatch side by side.
    """

    def __init__(self, platforms: Mapping[str, Platform]) -> None:
        if not platforms:
            raise ValueError("CompositePlatform needs at least one platform")
        self._platforms = dict(platforms)
        self._default = next(iter(self._platforms.values()))

    def connect(self, record: ConversationRecord) -> Connection:
        name = record.metadata.get("platform")
        return self._platforms.get(name, self._default).connect(record)  # type: ignore[arg-type]

    async def run(
        self, supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            for platform in self._platforms.values():
                await nursery.start(platform.run, supervisor)
            task_status.started()
