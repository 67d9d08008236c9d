"""``orchestrator sandbox`` as a user runs it: a real process, its stderr, its exit status.

Serving until a signal works with and without the HTTP endpoint; an address it
cannot listen on is one line on stderr and exit status 2, never a traceback. Bad
flags (a ``--record`` path it could not write, an empty ``--bot-token`` side) are
refused before it serves; transcripts it cannot write at the end are one line.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import trio
from click.testing import CliRunner

from orchestrator.protocols import conversimple as wire
from orchestrator.sandbox.cli import sandbox
from tests.sandbox_client import RawSocket

TIMEOUT = 20.0  # seconds: a hung process is killed, and the test fails on its output


def _sandbox(*flags: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "orchestrator", "sandbox", "--host", "127.0.0.1", *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _serve_then_interrupt(*flags: str, on_ready: Callable[[], None] | None = None) -> tuple[int, str]:
    """Start the sandbox, wait for its startup lines, call ``on_ready``, send SIGINT: (exit status, stderr).

    A process that refuses its flags exits at once: its status and stderr are returned all the same.
    """
    proc = _sandbox("--port", "0", *flags)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # to EOF: the process exits on SIGINT (or early, or killed)
            seen.append(line)
            if line.startswith("  Arinova"):
                if on_ready is not None:
                    on_ready()
                proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 some other listener holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_sandbox_serves_without_http_until_interrupted() -> None:
    code, stderr = _serve_then_interrupt("--no-http")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "sandbox listening on 127.0.0.1:" in stderr
    assert "status" not in stderr


def test_sandbox_prints_its_status_url_once() -> None:
    code, stderr = _serve_then_interrupt("--http-port", "0")
    assert code == 0, stderr
    status = [line for line in stderr.splitlines() if line.strip().startswith("status")]
    assert len(status) == 1, stderr
    assert status[0].strip().startswith("status        http://127.0.0.1:")
    assert status[0].strip().endswith("/status")


def _refused(*flags: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "sandbox", *flags],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_sandbox_on_a_port_in_use_is_one_line_and_exit_status_2(taken_port: int) -> None:
    line = _refused("--host", "127.0.0.1", "--port", str(taken_port), "--no-http")
    assert line.startswith(f"Error: cannot serve the sandbox on 127.0.0.1:{taken_port}: "), line
    assert "in use" in line


def test_sandbox_on_an_http_port_in_use_is_one_line_and_exit_status_2(taken_port: int) -> None:
    line = _refused("--host", "127.0.0.1", "--port", "0", "--http-port", str(taken_port))
    assert line.startswith(f"Error: cannot serve HTTP on 127.0.0.1:{taken_port}: "), line


def test_sandbox_on_a_bad_host_is_one_line_and_exit_status_2() -> None:
    line = _refused("--host", "999.1.1.1", "--port", "0", "--no-http")
    assert line.startswith("Error: cannot serve the sandbox on 999.1.1.1:0: "), line


def _bad_flag(*flags: str) -> str:
    """The one ``Error:`` line of a sandbox that refuses ``flags`` with exit status 2 before serving."""
    code, stderr = _serve_then_interrupt("--no-http", *flags)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert "sandbox listening" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    # A refused flag's line ends pointing at --help (orchestrator.cli): the rest is compared.
    return errors[0].removesuffix(" (see 'python -m orchestrator sandbox --help')")


def test_sandbox_refuses_a_record_path_in_a_missing_directory_before_serving(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    line = _bad_flag("--record", str(missing / "x.jsonl"))
    assert line == f"Error: Invalid value for '--record': directory '{missing}' does not exist", line


def test_sandbox_refuses_a_record_path_under_a_file_before_serving(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    line = _bad_flag("--record", str(file / "x.jsonl"))
    assert line == f"Error: Invalid value for '--record': '{file}' is not a directory", line


def test_sandbox_reports_transcripts_it_cannot_write_at_the_end_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "transcripts"
    directory.mkdir()
    record = directory / "x.jsonl"
    # The directory is there at startup and gone when it writes: like a disk filling up meanwhile.
    code, stderr = _serve_then_interrupt("--no-http", "--record", str(record), on_ready=directory.rmdir)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: cannot write the transcripts to {record}: No such file or directory"], stderr


def test_sandbox_writes_transcripts_and_accepts_both_bot_token_forms(tmp_path: Path) -> None:
    record = tmp_path / "x.jsonl"
    flags = ("--record", str(record), "--bot-token", "tok", "--bot-token", "tok2=agent")
    code, stderr = _serve_then_interrupt("--no-http", *flags)
    assert code == 0, stderr
    assert "Error" not in stderr
    assert record.read_text() == ""  # interrupted before any conversation


@pytest.mark.parametrize(
    ("spec", "empty"),
    [("=x", "TOKEN"), ("", "TOKEN"), ("=", "TOKEN"), ("secret-token-4711=", "AGENT_NAME")],
)
def test_sandbox_refuses_a_bot_token_with_an_empty_side(spec: str, empty: str) -> None:
    line = _bad_flag("--bot-token", "ok", "--bot-token", spec)
    assert line == (
        f"Error: Invalid value for '--bot-token': a value has an empty {empty}; "
        "expected TOKEN or TOKEN=AGENT_NAME"
    ), line  # the token itself is a secret: never quoted back


def test_sandbox_help_documents_every_option_and_its_default() -> None:
    result = CliRunner().invoke(sandbox, ["--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for param in sandbox.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, f"{param.opts} has no help"
        if not param.is_flag and isinstance(param.default, (int, float, str)):  # not unset, not None
            assert param.show_default, f"{param.opts} hides its default {param.default!r}"
    assert "Conversations per second; 0: all at once. [default: 0.0;" in text, text
    assert "--platform [conversimple|arinova] Wire protocol of the load test's conversations." in text
    assert "--call-timeout FLOAT RANGE Seconds a Conversimple tool call may go unanswered" in text
    assert "--register-timeout FLOAT RANGE Seconds an announced conversation waits for an agent" in text


# Found by a user: an empty scenario passed with exit status 0, a turn expecting both a
# result and an error was run (and could never pass), and register_timeout had no flag.


def test_sandbox_refuses_a_scenario_that_opens_no_conversation(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    line = _bad_flag("--scenario", str(empty))
    assert line == f"Error: {empty}: the scenario opens no conversation; " + (
        "add a [[conversation]] table with repeat >= 1"
    )


def test_sandbox_refuses_a_turn_that_expects_a_result_and_an_error(tmp_path: Path) -> None:
    both = tmp_path / "both.toml"
    both.write_text(
        '[[conversation]]\nagent_id = "echo"\n[[conversation.turn]]\ntool = "echo"\n'
        '[[conversation.turn]]\ntool = "echo"\nexpect_result = {}\nexpect_error = "x"\n'
    )
    line = _bad_flag("--scenario", str(both))
    assert line == (
        f"Error: {both}: conversation[0].turn[1]: expect_result and expect_error exclude each other; keep one"
    )


@pytest.mark.parametrize("flag", ["--register-timeout", "--call-timeout"])
@pytest.mark.parametrize(("value", "why"), [("0", "is not in the range x>0"), ("inf", "is not a finite")])
def test_sandbox_refuses_a_timeout_not_a_positive_finite_time(flag: str, value: str, why: str) -> None:
    assert why in _bad_flag(flag, value)


def test_sandbox_register_timeout_ends_an_unregistered_conversation_and_the_report_says_why(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "shop.toml"
    scenario.write_text('[[conversation]]\nagent_id = "shop"\ncalls = 1\n')
    flags = ("--port", "0", "--no-http", "--quiet", "--scenario", str(scenario), "--register-timeout", "0.5")
    command = [sys.executable, "-m", "orchestrator", "sandbox", "--host", "127.0.0.1", *flags]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        assert proc.stderr is not None
        url = next(line.split()[-1] for line in proc.stderr if line.startswith("  Conversimple"))

        async def join_and_never_register() -> None:
            control = await RawSocket.open(url)
            assert isinstance(await control.join(), wire.JoinOk)
            await trio.to_thread.run_sync(proc.wait)

        trio.run(join_and_never_register)
        stdout = proc.stdout.read() if proc.stdout is not None else ""
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stdout
    assert (
        "unregistered   conv-00001: no agent registered tools within 0.5 s for agent_id 'shop' "
        "(is an agent serving that agent_id, with a tool?)"
    ) in stdout.splitlines()
