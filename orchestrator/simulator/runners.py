"""Running one simulated conversation: the shared runner core and the full runner.

A runner is single use. It owns the transcript and the clock, applies
termination after every message, and asks its evaluator for the outcome at the
end; participants only produce text. A participant or LLM failure ends the
conversation with reason ``error`` instead of raising.

:class:`FullSimulationRunner` plays both sides in process, strictly alternating,
at full speed: message *i* is stamped ``base_timestamp + i * turn_seconds``, so
the same participants always give the same transcript. The hybrid runner
(:mod:`.hybrid`) talks to a real agent through a channel in real time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple

import trio

from .errors import LLMError, ParticipantError, RunnerUsedError
from .evaluators import Evaluator
from .models import (
    SIMULATION_EPOCH,
    Conversation,
    ConversationResult,
    EndReason,
    Evaluation,
    Intent,
    MessageDraft,
    Outcome,
    Outcomes,
    ParticipantRole,
    ToolCall,
    Verdict,
)
from .participants import Participant
from .termination import TerminationPolicy
from .transcript import Transcript


class SimulationProgress(NamedTuple):
    """A runner's progress; a plain tuple for unpacking."""

    message_count: int
    max_messages: int
    is_complete: bool
    outcome: Outcome | None
    elapsed_seconds: float


ProgressCallback = Callable[[SimulationProgress], None]
FAILURES = (ParticipantError, LLMError)
_YIELD_EVERY = 8


class SimulationRunner(abc.ABC):
    """What both runners share: the single-use guard, progress and the final evaluation."""

    def __init__(
        self,
        intent: Intent,
        outcomes: Outcomes,
        max_messages: int,
        base_timestamp: datetime | None,
        progress_callback: ProgressCallback | None,
        evaluator: Evaluator | None,
        termination: TerminationPolicy | None,
    ) -> None:
        self.intent = intent
        self.outcomes = outcomes
        self.max_messages = max_messages
        self.evaluator = evaluator
        self.progress_callback = progress_callback
        self.termination = termination or TerminationPolicy()
        self._transcript = Transcript(
            self.termination, outcomes, max_messages, base_timestamp or SIMULATION_EPOCH, evaluator
        )
        self._started: float | None = None
        self._elapsed: float | None = None
        self._result: ConversationResult | None = None

    @property
    def conversation(self) -> Conversation:
        """The conversation so far (with its outcome once the run is complete)."""
        if self._result is not None:
            return self._result.conversation
        return self._transcript.conversation()

    @property
    def is_complete(self) -> bool:
        """Whether ``run()`` has finished."""
        return self._result is not None

    def get_progress(self) -> SimulationProgress:
        """Message count, the cap, completion, the outcome and seconds elapsed."""
        if self._elapsed is not None:
            elapsed = self._elapsed
        elif self._started is not None:
            elapsed = trio.current_time() - self._started
        else:
            elapsed = 0.0
        conversation = self.conversation
        return SimulationProgress(
            len(conversation.messages), self.max_messages, self.is_complete, conversation.outcome, elapsed
        )

    @abc.abstractmethod
    async def run(self) -> ConversationResult:
        """Run the conversation to its end; a runner runs once."""

    def _claim(self) -> None:
        if self._started is not None:
            raise RunnerUsedError("a simulation runner runs once; create a new one")
        self._started = trio.current_time()

    def _notify(self) -> None:
        if self.progress_callback is not None:
            self.progress_callback(self.get_progress())

    async def _finish(self) -> ConversationResult:
        transcript = self._transcript
        transcript.end(EndReason.UNSPECIFIED)
        assert transcript.ending is not None and self._started is not None
        self._elapsed = trio.current_time() - self._started  # the conversation, not its evaluation
        evaluation: Evaluation | None = None
        # A conversation cut short by an error has no outcome worth judging.
        if self.evaluator is not None and transcript.ending.reason is not EndReason.ERROR:
            try:
                evaluation = await self.evaluator.evaluate(transcript.conversation(), self.outcomes)
            except LLMError as exc:
                evaluation = Evaluation(None, (Verdict("evaluation", False, str(exc)),))
        outcome = (evaluation.outcome if evaluation else None) or transcript.outcome
        conversation = Conversation(tuple(transcript.messages), outcome)
        ending = transcript.ending
        self._result = ConversationResult(
            conversation, self._elapsed, ending.reason, ending.detail, evaluation
        )
        self._notify()
        return self._result


class FullSimulationRunner(SimulationRunner):
    """Customer and agent participants, alternating turns in process at full speed.

    ``initial_message`` (text from the customer, or a draft naming its sender)
    opens the conversation; None lets the customer open it. Keyword-only:
    ``evaluator`` decides outcome and verdicts, ``termination`` the ending rules,
    ``turn_seconds`` the simulated time between messages.
    """

    def __init__(
        self,
        customer: Participant,
        agent: Participant,
        initial_message: str | MessageDraft | None,
        intent: Intent,
        outcomes: Outcomes,
        max_messages: int = 100,
        base_timestamp: datetime | None = None,
        progress_callback: ProgressCallback | None = None,
        *,
        evaluator: Evaluator | None = None,
        termination: TerminationPolicy | None = None,
        turn_seconds: float = 1.0,
    ) -> None:
        super().__init__(
            intent, outcomes, max_messages, base_timestamp, progress_callback, evaluator, termination
        )
        self.customer = customer
        self.agent = agent
        if isinstance(initial_message, str):
            initial_message = MessageDraft(initial_message, ParticipantRole.CUSTOMER)
        self.initial_message = initial_message
        self.turn_seconds = turn_seconds

    async def run(self) -> ConversationResult:
        """Run to the end and return the result. Raises RunnerUsedError on a second call.

        Cancellation abandons the run (the runner stays unusable).
        """
        self._claim()
        transcript = self._transcript
        speakers = {ParticipantRole.CUSTOMER: self.customer, ParticipantRole.AGENT: self.agent}
        turn = ParticipantRole.CUSTOMER
        try:
            if self.initial_message is not None:
                self._add(self.initial_message.content, self.initial_message.sender)
                turn = self.initial_message.sender.other
            while not transcript.ended:
                # Cheap when not cancelled; a full yield every few turns keeps a batch fair.
                if len(transcript.messages) % _YIELD_EVERY:
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    await trio.lowlevel.checkpoint()
                await transcript.review()
                if transcript.ended:
                    break
                message = await speakers[turn].get_next_message(transcript.conversation())
                if message is None:
                    finished = EndReason.CUSTOMER_FINISHED
                    transcript.end(finished if turn is ParticipantRole.CUSTOMER else EndReason.AGENT_FINISHED)
                    break
                self._add(message.content, turn, message.tool_calls)
                turn = turn.other
        except FAILURES as exc:
            transcript.fail(str(exc))
        return await self._finish()

    def _add(self, content: str, sender: ParticipantRole, tool_calls: Sequence[ToolCall] = ()) -> None:
        at = len(self._transcript.messages) * self.turn_seconds
        if self._transcript.add(content, sender, at, tool_calls) is not None:
            self._notify()
