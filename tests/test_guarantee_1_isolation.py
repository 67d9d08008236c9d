"""Guarantee 1: a tool that raises, hangs past its timeout, or blocks its thread affects
only its own call; other conversations keep their latency.

Sandbox + platform + supervisor in this process over real loopback sockets. Latency is
what the sandbox's simulated customers measure per call (``CallRecord.latency``: from
sending ``tool_call_request`` to receiving the answer), so it includes both sockets.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio

from orchestrator.sandbox.settings import SandboxSettings

from .test_guarantees import RELEASE, Misbehaving, Steady, percentile, scenario, stack, tool_turns

STEADY = 20
CALLS = 40
BAD_TIMEOUT = 0.5
"""``timeout_seconds`` the sandbox puts in every request: the hanging and blocked calls end here."""


def steady_plan() -> dict[str, object]:
    return {"agent_id": "steady", "repeat": STEADY, "calls": CALLS}


async def steady_latencies(ids: list[str], server: object) -> list[float]:
    out: list[float] = []
    for cid in ids:
        log = server.conversation(cid)  # type: ignore[attr-defined]
        assert log.outcome == "completed", log.failures
        assert all(c.status == "ok" for c in log.calls)
        out.extend(c.latency for c in log.calls)
    return out


@pytest.fixture(autouse=True)
def frozen_heap() -> Iterator[None]:
    """What ``orchestrator run`` does at startup (service.tune_gc): everything alive now
    (here: pytest and every module the test session imported) is left out of collections.
    Otherwise a full collection of the test runner's heap, 100 ms and more, lands at
    random in the latencies measured."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


async def test_guarantee_1_raising_hanging_and_thread_blocking_tools_affect_only_their_call() -> None:
    sandbox = SandboxSettings(timeout_seconds=BAD_TIMEOUT)
    async with stack([Steady, Misbehaving], sandbox=sandbox, thread_limiter=trio.CapacityLimiter(40)) as s:
        # Baseline: the steady conversations alone.
        ids = s.server.add_conversations(scenario(steady_plan()))
        with trio.fail_after(60):
            await s.server.wait_done(ids)
        baseline = await steady_latencies(ids, s.server)

        # Again, while 4 conversations' tools raise, hang and block worker threads.
        bad_turns = [("fail", {}), ("hang", {}), ("block", {})] * 2
        bad = s.server.add_conversations(scenario(tool_turns(*bad_turns, agent_id="misbehaving", repeat=4)))
        ids = s.server.add_conversations(scenario(steady_plan()))
        with trio.fail_after(60):
            await s.server.wait_done(ids + bad)
        during = await steady_latencies(ids, s.server)

        # Each bad call got its own error reply, and its conversation went on to the next call.
        for cid in bad:
            calls = s.server.conversation(cid).calls
            assert [c.status for c in calls] == ["error"] * len(bad_turns)
            errors = [c.error or "" for c in calls]
            assert "always fails" in errors[0] and "timed out" in errors[1] and "timed out" in errors[2]
            assert all(c.latency is not None and c.latency < BAD_TIMEOUT + 0.5 for c in calls)
        assert s.supervisor.statistics().restarts_total == 0
        assert not RELEASE.is_set()  # the 8 blocked threads were still blocked all along

    base99, during99 = percentile(baseline, 0.99), percentile(during, 0.99)
    # Other conversations kept their latency: no call waited for a bad one (each of which
    # took BAD_TIMEOUT), and the tail moved by no more than scheduling noise.
    assert max(during) < BAD_TIMEOUT, (max(during), base99, during99)
    assert during99 <= max(3 * base99, base99 + 0.05), (base99, during99)


async def test_guarantee_1_threads_held_by_one_blocking_tool_do_not_starve_other_conversations() -> None:
    """A blocking sync tool keeps its worker thread after its timeout (threads cannot be
    cancelled). Ten conversations that keep calling it must not take every worker thread
    of the process: the steady agent's sync tool still answers promptly."""
    sandbox = SandboxSettings(timeout_seconds=0.3)
    limiter = trio.CapacityLimiter(40)  # trio's default thread limiter, as in production
    async with stack([Steady, Misbehaving], sandbox=sandbox, thread_limiter=limiter) as s:
        bad = s.server.add_conversations(
            scenario(tool_turns(*[("block", {})] * 5, agent_id="misbehaving", repeat=10))
        )
        with trio.fail_after(60):
            await s.server.wait_done(bad)
        held = limiter.borrowed_tokens
        ids = s.server.add_conversations(
            scenario(tool_turns(*[("ping_sync", {"text": "hi"})] * 5, agent_id="steady", repeat=5))
        )
        with trio.fail_after(60):
            await s.server.wait_done(ids)
        calls = [c for cid in ids for c in s.server.conversation(cid).calls]
        statuses = [c.status for c in calls]
        assert statuses == ["ok"] * len(calls), (
            f"{statuses.count('error')} of {len(calls)} calls of another conversation failed while "
            f"one blocking tool held {held} of {limiter.total_tokens} worker threads: "
            f"{sorted({c.error for c in calls if c.error})}"
        )
        assert max(c.latency or 0.0 for c in calls) < 0.25
