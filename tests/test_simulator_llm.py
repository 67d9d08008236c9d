"""LLM client, participant, judge and cache against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator.backoff import BackoffPolicy
from orchestrator.simulator import (
    AgentParticipant,
    Batch,
    CachedLLMClient,
    ChatMessage,
    CompletionRequest,
    Criterion,
    EndReason,
    FullSimulationRunner,
    Intent,
    LangChainClient,
    LLMError,
    LLMJudge,
    LLMParticipant,
    LLMSettings,
    LLMTimeout,
    OpenAIClient,
    Outcome,
    Outcomes,
    ParticipantRole,
    RateLimiter,
    ScriptedParticipant,
    junit_xml,
    parse_scenarios,
    summary_json,
    to_json,
)
from orchestrator.simulator.fakes import FakeChatServer, serve_fake_chat
from orchestrator.simulator.summary import BatchSummary

KEY = "sk-test-0123456789abcdef"
CUSTOMER = ParticipantRole.CUSTOMER
AGENT = ParticipantRole.AGENT
INTENT = Intent(CUSTOMER, "find out where order 42 is")
OUTCOMES = Outcomes([Outcome("tracked", "the status was given"), Outcome("lost", "nobody knows")])
NO_WAIT = BackoffPolicy(base=0.0, cap=0.0)


def canned(body: Mapping[str, Any]) -> str:
    """The provider's brain: plays customer, judge and reviewer from the system prompt."""
    system = body["messages"][0]["content"]
    transcript = body["messages"][-1]["content"]
    if "impartial judge" in system:
        outcome = "tracked" if "shipped" in transcript else "lost"
        verdict = {"name": "clear", "passed": "shipped" in transcript, "reason": "judged"}
        return json.dumps({"outcome": outcome, "criteria": [verdict]})
    if "Decide whether the conversation is over" in system:
        return json.dumps({"finished": False, "reason": ""})
    own = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if own == 0:
        return f"Hi, where is my order 42? (seed {body.get('seed')})"
    return "Great, thanks! ###STOP###"


class TrackingAgent:
    def on_message(self, message: str) -> str:
        return "Order 42 shipped yesterday." if "42" in message else "Which order?"


async def test_openai_client_sends_a_chat_completion(nursery: trio.Nursery) -> None:
    server = FakeChatServer(lambda body: "pong", api_key=KEY)
    base_url = await serve_fake_chat(server, nursery)
    settings = LLMSettings(base_url=base_url, model="tiny-1", api_key=KEY, seed=10)
    async with OpenAIClient(settings) as client:
        assert client.identity == f"{base_url}#tiny-1"
        request = CompletionRequest(
            [ChatMessage("system", "be brief"), ChatMessage("user", "ping")],
            temperature=0.3,
            max_tokens=5,
            json_mode=True,
            variant=2,
        )
        completion = await client.complete(request)
    assert completion.content == "pong"
    assert server.requests == [
        {
            "model": "tiny-1",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}],
            "temperature": 0.3,
            "seed": 12,  # the settings' seed offset by the variant
            "max_tokens": 5,
            "response_format": {"type": "json_object"},
        }
    ]


async def test_api_key_never_leaks_into_errors_or_reprs(nursery: trio.Nursery) -> None:
    server = FakeChatServer(lambda body: "never", api_key="the-right-key")
    base_url = await serve_fake_chat(server, nursery)
    settings = LLMSettings(base_url=base_url, api_key=KEY, max_retries=0)
    assert KEY not in repr(settings)
    async with OpenAIClient(settings) as client:
        with pytest.raises(LLMError) as caught:
            await client.complete(CompletionRequest([ChatMessage("user", "hi")]))
    message = str(caught.value)
    assert "HTTP 401" in message and "Incorrect API key provided: ***" in message
    assert KEY not in message and KEY not in repr(caught.value)


