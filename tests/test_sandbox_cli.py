"""``orchestrator sandbox`` as a user runs it: a real process, its stderr, its exit status.

Serving until a signal works with and without the HTTP endpoint; an address it
cannot listen on is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

TIMEOUT = 20.0  # seconds: a hung process is killed, and the test fails on its output


def _sandbox(*flags: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "orchestrator", "sandbox", "--host", "127.0.0.1", *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _serve_then_interrupt(*flags: str) -> tuple[int, str]:
    """Start the sandbox, wait for its startup lines, send SIGINT: (exit status, stderr)."""
    proc = _sandbox("--port", "0", *flags)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # to EOF: the process exits on SIGINT (or early, or killed)
            seen.append(line)
            if line.startswith("  Arinova"):
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
