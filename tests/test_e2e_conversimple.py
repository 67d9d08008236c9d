"""The orchestrator against the bundled sandbox platform over real loopback WebSockets."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from examples.booking import BookingAgent
from examples.customer_service import CustomerServiceAgent
from examples.echo import EchoAgent
from examples.weather import WeatherAgent
from orchestrator import link
from orchestrator.agent import Agent
from orchestrator.connection import LinkPolicy
from orchestrator.metrics import Metrics
from orchestrator.platforms.conversimple import ConversimplePlatform
from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from orchestrator.sandbox.settings import SandboxSettings
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from tests.helpers import EchoAgent as NappingAgent
from tests.helpers import control_dropped_behind, wait_until

API_KEY = "canary-api-key-7f3a9"

SCENARIO = """
name = "e2e"
[[conversation]]
agent_id = "weather"
[[conversation.turn]]
tool = "get_weather"
arguments = { city = "Paris" }
expect_result = { city = "Paris" }
[[conversation.turn]]
tool = "get_weather"
arguments = { city = "Atlantis" }
expect_error = "unknown city"

[[conversation]]
agent_id = "echo"
repeat = 3
calls = 4
"""


@asynccontextmanager
async def stack(
    agents: list[type[Agent]],
    *,
    sandbox: SandboxSettings | None = None,
    policy: LinkPolicy | None = None,
    api_key: str = API_KEY,
) -> AsyncIterator[tuple[SandboxServer, Supervisor, Metrics]]:
    server = SandboxServer(sandbox or SandboxSettings())
    metrics = Metrics(CollectorRegistry())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        platform = ConversimplePlatform(
            server.conversimple_url, api_key, "cust-1", policy or LinkPolicy(), metrics=metrics
        )
        supervisor = Supervisor(agents, platform.connect, settings=SupervisorSettings(), metrics=metrics)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        yield server, supervisor, metrics
        nursery.cancel_scope.cancel()


async def test_scenario_completes_with_correct_results() -> None:
    async with stack([WeatherAgent, EchoAgent]) as (server, supervisor, _metrics):
        ids = server.add_conversations(parse_scenario(tomllib.loads(SCENARIO)))
        with trio.fail_after(30):
            await server.wait_done(ids)
        outcomes = {cid: server.conversation(cid).outcome for cid in ids}
        assert set(outcomes.values()) == {"completed"}, [server.conversation(c).failures for c in ids]
        weather = server.conversation(ids[0]).turns()
        assert weather[0]["status"] == "ok" and weather[0]["result"]["city"] == "Paris"
        assert weather[1]["status"] == "error" and "unknown city" in weather[1]["error"]
        with trio.fail_after(10):
            await supervisor.wait_idle()
        stats = supervisor.statistics()
        assert stats.ended_total["completed"] == 4 and stats.restarts_total == 0
        report = server.report(ids)
        assert report.calls_lost == 0 and report.duplicates == 0


async def test_every_example_agent_serves_synthetic_calls() -> None:
    agents: list[type[Agent]] = [WeatherAgent, CustomerServiceAgent, BookingAgent, EchoAgent]
    plan = {"conversation": [{"agent_id": a.agent_id, "calls": 6} for a in agents]}
    async with stack(agents) as (server, supervisor, _):
        ids = server.add_conversations(parse_scenario(plan))
        with trio.fail_after(30):
            await server.wait_done(ids)
        for cid in ids:
            log = server.conversation(cid)
            assert log.outcome == "completed", (log.agent_id, log.failures)
            assert len(log.calls) == 6
        assert supervisor.statistics().restarts_total == 0


async def test_dropped_link_after_request_result_arrives_once_after_reconnect() -> None:
    class CountingEcho(EchoAgent):
        agent_id = "counting"
        runs: dict[str, int] = {}

        async def echo(self, text: str) -> dict[str, Any]:  # type: ignore[override]
            CountingEcho.runs[text] = CountingEcho.runs.get(text, 0) + 1
            return {"text": text}

    policy = LinkPolicy(backoff_initial=0.05, backoff_max=0.2)
    async with stack([CountingEcho], policy=policy) as (server, _, metrics):
        server.drop_after_next_request()
        plan = {
            "conversation": [
                {"agent_id": "counting", "turn": [{"tool": "echo", "arguments": {"text": "once"}}]}
            ]
        }
        (cid,) = server.add_conversations(parse_scenario(plan))
        with trio.move_on_after(30):
            await server.wait_done([cid])
        log = server.conversation(cid)
        assert log.outcome == "completed", (log.failures, log.calls, server.statistics())
        (call,) = log.calls
        assert call.status == "ok" and call.result == {"text": "once"}
        assert server.report([cid]).duplicates == 0
        assert sum(CountingEcho.runs.values()) <= 1 or CountingEcho.runs == {"once": 1}
        assert (
            metrics.registry.get_sample_value("orchestrator_reconnects_total", {"reason": "closed"}) or 0
        ) >= 1


async def test_a_link_lost_before_the_end_ends_on_the_new_link(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link drops right after the last request, and the call is lost before the
    agent is back: the platform's end waits for it, and both sides end on the new link
    (not after the sandbox's register_timeout, nor through the control connection)."""
    monkeypatch.setattr(link._JITTER, "uniform", lambda low, high: high)  # back after exactly 2 s
    sandbox = SandboxSettings(call_timeout=0.5, register_timeout=100.0, notify_control_on_end=False)
    async with stack([EchoAgent], sandbox=sandbox, policy=LinkPolicy(backoff_initial=2.0)) as (
        server,
        supervisor,
        _,
    ):
        server.drop_after_next_request()
        turn = {"tool": "echo", "arguments": {"text": "x"}}
        plan = {"conversation": [{"agent_id": "echo", "turn": [turn]}]}
        (cid,) = server.add_conversations(parse_scenario(plan))
        with trio.fail_after(50):  # virtual time
            await server.wait_done([cid])
            await supervisor.wait_idle()
        log = server.conversation(cid)
        assert log.outcome == "lost"  # the reply came after call_timeout
        assert [e.payload.get("event") for e in log.entries if e.event == "conversation_lifecycle"] == [
            "conversation_started",
            "conversation_ended",
        ]
        assert supervisor.statistics().ended_total["completed"] == 1


