"""The load generator: many conversations through a raw client, the report, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from examples.echo import EchoAgent
from orchestrator.protocols import conversimple as wire
from orchestrator.sandbox import SandboxServer, load_plan, parse_scenario, run_load
from orchestrator.sandbox.load import REASONS_SHOWN, percentiles
from tests.helpers import EchoAgent as NappingAgent
from tests.sandbox_client import RawAgent, RawBot, RawSocket


@pytest.fixture
async def server() -> AsyncIterator[SandboxServer]:
    sandbox = SandboxServer(record_messages=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(sandbox.run)
        yield sandbox
        nursery.cancel_scope.cancel()


async def test_load_50_conversations_of_5_calls_lose_nothing(server: SandboxServer) -> None:
    agent = RawAgent(server.conversimple_url, {"echo": EchoAgent})
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        with trio.fail_after(60):
            report = await run_load(server, load_plan(50, 5), progress=lines.append, interval=0.05)
        nursery.cancel_scope.cancel()
    assert report.conversations == 50
    assert report.outcomes == {"completed": 50}
    assert (report.calls, report.calls_ok, report.calls_lost, report.duplicates) == (250, 250, 0, 0)
    assert report.passed
    assert report.calls_per_second is not None and report.calls_per_second > 0
    assert (
        0 < report.latency_ms.p50 <= report.latency_ms.p90 <= report.latency_ms.p99 <= report.latency_ms.max
    )
    assert sum(agent.requests.values()) == 250 and set(agent.requests.values()) == {1}
    assert len(agent.ended) == 50
    assert all(not log.entries for log in server.recorder.conversations.values())  # recording was off
    parsed = json.loads(report.to_json())
    assert parsed["calls_ok"] == 250 and parsed["passed"] is True
    assert "calls/s" in report.table()


async def test_load_arinova_messages_with_chunks(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bot.serve_echo)
        with trio.fail_after(60):
            report = await run_load(server, load_plan(20, 3, platform="arinova", words=5))
        nursery.cancel_scope.cancel()
    assert report.outcomes == {"completed": 20}
    assert (report.replies, report.replies_ok, report.replies_lost) == (60, 60, 0)
    assert report.chunks == 60 * 5
    assert report.first_chunk_ms.p50 > 0 and (report.chunks_per_second or 0) > 0


async def test_rate_spreads_arrivals(autojump_clock: trio.abc.Clock, server: SandboxServer) -> None:
    agent = RawAgent(server.conversimple_url, {"echo": EchoAgent})
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        start = trio.current_time()
        await run_load(server, load_plan(5, 1, rate=2.0))
        assert trio.current_time() - start >= 2.0  # 5 arrivals at 2/s: the last at t=2
        nursery.cancel_scope.cancel()


def test_percentiles_nearest_rank() -> None:
    p = percentiles([i / 1000 for i in range(1, 101)])
    assert (p.p50, p.p90, p.p99, p.max) == pytest.approx((50.0, 90.0, 99.0, 100.0))
    assert percentiles([]).max == 0.0


@pytest.mark.slow
async def test_cli_load_run_prints_json_last() -> None:
    command = [sys.executable, "-m", "orchestrator.sandbox.cli", "--port", "0", "-n", "5", "-k", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert process.stderr is not None and process.stdout is not None
        banner = b""
        with trio.fail_after(30):
            while b"Conversimple" not in banner or not banner.endswith(b"\n"):
                banner += await process.stderr.receive_some()
        url = next(
            line.split()[-1]
            for line in banner.decode().splitlines()
            if line.strip().startswith("Conversimple")
        )
        agent = RawAgent(url, {"echo": EchoAgent})
        out = b""
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            with trio.fail_after(60):
                while chunk := await process.stdout.receive_some():
                    out += chunk
                await process.wait()
            nursery.cancel_scope.cancel()
        assert process.returncode == 0, out.decode()
        last = json.loads(out.decode().strip().splitlines()[-1])
        assert last["calls_ok"] == 10 and last["calls_lost"] == 0 and last["passed"] is True
    finally:
        process.kill()
        await process.wait()


# Found by a user: a failed scenario printed "failed 1" and no reason (the reasons were only
# in --record's transcripts); a run that waited 30 s for a registration reported "elapsed
# 0.001 s", and one call made "calls/s 880".


async def test_report_says_why_a_conversation_failed_and_counts_the_reasons_it_leaves_out(
    server: SandboxServer,
) -> None:
    agent = RawAgent(server.conversimple_url, {"echo": EchoAgent})
    turn = {"tool": "echo", "arguments": {"text": "hi"}, "expect_error": "timed out"}
    plan = parse_scenario({"conversation": [{"agent_id": "echo", "repeat": 2, "turn": [turn, turn, turn]}]})
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        with trio.fail_after(60):
            report = await run_load(server, plan)
        nursery.cancel_scope.cancel()
    assert report.outcomes == {"failed": 2} and not report.passed
    why = report.failures["failed"]
    assert why.reasons[0] == (
        "conv-00001: turn 0 (echo): expected an error containing 'timed out', got result {'text': 'hi'}"
    )
    assert len(why.reasons) == REASONS_SHOWN and why.more == 6 - REASONS_SHOWN
    lines = report.table().splitlines()
    assert f"failed         {why.reasons[0]}" in lines
    assert f"               ... and {why.more} more" in lines
    assert json.loads(report.to_json())["failures"]["failed"]["more"] == why.more


async def test_report_of_an_unregistered_conversation_names_the_agent_id_and_the_whole_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    sandbox = SandboxServer(register_timeout=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sandbox.run)
        control = await RawSocket.open(sandbox.conversimple_url)  # joins, and never registers
        assert isinstance(await control.join(), wire.JoinOk)
        with trio.fail_after(60):
            report = await run_load(sandbox, load_plan(1, 1, agent_id="shop"))
        nursery.cancel_scope.cancel()
    assert report.outcomes == {"unregistered": 1}
    assert report.failures["unregistered"].reasons == (
        "conv-00001: no agent registered tools within 30 s for agent_id 'shop' "
        "(is an agent serving that agent_id, with a tool?)",
    )
    assert 30.0 <= report.elapsed < 31.0  # the run's time, the wait for a registration included
    assert "elapsed        30." in report.table()


async def test_one_call_makes_no_rate_and_elapsed_is_the_runs_time(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    agent = RawAgent(server.conversimple_url, {"echo": NappingAgent})
    nap = {"tool": "nap", "arguments": {"seconds": 2.0}}
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        with trio.fail_after(60):
            one = await run_load(
                server, parse_scenario({"conversation": [{"agent_id": "echo", "turn": [nap]}]})
            )
            two = await run_load(
                server, parse_scenario({"conversation": [{"agent_id": "echo", "turn": [nap, nap]}]})
            )
        nursery.cancel_scope.cancel()
    assert one.calls_ok == 1 and one.calls_per_second is None
    assert one.elapsed >= 2.0  # trio time: the nap
    assert "calls/s        -" in one.table().splitlines()
    assert json.loads(one.to_json())["calls_per_second"] is None
    assert two.calls_ok == 2 and two.calls_per_second is not None
    assert two.calls_per_second == pytest.approx(2 / two.calls_window)
    assert f"over {two.calls_window:.3f} s" in two.table()
