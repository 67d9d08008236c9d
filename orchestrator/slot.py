"""One admitted conversation's place in the supervisor: its state, its waits, its stop.

The supervisor keeps a :class:`Slot` per hosted conversation, from admission to
its end, across restarts: the record it hands each new actor, the actor running
now (or the cancel scope of the backoff before the next one), and what the
inspection API and the waits (:meth:`Slot.wait_running`, :meth:`Slot.wait_ended`)
report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from .store import ConversationRecord

if TYPE_CHECKING:
    from .actor import ConversationActor
    from .agent import Agent

__all__ = ["Slot"]


@attrs.define(eq=False, slots=True)
class Slot:
    """One admitted conversation and its supervision state."""

    record: ConversationRecord
    agent_cls: type[Agent]
    state: str = "starting"
    started_at: float = 0.0
    # Only while waiting out a restart backoff; a running actor is cancelled
    # through its own nursery (one cancel scope less per conversation).
    scope: trio.CancelScope | None = None
    actor: ConversationActor | None = None
    stop_requested: bool = False
    restart_requested: bool = False
    # Events are made on first wait: most conversations are never waited on.
    _running: trio.Event | None = None
    _ended: trio.Event | None = None
    is_running: bool = False
    outcome: str | None = None

    def mark_running(self) -> None:
        self.is_running = True
        if self._running is not None:
            self._running.set()

    def mark_ended(self, outcome: str) -> None:
        self.outcome = outcome
        self.mark_running()
        if self._ended is not None:
            self._ended.set()

    async def wait_running(self) -> None:
        if self.is_running or self.outcome is not None:
            await trio.lowlevel.checkpoint()
            return
        if self._running is None:
            self._running = trio.Event()
        await self._running.wait()

    async def wait_ended(self) -> str:
        if self.outcome is None:
            if self._ended is None:
                self._ended = trio.Event()
            await self._ended.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self.outcome is not None
        return self.outcome

    def new_scope(self) -> trio.CancelScope:
        """A fresh cancel scope for the backoff wait, already cancelled if a stop is pending."""
        self.scope = trio.CancelScope()
        if self.stop_requested:
            self.scope.cancel()
        return self.scope

    def cancel(self) -> None:
        """Stop whatever runs now: the actor, or the backoff wait before the next one."""
        self.stop_requested = True
        if self.actor is not None:
            self.actor.cancel()
        if self.scope is not None:
            self.scope.cancel()
