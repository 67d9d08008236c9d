"""The runtime alone: supervisor, actors, mailboxes and tool executors over in-memory connections.

    python benchmarks/runtime.py [--actors 10000] [--calls 20000]

Measures, at N idle actors: spawn time per actor, RSS per idle actor (the
connection excluded: a NullConnection holds no buffers), and the runtime's
overhead per async and per sync tool call (request in the mailbox to reply
handed to the connection, minus the same round trip through bare memory channels,
measured as process CPU time so a busy machine does not inflate it). Prints the
machine facts, a table, and as its last line one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import emit_json, machine_facts, print_facts, print_table, rss_bytes
from orchestrator import events as ev
from orchestrator.agent import Agent, tool
from orchestrator.metrics import Metrics
from orchestrator.supervisor import Supervisor, SupervisorSettings
from orchestrator.testing import MemoryConnection, MemoryPeer, NullConnection


class BenchAgent(Agent):
    agent_id = "bench"

    @tool("Echo, async")
    async def echo(self, text: str) -> dict[str, str]:
        return {"text": text}

    @tool("Echo, sync (worker thread)")
    def echo_sync(self, text: str) -> dict[str, str]:
        return {"text": text}


async def measure_idle(actors: int) -> dict[str, float]:
    gc.collect()
    supervisor = Supervisor(
        [BenchAgent],
        lambda record: NullConnection(),
        settings=SupervisorSettings(max_conversations=actors + 10),
        metrics=Metrics(CollectorRegistry()),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        for i in range(actors):
            supervisor.start_conversation_nowait(f"c{i}", "bench")
        await trio.testing.wait_all_tasks_blocked()
        spawn = time.perf_counter() - started
        assert supervisor.statistics().by_state["running"] == actors
        gc.collect()
        after = rss_bytes()
        nursery.cancel_scope.cancel()
    return {
        "spawn_us_per_actor": spawn / actors * 1e6,
        "rss_kib_per_idle_actor": (after - before) / actors / 1024,
    }


async def measure_calls(calls: int, tool_name: str) -> float:
    """CPU µs per call (process time: steady on a busy machine), one conversation, back to back."""
    peer = MemoryPeer("c", buffer=1)
    supervisor = Supervisor(
        [BenchAgent],
        lambda record: MemoryConnection(peer),
        metrics=Metrics(CollectorRegistry()),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_conversation("c", "bench")
        await peer.receive()  # tool registration
        args = {"text": "hello"}
        for i in range(200):  # warm up
            await peer.call_tool(f"w{i}", tool_name, args)
        started = time.process_time()
        for i in range(calls):
            await peer.request_tool(f"c{i}", tool_name, args)
            await peer.receive()
        elapsed = time.process_time() - started
        nursery.cancel_scope.cancel()
    return elapsed / calls * 1e6


async def measure_floor(calls: int) -> float:
    """The same round trip through the same in-memory connection with no runtime at all.

    The connection's reader answers each request inline: no supervisor, actor,
    mailbox, executor, validation, cache, timeout or metrics. What the runtime
    adds on top of this is its overhead.
    """
    peer = MemoryPeer("c", buffer=1)
    connection = MemoryConnection(peer)

    async def answer(event: Any) -> None:
        if isinstance(event, ev.ToolCallRequest):
            await connection.send(ev.ToolResult(event.call_id, event.tool_name, {"text": "hello"}))

    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run, answer)
        args = {"text": "hello"}
        for i in range(200):
            await peer.call_tool(f"w{i}", "echo", args)
        started = time.process_time()
        for i in range(calls):
            await peer.request_tool(f"c{i}", "echo", args)
            await peer.receive()
        elapsed = time.process_time() - started
        nursery.cancel_scope.cancel()
    return elapsed / calls * 1e6


async def main(actors: int, calls: int) -> None:
    facts = machine_facts()
    print_facts(facts)
    idle = await measure_idle(actors)
    floor = await measure_floor(calls)
    async_call = await measure_calls(calls, "echo")
    sync_call = await measure_calls(max(calls // 4, 1000), "echo_sync")
    figures = {
        "actors": actors,
        "spawn_us_per_actor": round(idle["spawn_us_per_actor"], 2),
        "rss_kib_per_idle_actor": round(idle["rss_kib_per_idle_actor"], 2),
        "async_tool_overhead_us": round(async_call - floor, 2),
        "sync_tool_overhead_us": round(sync_call - floor, 2),
        "async_call_round_trip_us": round(async_call, 2),
        "harness_floor_us": round(floor, 2),
    }
    print()
    print_table(
        ["figure", "value", "target"],
        [
            ["actors", actors, ""],
            ["spawn µs/actor", figures["spawn_us_per_actor"], ""],
            ["RSS KiB/idle actor", figures["rss_kib_per_idle_actor"], "<= 10"],
            ["async tool overhead µs", figures["async_tool_overhead_us"], "<= 25"],
            ["sync tool overhead µs", figures["sync_tool_overhead_us"], ""],
            ["harness floor µs", figures["harness_floor_us"], ""],
        ],
    )
    emit_json(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actors", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=20_000)
    opts = parser.parse_args()
    trio.run(main, opts.actors, opts.calls)
