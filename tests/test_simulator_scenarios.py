"""Scenario files, the example scenarios against the example agents, and the CLI."""

from __future__ import annotations

import json
import textwrap
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.errors import AgentSpecError
from orchestrator.simulator import (
    AgentStep,
    Batch,
    BatchSummary,
    Contains,
    EndReason,
    Matches,
    ScenarioError,
    ToolCalled,
    load_agent_class,
    load_scenarios,
    parse_scenarios,
)
from orchestrator.simulator.cli import simulate
from tests.helpers import write_parrot_project

EXAMPLES = Path(__file__).parent.parent / "examples"
SCENARIO_FILES = ["weather.toml", "customer_service.toml", "booking.toml"]


@pytest.mark.parametrize("name", SCENARIO_FILES)
async def test_example_scenarios_pass_against_example_agents(name: str) -> None:
    scenario_file = load_scenarios(EXAMPLES / "scenarios" / name)
    assert scenario_file.agent is not None and not scenario_file.needs_llm
    agent_class = load_agent_class(scenario_file.agent, scenario_file.base_dir)
    run = await Batch(scenario_file.scenarios, samples=2, agent_factory=agent_class).run()
    failures = {(r.scenario, r.sample): r.result for r in run.records if not r.passed}
    assert not failures
    assert all(r.result.end_reason is EndReason.CLOSING_PHRASE for r in run.records)
    summary = BatchSummary.from_run(run, 2)
    assert summary.pass_hat_k == {1: 1.0, 2: 1.0}


def parse(text: str) -> Any:
    return parse_scenarios(tomllib.loads(textwrap.dedent(text)), base_dir=Path("/base"))


