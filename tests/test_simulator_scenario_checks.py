"""What ``simulate`` refuses before running (one line, exit status 2), and when it resumes.

Every value of a scenario file is type-checked at load and named by its key's path;
tools the scenario names are checked against the agent's; a scripted step whose call
fails unscripted ends its simulation in error; results resume only for the same agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.simulator.cli import simulate
from tests.helpers import write_parrot_project

ROOT = Path(__file__).resolve().parent.parent
LLM_VARIABLES = ("ORCHESTRATOR_LLM_BASE_URL", "ORCHESTRATOR_LLM_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")

SHOP_AGENT = """
from orchestrator import Agent, tool


class Shop(Agent):
    agent_id = "shop"

    @tool("Add an item to the cart")
    async def add_item(self, item: str) -> dict:
        return {"count": 1}

    @tool("Place the order")
    async def order(self) -> dict:
        return {"id": "O-1"}

    async def on_message(self, message: str) -> str:
        return message.upper()
"""

SCENARIO = """
agent = "shop.py:Shop"
{top}
[[scenario]]
name = "x"
{extra}
[scenario.customer]
turns = ["hi", "more", "bye"]
"""


def invoke(path: Path, *args: str) -> Result:
    env: dict[str, str | None] = dict.fromkeys(LLM_VARIABLES)
    return CliRunner().invoke(simulate, [str(path), "--no-progress", *args], env=env)


def write(folder: Path, extra: str, *, top: str = "") -> Path:
    (folder / "shop.py").write_text(SHOP_AGENT)
    path = folder / "shop.toml"
    path.write_text(SCENARIO.format(extra=extra, top=top))
    return path


@pytest.mark.parametrize(
    ("extra", "top", "message"),
    [
        ("max_messages = -1", "", "scenario 'x': max_messages: must be at least 1, got -1"),
        ("max_messages = 0", "", "scenario 'x': max_messages: must be at least 1, got 0"),
        ("max_messages = 10.5", "", "scenario 'x': max_messages: expected an integer, got 10.5"),
        ("max_messages = '10'", "", "scenario 'x': max_messages: expected an integer, got '10'"),
        ("max_messages = 'ten'", "", "scenario 'x': max_messages: expected an integer, got 'ten'"),
        ("max_messages = true", "", "scenario 'x': max_messages: expected an integer, got true"),
        ("reply_delay = 'fast'", "", "scenario 'x': reply_delay: expected a number, got 'fast'"),
        ("idle_timeout = 0", "", "scenario 'x': idle_timeout: must be positive, got 0"),
        (  # an integer too large for a float: was an OverflowError traceback
            f"idle_timeout = 1{'0' * 400}",
            "",
            f"scenario 'x': idle_timeout: expected a finite number, got 1{'0' * 56}...",
        ),
        ("end_on_outcome = 1", "", "scenario 'x': end_on_outcome: expected true or false, got 1"),
        ("intent = 5", "", "scenario 'x': intent: expected a string, got 5"),
        ("", "samples = true\n", "samples: expected an integer, got true"),
        ("", "samples = 0\n", "samples: must be at least 1, got 0"),
        (
            "",
            "[defaults]\nmax_messages = 2.5\n",
            "scenario 'x': [defaults] max_messages: expected an integer, got 2.5",
        ),
        (
            "expected_outcome = ['ok']",
            "",
            "scenario 'x': unknown key expected_outcome (did you mean expected_outcomes?)",
        ),
        ("", "sample = 2\n", "unknown key sample (did you mean samples?)"),
        (
            "expect = [{ tool = 'order', times = true }]",
            "",
            "scenario 'x': expect[0]: 'times' must be a non-negative integer, got true",
        ),
        (
            "expect = [{ says = 'HI', case_sensitiv = true }]",
            "",
            "scenario 'x': expect[0]: a 'says' rule: "
            "unknown key case_sensitiv (did you mean case_sensitive?)",
        ),
        (
            "agent = { turns = ['Hi', { tools = [{ name = 'order', args = 'now' }], say = 'ok' }] }",
            "",
            "scenario 'x': agent.turns[1].tools[0].args: expected a table, got 'now'",
        ),
        (
            "agent = { turns = [['Hi', 7]] }",
            "",
            "scenario 'x': agent.turns[0][1]: "
            "expected a string or a step table (tools, say, on_error), got 7",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_key(
    tmp_path: Path, extra: str, top: str, message: str
) -> None:
    path = write(tmp_path, extra, top=top)
    result = invoke(path, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {path}: {message}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ("'hi'", "customer.turns: expected a list of turns, got 'hi'"),
        ("[['hi', 3]]", "customer.turns[0][1]: expected a string, got 3"),
    ],
)
def test_turns_must_be_a_list_not_a_string_read_letter_by_letter(
    tmp_path: Path, turns: str, message: str
) -> None:
    (tmp_path / "shop.py").write_text(SHOP_AGENT)
    path = tmp_path / "shop.toml"
    path.write_text(f"agent = 'shop.py:Shop'\n[[scenario]]\nname = 'x'\ncustomer = {{ turns = {turns} }}\n")
    result = invoke(path, "--out", str(tmp_path / "out"))
    assert (result.exit_code, result.output) == (2, f"Error: {path}: scenario 'x': {message}\n")


def test_a_scenario_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "simulate", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in LLM_VARIABLES},
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: {path}: cannot read scenario: "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte\n"
    )


SHOP_TOOLS = "did you mean {guess}? its tools: add_item, order"


@pytest.mark.parametrize(
    ("extra", "where", "tool", "hint"),
    [
        (
            "expect = [{ tool = 'ghost_tool' }]",
            "expect[0].tool",
            "ghost_tool",
            "its tools: add_item, order",
        ),
        (
            "outcomes = [{ name = 'ok', when = [{ says = 'a' }, { no_tool = 'ordr' }] }]",
            "outcomes[0].when[1].no_tool",
            "ordr",
            SHOP_TOOLS.format(guess="order"),
        ),
        (
            "agent = { turns = ['Hi', { tools = [{ name = 'order' }, { name = 'add_itm' }], say = 'ok' }] }",
            "agent.turns[1].tools[1].name",
            "add_itm",
            SHOP_TOOLS.format(guess="add_item"),
        ),
    ],
)
def test_tools_a_scenario_names_are_checked_against_the_agent_at_load(
    tmp_path: Path, extra: str, where: str, tool: str, hint: str
) -> None:
    path = write(tmp_path, extra)
    result = invoke(path, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert (
        result.output == f"Error: {path}: scenario 'x': {where}: agent 'shop' has no tool {tool!r} ({hint})\n"
    )


def test_tool_rules_against_an_agent_without_tools_are_refused(tmp_path: Path) -> None:
    scenarios = write_parrot_project(tmp_path)
    scenarios.write_text(scenarios.read_text().replace('{ says = "goodbye" }', '{ tool = "lookup" }'))
    result = invoke(scenarios, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.output.endswith(
        "scenario 'parrot-fails': expect[0].tool: agent 'Parrot' has no tool 'lookup' (it has no tools)\n"
    )


@pytest.mark.parametrize(
    ("step", "detail"),
    [
        (
            "{ tools = [{ name = 'add_item', args = { itm = 'x' } }], say = 'ok' }",
            "agent.turns[1]: the call to add_item failed: invalid arguments for tool 'add_item'",
        ),
        (
            "{ tools = [{ name = 'add_item' }], say = 'ok {add_item}' }",
            "agent.turns[1]: the call to add_item failed: invalid arguments for tool 'add_item'",
        ),
    ],
)
def test_a_step_whose_call_fails_unscripted_fails_the_simulation(
    tmp_path: Path, step: str, detail: str
) -> None:
    path = write(tmp_path, f"agent = {{ turns = ['Hi', {step}] }}")
    out = tmp_path / "out"
    result = invoke(path, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "0/1 passed" in result.output and "1 of 1 simulations ended in error" in result.output
    (record,) = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert record["result"]["end_reason"] == "error"
    assert record["result"]["end_detail"].startswith(detail)
    scripted = write(tmp_path, f"agent = {{ turns = ['Hi', {step[:-1]}, on_error = 'Sorry: {{error}}' }}] }}")
    assert invoke(scripted, "--out", str(tmp_path / "scripted")).exit_code == 0


def run_cli(scenarios: Path, out: Path) -> str:
    """``orchestrator simulate`` in a fresh process (the agent's file is imported anew)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "simulate",
            str(scenarios),
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k not in LLM_VARIABLES}, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_changed_agent_reruns_instead_of_resuming_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP_AGENT)
    path = tmp_path / "shop.toml"
    path.write_text(
        SCENARIO.format(extra="expect = [{ says = 'HI', case_sensitive = true }]", top="samples = 2")
    )
    out = tmp_path / "out"
    first = run_cli(path, out)
    assert "2/2 passed" in first and "resumed" not in first
    assert "(2 resumed)" in run_cli(path, out)
    (tmp_path / "shop.py").write_text(SHOP_AGENT.replace("message.upper()", "message.upper() + '!'"))
    changed = run_cli(path, out)
    assert "2 earlier results not resumed: the agent's code or spec changed" in changed
    assert "2/2 passed" in changed and "(2 resumed)" not in changed
    again = run_cli(path, out)
    assert "(2 resumed)" in again and "not resumed" not in again
    path.write_text(path.read_text().replace("'HI'", "'HI!'"))
    edited = run_cli(path, out)
    assert "2 earlier results not resumed: their scenario changed" in edited and "2/2 passed" in edited
    records = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert [r["result"]["conversation"]["messages"][1]["content"] for r in records[-2:]] == ["HI!", "HI!"]


def test_the_fingerprint_covers_what_the_agents_module_takes_from_its_folder(tmp_path: Path) -> None:
    # A prompt string imported from a sibling module changed nothing in the fingerprint, so
    # results the old prompt produced were resumed.
    (tmp_path / "prompts.py").write_text("GREETING = 'hello'\n")
    (tmp_path / "greeter.py").write_text(
        "from orchestrator import Agent\nfrom prompts import GREETING\n\n"
        "class Greeter(Agent):\n    agent_id = 'greeter'\n\n"
        "    async def on_message(self, message: str) -> str:\n        return GREETING\n"
    )
    script = (
        "import sys\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[1])\n"
        "from orchestrator.simulator.agents import agent_fingerprint, load_agent_class\n"
        "agent = load_agent_class('greeter.py:Greeter', Path(sys.argv[1]))\n"
        "print(agent_fingerprint(agent, 'greeter.py:Greeter'))\n"
    )

    def fingerprint() -> str:
        run = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    before = fingerprint()
    assert fingerprint() == before
    (tmp_path / "prompts.py").write_text("GREETING = 'good day'\n")
    assert fingerprint() != before
