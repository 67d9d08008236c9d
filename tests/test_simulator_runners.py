"""The full runner, participants and the in-process agent adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator.simulator import (
    AgentParticipant,
    Contains,
    Conversation,
    EndReason,
    FullSimulationRunner,
    Intent,
    Message,
    MessageDraft,
    Outcome,
    Outcomes,
    ParticipantError,
    ParticipantRole,
    ReplyRule,
    RuleBasedParticipant,
    RuleEvaluator,
    RunnerUsedError,
    ScriptedParticipant,
    SimulationProgress,
    ToolCalled,
)
from orchestrator.simulator.models import SIMULATION_EPOCH

CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
INTENT = Intent(CUSTOMER, "book a room")
OUTCOMES = Outcomes([Outcome("booked", "a room was booked"), Outcome("unresolved", "nothing booked")])


def scripted(customer: list[str], agent: list[str], **kwargs: Any) -> FullSimulationRunner:
    return FullSimulationRunner(
        ScriptedParticipant(customer[1:]),
        ScriptedParticipant(agent, AGENT),
        customer[0],
        INTENT,
        OUTCOMES,
        **kwargs,
    )


async def test_full_runner_alternates_with_deterministic_timestamps() -> None:
    base = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    progress: list[SimulationProgress] = []
    sim = scripted(["c1", "c2"], ["a1", "a2"], base_timestamp=base, progress_callback=progress.append)
    assert sim.get_progress() == (0, 100, False, None, 0.0)
    result = await sim.run()
    messages = result.conversation.messages
    assert [(m.sender, m.content) for m in messages] == [
        (CUSTOMER, "c1"),
        (AGENT, "a1"),
        (CUSTOMER, "c2"),
        (AGENT, "a2"),
    ]
    assert [m.timestamp for m in messages] == [base + timedelta(seconds=i) for i in range(4)]
    assert result.end_reason is EndReason.CUSTOMER_FINISHED
    assert sim.is_complete and sim.conversation == result.conversation
    count, cap, complete, outcome, elapsed = sim.get_progress()
    assert (count, cap, complete, outcome) == (4, 100, True, None)
    assert elapsed == result.duration_seconds >= 0
    assert [p.message_count for p in progress] == [1, 2, 3, 4, 4]
    assert progress[-1].is_complete


async def test_full_runner_is_single_use_and_reproducible() -> None:
    first = await scripted(["c1", "c2"], ["a1", "a2"]).run()
    sim = scripted(["c1", "c2"], ["a1", "a2"])
    second = await sim.run()
    assert first.conversation == second.conversation
    assert first.conversation.messages[0].timestamp == SIMULATION_EPOCH
    with pytest.raises(RunnerUsedError):
        await sim.run()


async def test_full_runner_agent_may_open() -> None:
    sim = FullSimulationRunner(
        ScriptedParticipant(["I need a room"]),
        ScriptedParticipant(["Sure."], AGENT),
        MessageDraft("Welcome! How can I help?", AGENT),
        INTENT,
        OUTCOMES,
    )
    result = await sim.run()
    assert [m.sender for m in result.conversation.messages] == [AGENT, CUSTOMER, AGENT]
    assert result.end_reason is EndReason.CUSTOMER_FINISHED


async def test_full_runner_evaluates_outcome_and_verdicts() -> None:
    evaluator = RuleEvaluator(
        expectations=[Contains("confirmed")],
        outcome_rules={"booked": (Contains("confirmed"),)},
        default_outcome="unresolved",
        expected_outcomes=["booked"],
    )
    good = await scripted(["a room please"], ["Booking confirmed."], evaluator=evaluator).run()
    assert good.conversation.outcome == Outcome("booked", "a room was booked")
    assert good.passed and good.evaluation is not None and good.evaluation.passed
    bad = await scripted(["a room please"], ["Sorry, full."], evaluator=evaluator).run()
    assert bad.conversation.outcome is not None and bad.conversation.outcome.name == "unresolved"
    assert not bad.passed
    assert bad.evaluation is not None
    assert [v.criterion for v in bad.evaluation.verdicts if not v.passed] == [
        "agent says 'confirmed'",
        "outcome",
    ]


async def test_rule_based_participant_answers_by_pattern() -> None:
    customer = RuleBasedParticipant(
        [
            ReplyRule(r"which (?P<what>city|date)", r"The \g<what> is up to you"),
            ReplyRule("anything else", "No"),
        ],
        default=None,
    )
    agent = RuleBasedParticipant(
        [ReplyRule("room", "Which city?"), ReplyRule("up to you", "Anything else?")], role=AGENT
    )
    result = await FullSimulationRunner(customer, agent, "I want a room", INTENT, OUTCOMES).run()
    assert [m.content for m in result.conversation.messages] == [
        "I want a room",
        "Which city?",
        "The city is up to you",
        "Anything else?",
        "No",
    ]
    assert result.end_reason is EndReason.AGENT_FINISHED


class ToolAgent:
    """A duck-typed agent with tools; returns one of three shapes."""

    __tools__ = {"check_availability": None, "book_room": None}

    def __init__(self, shape: str = "sync") -> None:
        self.shape = shape

    def check_availability(self, city: str, nights: int = 1) -> list[str]:
        return ["single", "double"]

    async def book_room(self, room: str) -> str:
        if room == "suite":
            raise ValueError("no suites left")
        return "BK-1"

    def on_message(self, message: str) -> Any:
        if self.shape == "sync":
            rooms = self.check_availability("Paris", nights=2)
            return f"We have {', '.join(rooms)}"

        async def answer() -> str:
            try:
                return f"Booked {await self.book_room(message)}"
            except ValueError as exc:
                return f"Sorry: {exc}"

        async def stream() -> AsyncIterator[str]:
            yield "Book"
            yield "ed"

        return answer() if self.shape == "async" else stream()


@pytest.mark.parametrize(
    ("shape", "message", "reply"),
    [
        ("sync", "rooms?", "We have single, double"),
        ("async", "double", "Booked BK-1"),
        ("stream", "x", "Booked"),
    ],
)
async def test_agent_participant_handles_every_reply_shape(shape: str, message: str, reply: str) -> None:
    agent = AgentParticipant(ToolAgent(shape))
    answer = await agent.get_next_message(Conversation([Message(message, SIMULATION_EPOCH, CUSTOMER)]))
    assert answer is not None and answer.content == reply and answer.sender is AGENT


async def test_agent_participant_records_tool_calls_and_errors() -> None:
    evaluator = RuleEvaluator(
        [
            ToolCalled("check_availability", {"city": "Paris", "nights": 2}, times=1),
            ToolCalled("book_room", {"room": "suite"}, succeeded=False),
            ToolCalled("book_room", {"room": "double"}, succeeded=True),
        ]
    )
    agents = iter([ToolAgent("sync")])
    first = AgentParticipant.from_factory(lambda: next(agents))
    conversation = Conversation([Message("rooms?", SIMULATION_EPOCH, CUSTOMER)])
    reply = await first.get_next_message(conversation)
    assert reply is not None
    call = reply.tool_calls[0]
    assert (call.name, dict(call.arguments), call.result, call.error) == (
        "check_availability",
        {"city": "Paris", "nights": 2},
        ["single", "double"],
        None,
    )
    booking = ToolAgent("async")
    sim = FullSimulationRunner(
        ScriptedParticipant(["double"]),
        AgentParticipant(booking),
        "suite",
        INTENT,
        OUTCOMES,
        evaluator=evaluator,
    )
    result = await sim.run()
    errors = [c for c in result.conversation.tool_calls if c.error]
    assert [(c.name, c.error) for c in errors] == [("book_room", "ValueError: no suites left")]
    assert result.conversation.messages[1].content == "Sorry: no suites left"
    assert result.evaluation is not None
    assert [v.passed for v in result.evaluation.verdicts] == [False, True, True]


async def test_agent_failures_become_error_results() -> None:
    class Broken:
        def on_message(self, message: str) -> str:
            raise KeyError("boom")

    result = await FullSimulationRunner(
        ScriptedParticipant([]), AgentParticipant(Broken()), "hi", INTENT, OUTCOMES
    ).run()
    assert result.end_reason is EndReason.ERROR and "KeyError" in result.end_detail
    assert [m.content for m in result.conversation.messages] == ["hi"]

    class NotText:
        def on_message(self, message: str) -> int:
            return 42

    participant = AgentParticipant(NotText())
    with pytest.raises(ParticipantError, match="returned int"):
        await participant.get_next_message(Conversation([Message("hi", SIMULATION_EPOCH, CUSTOMER)]))

    def failing_factory() -> object:
        raise OSError("no config")

    with pytest.raises(ParticipantError, match="creating the agent"):
        AgentParticipant.from_factory(failing_factory)


async def test_full_runner_can_be_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    class Hang:
        async def on_message(self, message: str) -> str:
            await trio.sleep_forever()
            return ""

    sim = FullSimulationRunner(ScriptedParticipant([]), AgentParticipant(Hang()), "hi", INTENT, OUTCOMES)
    with trio.move_on_after(10):
        await sim.run()
    assert not sim.is_complete
