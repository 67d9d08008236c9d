"""Simulator throughput: scripted ten-turn full simulations per second on one core.

    python benchmarks/simulator.py [--simulations 5000] [--turns 10] [--concurrency 100] [--pin]

A ten-turn simulation is ten customer messages and ten agent replies (20
messages), each message stamped, scanned for stop tokens and closing phrases,
capped by max_messages, then the conversation evaluated by three rules (a
keyword, a regex, a tool call). Workloads, all in one trio run on one thread:

* ``scripted``: scripted customer and scripted agent, run one after another;
* ``agent``: scripted customer against an in-process agent (``on_message`` plus a
  recorded tool call per reply), one after another;
* ``batch``: the ``scripted`` workload through :class:`Batch` at a concurrency
  cap (nursery, limiter, records), no transcripts on disk;
* ``batch+jsonl``: the same, appending every record to a JSONL file.

``--pin`` restricts the process to one CPU. ``cpu_percent`` shows how much of
a core the process got (under contention it is less than 100, and
``sims_per_cpu_s`` is the rate per CPU-second actually used). Prints the machine
facts, a table, and as its last line one JSON object. Target: >= 1,000
simulations/s of wall time for ``scripted``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import emit_json, machine_facts, print_facts, print_table
from orchestrator.simulator import (
    AgentParticipant,
    Batch,
    Contains,
    FullSimulationRunner,
    Intent,
    Matches,
    Outcome,
    Outcomes,
    ParticipantRole,
    ParticipantSpec,
    RuleEvaluator,
    Scenario,
    ScriptedParticipant,
    ToolCalled,
)

TARGET = 1000.0
INTENT = Intent(ParticipantRole.CUSTOMER, "track an order")
OUTCOMES = Outcomes([Outcome("tracked", "the status was given"), Outcome("lost", "no status")])
RULES = (Contains("shipped"), Matches(r"O-\d+"))
OUTCOME_RULES = {"tracked": (Contains("shipped"),)}
SCRIPTED_EVALUATOR = RuleEvaluator(RULES, OUTCOME_RULES, "lost")
TOOL_RULE = ToolCalled("check_order", {"order_id": "O-1"})
AGENT_EVALUATOR = RuleEvaluator((*RULES, TOOL_RULE), OUTCOME_RULES, "lost")


class OrderAgent:
    """A tiny in-process agent: one recorded tool call per reply."""

    __tools__ = {"check_order": None}

    def check_order(self, order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "status": "shipped"}

    def on_message(self, message: str) -> str:
        status = self.check_order("O-1")
        return f"Order {status['order_id']} has {status['status']}."


def customer_turns(turns: int) -> list[str]:
    return [f"Question {i} about order O-1?" for i in range(turns)]


def agent_turns(turns: int) -> list[str]:
    return [f"Order O-1 has shipped (answer {i})." for i in range(turns)]


def full_runner(turns: int, agent: str) -> FullSimulationRunner:
    said = customer_turns(turns)
    if agent == "scripted":
        other: Any = ScriptedParticipant(agent_turns(turns), ParticipantRole.AGENT)
        evaluator = SCRIPTED_EVALUATOR
    else:
        other, evaluator = AgentParticipant(OrderAgent()), AGENT_EVALUATOR
    return FullSimulationRunner(
        ScriptedParticipant(said[1:]), other, said[0], INTENT, OUTCOMES, 2 * turns + 1, evaluator=evaluator
    )


def scenario(turns: int, index: int) -> Scenario:
    return Scenario(
        name=f"bench-{index}",
        intent=INTENT,
        outcomes=OUTCOMES,
        customer=ParticipantSpec(turns=tuple((t,) for t in customer_turns(turns))),
        agent=ParticipantSpec(turns=tuple((t,) for t in agent_turns(turns))),
        expectations=RULES,
        outcome_rules=OUTCOME_RULES,
        default_outcome="lost",
        max_messages=2 * turns + 1,
    )


async def sequential(count: int, turns: int, agent: str) -> int:
    messages = 0
    for _ in range(count):
        result = await full_runner(turns, agent).run()
        assert result.passed, result
        messages += len(result.conversation.messages)
    return messages


async def batched(count: int, turns: int, concurrency: int, transcripts: Path | None) -> int:
    scenarios = [scenario(turns, i) for i in range(count // 10)]
    run = await Batch(scenarios, samples=10, concurrency=concurrency, transcripts=transcripts).run()
    assert all(r.passed for r in run.records) and len(run.records) == len(scenarios) * 10
    return sum(len(r.result.conversation.messages) for r in run.records)


def measure(label: str, count: int, work: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    messages = trio.run(work)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "workload": label,
        "simulations": count,
        "messages": messages,
        "seconds": wall,
        "sims_per_s": count / wall,
        "messages_per_s": messages / wall,
        "cpu_percent": 100 * cpu / wall,
        "sims_per_cpu_s": count / cpu if cpu else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=5000)
    parser.add_argument("--turns", type=int, default=10, help="customer turns (each answered)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--pin", action="store_true", help="run on one CPU (sched_setaffinity)")
    args = parser.parse_args()
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    facts = machine_facts()
    facts["cpus_allowed"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print_facts(facts)
    n, turns = args.simulations, args.turns
    trio.run(sequential, 50, turns, "agent")  # warm-up: imports, regex caches
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure("scripted", n, lambda: sequential(n, turns, "scripted")),
            measure("agent", n, lambda: sequential(n, turns, "agent")),
            measure("batch", n, lambda: batched(n, turns, args.concurrency, None)),
            measure("batch+jsonl", n, lambda: batched(n, turns, args.concurrency, Path(tmp) / "t.jsonl")),
        ]
    headers = ["workload", "simulations", "messages", "seconds", "sims_per_s", "messages_per_s"]
    headers += ["cpu_percent", "sims_per_cpu_s"]
    print(f"\nscripted {turns}-turn full simulations ({2 * turns} messages each), target >= {TARGET:,.0f}/s")
    print_table(headers, [[row[h] for h in headers] for row in rows])
    headline = rows[0]["sims_per_s"]
    emit_json(
        {
            "benchmark": "simulator",
            "turns": turns,
            "simulations": n,
            "concurrency": args.concurrency,
            "sims_per_s": {row["workload"]: round(row["sims_per_s"], 1) for row in rows},
            "messages_per_s": {row["workload"]: round(row["messages_per_s"], 1) for row in rows},
            "sims_per_cpu_s": {row["workload"]: round(row["sims_per_cpu_s"], 1) for row in rows},
            "target_sims_per_s": TARGET,
            "meets_target": headline >= TARGET,
            "cpus_allowed": facts["cpus_allowed"],
        }
    )


if __name__ == "__main__":
    main()
