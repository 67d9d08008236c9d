"""The rule-based evaluator and the LLM judge (in memory; HTTP in test_simulator_llm)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.simulator import (
    CombinedEvaluator,
    Contains,
    Conversation,
    Criterion,
    Intent,
    LLMJudge,
    Matches,
    Message,
    Outcome,
    Outcomes,
    ParticipantRole,
    RuleEvaluator,
    ToolCall,
    ToolCalled,
    parse_rule,
)
from orchestrator.simulator.fakes import FunctionLLMClient
from orchestrator.simulator.judge import parse_json_object, render_transcript
from orchestrator.simulator.llm import CompletionRequest
from orchestrator.simulator.models import SIMULATION_EPOCH

CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
OUTCOMES = Outcomes([Outcome("booked", "booked"), Outcome("refused", "refused"), Outcome("unresolved", "")])


def conversation(*turns: tuple[ParticipantRole, str, list[ToolCall]]) -> Conversation:
    return Conversation([Message(text, SIMULATION_EPOCH, who, calls) for who, text, calls in turns])


CONVERSATION = conversation(
    (CUSTOMER, "A double room in Paris for 2 nights, please", []),
    (
        AGENT,
        "Room 12 is booked: 240 EUR total. Booking BK-7.",
        [
            ToolCall("check_availability", {"city": "Paris", "nights": 2}, ["double"]),
            ToolCall("book_room", {"room": "suite", "nights": 2}, None, "RuleViolation: no suites"),
            ToolCall("book_room", {"room": "double", "nights": 2}, "BK-7"),
        ],
    ),
    (CUSTOMER, "thanks!", []),
)


@pytest.mark.parametrize(
    ("rule", "passed"),
    [
        (Contains("booked"), True),
        (Contains("BOOKED"), True),
        (Contains("BOOKED", case_sensitive=True), False),
        (Contains("thanks"), False),  # the agent never said it...
        (Contains("thanks", speaker=CUSTOMER), True),  # ...the customer did
        (Contains("thanks", speaker=None), True),
        (Contains("sorry", negate=True), True),
        (Matches(r"\d+ EUR"), True),
        (Matches(r"BK-\d+", negate=True), False),
        (ToolCalled("check_availability"), True),
        (ToolCalled("check_availability", {"city": "Paris"}), True),
        (ToolCalled("check_availability", {"city": "Rome"}), False),
        (ToolCalled("check_availability", {"country": "FR"}), False),
        (ToolCalled("book_room", times=2), True),
        (ToolCalled("book_room", times=1), False),
        (ToolCalled("book_room", {"room": "suite"}, succeeded=False), True),
        (ToolCalled("book_room", {"room": "suite"}, succeeded=True), False),
        (ToolCalled("open_ticket", negate=True), True),
        (ToolCalled("book_room", negate=True), False),
    ],
)
def test_rules_check_keywords_regexes_and_tool_calls(rule: Any, passed: bool) -> None:
    verdict = rule.check(CONVERSATION)
    assert verdict.passed is passed
    assert verdict.criterion and verdict.reason


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"says": "Paris"}, Contains("Paris")),
        ({"never_says": "error", "by": "anyone"}, Contains("error", None, True)),
        ({"says": "X", "case_sensitive": True, "name": "x"}, Contains("X", AGENT, False, True, "x")),
        ({"matches": "a+", "by": "customer"}, Matches("a+", CUSTOMER)),
        ({"never_matches": "b"}, Matches("b", AGENT, True)),
        ({"tool": "t", "args": {"a": 1}, "times": 2, "succeeded": True}, ToolCalled("t", {"a": 1}, 2, True)),
        ({"no_tool": "t"}, ToolCalled("t", negate=True)),
    ],
)
def test_parse_rule_tables(table: dict[str, Any], expected: Any) -> None:
    assert parse_rule(table) == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "exactly one"),
        ({"says": "a", "tool": "b"}, "exactly one"),
        ({"says": "a", "args": {}}, "unknown key"),
        ({"says": "a", "by": "robot"}, "'by'"),
        ({"says": ""}, "non-empty"),
        ({"matches": "("}, "invalid regex"),
        ({"tool": "t", "times": -1}, "times"),
        ({"tool": "t", "args": "x"}, "args"),
        ({"tool": "t", "succeeded": "yes"}, "succeeded"),
    ],
)
def test_parse_rule_rejects_bad_tables(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rule(table)


async def test_rule_evaluator_decides_first_matching_outcome() -> None:
    evaluator = RuleEvaluator(
        expectations=[ToolCalled("book_room", succeeded=True), Contains("sorry", negate=True)],
        outcome_rules={
            "refused": (Contains("cannot"),),
            "booked": (ToolCalled("book_room", succeeded=True), Matches(r"BK-\d")),
        },
        default_outcome="unresolved",
        expected_outcomes=["booked"],
    )
    evaluation = await evaluator.evaluate(CONVERSATION, OUTCOMES)
    assert evaluation.outcome == Outcome("booked", "booked")
    assert evaluation.passed and len(evaluation.verdicts) == 3
    assert evaluation.verdicts[-1].reason == "got booked, expected booked"
    assert evaluator.detect_outcome(CONVERSATION, OUTCOMES) == Outcome("booked", "booked")
    empty = conversation((CUSTOMER, "hi", []))
    assert evaluator.detect_outcome(empty, OUTCOMES) is None
    fallback = await evaluator.evaluate(empty, OUTCOMES)
    assert fallback.outcome == Outcome("unresolved", "")
    assert [v.passed for v in fallback.verdicts] == [False, True, False]


def judge_answer(answer: str) -> FunctionLLMClient:
    return FunctionLLMClient(lambda request: answer)


CRITERIA = [Criterion("polite", "The agent is polite"), Criterion("accurate", "Prices are right")]


async def test_judge_gives_outcome_and_per_criterion_verdicts() -> None:
    answer = """Here you go:
    ```json
    {"outcome": "booked", "criteria": [
        {"name": "polite", "passed": true, "reason": "courteous"},
        {"name": "accurate", "passed": false, "reason": "price missing tax"}]}
    ```"""
    client = judge_answer(answer)
    judge = LLMJudge(client, CRITERIA, intent=Intent(CUSTOMER, "book a room"), expected_outcomes=["booked"])
    evaluation = await judge.evaluate(CONVERSATION, OUTCOMES)
    assert evaluation.outcome == Outcome("booked", "booked")
    assert [(v.criterion, v.passed, v.reason) for v in evaluation.verdicts] == [
        ("polite", True, "courteous"),
        ("accurate", False, "price missing tax"),
        ("outcome", True, "got booked, expected booked"),
    ]
    request: CompletionRequest = client.requests[0]
    system, user = request.messages
    assert "book a room" in system.content and "- polite: The agent is polite" in system.content
    assert "- refused: refused" in system.content
    assert "book_room" in user.content and request.json_mode and request.temperature == 0.0


async def test_judge_failures_are_failing_verdicts() -> None:
    judge = LLMJudge(judge_answer("I think it went well."), CRITERIA)
    evaluation = await judge.evaluate(CONVERSATION, OUTCOMES)
    assert evaluation.outcome is None and not evaluation.passed
    assert evaluation.verdicts[0].criterion == "judge"
    partial = LLMJudge(
        judge_answer('{"outcome": "nope", "criteria": [{"name": "polite", "passed": true}]}'), CRITERIA
    )
    evaluation = await partial.evaluate(CONVERSATION, OUTCOMES)
    assert evaluation.outcome is None
    assert [(v.criterion, v.passed) for v in evaluation.verdicts] == [("polite", True), ("accurate", False)]
    assert evaluation.verdicts[1].reason == "the judge gave no verdict"
    assert await partial.should_end(CONVERSATION, OUTCOMES) is None


async def test_combined_evaluator_merges_rules_and_judge() -> None:
    rules = RuleEvaluator([Contains("BK-7")], {"booked": (Contains("BK-7"),)})
    judge = LLMJudge(
        judge_answer('{"outcome": "refused", "criteria": [{"name": "polite", "passed": true}]}'), CRITERIA[:1]
    )
    combined = CombinedEvaluator([rules, judge], expected_outcomes=["booked"])
    evaluation = await combined.evaluate(CONVERSATION, OUTCOMES)
    assert evaluation.outcome == Outcome("booked", "booked")  # the first evaluator with an outcome decides
    assert [v.criterion for v in evaluation.verdicts] == ["agent says 'BK-7'", "polite", "outcome"]
    assert evaluation.passed
    assert combined.detect_outcome(CONVERSATION, OUTCOMES) == Outcome("booked", "booked")


def test_transcript_rendering_and_json_extraction() -> None:
    text = render_transcript(CONVERSATION)
    assert text.splitlines()[0] == "customer: A double room in Paris for 2 nights, please"
    assert '[tool book_room({"nights": 2, "room": "suite"}) -> error RuleViolation: no suites]' in text
    assert render_transcript(Conversation([])) == "(no messages)"
    assert parse_json_object('x {"a": 1} y') == {"a": 1}
    assert parse_json_object("[1, 2]") is None
    assert parse_json_object("{broken") is None
