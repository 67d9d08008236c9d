"""The ``orchestrator`` command's own usage errors: one line, exit status 2, like every
other user error, whichever subcommand click refused the flag or argument for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.sandbox import SandboxServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["run", "x.py:A", "--max-conversations", "0"],
            "Error: Invalid value for '--max-conversations': 0 is not in the range x>=1. "
            "(see 'orchestrator run --help')",
        ),
        (
            ["run", "--log-level", "verbose", "x.py:A"],
            "Error: Invalid value for '--log-level': 'verbose' is not one of 'debug', 'info', 'warning', "
            "'error', 'critical'. (see 'orchestrator run --help')",
        ),
        (["run"], "Error: Missing argument 'AGENT...'. (see 'orchestrator run --help')"),
        (["rnu"], "Error: No such command 'rnu'. Did you mean 'run'? (see 'orchestrator --help')"),
        (["--bogus"], "Error: No such option '--bogus'. (see 'orchestrator --help')"),
        (
            ["sandbox", "--rate", "-1"],
            "Error: Invalid value for '--rate': -1.0 is not in the range x>=0. "
            "(see 'orchestrator sandbox --help')",
        ),
        (
            ["simulate", "--concurrency", "0", "x.toml"],
            "Error: Invalid value for '--concurrency' / '-n': 0 is not in the range x>=1. "
            "(see 'orchestrator simulate --help')",
        ),
    ],
)
def test_a_flag_or_argument_click_refuses_is_one_line(argv: list[str], line: str) -> None:
    result = CliRunner().invoke(main, argv, prog_name="orchestrator")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


def test_the_bare_command_shows_its_help_not_an_error() -> None:
    result = CliRunner().invoke(main, [], prog_name="orchestrator")
    assert "Usage: orchestrator [OPTIONS] COMMAND" in result.output
    assert "Error" not in result.output


def test_the_log_format_takes_any_case_as_the_log_level_does() -> None:
    # Parsed, so the run goes on to the agent spec, which is what it refuses.
    result = CliRunner().invoke(main, ["run", "--log-format", "JSON", "--log-level", "DEBUG", "nowhere.py:A"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "log-format" not in line and "nowhere.py" in line, line


async def test_a_fatal_error_is_a_json_record_too_when_the_logs_are_json(tmp_path: Path) -> None:
    # An operator's log pipeline read JSON lines and then one plain "Error: ..." it could not parse,
    # with no ERROR record saying why the process stopped.
    key = "bad-key-5d1e0c2a"
    server = SandboxServer(api_keys={"good"})
    err = tmp_path / "stderr"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        with err.open("wb") as out, trio.fail_after(60):
            process = await trio.run_process(
                [sys.executable, "-m", "orchestrator", "run", str(EXAMPLES / "echo.py") + ":EchoAgent",
                 "--url", server.conversimple_url, "--api-key", key, "--no-http", "--log-format", "json"],
                stderr=out, check=False,
            )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert process.returncode == 3
    lines = err.read_text().splitlines()
    assert key not in err.read_text()
    assert lines[-1].startswith("Error: platform link failed: ")
    record = json.loads(lines[-2])
    assert record["level"] == "ERROR" and record["message"] == lines[-1].removeprefix("Error: ")
