"""Guarantee 4: SIGTERM drains. /readyz turns 503 at once, nothing new is admitted,
in-flight calls finish within ``drain_timeout``, the process exits 0; a call that outlives
``drain_timeout`` is cancelled and the process still exits 0 within ``drain_timeout +
shutdown_timeout``; a second signal exits at once, non-zero.

A real ``orchestrator run`` subprocess and real signals; the platform is the sandbox in
this test process. (``tests/test_signals.py`` checks the same two signal paths with the
example agent; these tests add the timings and the drain deadline.)
"""

from __future__ import annotations

import signal

import pytest
import trio

from orchestrator.sandbox.server import SandboxServer

from .test_guarantees import KIT, Child, child, scenario, tool_turns, wait_until

SHUTDOWN = {"ORCHESTRATOR_ACTOR_SHUTDOWN_TIMEOUT": "1.0"}


def nap(seconds: float, repeat: int = 1) -> object:
    return scenario(tool_turns(("nap", {"seconds": seconds}), agent_id="napper", repeat=repeat))


async def wait_pending(server: SandboxServer, cid: str) -> None:
    await wait_until(
        lambda: any(c.status == "pending" for c in server.conversation(cid).calls), 20, "a call in flight"
    )


async def seconds_until_not_ready(running: Child) -> float:
    start = trio.current_time()
    with trio.fail_after(5):
        while (await running.get("/readyz")).status_code != 503:  # noqa: ASYNC110 - another process
            await trio.sleep(0.005)
    return trio.current_time() - start


def run_args(server: SandboxServer, drain_timeout: float) -> list[str]:
    return [f"{KIT}:Napper", "--url", server.conversimple_url, "--api-key", "k",
            "--drain-timeout", str(drain_timeout), "--log-level", "info"]  # fmt: skip


@pytest.mark.slow
async def test_guarantee_4_sigterm_turns_readyz_503_at_once_admits_nothing_and_finishes_calls() -> None:
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with child(*run_args(server, drain_timeout=20)) as running:
            in_flight = server.add_conversations(nap(2.0, repeat=3))
            for cid in in_flight:
                await wait_pending(server, cid)
            assert (await running.get("/readyz")).status_code == 200
            running.process.send_signal(signal.SIGTERM)
            signalled = trio.current_time()
            assert await seconds_until_not_ready(running) < 0.5
            assert (await running.get("/healthz")).status_code == 200  # alive while draining
            (late,) = server.add_conversations(nap(0.1))
            code = await running.wait(20)
            took = trio.current_time() - signalled
        assert code == 0, running.output
        # It exited once the calls were done, long before the 20 s deadline.
        assert took < 2.0 + 3.0, took
        for cid in in_flight:
            log = server.conversation(cid)
            assert [c.status for c in log.calls] == ["ok"] and log.outcome == "completed"
        assert "not admitted (draining)" in running.output  # the late conversation was refused
        assert server.conversation(late).calls == []  # and never got an agent
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_guarantee_4_call_longer_than_drain_timeout_is_cancelled_and_exit_is_zero_in_time() -> None:
    drain_timeout, shutdown_timeout = 2.0, float(SHUTDOWN["ORCHESTRATOR_ACTOR_SHUTDOWN_TIMEOUT"])
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with child(*run_args(server, drain_timeout), env=SHUTDOWN) as running:
            short, long = server.add_conversations(scenario(
                tool_turns(("nap", {"seconds": 0.5}), agent_id="napper"),
                tool_turns(("nap", {"seconds": 60}), agent_id="napper"),
            ))  # fmt: skip
            await wait_pending(server, long)
            running.process.send_signal(signal.SIGTERM)
            signalled = trio.current_time()
            code = await running.wait(drain_timeout + shutdown_timeout + 10)
            took = trio.current_time() - signalled
        assert code == 0, running.output
        assert drain_timeout - 0.1 <= took <= drain_timeout + shutdown_timeout + 1.0, took
        assert [c.status for c in server.conversation(short).calls] == ["ok"]
        assert [c.status for c in server.conversation(long).calls] == ["pending"]  # cancelled, no reply
        assert "stragglers cancelled" in running.output
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_guarantee_4_second_signal_exits_at_once_with_status_1() -> None:
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with child(*run_args(server, drain_timeout=60)) as running:
            (cid,) = server.add_conversations(nap(50))
            await wait_pending(server, cid)
            running.process.send_signal(signal.SIGTERM)
            await seconds_until_not_ready(running)
            await trio.sleep(0.3)
            assert running.process.returncode is None  # draining: waiting for the 50 s call
            running.process.send_signal(signal.SIGINT)
            signalled = trio.current_time()
            code = await running.wait(10)
            took = trio.current_time() - signalled
        assert code == 1, running.output
        assert took < 1.0, took
        nursery.cancel_scope.cancel()
