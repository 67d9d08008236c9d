"""The runner's record of one conversation, with termination applied per message.

Both runners feed every message through :meth:`Transcript.add`, which stamps
it, strips stop tokens and checks the :class:`TerminationPolicy`, the outcome
rules and ``max_messages``. The first :class:`Ending` wins, except that an
error overrides any other (:meth:`Transcript.fail`). Messages offered after the
end are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from .evaluators import Evaluator
from .models import (
    Conversation,
    EndReason,
    Message,
    Outcome,
    Outcomes,
    ParticipantRole,
    ToolCall,
)
from .termination import Ending, TerminationPolicy


@attrs.define(eq=False)
class Transcript:
    """Messages so far, the ending once decided, and an outcome reached mid-run."""

    policy: TerminationPolicy
    outcomes: Outcomes
    max_messages: int
    base_timestamp: datetime
    evaluator: Evaluator | None = None
    messages: list[Message] = attrs.field(factory=list)
    ending: Ending | None = None
    outcome: Outcome | None = None
    _snapshot: Conversation | None = attrs.field(default=None, init=False)
    _reviewed_at: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError("max_messages must be at least 1")

    @property
    def ended(self) -> bool:
        """Whether an ending has been decided."""
        return self.ending is not None

    def conversation(self) -> Conversation:
        """The conversation so far (cached until the next message)."""
        if self._snapshot is None:
            self._snapshot = Conversation(tuple(self.messages), self.outcome)
        return self._snapshot

    def end(self, reason: EndReason, detail: str = "") -> None:
        """Decide the ending, unless one is already decided."""
        if self.ending is None:
            self.ending = Ending(reason, detail)

    def fail(self, detail: str) -> None:
        """End with ``error``, overriding any ending already decided."""
        self.ending = Ending(EndReason.ERROR, detail)

    def add(
        self,
        content: str,
        sender: ParticipantRole,
        at_seconds: float,
        tool_calls: Sequence[ToolCall] = (),
    ) -> Message | None:
        """Record a message sent ``at_seconds`` into the simulation; apply the checks.

        Returns the recorded message, or None when nothing was recorded (ended
        already, or the message was only a stop token).
        """
        if self.ending is not None:
            return None
        content, stop = self.policy.scan_stop_token(content)
        message = None
        if content or tool_calls:
            stamp = self.base_timestamp + timedelta(seconds=at_seconds)
            message = Message(content, stamp, sender, tuple(tool_calls))
            self.messages.append(message)
            self._snapshot = None
        if stop is not None:
            self.ending = Ending(stop.reason, f"{sender.value}: {stop.detail}")
        elif message is not None:
            self._check(message)
        return message

    def _check(self, message: Message) -> None:
        closing = self.policy.closing_phrase(message)
        if closing is not None:
            self.ending = closing
            return
        if self.policy.end_on_outcome and self.evaluator is not None:
            outcome = self.evaluator.detect_outcome(self.conversation(), self.outcomes)
            if outcome is not None:
                self.outcome = outcome
                self._snapshot = None
                self.ending = Ending(EndReason.OUTCOME_REACHED, outcome.name)
                return
        if len(self.messages) >= self.max_messages:
            self.ending = Ending(EndReason.MAX_MESSAGES, f"{self.max_messages} messages")

    async def review(self) -> None:
        """Every ``judge_every`` messages, ask the evaluator whether to end now."""
        every = self.policy.judge_every
        count = len(self.messages)
        if self.ending is not None or not every or self.evaluator is None:
            return
        if not count or count % every or count == self._reviewed_at:
            return
        self._reviewed_at = count
        reason = await self.evaluator.should_end(self.conversation(), self.outcomes)
        if reason is not None:
            self.end(EndReason.JUDGE_VERDICT, reason)
