"""The ``simulate`` command's exit status and its one-line errors.

No test reaches a real LLM: the LLM variables are always set (or unset) explicitly,
and the only endpoint used is a loopback port that refuses connections.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from orchestrator.simulator.cli import Unconfigured, _check_llm_configured, simulate
from orchestrator.simulator.llm import LLMSettings
from orchestrator.simulator.scenarios import load_scenarios
from tests.helpers import write_parrot_project

ROOT = Path(__file__).resolve().parent.parent
LLM_VARIABLES = ("ORCHESTRATOR_LLM_BASE_URL", "ORCHESTRATOR_LLM_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")
NO_LLM: dict[str, str | None] = dict.fromkeys(LLM_VARIABLES)

LLM_CUSTOMER = """
agent = "agent.py:Parrot"
[llm]
max_retries = 0
[[scenario]]
name = "llm-customer"
customer = { kind = "llm" }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_parrot_project(tmp_path)
    (tmp_path / "llm.toml").write_text(LLM_CUSTOMER)
    return tmp_path


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: every connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(simulate, [*args, "--no-progress"], env={**NO_LLM, **(env or {})})


def test_simulate_without_an_llm_fails_at_once_naming_what_to_set(tmp_path: Path) -> None:
    scenarios = ROOT / "examples" / "scenarios" / "customer_service_llm.toml"
    env = {k: v for k, v in os.environ.items() if k not in LLM_VARIABLES}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "simulate", str(scenarios), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"Error: {scenarios}: scenarios llm-late-order, llm-damaged-item need an LLM"
    )
    assert "ORCHESTRATOR_LLM_API_KEY" in result.stderr and "ORCHESTRATOR_LLM_BASE_URL" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_llm_check_accepts_a_key_a_base_url_or_cached_completions(project: Path) -> None:
    path = project / "llm.toml"
    scenario_file = load_scenarios(path)
    cache = project / "out" / "llm-cache"
    with pytest.raises(Unconfigured, match="scenario llm-customer needs an LLM"):
        _check_llm_configured(path, scenario_file, LLMSettings(), cache)
    _check_llm_configured(path, scenario_file, LLMSettings(api_key="k"), cache)
    _check_llm_configured(path, scenario_file, LLMSettings(base_url="http://127.0.0.1:1/v1"), cache)
    # A rerun replays its cache without asking the provider, so it needs no key.
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "abcd.json").write_text("{}")
    _check_llm_configured(path, scenario_file, LLMSettings(), cache)
    with pytest.raises(Unconfigured):
        _check_llm_configured(path, scenario_file, LLMSettings(), None)


def test_simulate_exits_1_when_a_simulation_ends_in_error(project: Path, refusing_port: int) -> None:
    base_url = f"http://127.0.0.1:{refusing_port}/v1"
    args = [str(project / "llm.toml"), "--out", str(project / "out")]
    # Even a pass rate of 0 is no excuse: an error says nothing about the agent.
    result = invoke(*args, "--pass-rate", "0", env={"ORCHESTRATOR_LLM_BASE_URL": base_url})
    assert result.exit_code == 1, result.output
    assert "0/1 passed" in result.output and "1 of 1 simulations ended in error" in result.output


def test_simulate_exits_1_unless_every_simulation_passed_or_the_pass_rate_is_met(project: Path) -> None:
    args = [str(project / "parrot.toml"), "--out", str(project / "out")]
    strict = invoke(*args)
    assert strict.exit_code == 1, strict.output
    assert "1/2 passed" in strict.output and "1 of 2 simulations did not pass" in strict.output
    lenient = invoke(*args, "--pass-rate", "0.5")
    assert lenient.exit_code == 0, lenient.output
    assert "did not pass" not in lenient.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[supervisor]\nmax_conversations = 1\n",
            "{path}: unknown key supervisor (known: agent, defaults, llm, samples, scenario)",
        ),
        ("samples = 1\n", "{path} has no [[scenario]] tables"),
        (
            "[defaults]\nmax_mesages = 1\n",
            "{path}: [defaults]: unknown key max_mesages (did you mean max_messages?)",
        ),
        (
            "[llm]\napi_key_env = 'NOPE_NOT_SET'\n[[scenario]]\nname = 'x'\ncustomer = { kind = 'llm' }\n",
            "{path}: [llm] api_key_env: environment variable NOPE_NOT_SET is not set",
        ),
    ],
)
def test_simulate_errors_in_the_file_name_its_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(text)
    result = invoke(str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2  # bad input, as for run; 1 means a simulation did not pass
    assert result.output == f"Error: {message.format(path=path)}\n"


def test_an_agent_spec_that_does_not_load_is_exit_2_as_for_run(project: Path) -> None:
    result = invoke(str(project / "parrot.toml"), "--agent", "nope.py:Agent", "--out", str(project / "o"))
    assert result.exit_code == 2
    assert result.output.startswith("Error: bad agent spec 'nope.py:Agent': file not found")
    assert result.output.count("\n") == 1


def test_simulate_refuses_an_out_path_through_a_file_in_one_line_before_running() -> None:
    scenarios = ROOT / "examples" / "scenarios" / "booking.toml"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "simulate", str(scenarios), "--out", "/dev/null/x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in LLM_VARIABLES},
    )
    assert result.returncode == 2, result.stderr  # bad input; 1 means a simulation did not pass
    assert result.stdout == ""  # refused before anything ran
    assert result.stderr == "Error: --out /dev/null/x: /dev/null is not a directory\n"


def test_simulate_checks_the_default_out_folder_too(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    (project / "sim-results").write_text("a file where the results folder goes")
    result = invoke(str(project / "parrot.toml"))
    assert result.exit_code == 2
    assert result.output == "Error: --out sim-results/parrot: sim-results is not a directory\n"


@pytest.mark.parametrize("blocked", ["transcripts.jsonl", "summary.json"])
def test_simulate_reports_results_it_cannot_write_in_one_line(project: Path, blocked: str) -> None:
    out = project / "out"
    (out / blocked).mkdir(parents=True)  # the folder is fine; writing this one file fails
    result = invoke(str(project / "parrot.toml"), "--out", str(out))
    assert result.exit_code == 2
    assert result.output == f"Error: results not saved: {out / blocked}: Is a directory\n"


def test_simulate_refuses_scenarios_that_need_an_agent_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "no-agent.toml"
    path.write_text("[[scenario]]\nname = 'x'\ncustomer = { turns = ['hi'] }\n")
    result = invoke(str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output == f"Error: {path}: scenario 'x' needs an agent to test (--agent)\n"


def test_every_simulate_option_has_help() -> None:
    options = [p for p in simulate.params if isinstance(p, click.Option) and p.name != "help"]
    assert [o.name for o in options if not o.help] == []
    concurrency = next(o for o in options if o.name == "concurrency")
    assert "-n" in concurrency.opts and "simulations run at once" in (concurrency.help or "")


def test_a_scenario_calling_a_tool_the_agent_lacks_is_refused_at_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    scenarios = ROOT / "examples" / "scenarios" / "weather.toml"
    result = invoke(str(scenarios), "--agent", f"{ROOT}/examples/booking.py:BookingAgent", "--out", str(out))
    assert result.exit_code == 2, result.output
    tools = "cancel_booking, check_availability, confirm_booking, hold_room"
    assert result.output.startswith(f"Error: {scenarios}: scenario ")
    assert result.output.endswith(f"agent 'booking' has no tool 'get_weather' (its tools: {tools})\n")
    assert result.output.count("\n") == 1 and not out.exists()
