"""Driving tool-only agents: scripted steps and an LLM with function calling over HTTP."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from examples.booking import BookingAgent
from examples.customer_service import CustomerServiceAgent
from orchestrator.simulator import (
    Batch,
    BatchSummary,
    Conversation,
    EndReason,
    FullSimulationRunner,
    Intent,
    LLMSettings,
    Message,
    OpenAIClient,
    Outcomes,
    ParticipantError,
    ParticipantRole,
    ScriptedParticipant,
    load_scenarios,
)
from orchestrator.simulator.drivers import AgentStep, LLMToolAgent, PlannedCall, ScriptedToolAgent, ToolBox
from orchestrator.simulator.fakes import FakeChatServer, serve_fake_chat
from orchestrator.simulator.models import SIMULATION_EPOCH

CUSTOMER = ParticipantRole.CUSTOMER
INTENT = Intent(CUSTOMER, "sort out an order")
SCENARIOS = Path(__file__).parent.parent / "examples" / "scenarios"


async def test_toolbox_runs_calls_through_the_executor() -> None:
    box = ToolBox(BookingAgent())
    names = [schema["name"] for schema in box.schemas()]
    assert {"check_availability", "hold_room", "confirm_booking", "cancel_booking"} <= set(names)
    ok = await box.call("check_availability", {"date": "2025-07-07", "nights": 1})
    assert ok.succeeded and ok.result["date"] == "2025-07-07"
    invalid = await box.call("check_availability", {"date": "2025-07-07", "nights": "many"})
    assert not invalid.succeeded and "invalid arguments" in (invalid.error or "")
    unknown = await box.call("teleport", {})
    assert unknown.error == "unknown tool 'teleport'"
    with pytest.raises(ParticipantError, match="not an orchestrator Agent"):
        ToolBox(object())  # type: ignore[arg-type]


async def test_scripted_steps_fill_templates_and_record_calls() -> None:
    steps = [
        AgentStep((PlannedCall("lookup_customer", {"customer_id": "C-100"}),), "Hi {lookup_customer[name]}"),
        AgentStep((PlannedCall("lookup_customer", {"customer_id": "nope"}),), "x", "Sorry: {error}"),
        AgentStep((PlannedCall("lookup_customer", {"customer_id": "C-101"}),), "{lookup_customer[missing]}"),
    ]
    agent = ScriptedToolAgent(ToolBox(CustomerServiceAgent()), ["Hello!", *steps])
    customer = ScriptedParticipant(["I am C-100", "and nope?", "and C-101?"])
    result = await FullSimulationRunner(customer, agent, "hi", INTENT, Outcomes()).run()
    texts = [m.content for m in result.conversation.messages]
    assert texts[:6] == ["hi", "Hello!", "I am C-100", "Hi Ada Lovelace", "and nope?", texts[5]]
    assert texts[5].startswith("Sorry: no customer")
    # The step whose template failed produced no message, so its call is not in the transcript.
    assert [c.succeeded for c in result.conversation.tool_calls] == [True, False]
    assert result.end_reason is EndReason.ERROR and "'missing'" in result.end_detail


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (
            AgentStep((PlannedCall("lookup_customer", {"customer_id": "C-100"}),), "{lookup_customer[nam]}"),
            "{lookup_customer[nam]}: the result of lookup_customer has no key 'nam' "
            "(its keys: customer_id, name, email, tier, orders)",
        ),
        (
            AgentStep(
                (PlannedCall("lookup_customer", {"customer_id": "C-100"}),), "{lookup_customer[orders][5]}"
            ),
            "{lookup_customer[orders][5]}: the result of lookup_customer has no item 5 (it has 2)",
        ),
        (
            AgentStep(
                (PlannedCall("lookup_customer", {"customer_id": "nope"}),),
                "Hi {lookup_customer[name]}{error}",
            ),
            "{lookup_customer[name]}: the call to lookup_customer failed: no customer",
        ),
        (
            AgentStep((PlannedCall("list_tickets"),), "{lookup_customer[name]}"),
            "{lookup_customer[name]}: this step calls no tool 'lookup_customer' (it calls: list_tickets)",
        ),
    ],
)
async def test_a_template_that_cannot_be_filled_names_the_field_and_why(
    step: AgentStep, problem: str
) -> None:
    agent = ScriptedToolAgent(ToolBox(CustomerServiceAgent()), [step])
    with pytest.raises(ParticipantError) as raised:
        await agent.get_next_message(Conversation([Message("hi", SIMULATION_EPOCH, CUSTOMER)]))
    assert str(raised.value).startswith(f"agent step template {step.say!r}: {problem}")


@pytest.mark.parametrize(
    ("call", "say", "problem"),
    [
        (
            PlannedCall("lookup_customer", {"customer_id": "nope"}),
            "ok",
            "the call to lookup_customer failed: no customer with id 'nope'",
        ),
        (
            PlannedCall("lookup_customer", {"custmer_id": "C-100"}),
            "ok",
            "the call to lookup_customer failed: invalid arguments for tool 'lookup_customer'",
        ),
        (
            PlannedCall("no_such_tool"),
            "ok {no_such_tool}",
            "the scenario calls tool 'no_such_tool', but agent 'customer-service' has no such tool",
        ),
    ],
)
async def test_a_failed_call_the_step_does_not_script_ends_the_simulation_in_error(
    call: PlannedCall, say: str, problem: str
) -> None:
    steps: list[str | AgentStep] = ["Hello!", AgentStep((call,), say)]
    agent = ScriptedToolAgent(ToolBox(CustomerServiceAgent()), steps)
    customer = ScriptedParticipant(["help me", "bye"])
    result = await FullSimulationRunner(customer, agent, "hi", INTENT, Outcomes()).run()
    assert result.end_reason is EndReason.ERROR
    assert result.end_detail.startswith(f"agent.turns[1]: {problem}")
    assert [m.content for m in result.conversation.messages] == ["hi", "Hello!", "help me"]


async def test_a_failed_call_the_step_scripts_is_said() -> None:
    failing = PlannedCall("lookup_customer", {"customer_id": "nope"})
    steps = [
        AgentStep((failing,), "Found you.", "Sorry: {error}"),
        AgentStep((failing,), "Found you.{error}"),
        AgentStep((failing,), "Found you.{lookup_customer[error]}"),
    ]
    agent = ScriptedToolAgent(ToolBox(CustomerServiceAgent()), steps)
    customer = ScriptedParticipant(["again", "again"])
    result = await FullSimulationRunner(customer, agent, "hi", INTENT, Outcomes()).run()
    said = [m.content for m in result.conversation.messages if m.sender is ParticipantRole.AGENT]
    assert said[0].startswith("Sorry: no customer") and said[1].startswith("Found you.no customer")
    assert said[2].startswith("Found you.no customer") and result.end_reason is not EndReason.ERROR


def order_desk(body: Mapping[str, Any]) -> str | Mapping[str, Any]:
    """A provider that, offered tools, looks the order up, then answers from the result."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        result = json.loads(last["content"])
        if "error" in result:
            return f"Sorry: {result['error']}"
        return f"Order {result['order_id']} is {result['status']}."
    wanted = "O-5002" if "5002" in last["content"] else "O-9999"
    function = {"name": "check_order_status", "arguments": json.dumps({"order_id": wanted})}
    call = {"id": f"call-{len(body['messages'])}", "type": "function", "function": function}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