async def test_openai_client_retries_transient_statuses(nursery: trio.Nursery) -> None:
    server = FakeChatServer(lambda body: "finally", fail_next=[503, 429])
    base_url = await serve_fake_chat(server, nursery)
    async with OpenAIClient(LLMSettings(base_url=base_url), backoff=NO_WAIT) as client:
        assert (await client.complete(CompletionRequest([ChatMessage("user", "hi")]))).content == "finally"
        server.fail_next[:] = [500, 500, 500]
        with pytest.raises(LLMError, match="HTTP 500"):
            await client.complete(CompletionRequest([ChatMessage("user", "hi")]))
        server.fail_next[:] = [400]
        with pytest.raises(LLMError, match="HTTP 400"):
            await client.complete(CompletionRequest([ChatMessage("user", "hi")]))


async def test_openai_client_times_out_on_trio_clock(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeChatServer(lambda body: "late", delay=600.0)
    base_url = await serve_fake_chat(server, nursery)
    settings = LLMSettings(base_url=base_url, timeout_seconds=30.0, max_retries=0)
    async with OpenAIClient(settings) as client:
        with pytest.raises(LLMTimeout, match="no answer within 30 s"):
            await client.complete(CompletionRequest([ChatMessage("user", "hi")]))


async def test_transport_errors_are_llm_errors() -> None:
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", max_retries=0)
    async with OpenAIClient(settings) as client:
        with pytest.raises(LLMError, match=r"http://127\.0\.0\.1:9/v1: Connect"):
            await client.complete(CompletionRequest([ChatMessage("user", "hi")]))


async def test_rate_limiter_spaces_requests(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(trio.current_time())
    assert [t - times[0] for t in times] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5])


def test_settings_from_env_and_endpoint() -> None:
    env = {"OPENAI_API_KEY": "k1", "OPENAI_BASE_URL": "https://u:p@llm.example:8443/v1/?x=1"}
    settings = LLMSettings.from_env(env)
    assert settings.api_key == "k1" and settings.model == "gpt-4o-mini"
    assert settings.endpoint == "https://llm.example:8443/v1"
    env |= {
        "ORCHESTRATOR_LLM_BASE_URL": "http://127.0.0.1:1/v1",
        "ORCHESTRATOR_LLM_MODEL": "m",
        "ORCHESTRATOR_LLM_API_KEY": "k2",
    }
    settings = LLMSettings.from_env(env, seed=3)
    assert (settings.base_url, settings.model, settings.api_key, settings.seed) == (
        "http://127.0.0.1:1/v1",
        "m",
        "k2",
        3,
    )


async def test_llm_participant_and_judge_over_http(nursery: trio.Nursery) -> None:
    server = FakeChatServer(canned, api_key=KEY)
    base_url = await serve_fake_chat(server, nursery)
    async with OpenAIClient(LLMSettings(base_url=base_url, api_key=KEY, seed=1)) as client:
        customer = LLMParticipant(client, INTENT, persona="a busy parent", variant=1)
        criteria = [Criterion("clear", "a clear answer")]
        judge = LLMJudge(client, criteria, intent=INTENT, expected_outcomes=["tracked"])
        agent = AgentParticipant(TrackingAgent())
        sim = FullSimulationRunner(customer, agent, None, INTENT, OUTCOMES, evaluator=judge)
        result = await sim.run()
    assert [(m.sender, m.content) for m in result.conversation.messages] == [
        (CUSTOMER, "Hi, where is my order 42? (seed 2)"),
        (AGENT, "Order 42 shipped yesterday."),
        (CUSTOMER, "Great, thanks!"),
    ]
    assert result.end_reason is EndReason.STOP
    assert result.conversation.outcome == OUTCOMES.get_outcome_by_name("tracked")
    assert result.passed
    first = server.requests[0]["messages"]
    assert "a busy parent" in first[0]["content"] and INTENT.description in first[0]["content"]
    assert first[-1] == {
        "role": "user",
        "content": "(The conversation starts now. Write your first message.)",
    }
    second = server.requests[1]["messages"]
    assert [m["role"] for m in second[1:]] == ["assistant", "user"]


