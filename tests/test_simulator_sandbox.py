"""Hybrid simulations through the sandbox: real agents over real wire protocols.

The sandbox and the orchestrator (or a real SDK in a subprocess) talk over real
loopback WebSockets, so these run on trio's real clock; the simulated customer
answers at once (no typing time, no settle), so nothing sleeps and every wait is
bounded with ``fail_after``. Only the SDK test takes real time: its agent is a
separate Python process that has to start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from examples.booking import BookingAgent
from examples.weather import WeatherAgent
from orchestrator.agent import Agent
from orchestrator.sandbox import SandboxServer
from orchestrator.simulator import (
    Batch,
    Completion,
    CompletionRequest,
    Contains,
    EndReason,
    FullSimulationRunner,
    HybridSimulationRunner,
    HybridTiming,
    Intent,
    LLMClient,
    LLMToolAgent,
    LLMToolCall,
    Matches,
    Outcome,
    Outcomes,
    ParticipantError,
    ParticipantRole,
    RuleEvaluator,
    SandboxBatch,
    SandboxChannel,
    ScriptedParticipant,
    TerminationPolicy,
    build_tool_runner,
    load_scenarios,
    open_session,
    parse_scenarios,
    serve_over_sandbox,
)
from orchestrator.simulator.cli import simulate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"
SDK_AGENTS = Path(__file__).resolve().parent / "sdk_agents"
CUSTOMER, AGENT = ParticipantRole.CUSTOMER, ParticipantRole.AGENT
AT_ONCE = HybridTiming(reply_delay=0.0, settle=0.0)
TIMEOUT = 20.0
SDK_TIMEOUT = 60.0


def hybrid(
    channel: SandboxChannel, turns: list[str], evaluator: RuleEvaluator | None = None
) -> HybridSimulationRunner:
    outcomes = Outcomes([Outcome("answered", "a temperature was given"), Outcome("unanswered", "none")])
    return HybridSimulationRunner(
        ScriptedParticipant(turns[1:]),
        channel,
        turns[0],
        Intent(CUSTOMER, "learn the weather"),
        outcomes,
        max_messages=10,
        evaluator=evaluator,
        termination=TerminationPolicy(idle_timeout=TIMEOUT),
        timing=AT_ONCE,
    )


def spoken(result_messages: object) -> list[tuple[ParticipantRole, str]]:
    return [(m.sender, m.content) for m in result_messages]  # type: ignore[attr-defined]


async def test_hybrid_run_against_the_orchestrator_over_arinova() -> None:
    evaluator = RuleEvaluator(
        expectations=(Contains("Right now in Paris"), Matches(r"humidity \d+%"), Contains("up to 27°C")),
        outcome_rules={"answered": (Matches(r"\d+(\.\d+)?°C"),)},
        default_outcome="unanswered",
        expected_outcomes=("answered",),
    )
    turns = ["What's the weather in Paris?", "And the forecast for Lisbon tomorrow?", "Thanks, bye!"]
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(WeatherAgent) as channel:
            result = await hybrid(channel, turns, evaluator).run()
            server = channel.server
    assert spoken(result.conversation.messages) == [
        (CUSTOMER, "What's the weather in Paris?"),
        (AGENT, "Right now in Paris: 18°C and partly cloudy, humidity 64%."),
        (CUSTOMER, "And the forecast for Lisbon tomorrow?"),
        (AGENT, "Tomorrow in Lisbon: sunny, up to 27°C."),
        (CUSTOMER, "Thanks, bye!"),
    ]
    assert result.end_reason is EndReason.CLOSING_PHRASE and result.end_detail == "customer: 'bye'"
    assert result.passed and result.evaluation is not None
    assert result.conversation.outcome is not None and result.conversation.outcome.name == "answered"
    # It went over the wire: the sandbox sent tasks and collected streamed chunks.
    (log,) = server.recorder.conversations.values()
    assert log.platform == "arinova" and log.agent_id == "weather"
    first = log.replies[0]
    assert first.status == "ok" and len(first.chunks) == 3 and "".join(first.chunks) == first.reply
    assert [e.event for e in log.entries if e.direction == "out"][:2] == ["task", "task"]
    assert server.recorder.violations == 0


async def test_an_ended_session_ends_its_arinova_conversation_in_the_orchestrator() -> None:
    # Found in CI: Arinova never says a conversation ended, so each finished simulation
    # stayed hosted until its actor idled out (120 s), and a long batch filled the
    # in-process orchestrator ("not admitted (capacity)") before the first ones left.
    registry = CollectorRegistry()
    turns = ["What's the weather in Paris?", "Thanks, bye!"]
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(WeatherAgent, registry=registry) as channel:
            for _ in range(3):
                result = await hybrid(channel, turns).run()
                assert result.end_reason is EndReason.CLOSING_PHRASE
            await trio.testing.wait_all_tasks_blocked(0.05)  # the end is a message to each mailbox
            ended = {"agent": "weather", "outcome": "completed"}
            assert registry.get_sample_value("orchestrator_conversations_ended_total", ended) == 3
    rejected = registry.get_sample_value("orchestrator_admissions_rejected_total", {"reason": "capacity"})
    assert rejected is None


async def test_sandbox_session_sends_overlapping_messages_at_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(WeatherAgent) as channel, open_session(channel) as session:
            replies = session.subscribe()
            for text in ("Paris?", "Berlin?"):
                await session.send(ScriptedParticipant([text]).make_message(text, session.get_conversation()))
            # Both tasks are out before either reply. The agent streams them at the same
            # time (a message that waits hands the reading on, as a call does), so which
            # reply completes first is the scheduler's to decide.
            got = [(await replies.receive()).content for _ in range(2)]
    assert sorted(got) == [
        "Right now in Berlin: 17.5°C and partly cloudy, humidity 61%.",
        "Right now in Paris: 18°C and partly cloudy, humidity 64%.",
    ]
    assert [m.sender for m in session.get_conversation().messages] == [CUSTOMER, CUSTOMER, AGENT, AGENT]
    assert channel.server.conversation(session.session_id).outcome == "completed"


class Grumpy(Agent):
    """Refuses one word."""

    agent_id = "grumpy"

    async def on_message(self, message: str) -> str:
        if "crash" in message:
            raise RuntimeError("boom")
        return f"ok: {message}"


async def test_agent_error_reply_ends_the_run_with_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(Grumpy) as channel:
            result = await hybrid(channel, ["hello", "crash now", "still there?"]).run()
    assert spoken(result.conversation.messages) == [
        (CUSTOMER, "hello"),
        (AGENT, "ok: hello"),
        (CUSTOMER, "crash now"),
    ]
    assert result.end_reason is EndReason.ERROR
    assert "the agent answered with an error" in result.end_detail and "boom" in result.end_detail
    assert not result.passed


async def test_scripted_driver_calls_the_orchestrators_tools_over_conversimple() -> None:
    scenario_file = load_scenarios(SCENARIOS / "booking.toml")
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(BookingAgent) as channel:
            run = await SandboxBatch(scenario_file.scenarios, channel=channel).run()
            server = channel.server
    failures = {r.scenario: r.result for r in run.records if not r.passed}
    assert not failures and len(run.records) == 5
    results = {r.scenario: r.result for r in run.records}
    # The business rule is an error reply over the wire, recorded on the agent message it produced.
    suite = results["suite-too-long"].conversation
    (message,) = [m for m in suite.messages if m.tool_calls]
    assert message.sender is AGENT
    check, hold = message.tool_calls
    assert check.name == "check_availability" and check.succeeded
    assert hold.name == "hold_room" and dict(hold.arguments)["nights"] == 3
    assert hold.error is not None and "suites can be held for at most 2 nights" in hold.error
    assert "at most 2 nights" in message.content
    assert suite.outcome is not None and suite.outcome.name == "not-booked"
    booked = results["double-room-happy-path"].conversation
    assert [c.name for c in booked.tool_calls] == ["check_availability", "hold_room", "confirm_booking"]
    assert booked.tool_calls[-1].result["booking_id"] == "B-1"
    # Each scenario was one Conversimple conversation whose calls the sandbox carried.
    logs = [log for log in server.recorder.conversations.values() if log.platform == "conversimple"]
    assert len(logs) == 5 and all(log.outcome == "completed" for log in logs)
    (suite_log,) = [
        log for log in logs if [c.tool_name for c in log.calls] == ["check_availability", "hold_room"]
    ]
    assert [c.status for c in suite_log.calls] == ["ok", "error"]
    assert [e.event for e in suite_log.entries if e.direction == "out"].count("tool_call_request") == 2
    assert "conversation_ended" in [e.payload.get("event") for e in suite_log.entries]
    # The same scenarios in process say the same things: the wire changes nothing.
    local = await Batch(scenario_file.scenarios, agent_factory=BookingAgent).run()
    for remote_record, local_record in zip(run.records, local.records, strict=True):
        remote_messages = remote_record.result.conversation.messages
        assert spoken(remote_messages) == spoken(local_record.result.conversation.messages)


class WeatherDesk(LLMClient):
    """A platform LLM: calls get_weather for the city asked about, then reads the result out."""

    def __init__(self) -> None:
        self.requests: list[CompletionRequest] = []

    @property
    def identity(self) -> str:
        return "test#weather-desk"

    async def complete(self, request: CompletionRequest) -> Completion:
        await trio.lowlevel.checkpoint()
        self.requests.append(request)
        last = request.messages[-1]
        if last.role == "user":
            city = last.content.rstrip("?").split()[-1]
            arguments = json.dumps({"city": city, "units": "imperial"})
            return Completion("", (LLMToolCall(f"call-{len(self.requests)}", "get_weather", arguments),))
        result = json.loads(last.content)
        if "error" in result:
            return Completion(f"Sorry: {result['error']}")
        return Completion(f"{result['city']}: {result['temperature']}°{result['temperature_unit']}.")


async def test_llm_driver_calls_the_orchestrators_tools_unchanged() -> None:
    llm = WeatherDesk()
    with trio.fail_after(TIMEOUT):
        async with serve_over_sandbox(WeatherAgent) as channel, channel.open_tools() as tools:
            schemas = tools.schemas()
            runner = FullSimulationRunner(
                ScriptedParticipant(["And in Atlantis?"]),
                LLMToolAgent(llm, tools),
                "Weather in Paris?",
                Intent(CUSTOMER, "learn the weather"),
                Outcomes(),
            )
            result = await runner.run()
            cid = tools.conversation_id
        log = channel.server.conversation(cid)
    # The schemas are what the orchestrator registered over the wire, offered to the LLM as is.
    assert {schema["name"] for schema in schemas} == {"get_weather", "get_forecast"}
    assert llm.requests[0].tools == tuple(schemas)
    assert "Current weather and a short forecast" in llm.requests[0].messages[0].content
    assert [m.content for m in result.conversation.messages] == [
        "Weather in Paris?",
        "Paris: 64.4°F.",
        "And in Atlantis?",
        "Sorry: unknown city 'Atlantis'; I know Amsterdam, Berlin, Lisbon, London, New York, Paris, Tokyo",
    ]
    first, second = (m.tool_calls for m in result.conversation.messages[1::2])
    assert [(c.name, dict(c.arguments), c.succeeded) for c in (*first, *second)] == [
        ("get_weather", {"city": "Paris", "units": "imperial"}, True),
        ("get_weather", {"city": "Atlantis", "units": "imperial"}, False),
    ]
    assert result.end_reason is EndReason.CUSTOMER_FINISHED
    assert [c.status for c in log.calls] == ["ok", "error"] and log.outcome == "completed"
    assert "conversation_ended" in [e.payload.get("event") for e in log.entries]


async def test_open_tools_without_an_agent_fails_after_register_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = SandboxServer(register_timeout=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        channel = SandboxChannel(server, "nobody")
        with pytest.raises(ParticipantError, match="no agent 'nobody' registered tools within 5 s"):
            async with channel.open_tools():
                pytest.fail("no agent is there to register")
        scenario_file = load_scenarios(SCENARIOS / "booking.toml")
        run = await SandboxBatch(scenario_file.scenarios[:1], channel=channel).run()
        nursery.cancel_scope.cancel()
    (record,) = run.records
    assert record.result.end_reason is EndReason.ERROR and "registered tools" in record.result.end_detail
    assert {log.outcome for log in server.recorder.conversations.values()} == {"unregistered"}


@asynccontextmanager
async def sdk_process(script: str, *args: str, log: Path) -> AsyncIterator[trio.Process]:
    """A real SDK agent in its own process (it is asyncio); killed on the way out."""
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(SDK_AGENTS / script), *args], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        except BaseException:
            output = await trio.Path(log).read_text(errors="replace")
            sys.stderr.write(f"--- {script} output ---\n{output[-8000:]}\n")
            raise
        finally:
            process.kill()
            await process.wait()


@pytest.mark.slow
async def test_hybrid_run_against_the_real_arinova_sdk(tmp_path: Path) -> None:
    turns = ["hello there sandbox", "one two three four", "ünïcødé ✓ works", "ok bye"]
    evaluator = RuleEvaluator(expectations=(Contains("one two three four"), Contains("ünïcødé ✓ works")))
    server = SandboxServer(bot_tokens={"echo-token": "echo"})
    with trio.fail_after(SDK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async with sdk_process(
                "run_arinova.py", server.arinova_url, "echo-token", log=tmp_path / "sdk.log"
            ):
                # The first task waits in the sandbox until the SDK's bot has connected.
                result = await hybrid(SandboxChannel(server, "echo"), turns, evaluator).run()
            nursery.cancel_scope.cancel()
    assert spoken(result.conversation.messages) == [
        (CUSTOMER, "hello there sandbox"),
        (AGENT, "hello there sandbox"),
        (CUSTOMER, "one two three four"),
        (AGENT, "one two three four"),
        (CUSTOMER, "ünïcødé ✓ works"),
        (AGENT, "ünïcødé ✓ works"),
        (CUSTOMER, "ok bye"),
    ]
    assert result.end_reason is EndReason.CLOSING_PHRASE and result.passed
    (log,) = server.recorder.conversations.values()
    answered = [r for r in log.replies if r.status == "ok"]
    assert [r.content for r in answered][:3] == turns[:3]
    # The SDK streamed each reply word by word before completing it.
    assert answered[1].chunks == ["one ", "two ", "three ", "four"]
    assert server.recorder.violations == 0


SDK_SCENARIO = """
[[scenario]]
name = "sdk-tools"
intent = "exercise the SDK agent's tools"
expect = [
    { tool = "add", args = { a = 2, b = 40 }, succeeded = true },
    { tool = "fail", succeeded = false },
    { says = "card declined" },
]
[scenario.customer]
turns = ["add 2 and 40 please", "now pay", "bye"]
[[scenario.agent.turns]]
tools = [{ name = "add", args = { a = 2, b = 40 } }, { name = "echo", args = { text = "ünïcødé ✓" } }]
say = "{add[sum]}, and {echo[text]}"
[[scenario.agent.turns]]
tools = [{ name = "fail", args = { message = "card declined" } }]
say = "paid"
on_error = "Payment failed: {error}"
"""


@pytest.mark.slow
async def test_scripted_driver_against_the_real_conversimple_sdk(tmp_path: Path) -> None:
    (scenario,) = parse_scenarios(tomllib.loads(SDK_SCENARIO)).scenarios
    server = SandboxServer()
    with trio.fail_after(SDK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            log = tmp_path / "sdk.log"
            # The conversation is announced once the SDK's dispatcher has joined.
            async with (
                sdk_process("run_conversimple.py", "dispatcher", server.conversimple_url, "k", log=log),
                SandboxChannel(server, "sdk-echo").open_tools() as tools,
            ):
                schemas = tools.schemas()
                result = await build_tool_runner(scenario, 0, tools).run()
            nursery.cancel_scope.cancel()
    assert {schema["name"] for schema in schemas} == {"echo", "add", "fail"}
    assert [m.content for m in result.conversation.messages] == [
        "add 2 and 40 please",
        "42, and ünïcødé ✓",
        "now pay",
        "Payment failed: card declined",
        "bye",
    ]
    assert [(c.name, c.result, c.error) for c in result.conversation.tool_calls] == [
        ("add", {"sum": 42}, None),
        ("echo", {"text": "ünïcødé ✓"}, None),
        ("fail", None, "card declined"),
    ]
    assert result.passed and result.end_reason is EndReason.CLOSING_PHRASE
    assert server.recorder.duplicates == 0 and server.recorder.violations == 0


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_cli_via_sandbox_serves_the_agent_and_passes(in_tmp: Path) -> None:
    out = in_tmp / "out"
    args = [
        str(SCENARIOS / "weather_hybrid.toml"),
        "--via-sandbox",
        "--agent",
        f"{ROOT}/examples/weather.py:WeatherAgent",
        "--samples",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(simulate, [*args, "--pass-rate", "1.0"])
    assert result.exit_code == 0, result.output
    assert "serves 'weather' over loopback" in result.output
    assert "3/3 passed" in result.output and "closing_phrase 3" in result.output
    assert len((out / "transcripts.jsonl").read_text().splitlines()) == 3


def test_cli_via_sandbox_usage_errors(in_tmp: Path) -> None:
    (in_tmp / "agent.py").write_text(
        "class Parrot:\n    def on_message(self, message):\n        return message\n"
    )
    (in_tmp / "s.toml").write_text("[[scenario]]\nname = 'x'\ncustomer = { turns = ['hi'] }\n")
    no_agent = CliRunner().invoke(simulate, ["s.toml", "--via-sandbox"])
    assert no_agent.exit_code == 2 and "needs an agent to serve" in no_agent.output
    not_ours = CliRunner().invoke(simulate, ["s.toml", "--via-sandbox", "--agent", "agent.py:Parrot"])
    assert not_ours.exit_code == 2 and "is not an orchestrator Agent" in not_ours.output


@pytest.mark.slow
def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("signum", "ignored_at_start", "status"),
    [
        (signal.SIGINT, False, 130),
        # Found in CI, which starts commands as background jobs of a shell without job
        # control, so with SIGINT ignored: the signal never reached the batch, which ran
        # on to the end (and filled the orchestrator, see above).
        (signal.SIGINT, True, 130),
        (signal.SIGTERM, False, 143),
    ],
    ids=["ctrl-c", "ctrl-c-in-a-background-job", "sigterm"],
)
def test_a_signal_stops_a_sandbox_simulation_quietly_and_keeps_what_finished(
    tmp_path: Path, signum: signal.Signals, ignored_at_start: bool, status: int
) -> None:
    # Found by a user: exit status 1 (a failed simulation's), a trio traceback, and one
    # "link failed for good" line per conversation as the sandbox went before the agent.
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "orchestrator", "simulate",
        str(ROOT / "examples/scenarios/weather_hybrid.toml"), "--via-sandbox",
        "--agent", f"{ROOT / 'examples/weather.py'}:WeatherAgent",
        "--samples", "5000", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_ignore_sigint if ignored_at_start else None,
    )
    try:
        transcripts = out / "transcripts.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (transcripts.exists() and transcripts.stat().st_size):
            time.sleep(0.1)  # until some simulations have finished
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == status, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr and b"failed for good" not in stderr, stderr.decode()[-2000:]
    assert b"run again to resume" in stdout
    records = transcripts.read_text(encoding="utf-8").splitlines()
    assert 0 < len(records) < 15_000  # stopped part way, what finished kept whole
    assert all(json.loads(line)["scenario"] for line in records)