async def test_llm_tool_agent_calls_tools_over_http(nursery: trio.Nursery) -> None:
    server = FakeChatServer(order_desk)
    base_url = await serve_fake_chat(server, nursery)
    async with OpenAIClient(LLMSettings(base_url=base_url, model="tools-1")) as client:
        agent = LLMToolAgent(client, ToolBox(CustomerServiceAgent()))
        customer = ScriptedParticipant(["and order 9999?"])
        result = await FullSimulationRunner(customer, agent, "Where is order 5002?", INTENT, Outcomes()).run()
    texts = [m.content for m in result.conversation.messages]
    assert texts[:3] == ["Where is order 5002?", "Order O-5002 is shipped.", "and order 9999?"]
    assert texts[3].startswith("Sorry: no order")
    calls = result.conversation.tool_calls
    assert [(c.name, dict(c.arguments), c.succeeded) for c in calls] == [
        ("check_order_status", {"order_id": "O-5002"}, True),
        ("check_order_status", {"order_id": "O-9999"}, False),
    ]
    first = server.requests[0]
    tools = {t["function"]["name"]: t for t in first["tools"]}
    assert tools["check_order_status"]["type"] == "function"
    assert tools["check_order_status"]["function"]["parameters"]["required"] == ["order_id"]
    assert "customer-service" in first["messages"][0]["content"]
    # The second turn replays the first turn's tool call and result to the model.
    third = server.requests[2]["messages"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert third[2]["tool_calls"][0]["function"]["name"] == "check_order_status"
    assert third[3]["tool_call_id"] == third[2]["tool_calls"][0]["id"]


async def test_llm_tool_agent_gives_up_after_max_rounds() -> None:
    from orchestrator.simulator.fakes import FunctionLLMClient
    from orchestrator.simulator.llm import Completion, CompletionRequest, LLMToolCall

    class Looping(FunctionLLMClient):
        async def complete(self, request: CompletionRequest) -> Completion:
            await trio.lowlevel.checkpoint()
            return Completion("", [LLMToolCall("c", "list_tickets", "{}")])

    agent = LLMToolAgent(Looping(lambda r: ""), ToolBox(CustomerServiceAgent()), max_rounds=3)
    with pytest.raises(ParticipantError, match="after 3 rounds"):
        await agent.get_next_message(Conversation([Message("hi", SIMULATION_EPOCH, CUSTOMER)]))


def llm_everything(body: Mapping[str, Any]) -> str | Mapping[str, Any]:
    """Plays the customer, the platform (with tools) and the judge of customer_service_llm.toml."""
    system = body["messages"][0]["content"]
    if "impartial judge" in system:
        transcript = body["messages"][-1]["content"]
        outcome = (
            "escalated"
            if "open_ticket" in transcript
            else "refunded"
            if "refund_order" in transcript
            else "unresolved"
        )
        criteria = [
            {"name": "accurate", "passed": True, "reason": "ok"},
            {"name": "polite", "passed": True, "reason": "ok"},
        ]
        return json.dumps({"outcome": outcome, "criteria": criteria})  # fmt: skip
    if "tools" in body:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return f"Done: {last['content'][:60]}"
        text = last["content"]
        if "5003" in text:
            name, args = "open_ticket", {"subject": "O-5003 late", "customer_id": "C-101"}
        else:
            name, args = "refund_order", {"order_id": "O-5001", "reason": "damaged", "amount": 20.0}
        call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    spoke = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if spoke:
        return "Thanks! ###STOP###"
    return "My order O-5003 is late." if "O-5003" in system else "O-5001 arrived damaged, 20 back please."


async def test_llm_example_scenarios_run_against_a_fake_provider(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeChatServer(llm_everything)
    base_url = await serve_fake_chat(server, nursery)
    scenario_file = load_scenarios(SCENARIOS / "customer_service_llm.toml")
    settings = scenario_file.llm_settings({"ORCHESTRATOR_LLM_BASE_URL": base_url})
    assert settings.requests_per_minute == 120 and settings.seed == 7
    async with OpenAIClient(attrs.evolve(settings, requests_per_minute=None)) as client:
        batch = Batch(scenario_file.scenarios, samples=2, agent_factory=CustomerServiceAgent, llm=client)
        run = await batch.run()
    summary = BatchSummary.from_run(run, 2)
    assert summary.outcomes == {"escalated": 2, "refunded": 2}
    assert summary.passed == 4, [r.result.evaluation for r in run.records]