async def test_conversations_announced_on_a_conversation_socket_are_hosted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a 10,000-conversation benchmark round: the sandbox gave the control
    socket up, and the platform announced every later conversation on the earliest-joined
    socket left, a conversation's, whose actor ignored each one as another conversation's
    event; none of them was ever hosted."""
    async with stack([NappingAgent], sandbox=SandboxSettings(call_timeout=1000.0)) as (server, supervisor, _):
        holding, held = await control_dropped_behind(server, 100.0)  # virtual time
        router = server.conversimple
        echo = {"tool": "echo", "arguments": {"text": "x"}}
        later = server.add_conversations(
            parse_scenario({"conversation": [{"agent_id": "echo", "repeat": 3, "turn": [echo]}]})
        )
        with trio.fail_after(60):
            await server.wait_done(later)
        assert [router.conversations[c].control for c in later] == [held] * 3  # announced there
        assert [server.conversation(c).outcome for c in later] == ["completed"] * 3
        with trio.fail_after(200):
            await server.wait_done([holding])
            await supervisor.wait_idle()
        assert server.conversation(holding).outcome == "completed"
        assert supervisor.statistics().ended_total["completed"] == 4
    assert "ignoring" not in caplog.text


@pytest.mark.parametrize("where", ["join", "handshake"])
async def test_rejected_key_one_attempt_breaker_on_error_once_and_no_key_in_logs(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Watcher(EchoAgent):
        agent_id = "watcher"
        errors: list[tuple[str, str]] = []

        async def on_error(self, error_type: str, message: str, details: Any) -> None:
            Watcher.errors.append((error_type, message))

    sandbox = SandboxSettings(api_keys=frozenset({"the-right-key"}), auth_at_handshake=(where == "handshake"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BaseExceptionGroup) as info:
        async with stack([Watcher], sandbox=sandbox):
            pass
    text = repr(info.value) + str(info.value.exceptions)
    assert "PermanentLinkError" in text
    assert API_KEY not in text
    assert API_KEY not in caplog.text


async def test_a_conversation_the_restarted_platform_does_not_know_ends_with_a_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an operator: the platform restarted and lost its state; the new one refused
    each rejoined conversation's registration as ``unknown_conversation``, and the
    conversations stayed ``running`` for ever (holding capacity, and every later drain
    waited out its deadline for them)."""
    metrics = Metrics(CollectorRegistry())
    first = SandboxServer(SandboxSettings(call_timeout=1000.0))
    gone = trio.Event()

    async def serve_first(*, task_status: trio.TaskStatus[tuple[trio.CancelScope, int]]) -> None:
        async with trio.open_nursery() as own:
            task_status.started((own.cancel_scope, await own.start(first.run)))
        gone.set()

    async with trio.open_nursery() as nursery:
        first_scope, port = await nursery.start(serve_first)
        platform = ConversimplePlatform(
            first.conversimple_url, API_KEY, "cust-1", LinkPolicy(), metrics=metrics
        )
        supervisor = Supervisor([NappingAgent], platform.connect, metrics=metrics)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        (cid,) = first.add_conversations(
            parse_scenario(
                {
                    "conversation": [
                        {"agent_id": "echo", "turn": [{"tool": "nap", "arguments": {"seconds": 900}}]}
                    ]
                }
            )
        )
        await wait_until(lambda: bool(first.conversation(cid).calls), 30, "the nap to be asked for")
        first_scope.cancel()  # the platform goes away, and comes back knowing nothing
        await gone.wait()
        await nursery.start(SandboxServer(SandboxSettings(port=port)).run)
        with trio.fail_after(120):  # virtual time; the nap would take 900 s
            outcome = await supervisor.wait_ended(cid)
        assert outcome == "completed" and cid not in supervisor
        assert supervisor.statistics().ended_total["completed"] == 1
        refused = {"reason": "unknown_conversation"}
        assert metrics.registry.get_sample_value("orchestrator_platform_refusals_total", refused) == 1
        (warning,) = [r for r in caplog.records if "does not know this conversation" in r.getMessage()]
        assert warning.levelno == logging.WARNING and getattr(warning, "conversation_id", None) == cid
        nursery.cancel_scope.cancel()