def test_scenario_file_parses_every_key() -> None:
    scenario_file = parse(
        r"""
        agent = "pkg.mod:Agent"
        samples = 4
        [llm]
        model = "m"
        seed = 3
        [defaults]
        max_messages = 9
        evaluator = "both"
        outcomes = [{ name = "ok", description = "fine", when = [{ says = "done" }] }, { name = "ko" }]
        [[scenario]]
        name = "one"
        intent = "get it done"
        initial_message = "Hello"
        expected_outcomes = "ok"
        default_outcome = "ko"
        end_on_outcome = true
        closing_phrases = 'ciao'
        judge_every = 2
        idle_timeout = 9.5
        reply_delay = 0.1
        settle = 0.2
        patience = 3.0
        expect = [{ matches = '\d' }, { no_tool = "x" }]
        criteria = [{ name = "polite", description = "is polite" }]
        [scenario.customer]
        kind = "rules"
        rules = [{ when = "name\\?", reply = "Bob", once = true }]
        default_reply = "bye"
        max_turns = 3
        [[scenario.agent.turns]]
        say = "Hi"
        [[scenario.agent.turns]]
        tools = [{ name = "lookup", args = { id = 7 } }]
        say = "Found {lookup[name]}"
        on_error = "Oops: {error}"
        [[scenario]]
        name = "two"
        max_messages = 3
        evaluator = "rules"
        customer = { turns = ["a", ["b", "c"]] }
        agent = { kind = "rules", default_reply = "ok", turns = ["Hi", ["What's your name?", "Name?"]] }
        """
    )
    assert (scenario_file.agent, scenario_file.samples, scenario_file.base_dir) == (
        "pkg.mod:Agent",
        4,
        Path("/base"),
    )
    assert scenario_file.needs_llm
    one, two = scenario_file.scenarios
    assert one.intent.description == "get it done" and one.initial_message == "Hello"
    assert one.outcomes.names == ("ok", "ko") and one.expected_outcomes == ("ok",)
    assert one.outcome_rules == {"ok": (Contains("done"),), "ko": ()}
    assert one.expectations == (Matches(r"\d"), ToolCalled("x", negate=True))
    assert (one.max_messages, one.evaluator, one.default_outcome) == (9, "both", "ko")
    policy = one.termination
    assert (policy.end_on_outcome, policy.closing_phrases, policy.judge_every, policy.idle_timeout) == (
        True,
        ("ciao",),
        2,
        9.5,
    )
    assert (one.timing.reply_delay, one.timing.settle, one.timing.patience) == (0.1, 0.2, 3.0)
    assert one.customer.kind == "rules" and one.customer.rules[0].once and one.customer.max_turns == 3
    assert one.agent is not None and one.agent.turns_for(0)[0] == "Hi"
    step = one.agent.turns_for(0)[1]
    assert isinstance(step, AgentStep) and step.calls[0].tool == "lookup" and step.on_error == "Oops: {error}"
    assert one.needs_agent and one.uses_llm
    assert two.customer.turns_for(0) == ("a", "b") and two.customer.turns_for(3) == ("a", "c")
    assert two.agent is not None and two.agent.turns_for(1) == ("Hi", "Name?")
    assert two.max_messages == 3 and not two.uses_llm and not two.needs_agent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[scenario]]\nname = 'a'\nturnz = 1", "unknown key"),
        ("[[scenario]]\nname = 'a'\n[scenario.customer]\ntunrs = []", "unknown key"),
        ("wat = 1\n[[scenario]]\nname = 'a'", "unknown key"),
        ("samples = 0\n[[scenario]]\nname = 'a'\ninitial_message = 'x'", "samples"),
        ("x = 1", "unknown key"),
        ("agent = 'a:B'", "no \\[\\[scenario\\]\\]"),
        ("[[scenario]]\ninitial_message = 'x'", "non-empty name"),
        (
            "[[scenario]]\nname = 'a'\ninitial_message = 'x'\n" * 2,
            "duplicate",
        ),
        ("[[scenario]]\nname = 'a'", "needs turns or an initial_message"),
        ("[[scenario]]\nname = 'a'\ninitial_message = 'x'\nexpected_outcomes = ['ok']", "not declared"),
        ("[[scenario]]\nname = 'a'\ninitial_message = 'x'\nevaluator = 'vibes'", "evaluator"),
        ("[[scenario]]\nname = 'a'\ninitial_message = 'x'\noutcomes = [{ name = 'Bad Name' }]", "slug"),
        (
            "[[scenario]]\nname = 'a'\ninitial_message = 'x'\noutcomes = [{ name = 'a' }, { name = 'a' }]",
            "duplicate",
        ),
        (
            "[[scenario]]\nname = 'a'\ninitial_message = 'x'\nexpect = [{ says = 'x', tool = 'y' }]",
            "exactly one",
        ),
        ("[[scenario]]\nname = 'a'\ninitial_message = 'x'\nclosing_phrases = ['(']", "closing phrase"),
        ("[[scenario]]\nname = 'a'\ncustomer = { kind = 'rules' }", "rules or a default_reply"),
        ("[[scenario]]\nname = 'a'\ncustomer = { kind = 'rules', default_reply = 'x' }", "initial_message"),
        ("[[scenario]]\nname = 'a'\ncustomer = { kind = 'psychic', turns = ['x'] }", "kind"),
        ("[[scenario]]\nname = 'a'\ncustomer = { turns = [[]] }", "empty list"),
        (
            "[[scenario]]\nname = 'a'\ncustomer = { turns = [{ say = 'x', tools = [{ name = 't' }] }] }",
            "tool steps are for the agent",
        ),
        (
            "[[scenario]]\nname = 'a'\ncustomer = { turns = ['x'] }\nagent = { turns = [{ tools = [] }] }",
            "agent.turns\\[0\\].say: missing",
        ),
        (
            "[llm]\napi_key = 'sk-123'\n[[scenario]]\nname = 'a'\ninitial_message = 'x'",
            "never put an API key",
        ),
    ],
)
def test_scenario_file_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(text)


