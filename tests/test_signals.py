"""SIGTERM drains, a second signal forces the exit: a real `orchestrator run` subprocess.

The platform is the bundled sandbox, run in this test process on 127.0.0.1.
Real time here (a subprocess cannot share the mock clock); every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
CANARY = "canary-signal-key-5521"


@asynccontextmanager
async def orchestrator_process(url: str, *args: str) -> AsyncIterator[tuple[trio.Process, httpx.AsyncClient]]:
    port = free_port()
    command = [
        sys.executable, "-m", "orchestrator", "run", "tests/helpers.py:EchoAgent",
        "--url", url, "--api-key", CANARY,
        "--http-port", str(port), "--log-level", "info", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
            yield process, client
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def output_of(process: trio.Process) -> str:
    assert process.stdout is not None
    chunks = []
    with trio.move_on_after(5):
        while chunk := await process.stdout.receive_some():
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def wait_for_pending_call(server: SandboxServer, cid: str) -> None:
    with trio.fail_after(20):
        while not any(c.status == "pending" for c in server.conversation(cid).calls):  # noqa: ASYNC110
            await trio.sleep(0.02)


@pytest.mark.slow
async def test_sigterm_drains_in_flight_call_then_exits_zero() -> None:
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with orchestrator_process(server.conversimple_url, "--drain-timeout", "20") as (
            process,
            client,
        ):
            plan = {
                "conversation": [
                    {"agent_id": "echo", "turn": [{"tool": "nap", "arguments": {"seconds": 1.5}}]}
                ]
            }
            (cid,) = server.add_conversations(parse_scenario(plan))
            await wait_for_pending_call(server, cid)
            assert (await client.get("/readyz")).status_code == 200
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                while (await client.get("/readyz")).status_code != 503:  # noqa: ASYNC110 - another process
                    await trio.sleep(0.01)
            late = parse_scenario({"conversation": [{"agent_id": "echo", "calls": 1}]})
            (late_cid,) = server.add_conversations(late)
            with trio.fail_after(30):
                await process.wait()
            output = await output_of(process)
            assert process.returncode == 0, output
        log = server.conversation(cid)
        assert [c.status for c in log.calls] == ["ok"] and log.outcome == "completed"
        assert server.conversation(late_cid).outcome != "completed"  # never admitted
        assert CANARY not in output
        assert "draining" in output
        assert f"control connection up: {server.conversimple_url}" in output
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_second_signal_exits_at_once_non_zero() -> None:
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with orchestrator_process(server.conversimple_url, "--drain-timeout", "60") as (
            process,
            _client,
        ):
            plan = {
                "conversation": [
                    {"agent_id": "echo", "turn": [{"tool": "nap", "arguments": {"seconds": 50}}]}
                ]
            }
            (cid,) = server.add_conversations(parse_scenario(plan))
            await wait_for_pending_call(server, cid)
            process.send_signal(signal.SIGTERM)
            await trio.sleep(0.5)
            assert process.returncode is None  # draining, waiting for the 50 s call
            process.send_signal(signal.SIGINT)
            with trio.fail_after(5):
                await process.wait()
            assert process.returncode not in (0, None)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_before_the_platform_is_reached_drains_and_exits_zero(signum: int) -> None:
    # Nothing listens there: the platform is never reached and the process keeps retrying.
    url = f"ws://127.0.0.1:{free_port()}/customer_sdk/websocket"
    async with orchestrator_process(url) as (process, _client):
        process.send_signal(signum)
        with trio.fail_after(10):
            await process.wait()
        output = await output_of(process)
    assert process.returncode == 0, output
    assert "draining" in output
    assert "Traceback" not in output
    assert CANARY not in output
