"""The real conversimple-sdk and the orchestrator serve the same scenario: same transcript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from orchestrator.agent import Agent, tool
from orchestrator.metrics import Metrics
from orchestrator.platforms.conversimple import ConversimplePlatform
from orchestrator.sandbox import ConversationPlan, SandboxServer, Scenario
from orchestrator.supervisor import Supervisor

from .test_sandbox_interop import TIMEOUT, TURNS, sandbox, sdk

pytestmark = pytest.mark.slow


class OrchestratorEcho(Agent):
    """tests/sdk_agents/conversimple_agents/echo_agent.py, written for orchestrator."""

    agent_id = "sdk-echo"

    @tool("Echo the text back")
    async def echo(self, text: str) -> dict[str, Any]:
        return {"text": text}

    @tool("Add two integers")
    def add(self, a: int, b: int) -> dict[str, Any]:
        return {"sum": a + b}

    @tool("Always fails with the given message")
    def fail(self, message: str) -> dict[str, Any]:
        raise ValueError(message)


SCENARIO = Scenario("twin", (ConversationPlan("sdk-echo", turns=TURNS, synthetic=0),) * 2)


async def run_orchestrator(server: SandboxServer) -> list[str]:
    metrics = Metrics(CollectorRegistry())
    platform = ConversimplePlatform(server.conversimple_url, "k", "cust", metrics=metrics)
    supervisor = Supervisor([OrchestratorEcho], platform.connect, metrics=metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        ids = server.add_conversations(SCENARIO)
        with trio.fail_after(TIMEOUT):
            await server.wait_done(ids)
        nursery.cancel_scope.cancel()
    return ids


async def test_sdk_and_orchestrator_transcripts_match(tmp_path: Path) -> None:
    async with (
        sandbox() as sdk_server,
        sdk("run_conversimple.py", "dispatcher", sdk_server.conversimple_url, "k", log=tmp_path / "sdk.log"),
    ):
        sdk_ids = sdk_server.add_conversations(SCENARIO)
        with trio.fail_after(TIMEOUT):
            await sdk_server.wait_done(sdk_ids)
    async with sandbox() as orch_server:
        orch_ids = await run_orchestrator(orch_server)
    sdk_turns = [sdk_server.conversation(c).turns() for c in sdk_ids]
    orch_turns = [orch_server.conversation(c).turns() for c in orch_ids]
    assert all(orch_server.conversation(c).outcome == "completed" for c in orch_ids)
    assert all(sdk_server.conversation(c).outcome == "completed" for c in sdk_ids)
    assert orch_turns == sdk_turns
    assert [t["status"] for t in orch_turns[0]] == ["ok", "ok", "error", "ok"]
