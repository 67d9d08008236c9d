"""The hybrid runner against in-process agents on trio's mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import trio
import trio.testing

from orchestrator.simulator import (
    AgentChannel,
    EndReason,
    HybridSimulationRunner,
    HybridTiming,
    Intent,
    Message,
    Outcome,
    Outcomes,
    ParticipantRole,
    RuleEvaluator,
    RunnerUsedError,
    ScriptedParticipant,
    TerminationPolicy,
    ToolCalled,
    open_session,
)
from orchestrator.simulator.models import SIMULATION_EPOCH

CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
INTENT = Intent(CUSTOMER, "get help")
OUTCOMES = Outcomes([Outcome("helped", "the agent helped")])


class SlowAgent:
    """Answers each message after ``delay`` seconds of trio time."""

    def __init__(self, delay: float = 3.0) -> None:
        self.delay = delay
        self.seen: list[tuple[float, str]] = []

    async def on_message(self, message: str) -> str:
        self.seen.append((trio.current_time(), message))
        await trio.sleep(self.delay)
        return f"re: {message}"


def runner(turns: list[str], agent_factory: object, **kwargs: object) -> HybridSimulationRunner:
    return HybridSimulationRunner(
        ScriptedParticipant(turns[1:]),
        AgentChannel(agent_factory),  # type: ignore[arg-type]
        turns[0],
        INTENT,
        OUTCOMES,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_hybrid_alternates_with_real_timing(autojump_clock: trio.testing.MockClock) -> None:
    timing = HybridTiming(reply_delay=2.0, settle=0.5)
    sim = runner(["hello", "next", "thanks"], lambda: SlowAgent(3.0), timing=timing)
    result = await sim.run()
    contents = [(m.sender, m.content) for m in result.conversation.messages]
    assert contents == [
        (CUSTOMER, "hello"),
        (AGENT, "re: hello"),
        (CUSTOMER, "next"),
        (AGENT, "re: next"),
        (CUSTOMER, "thanks"),
        (AGENT, "re: thanks"),
    ]
    offsets = [(m.timestamp - SIMULATION_EPOCH).total_seconds() for m in result.conversation.messages]
    # agent 3 s; then settle 0.5 s + typing 2 s before the customer's next message.
    assert offsets == pytest.approx([0.0, 3.0, 5.5, 8.5, 11.0, 14.0])
    # After the script runs out the customer is asked again after the last answer: finished.
    assert result.end_reason is EndReason.CUSTOMER_FINISHED
    assert sim.is_complete
    with pytest.raises(RunnerUsedError):
        await sim.run()


async def test_hybrid_impatient_customer_overlaps(autojump_clock: trio.testing.MockClock) -> None:
    agent = SlowAgent(5.0)
    timing = HybridTiming(reply_delay=0.0, settle=0.5, patience=3.0)
    sim = runner(["hello", "hello??", "ok thanks"], lambda: agent, timing=timing)
    result = await sim.run()
    messages = result.conversation.messages
    # The customer nudges at 3 s (no answer yet); its third line goes out 0.5 s after the
    # first answer while the agent is still busy with the nudge: the messages overlap.
    assert [(m.sender, m.content) for m in messages] == [
        (CUSTOMER, "hello"),
        (CUSTOMER, "hello??"),
        (AGENT, "re: hello"),
        (CUSTOMER, "ok thanks"),
        (AGENT, "re: hello??"),
    ]
    offsets = [(m.timestamp - SIMULATION_EPOCH).total_seconds() for m in messages]
    assert offsets == pytest.approx([0.0, 3.0, 5.0, 5.5, 10.0])
    assert [text for _, text in agent.seen] == ["hello", "hello??", "ok thanks"]
    assert result.end_reason is EndReason.CUSTOMER_FINISHED
    assert result.duration_seconds == pytest.approx(10.5)


async def test_hybrid_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    class Silent:
        def on_message(self, message: str) -> None:
            return None

    policy = TerminationPolicy(idle_timeout=30.0)
    sim = runner(["anyone there?", "hello?"], Silent, termination=policy)
    start = trio.current_time()
    result = await sim.run()
    assert result.end_reason is EndReason.IDLE_TIMEOUT
    assert trio.current_time() - start == pytest.approx(30.0)
    assert len(result.conversation.messages) == 1
    assert result.duration_seconds == pytest.approx(30.0)


async def test_hybrid_records_tool_calls_and_outcome(autojump_clock: trio.testing.MockClock) -> None:
    class Weather:
        __tools__ = {"get_weather": None}

        def get_weather(self, city: str) -> dict[str, object]:
            return {"city": city, "celsius": 21}

        async def on_message(self, message: str) -> str:
            await trio.sleep(1)
            forecast = self.get_weather("Paris")
            return f"{forecast['celsius']} °C"

    evaluator = RuleEvaluator(outcome_rules={"helped": (ToolCalled("get_weather", {"city": "Paris"}),)})
    policy = TerminationPolicy(end_on_outcome=True)
    sim = runner(["weather?", "more"], Weather, evaluator=evaluator, termination=policy)
    result = await sim.run()
    assert result.end_reason is EndReason.OUTCOME_REACHED
    assert result.conversation.outcome == OUTCOMES.get_outcome_by_name("helped")
    calls = result.conversation.tool_calls
    assert [(c.name, dict(c.arguments), c.result) for c in calls] == [
        ("get_weather", {"city": "Paris"}, {"city": "Paris", "celsius": 21})
    ]


async def test_hybrid_agent_error_ends_with_error(autojump_clock: trio.testing.MockClock) -> None:
    class Broken:
        async def on_message(self, message: str) -> str:
            await trio.sleep(1)
            raise RuntimeError("database down")

    result = await runner(["hi", "hello?"], Broken).run()
    assert result.end_reason is EndReason.ERROR
    assert "database down" in result.end_detail
    assert not result.passed


async def test_hybrid_streaming_agent_and_stop_token(autojump_clock: trio.testing.MockClock) -> None:
    class Streamer:
        async def on_message(self, message: str) -> AsyncIterator[str]:
            for chunk in ("Sure, ", "done."):
                await trio.sleep(0.5)
                yield chunk

    result = await runner(["do it", "great ###STOP###"], Streamer).run()
    assert [m.content for m in result.conversation.messages] == ["do it", "Sure, done.", "great"]
    assert result.end_reason is EndReason.STOP
    assert result.end_detail == "customer: ###STOP###"


async def test_hybrid_channel_closing_ends_agent_finished(autojump_clock: trio.testing.MockClock) -> None:
    from orchestrator.simulator import Channel, Session

    class OneShotSession(Session):
        async def send(self, message: Message) -> None:
            self._messages.append(message)

        async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await trio.sleep(1)
            self._publish(Message("bye from the platform", SIMULATION_EPOCH, AGENT))
            self._close_subscribers()
            await trio.sleep_forever()

    class OneShot(Channel):
        def create_session(self) -> Session:
            return OneShotSession("one")

    sim = HybridSimulationRunner(ScriptedParticipant([]), OneShot(), "hi", INTENT, OUTCOMES)
    result = await sim.run()
    assert result.end_reason is EndReason.AGENT_FINISHED
    assert [m.content for m in result.conversation.messages] == ["hi", "bye from the platform"]


async def test_session_subscribe_and_conversation(autojump_clock: trio.testing.MockClock) -> None:
    async with open_session(AgentChannel(lambda: SlowAgent(1.0))) as session:
        inbox = session.subscribe()
        assert session.session_id == "agent-session-1"
        await session.send(Message("one", SIMULATION_EPOCH, CUSTOMER))
        await session.send(Message("two", SIMULATION_EPOCH, CUSTOMER))
        replies = [await inbox.receive(), await inbox.receive()]
        assert [r.content for r in replies] == ["re: one", "re: two"]
        assert replies[1].timestamp - replies[0].timestamp == timedelta(seconds=1)
        assert [m.content for m in session.get_conversation().messages] == [
            "one",
            "two",
            "re: one",
            "re: two",
        ]


async def test_batch_runs_hybrid_simulations_through_a_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from orchestrator.simulator import Batch, Contains, ParticipantSpec, Scenario

    scenario = Scenario(
        "slow-agent",
        INTENT,
        customer=ParticipantSpec(turns=(("hello", "hey"), ("thanks",))),
        expectations=(Contains("re: "),),
        timing=HybridTiming(reply_delay=1.0, settle=0.0),
    )
    start = trio.current_time()
    run = await Batch(
        [scenario], samples=4, concurrency=4, channel=AgentChannel(lambda: SlowAgent(3.0))
    ).run()
    assert all(r.passed for r in run.records)
    assert [r.result.conversation.messages[0].content for r in run.records] == [
        "hello",
        "hey",
        "hello",
        "hey",
    ]
    # All four in parallel, in real (mock) time: 3 s answer, 1 s typing, 3 s answer.
    assert trio.current_time() - start == pytest.approx(7.0)
    assert [r.result.duration_seconds for r in run.records] == pytest.approx([7.0] * 4)
