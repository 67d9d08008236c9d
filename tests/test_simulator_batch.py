"""Batches: concurrency cap, pass^k, JSONL transcripts, resume, reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from rich.console import Console

from orchestrator.simulator import (
    Batch,
    BatchSummary,
    Contains,
    EndReason,
    Intent,
    Outcome,
    Outcomes,
    ParticipantRole,
    ParticipantSpec,
    Scenario,
    ScenarioError,
    SimulationRecord,
    from_json,
    junit_xml,
    pass_hat_k,
    render_report,
    summary_json,
)

INTENT = Intent(ParticipantRole.CUSTOMER, "book a room")
OUTCOMES = Outcomes([Outcome("booked", "booked"), Outcome("failed", "not booked")])


class BookingAgent:
    """Confirms good requests after a second of trio time; tracks concurrency."""

    active = 0
    peak = 0
    created = 0

    def __init__(self) -> None:
        BookingAgent.created += 1

    async def on_message(self, message: str) -> str:
        BookingAgent.active += 1
        BookingAgent.peak = max(BookingAgent.peak, BookingAgent.active)
        try:
            await trio.sleep(1)
        finally:
            BookingAgent.active -= 1
        if message == "crash":
            raise RuntimeError("agent bug")
        return "Booking confirmed." if message == "please book" else "Sorry, I cannot."

    @classmethod
    def reset(cls) -> None:
        cls.active = cls.peak = cls.created = 0


def scenario(name: str, first_turn: list[str]) -> Scenario:
    return Scenario(
        name=name,
        intent=INTENT,
        outcomes=OUTCOMES,
        customer=ParticipantSpec(turns=(tuple(first_turn), ("thanks",))),
        expectations=(Contains("confirmed"),),
        outcome_rules={"booked": (Contains("confirmed"),)},
        default_outcome="failed",
        max_messages=10,
    )


def mixed_scenarios() -> list[Scenario]:
    always = [scenario(f"always-{i}", ["please book"]) for i in range(40)]
    # Alternatives are picked round-robin by sample: samples 0, 2, 4 of 5 pass.
    sometimes = [scenario(f"sometimes-{i}", ["please book", "nonsense"]) for i in range(30)]
    never = [scenario(f"never-{i}", ["nonsense"]) for i in range(30)]
    return always + sometimes + never


def test_pass_hat_k_formula() -> None:
    assert pass_hat_k(5, 5, 5) == 1.0
    assert pass_hat_k(3, 5, 1) == pytest.approx(0.6)
    assert pass_hat_k(3, 5, 2) == pytest.approx(3 / 10)
    assert pass_hat_k(3, 5, 4) == 0.0
    with pytest.raises(ValueError):
        pass_hat_k(6, 5, 1)


async def test_batch_of_500_at_concurrency_100(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    BookingAgent.reset()
    transcripts = tmp_path / "out" / "transcripts.jsonl"
    batch = Batch(
        mixed_scenarios(), samples=5, concurrency=100, agent_factory=BookingAgent, transcripts=transcripts
    )
    start = trio.current_time()
    run = await batch.run()
    assert len(run.records) == 500 and run.resumed == 0
    assert BookingAgent.created == 500 and BookingAgent.peak == 100
    # 500 simulations of two 1-second agent turns, 100 at a time: five waves.
    assert trio.current_time() - start == pytest.approx(10.0)
    assert [(r.scenario, r.sample) for r in run.records[:6]] == [("always-0", k) for k in range(5)] + [
        ("always-1", 0)
    ]
    lines = transcripts.read_text().splitlines()
    assert len(lines) == 500
    assert {(r.scenario, r.sample) for r in map(lambda line: from_json(line, SimulationRecord), lines)} == {
        (r.scenario, r.sample) for r in run.records
    }

    summary = BatchSummary.from_run(run, samples=5)
    # By hand: 40 scenarios pass 5/5, 30 pass 3/5, 30 pass 0/5.
    #   pass^1 = (40*1 + 30*3/5) / 100 = 0.58
    #   pass^2 = (40*1 + 30*C(3,2)/C(5,2)) / 100 = (40 + 30*3/10) / 100 = 0.49
    #   pass^3 = (40 + 30*1/10) / 100 = 0.43;  pass^4 = pass^5 = 40/100 = 0.40
    assert summary.pass_hat_k == pytest.approx({1: 0.58, 2: 0.49, 3: 0.43, 4: 0.40, 5: 0.40})
    assert (summary.total, summary.passed, summary.pass_rate) == (500, 290, pytest.approx(0.58))
    assert summary.outcomes == {"booked": 290, "failed": 210}
    assert summary.end_reasons == {"customer_finished": 500}
    assert summary.meets(0.5) and not summary.meets(0.6)


class Stopper:
    """Cancels the batch after ``limit`` finished simulations."""

    def __init__(self, scope: trio.CancelScope, limit: int) -> None:
        self.scope, self.limit, self.finished = scope, limit, 0

    def batch_started(self, total: int, resumed: int) -> None:
        self.started = (total, resumed)

    def simulation_finished(self, record: SimulationRecord) -> None:
        self.finished += 1
        if self.finished >= self.limit:
            self.scope.cancel()


async def test_stopped_batch_resumes(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    BookingAgent.reset()
    transcripts = tmp_path / "transcripts.jsonl"
    scenarios = [scenario(f"s{i}", ["please book", "nonsense"]) for i in range(10)]
    with trio.CancelScope() as scope:
        stopper = Stopper(scope, limit=7)
        batch = Batch(
            scenarios, samples=2, concurrency=3, agent_factory=BookingAgent, transcripts=transcripts
        )
        batch.observer = stopper
        await batch.run()
    assert scope.cancelled_caught
    kept = len(transcripts.read_text().splitlines())
    assert 7 <= kept < 20  # simulations finishing in the same instant are kept too
    with transcripts.open("a") as handle:  # a crash mid-write leaves a torn line
        handle.write('{"scenario": "s9", "sam')

    BookingAgent.reset()
    observer = Stopper(trio.CancelScope(), limit=10**6)
    resumed = Batch(scenarios, samples=2, concurrency=3, agent_factory=BookingAgent, transcripts=transcripts)
    resumed.observer = observer
    run = await resumed.run()
    assert observer.started == (20, kept)
    assert run.resumed == kept and BookingAgent.created == 20 - kept
    assert len(run.records) == 20 and len({(r.scenario, r.sample) for r in run.records}) == 20
    assert len(transcripts.read_text().splitlines()) == 20  # torn line cut, the rest appended

    # An edited scenario no longer matches its records and runs again; the rest are kept.
    BookingAgent.reset()
    scenarios[0] = scenario("s0", ["please book"])
    again = await Batch(scenarios, samples=2, agent_factory=BookingAgent, transcripts=transcripts).run()
    assert BookingAgent.created == 2 and again.resumed == 18


async def test_failures_errors_and_reports(autojump_clock: trio.testing.MockClock) -> None:
    scenarios = [
        scenario("good", ["please book"]),
        scenario("bad", ["nonsense"]),
        scenario("crash", ["crash"]),
    ]
    run = await Batch(scenarios, samples=2, agent_factory=BookingAgent).run()
    by_name = {r.scenario: r for r in run.records}
    assert by_name["good"].passed and not by_name["bad"].passed
    crashed = by_name["crash"].result
    assert crashed.end_reason is EndReason.ERROR and "agent bug" in crashed.end_detail
    summary = BatchSummary.from_run(run, samples=2)

    root = ET.fromstring(junit_xml(run.records, summary))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "2", "2")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases[:2]] == [
        ("good", "sample-0"),
        ("good", "sample-1"),
    ]
    failure = cases[2].find("failure")
    assert failure is not None and failure.get("message") == "agent says 'confirmed': not found"
    error = cases[4].find("error")
    assert error is not None and "agent bug" in (error.get("message") or "")
    out = cases[0].find("system-out")
    assert out is not None and "agent: Booking confirmed." in (out.text or "")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["pass^1"] == "0.3333" and properties["pass^2"] == "0.3333"

    document = json.loads(summary_json(summary))
    assert document["pass_rate"] == pytest.approx(1 / 3) and document["pass_hat_k"]["2"] == pytest.approx(
        1 / 3
    )
    assert document["end_reasons"] == {"customer_finished": 4, "error": 2}

    console = Console(record=True, width=140)
    render_report(summary, run.records, console)
    text = console.export_text()
    assert "good" in text and "2/2" in text and "0/2" in text
    assert "outcomes:    booked 2, failed 2, none 2" in text  # a crashed run has no outcome
    assert "end reasons: customer_finished 4, error 2" in text
    assert "2/6 passed" in text and "pass^2 0.333" in text
    assert "error: agent raised RuntimeError: agent bug" in text
    # A batch under a second says its milliseconds, not "0.0 s", on one line at any width.
    narrow = Console(record=True, width=30)
    render_report(attrs.evolve(summary, duration_seconds=0.024), run.records, narrow)
    assert "2/6 passed (pass rate 33.3%) in 24 ms   pass^1 0.333" in narrow.export_text()
    # Found by a user: with 300 samples the line held pass^1 to pass^300.
    many = attrs.evolve(summary, pass_hat_k={k: 1.0 for k in range(1, 301)})
    wide = Console(record=True, width=140)
    render_report(many, run.records, wide)
    shown = [word for word in wide.export_text().split() if word.startswith("pass^")]
    assert shown == [f"pass^{k}" for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 300)]


async def test_batch_checks_what_scenarios_need() -> None:
    with pytest.raises(ScenarioError, match="needs an agent"):
        await Batch([scenario("x", ["hi"])]).run()
    llm = Scenario("y", INTENT, customer=ParticipantSpec(kind="llm"), agent=ParticipantSpec(turns=(("ok",),)))
    with pytest.raises(ScenarioError, match="needs an LLM"):
        await Batch([llm]).run()
    with pytest.raises(ValueError):
        Batch([llm], samples=0)
