"""The example scenarios pass against the example agents (hosted by the raw clients)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from examples.booking import BookingAgent
from examples.customer_service import CustomerServiceAgent
from examples.echo import EchoAgent
from examples.weather import WeatherAgent
from orchestrator.sandbox import SandboxServer, load_scenario
from tests.sandbox_client import RawAgent, RawBot

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "examples" / "scenarios").glob("sandbox_*.toml"))
AGENTS = {
    "weather": WeatherAgent,
    "echo": EchoAgent,
    "customer-service": CustomerServiceAgent,
    "booking": BookingAgent,
}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_example_scenario_completes(path: Path, tmp_path: Path) -> None:
    server = SandboxServer(bot_tokens={"weather-token": "weather", "echo-token": "echo"})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(RawAgent(server.conversimple_url, AGENTS).run)
        for token, cls in (("weather-token", WeatherAgent), ("echo-token", EchoAgent)):
            bot, _ = await RawBot.open(server.arinova_url, token)
            nursery.start_soon(bot.serve_agent, cls)
        ids = server.add_conversations(load_scenario(path))
        with trio.fail_after(60):
            await server.wait_done(ids)
        nursery.cancel_scope.cancel()
    failures = {cid: server.conversation(cid).failures for cid in ids if server.conversation(cid).failures}
    assert not failures
    assert server.report(ids).outcomes == {"completed": len(ids)}
    assert server.recorder.violations == 0 and server.recorder.unknown_events == 0
    server.recorder.write_jsonl(tmp_path / "transcripts.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert [row["conversation_id"] for row in rows] == ids
    assert all(row["outcome"] == "completed" and row["turns"] and row["frames"] for row in rows)
    assert rows[0]["turns"] == server.conversation(ids[0]).turns()
