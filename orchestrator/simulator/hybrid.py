"""The hybrid runner: a simulated customer against a real agent, in real time.

The agent is reached through a :class:`~.channels.Channel`; its messages are
recorded the moment they arrive, whenever that is. The customer behaves like a
person, on trio's clock (so tests run on a mock clock):

* after the agent's latest message it waits ``settle`` seconds of quiet (the
  agent may send several messages), then composes its reply;
* composing is the participant's call plus ``reply_delay`` seconds of typing —
  agent messages landing meanwhile are recorded before the reply (overlap);
* with ``patience`` set, a customer left ``patience`` seconds without an answer
  speaks again without waiting (the agent then sees overlapping messages);
* a customer with nothing more to say (``None``) still waits for the answer to
  its last message, then the conversation ends (``customer_finished``);
* ``idle_timeout`` seconds with no message from either side ends the
  conversation (``idle_timeout``); so does the channel closing
  (``agent_finished``) and every rule of the termination policy.
"""

from __future__ import annotations

from datetime import datetime

import attrs
import trio

from ..errors import LinkError
from .channels import Channel, Session, open_session
from .evaluators import Evaluator
from .models import ConversationResult, EndReason, Intent, Message, Outcomes, ParticipantRole
from .participants import Participant
from .runners import FAILURES, ProgressCallback, SimulationRunner
from .termination import TerminationPolicy


@attrs.frozen
class HybridTiming:
    """The simulated customer's pace, in seconds."""

    reply_delay: float = 1.0
    settle: float = 0.5
    patience: float | None = None


class HybridSimulationRunner(SimulationRunner):
    """A simulated ``customer`` talking to the agent behind ``channel`` in real time."""

    def __init__(
        self,
        customer: Participant,
        channel: Channel,
        initial_message: str | None,
        intent: Intent,
        outcomes: Outcomes,
        max_messages: int = 100,
        base_timestamp: datetime | None = None,
        progress_callback: ProgressCallback | None = None,
        *,
        evaluator: Evaluator | None = None,
        termination: TerminationPolicy | None = None,
        timing: HybridTiming | None = None,
    ) -> None:
        super().__init__(
            intent, outcomes, max_messages, base_timestamp, progress_callback, evaluator, termination
        )
        self.customer = customer
        self.channel = channel
        self.initial_message = initial_message
        self.timing = timing or HybridTiming()
        self._activity = trio.Event()
        self._last_activity = 0.0
        self._last_customer = 0.0
        self._last_agent = 0.0
        self._agent_answered = False

    async def run(self) -> ConversationResult:
        """Run to the end and return the result. Raises RunnerUsedError on a second call.

        Cancellation abandons the run and closes the session.
        """
        self._claim()
        self._last_activity = self._last_customer = trio.current_time()
        try:
            async with open_session(self.channel) as session, trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, session.subscribe(), nursery.cancel_scope)
                nursery.start_soon(self._speak, session, nursery.cancel_scope)
        except* FAILURES as group:
            self._transcript.fail(str(group.exceptions[0]))
        except* LinkError as group:
            self._transcript.fail(f"channel failed: {group.exceptions[0]}")
        return await self._finish()

    def _clock(self) -> float:
        assert self._started is not None
        return trio.current_time() - self._started

    def _record(self, message: Message, sender: ParticipantRole, scope: trio.CancelScope) -> None:
        if self._transcript.add(message.content, sender, self._clock(), message.tool_calls):
            self._notify()
        if self._transcript.ended:
            scope.cancel()

    async def _receive(self, inbox: trio.MemoryReceiveChannel[Message], scope: trio.CancelScope) -> None:
        async with inbox:
            async for message in inbox:
                now = trio.current_time()
                self._last_activity = self._last_agent = now
                self._agent_answered = True
                self._activity.set()
                self._activity = trio.Event()
                self._record(message, ParticipantRole.AGENT, scope)
        self._transcript.end(EndReason.AGENT_FINISHED, "the channel closed")
        scope.cancel()

    async def _speak(self, session: Session, scope: trio.CancelScope) -> None:
        transcript = self._transcript
        opening, done = self.initial_message is None, False
        if self.initial_message is not None:
            await self._send(session, self.initial_message, scope)
        while not transcript.ended:
            if not opening:
                await self._wait_for_turn(patient=not done)
            opening = False
            if transcript.ended or done:
                break
            await transcript.review()
            if transcript.ended:
                break
            message = await self.customer.get_next_message(transcript.conversation())
            if message is None:
                # A finished customer still hears out the answer it is owed.
                done = True
                if self._agent_answered or not transcript.messages:
                    break
                continue
            await trio.sleep(self.timing.reply_delay)
            await self._send(session, message.content, scope, message)
        transcript.end(EndReason.CUSTOMER_FINISHED)
        scope.cancel()

    async def _send(
        self, session: Session, content: str, scope: trio.CancelScope, draft: Message | None = None
    ) -> None:
        self._last_activity = self._last_customer = trio.current_time()
        self._agent_answered = False
        recorded = self._transcript.add(
            content, ParticipantRole.CUSTOMER, self._clock(), draft.tool_calls if draft else ()
        )
        if recorded is not None:
            self._notify()
            await session.send(recorded)
        if self._transcript.ended:
            scope.cancel()

    async def _wait_for_turn(self, *, patient: bool = True) -> None:
        """Return when the customer should speak; end the transcript on idle timeout.

        ``patient`` False ignores ``timing.patience`` (wait for the agent's answer).
        """
        timing, idle = self.timing, self.termination.idle_timeout
        while True:
            activity = self._activity
            now = trio.current_time()
            idle_at = self._last_activity + idle if idle is not None else float("inf")
            if now >= idle_at:
                self._transcript.end(EndReason.IDLE_TIMEOUT, f"no message for {idle:g} s")
                return
            if self._agent_answered:
                turn_at = self._last_agent + timing.settle
            elif patient and timing.patience is not None:
                turn_at = self._last_customer + timing.patience
            else:
                turn_at = float("inf")
            if now >= turn_at:
                return
            with trio.move_on_at(min(turn_at, idle_at)):
                await activity.wait()