SCENARIOS = """
[llm]
api_key_env = "TEST_LLM_KEY"
seed = 100

[[scenario]]
name = "where-is-42"
intent = "find out where order 42 is"
evaluator = "both"
expected_outcomes = ["tracked"]
customer = { kind = "llm", persona = "a busy parent" }
outcomes = [{ name = "tracked", description = "status given", when = [{ says = "shipped" }] },
            { name = "lost", description = "nobody knows" }]
expect = [{ says = "42" }]
criteria = [{ name = "clear", description = "a clear answer" }]
"""


async def run_cached_batch(base_url: str, cache: Path, samples: int) -> tuple[Batch, Any, CachedLLMClient]:
    scenario_file = parse_scenarios(tomllib.loads(SCENARIOS))
    settings = scenario_file.llm_settings({"TEST_LLM_KEY": KEY, "ORCHESTRATOR_LLM_BASE_URL": base_url})
    async with OpenAIClient(settings) as http:
        client = CachedLLMClient(http, cache)
        batch = Batch(
            scenario_file.scenarios, samples=samples, concurrency=4, agent_factory=TrackingAgent, llm=client
        )
        run = await batch.run()
    return batch, run, client


async def test_second_batch_run_makes_zero_requests(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = FakeChatServer(canned, api_key=KEY)
    base_url = await serve_fake_chat(server, nursery)
    cache = tmp_path / "llm-cache"
    _, first, client = await run_cached_batch(base_url, cache, samples=3)
    sent = len(server.requests)
    # 3 samples x (2 customer turns + 1 judge) requests, none shared between samples.
    assert sent == 9 and client.statistics().requests == 9
    openers = [r.result.conversation.messages[0].content for r in first.records]
    assert openers == [f"Hi, where is my order 42? (seed {100 + k})" for k in range(3)]
    assert all(r.passed for r in first.records)

    _, second, client = await run_cached_batch(base_url, cache, samples=3)
    assert len(server.requests) == sent  # zero new requests
    assert client.statistics().hits == 9 and client.statistics().requests == 0
    assert [r.result.conversation for r in second.records] == [r.result.conversation for r in first.records]

    # The key appears in no cache file, transcript or report.
    summary = BatchSummary.from_run(second, 3)
    texts = [p.read_text() for p in cache.rglob("*.json")]
    texts += [to_json(r) for r in second.records] + [
        summary_json(summary),
        junit_xml(second.records, summary),
    ]
    assert len(texts) > 9 and not any(KEY in text for text in texts)


async def test_langchain_adapter_runs_invoke_in_a_thread() -> None:
    seen: dict[str, Any] = {}

    class Reply:
        content = "from langchain"

    class Runnable:
        def invoke(self, messages: list[tuple[str, str]]) -> Reply:
            seen["messages"] = messages
            seen["thread"] = threading.current_thread()
            return Reply()

    client = LangChainClient(Runnable())
    customer = LLMParticipant(client, INTENT)
    sim = FullSimulationRunner(
        customer, ScriptedParticipant(["ok"], AGENT), "hello", INTENT, OUTCOMES, max_messages=3
    )
    result = await sim.run()
    assert [m.content for m in result.conversation.messages] == ["hello", "ok", "from langchain"]
    assert seen["thread"] is not threading.main_thread()
    assert seen["messages"][0][0] == "system" and seen["messages"][1:] == [
        ("assistant", "hello"),
        ("user", "ok"),
    ]

    class Failing:
        def invoke(self, messages: object) -> str:
            raise RuntimeError("quota")

    with pytest.raises(LLMError, match="quota"):
        await LangChainClient(Failing()).complete(CompletionRequest([ChatMessage("user", "x")]))
