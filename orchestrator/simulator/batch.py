"""Batch runs: every scenario ``samples`` times, in parallel under a concurrency cap.

Each finished simulation is appended as one JSON line (a
:class:`SimulationRecord`) to the transcripts file as soon as it finishes (one
writer task, shielded, writing whatever lines are waiting), so a stopped batch
loses nothing: run it again and the simulations already in the file are skipped. A
record counts only if its scenario's fingerprint (a hash of the scenario as
parsed) still matches, and, for a scenario that reaches the agent under test, the
agent's (``agent_fingerprint``, a hash of its code and spec): editing either reruns
it, and :attr:`BatchRun.not_resumed` says why. A torn last line (a crash
mid-write) is cut off. Records come back in scenario order, then sample.

A simulation that fails (agent raises, LLM unreachable) is a record with end
reason ``error``, not a batch failure. Scenario mistakes (an LLM scenario without
an LLM client, no agent to test) raise :class:`ScenarioError` before anything runs.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import cattrs
import trio

from .agents import AgentFactory
from .builder import build_runner, check_runnable, uses_agent_class
from .channels import Channel
from .errors import ParticipantError
from .llm import LLMClient
from .models import Conversation, ConversationResult, EndReason, from_json, to_json
from .specs import Scenario


@attrs.frozen
class SimulationRecord:
    """One finished simulation, as stored in the transcripts JSONL file."""

    scenario: str
    sample: int
    fingerprint: str
    passed: bool
    result: ConversationResult
    agent_fingerprint: str = ""


@attrs.frozen
class BatchRun:
    """The records of a batch (resumed ones included) and how many were resumed.

    ``not_resumed`` counts the simulations that had a record but ran again, by why:
    ``"scenario"`` (it was edited since) or ``"agent"`` (the agent was).
    """

    records: tuple[SimulationRecord, ...]
    resumed: int
    duration_seconds: float
    not_resumed: Mapping[str, int] = attrs.field(factory=dict)


class BatchObserver(Protocol):
    """Progress hooks (a progress bar): totals at the start, then each record."""

    def batch_started(self, total: int, resumed: int) -> None: ...

    def simulation_finished(self, record: SimulationRecord) -> None: ...


def scenario_fingerprint(scenario: Scenario) -> str:
    """A short hash of everything that defines ``scenario``."""
    return hashlib.sha256(repr(scenario).encode()).hexdigest()[:16]


def _read_records(path: Path) -> list[SimulationRecord]:
    """The intact records in ``path``; a torn final line is truncated away."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(data))
    records = []
    for line in data.splitlines():
        try:
            records.append(from_json(line, SimulationRecord))
        except (ValueError, TypeError, KeyError, cattrs.BaseValidationError):
            continue  # a stale or foreign line only means "run that one again"
    return records


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)


@attrs.define(eq=False)
class Batch:
    """Runs each of ``scenarios`` ``samples`` times; at most ``concurrency`` at once.

    The agent under test is ``agent_factory`` (full runs, in process) or the
    agent behind ``channel`` (hybrid runs); scenarios with a simulated agent need
    neither. ``llm`` serves LLM participants and the judge. ``transcripts`` is
    the JSONL file to append to and resume from (None: keep nothing on disk);
    ``agent_fingerprint`` identifies the agent's code (see :func:`.agents.agent_fingerprint`).
    """

    scenarios: Sequence[Scenario]
    samples: int = 1
    concurrency: int = 10
    agent_factory: AgentFactory | None = None
    channel: Channel | None = None
    llm: LLMClient | None = None
    transcripts: Path | None = None
    observer: BatchObserver | None = None
    agent_fingerprint: str = ""

    def __attrs_post_init__(self) -> None:
        if self.samples < 1 or self.concurrency < 1:
            raise ValueError("samples and concurrency must be at least 1")

    async def run(self) -> BatchRun:
        """Run what is not done yet; return every record. Cancellation stops the batch.

        Records already appended survive cancellation, so the next run resumes.
        """
        check_runnable(self.scenarios, self.agent_factory, self.channel, self.llm)
        started = trio.current_time()
        fingerprints = {s.name: scenario_fingerprint(s) for s in self.scenarios}
        agents = {s.name: self.agent_fingerprint if uses_agent_class(s) else "" for s in self.scenarios}
        done: dict[tuple[str, int], SimulationRecord] = {}
        stale: dict[tuple[str, int], str] = {}
        if self.transcripts is not None:
            for record in await trio.to_thread.run_sync(_read_records, self.transcripts):
                key = (record.scenario, record.sample)
                if record.scenario not in fingerprints or record.sample >= self.samples:
                    continue
                if fingerprints[record.scenario] != record.fingerprint:
                    stale[key] = "scenario"
                elif agents[record.scenario] != record.agent_fingerprint:
                    stale[key] = "agent"
                else:
                    done[key] = record
        not_resumed = Counter(why for key, why in stale.items() if key not in done)
        jobs = [(s, k) for s in self.scenarios for k in range(self.samples) if (s.name, k) not in done]
        resumed = len(done)
        if self.observer is not None:
            self.observer.batch_started(len(self.scenarios) * self.samples, resumed)
        limiter = trio.CapacityLimiter(self.concurrency)
        lines, queued = trio.open_memory_channel[str](math.inf)
        async with trio.open_nursery() as outer:
            if self.transcripts is not None:
                outer.start_soon(self._write, self.transcripts, queued)
            with lines:  # closing it lets the writer finish once the queue is empty
                async with trio.open_nursery() as nursery:
                    for scenario, sample in jobs:
                        marks = (fingerprints[scenario.name], agents[scenario.name])
                        job = (scenario, sample, marks, limiter, done, lines)
                        nursery.start_soon(self._job, *job)
        order = {s.name: index for index, s in enumerate(self.scenarios)}
        records = sorted(done.values(), key=lambda r: (order[r.scenario], r.sample))
        return BatchRun(tuple(records), resumed, trio.current_time() - started, dict(not_resumed))

    async def _job(
        self,
        scenario: Scenario,
        sample: int,
        fingerprints: tuple[str, str],
        limiter: trio.CapacityLimiter,
        done: dict[tuple[str, int], SimulationRecord],
        lines: trio.MemorySendChannel[str],
    ) -> None:
        async with limiter:
            result = await self.simulate(scenario, sample)
        scenario_mark, agent_mark = fingerprints
        record = SimulationRecord(scenario.name, sample, scenario_mark, result.passed, result, agent_mark)
        if self.transcripts is not None:
            lines.send_nowait(to_json(record) + "\n")
        done[(scenario.name, sample)] = record
        if self.observer is not None:
            self.observer.simulation_finished(record)

    @staticmethod
    async def _write(path: Path, queued: trio.MemoryReceiveChannel[str]) -> None:
        """Append queued records, as many per write as are waiting.

        Shielded: records of simulations that finished are written even when the
        batch is cancelled; the writer ends when the queue is closed and empty.
        """
        with trio.CancelScope(shield=True):
            async with queued:
                async for line in queued:
                    pending = [line]
                    while True:
                        try:
                            pending.append(queued.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await trio.to_thread.run_sync(_append, path, "".join(pending))

    async def simulate(self, scenario: Scenario, sample: int) -> ConversationResult:
        """Run sample ``sample`` of ``scenario`` once and return its result."""
        try:
            runner = build_runner(
                scenario, sample, agent_factory=self.agent_factory, channel=self.channel, llm=self.llm
            )
        except ParticipantError as exc:
            return ConversationResult(Conversation(()), 0.0, EndReason.ERROR, str(exc))
        return await runner.run()
