"""The simulator's public values: validation and cattrs round-trips."""

from __future__ import annotations

from datetime import UTC, datetime

import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import orchestrator.simulator as simulator
from orchestrator.simulator import (
    Conversation,
    ConversationResult,
    EndReason,
    Evaluation,
    Intent,
    Message,
    MessageDraft,
    Outcome,
    Outcomes,
    ParticipantRole,
    SimulationRecord,
    ToolCall,
    Verdict,
    from_json,
    to_json,
)
from orchestrator.simulator.summary import BatchSummary

CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
WHEN = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def sample_result() -> ConversationResult:
    call = ToolCall("get_weather", {"city": "Paris", "days": [1, 2]}, {"celsius": 21.5}, None)
    failed = ToolCall("book_room", {"room": "suite"}, None, "ValueError: none left")
    messages = [Message("Weather?", WHEN, CUSTOMER), Message("21.5 °C", WHEN, AGENT, [call, failed])]
    outcome = Outcome("answered", "the forecast was given")
    evaluation = Evaluation(outcome, [Verdict("says °C", True, "found"), Verdict("outcome", True)])
    return ConversationResult(
        Conversation(messages, outcome), 0.25, EndReason.STOP, "customer: ###STOP###", evaluation
    )


@pytest.mark.parametrize(
    "value",
    [
        MessageDraft("hi", CUSTOMER),
        Intent(CUSTOMER, "find a flight"),
        Outcomes([Outcome("a", "x"), Outcome("b-c_d", "y")]),
        sample_result(),
        SimulationRecord("paris", 3, "abc123", True, sample_result()),
    ],
)
def test_values_round_trip_through_json(value: object) -> None:
    text = to_json(value)
    assert from_json(text, type(value)) == value
    assert "\n" not in text


def test_result_defaults_keep_positional_api() -> None:
    result = ConversationResult(Conversation([]), 1.0)
    assert result.end_reason is EndReason.UNSPECIFIED
    assert result.evaluation is None and result.passed
    assert from_json(to_json(result), ConversationResult) == result
    assert not ConversationResult(Conversation([]), 0.0, EndReason.ERROR).passed


def test_rejects_malformed_json() -> None:
    with pytest.raises(cattrs.BaseValidationError):
        from_json('{"content": "x", "timestamp": "not a date", "sender": "agent"}', Message)
    with pytest.raises(cattrs.BaseValidationError):
        from_json('{"content": "x", "timestamp": "2025-01-01T00:00:00+00:00", "sender": "robot"}', Message)
    with pytest.raises(ValueError):
        from_json("{not json", Message)


@pytest.mark.parametrize("name", ["Booked", "booked ", "", "-x", "x-", "a--b", "é"])
def test_outcome_names_are_slugs(name: str) -> None:
    with pytest.raises(ValueError, match="slug"):
        Outcome(name, "")


def test_outcomes_reject_duplicates_and_look_up() -> None:
    with pytest.raises(ValueError, match="duplicate outcome name 'a'"):
        Outcomes([Outcome("a"), Outcome("b"), Outcome("a")])
    outcomes = Outcomes([Outcome("a", "first"), Outcome("b", "second")])
    assert outcomes.get_outcome_by_name("b") == Outcome("b", "second")
    assert outcomes.get_outcome_by_name("zzz") is None
    assert outcomes.names == ("a", "b") and len(outcomes) == 2


def test_role_other_and_conversation_helpers() -> None:
    assert CUSTOMER.other is AGENT and AGENT.other is CUSTOMER
    result = sample_result()
    assert [c.name for c in result.conversation.tool_calls] == ["get_weather", "book_room"]
    assert [c.succeeded for c in result.conversation.tool_calls] == [True, False]
    assert len(result.conversation.messages_from(AGENT)) == 1


def test_summary_round_trips() -> None:
    record = SimulationRecord("paris", 0, "f", True, sample_result())
    summary = BatchSummary.from_records([record], samples=1)
    assert from_json(to_json(summary), BatchSummary) == summary


@given(st.text(), st.sampled_from(list(ParticipantRole)), st.floats(allow_nan=False, allow_infinity=False))
def test_any_message_round_trips(content: str, sender: ParticipantRole, result: float) -> None:
    message = Message(content, WHEN, sender, [ToolCall("t", {"x": content}, result)])
    assert from_json(to_json(message), Message) == message


def test_public_surface_is_sorted_and_complete() -> None:
    assert simulator.__all__ == sorted(simulator.__all__)
    assert all(hasattr(simulator, name) for name in simulator.__all__)