def test_llm_settings_from_file_and_environment(tmp_path: Path) -> None:
    scenario_file = parse(
        "[llm]\napi_key_env = 'MY_KEY'\nmodel = 'm1'\n[[scenario]]\nname = 'a'\ninitial_message = 'x'"
    )
    settings = scenario_file.llm_settings({"MY_KEY": "secret", "ORCHESTRATOR_LLM_MODEL": "env-model"})
    assert (settings.api_key, settings.model) == ("secret", "m1")
    with pytest.raises(ScenarioError, match="MY_KEY is not set"):
        scenario_file.llm_settings({})
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenarios(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[scenario]\n")
    with pytest.raises(ScenarioError, match="invalid TOML"):
        load_scenarios(tmp_path / "bad.toml")


def test_agent_specs_load_by_module_or_file(tmp_path: Path) -> None:
    assert load_agent_class("examples.weather:WeatherAgent").__name__ == "WeatherAgent"
    assert load_agent_class("booking.py:BookingAgent", EXAMPLES).__name__ == "BookingAgent"
    (tmp_path / "broken.py").write_text("raise RuntimeError('import side effect')\n")
    for spec, message in [
        ("nocolon", "is not"),
        ("examples.weather:Nope", "no attribute"),
        ("no_such_module_xyz:A", "importing"),
        (f"{tmp_path}/missing.py:A", "does not exist"),
        (f"{tmp_path}/broken.py:A", "import side effect"),
    ]:
        with pytest.raises(AgentSpecError, match=message):
            load_agent_class(spec)


def test_cli_runs_reports_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(EXAMPLES / "scenarios" / "booking.toml"), "--out", str(out), "-k", "2", "-n", "4"]
    result = CliRunner().invoke(simulate, [*args, "--pass-rate", "1.0"])
    assert result.exit_code == 0, result.output
    assert "10/10 passed" in result.output and "booked 4" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass_rate"] == 1.0 and summary["pass_hat_k"] == {"1": 1.0, "2": 1.0}
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "10" and suite.get("failures") == "0"
    assert len((out / "transcripts.jsonl").read_text().splitlines()) == 10
    again = CliRunner().invoke(simulate, args)
    assert again.exit_code == 0 and "(10 resumed)" in again.output
    fresh = CliRunner().invoke(simulate, [*args, "--fresh", "--no-progress"])
    assert fresh.exit_code == 0 and "resumed" not in fresh.output


def test_cli_pass_rate_gate_sets_the_exit_code(tmp_path: Path) -> None:
    scenarios = write_parrot_project(tmp_path)
    out = tmp_path / "out"
    gate = CliRunner().invoke(simulate, [str(scenarios), "--out", str(out), "--pass-rate", "0.9"])
    assert gate.exit_code == 1
    assert "pass rate 50.0% is below the required 90.0%" in gate.output
    assert "says 'goodbye': not found" in gate.output
    lenient = CliRunner().invoke(simulate, [str(scenarios), "--out", str(out), "--pass-rate", "0.5"])
    assert lenient.exit_code == 0


def test_cli_usage_errors(tmp_path: Path) -> None:
    scenarios = write_parrot_project(tmp_path)
    sandbox = CliRunner().invoke(simulate, [str(scenarios), "--via-sandbox"])
    assert sandbox.exit_code == 2 and "is not an orchestrator Agent" in sandbox.output
    bad_agent = CliRunner().invoke(simulate, [str(scenarios), "--agent", "nowhere.py:X"])
    assert bad_agent.exit_code == 2 and "does not exist" in bad_agent.output  # as for run
    (tmp_path / "bad.toml").write_text("[[scenario]]\nname = 'x'\nbogus = 1\n")
    bad_file = CliRunner().invoke(simulate, [str(tmp_path / "bad.toml")])
    assert bad_file.exit_code == 2 and "unknown key bogus" in bad_file.output  # 1 is "did not pass"
    llm = tmp_path / "llm.toml"
    llm.write_text(
        "[llm]\napi_key_env = 'NOPE_NOT_SET'\n[[scenario]]\nname = 'x'\ncustomer = { kind = 'llm' }\n"
    )
    missing_key = CliRunner().invoke(simulate, [str(llm), "--agent", f"{tmp_path}/agent.py:Parrot"])
    assert missing_key.exit_code == 2 and "NOPE_NOT_SET is not set" in missing_key.output
