"""Every reason a simulated conversation can end, recorded on the result."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from orchestrator.simulator import (
    AgentChannel,
    Contains,
    EndReason,
    FullSimulationRunner,
    HybridSimulationRunner,
    Intent,
    LLMError,
    LLMJudge,
    LLMParticipant,
    Message,
    Outcome,
    Outcomes,
    ParticipantRole,
    RuleEvaluator,
    ScriptedParticipant,
    TerminationPolicy,
)
from orchestrator.simulator.fakes import FunctionLLMClient
from orchestrator.simulator.llm import CompletionRequest
from orchestrator.simulator.models import SIMULATION_EPOCH
from orchestrator.simulator.termination import Ending

CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
INTENT = Intent(CUSTOMER, "track my order")
OUTCOMES = Outcomes([Outcome("tracked", "the order status was given")])
ENDLESS = ["and?"] * 200


def full(customer: list[str], agent: list[str], **kwargs: object) -> FullSimulationRunner:
    return FullSimulationRunner(
        ScriptedParticipant(customer[1:]),
        ScriptedParticipant(agent, AGENT),
        customer[0],
        INTENT,
        OUTCOMES,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_ends_at_max_messages() -> None:
    result = await full(ENDLESS, ENDLESS, max_messages=7).run()
    assert (result.end_reason, result.end_detail) == (EndReason.MAX_MESSAGES, "7 messages")
    assert len(result.conversation.messages) == 7


async def test_ends_on_customer_closing_phrase_only() -> None:
    result = await full(
        ["where is my order?", "Great, thanks. Goodbye!", "still here"], ["It ships today."] * 3
    ).run()
    assert result.end_reason is EndReason.CLOSING_PHRASE
    assert result.end_detail == "customer: 'Goodbye'"
    assert len(result.conversation.messages) == 3
    # The agent saying "bye" does not end it by default, and phrases are configurable.
    agent_bye = await full(["hi", "ok"], ["Bye for now", "x"], max_messages=4).run()
    assert agent_bye.end_reason is EndReason.MAX_MESSAGES
    policy = TerminationPolicy(closing_phrases=[r"\bcheers\b"], closing_roles=[AGENT, CUSTOMER])
    custom = await full(["hi", "bye"], ["Cheers!"], termination=policy).run()
    assert custom.end_reason is EndReason.CLOSING_PHRASE and custom.end_detail == "agent: 'Cheers'"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("###STOP###", EndReason.STOP),
        ("###TRANSFER###", EndReason.TRANSFER),
        ("###OUT-OF-SCOPE###", EndReason.OUT_OF_SCOPE),
    ],
)
async def test_ends_on_stop_tokens(token: str, reason: EndReason) -> None:
    result = await full(["hello", f"ok {token}"], ["hi", "unused"]).run()
    assert (result.end_reason, result.end_detail) == (reason, f"customer: {token}")
    assert [m.content for m in result.conversation.messages] == ["hello", "hi", "ok"]
    bare = await full(["hello", token], ["hi"]).run()
    assert bare.end_reason is reason
    assert [m.content for m in bare.conversation.messages] == ["hello", "hi"]


async def test_ends_when_outcome_reached() -> None:
    evaluator = RuleEvaluator(outcome_rules={"tracked": (Contains("ships"),)})
    policy = TerminationPolicy(end_on_outcome=True)
    result = await full(
        ENDLESS, ["checking", "It ships today", "x"], evaluator=evaluator, termination=policy
    ).run()
    assert (result.end_reason, result.end_detail) == (EndReason.OUTCOME_REACHED, "tracked")
    assert len(result.conversation.messages) == 4
    assert result.conversation.outcome == OUTCOMES.get_outcome_by_name("tracked")


async def test_ends_on_judge_verdict() -> None:
    def judge(request: CompletionRequest) -> str:
        transcript = request.messages[-1].content
        if "finished" in request.messages[0].content:
            done = "shipped" in transcript
            return f'{{"finished": {str(done).lower()}, "reason": "status given"}}'
        return '{"outcome": "tracked", "criteria": []}'

    client = FunctionLLMClient(judge)
    evaluator = LLMJudge(client, intent=INTENT)
    policy = TerminationPolicy(judge_every=2)
    agent = ["looking", "It shipped yesterday", "x", "y"]
    result = await full(ENDLESS, agent, evaluator=evaluator, termination=policy).run()
    assert (result.end_reason, result.end_detail) == (EndReason.JUDGE_VERDICT, "status given")
    assert len(result.conversation.messages) == 4
    assert result.conversation.outcome is not None and result.conversation.outcome.name == "tracked"
    reviews = [r for r in client.requests if "finished" in r.messages[0].content]
    assert len(reviews) == 2  # after message 2 and message 4


async def test_ends_when_a_participant_is_finished() -> None:
    customer_done = await full(["hi"], ["hello", "more"]).run()
    assert customer_done.end_reason is EndReason.CUSTOMER_FINISHED
    agent_done = await full(["hi", "again"], []).run()
    assert agent_done.end_reason is EndReason.AGENT_FINISHED


async def test_ends_with_error_when_the_llm_fails() -> None:
    def unreachable(request: CompletionRequest) -> str:
        raise LLMError("https://llm.example/v1 answered HTTP 503: overloaded")

    customer = LLMParticipant(FunctionLLMClient(unreachable), INTENT)
    sim = FullSimulationRunner(customer, ScriptedParticipant(["hi"], AGENT), "hello", INTENT, OUTCOMES)
    result = await sim.run()
    assert result.end_reason is EndReason.ERROR
    assert "HTTP 503" in result.end_detail
    assert not result.passed


async def test_hybrid_ends_on_idle_timeout_and_max_messages(autojump_clock: trio.testing.MockClock) -> None:
    class Echo:
        async def on_message(self, message: str) -> str:
            await trio.sleep(1)
            return message

    policy = TerminationPolicy(idle_timeout=5)
    capped = HybridSimulationRunner(
        ScriptedParticipant(ENDLESS), AgentChannel(Echo), "hi", INTENT, OUTCOMES, 5, termination=policy
    )
    assert (await capped.run()).end_reason is EndReason.MAX_MESSAGES

    class Mute:
        def on_message(self, message: str) -> None:
            return None

    idle = HybridSimulationRunner(
        ScriptedParticipant(ENDLESS), AgentChannel(Mute), "hi", INTENT, OUTCOMES, termination=policy
    )
    result = await idle.run()
    assert (result.end_reason, result.end_detail) == (EndReason.IDLE_TIMEOUT, "no message for 5 s")


def test_policy_scans_and_validates() -> None:
    policy = TerminationPolicy()
    assert policy.scan_stop_token("no token here") == ("no token here", None)
    assert policy.scan_stop_token("done ###STOP###") == ("done", Ending(EndReason.STOP, "###STOP###"))
    bye = Message("Thanks, have a nice day", SIMULATION_EPOCH, CUSTOMER)
    closing = policy.closing_phrase(bye)
    assert closing is not None and closing.reason is EndReason.CLOSING_PHRASE
    with pytest.raises(ValueError, match="closing phrase"):
        TerminationPolicy(closing_phrases=["(unclosed"])
    with pytest.raises(ValueError, match="idle_timeout"):
        TerminationPolicy(idle_timeout=0)
