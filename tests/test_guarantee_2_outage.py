"""Guarantee 2, under a platform outage: links ride it out and every conversation resumes
with nothing lost and nothing run twice; a silent (blackholed) link is noticed in time.

* 1,000 conversations (1,001 links with the control connection) through the fault proxy;
  the platform is down for 20 s, then back. Reconnects spread out (full-jitter backoff
  and a handshake limit): no one-second window holds more than 15% of the attempts.
  Every conversation resumes: the call in flight across the outage is answered once,
  run once, and the call made after it succeeds.
* The outage begins only once every one of those calls is running in the agent, not as
  soon as the platform has sent them all; at the moment they went out, the same outage
  still joins every call that was running.
* A blackholed link (open, but every byte dropped) is declared dead within two
  heartbeat intervals, and the conversation carries on once the path is back.

Real time: the outage test takes about 40 s, the blackhole ones about 5 s each.

Why ``backoff_initial=4`` in the outage test (the default is 2 s): here the proxy and the
sandbox share one event loop with the orchestrator, and resetting ~2,000 proxied sockets
at once keeps that loop busy for 1-2 s, so every retry that falls due meanwhile goes
out together when it frees up; that burst measures the harness, not the backoff. A wider
first window keeps it small next to the rest. The jitter itself is checked at the
defaults, on the mock clock and with no CPU cost, by
``tests/test_connection.py::test_thousand_links_after_a_20s_outage_do_not_stampede``.
"""

from __future__ import annotations

import bisect
import logging
import resource
import time
from collections import Counter
from typing import Any

import pytest
import trio

from orchestrator.agent import Agent, tool
from orchestrator.connection import LinkPolicy
from orchestrator.sandbox.settings import SandboxSettings

from .test_guarantees import Counting, sample, scenario, stack, tool_turns, wait_until

N = 1000
OUTAGE = 20.0


class Gated(Agent):
    """``during`` waits for the test to open the gate: it is in flight across the outage."""

    agent_id = "gated"
    gate: trio.Event | None = None
    runs: dict[str, int] = {}
    started: int = 0
    """``during`` calls begun in the agent (counted before they wait at the gate)."""

    @classmethod
    def reset(cls) -> None:
        cls.gate, cls.runs, cls.started = trio.Event(), {}, 0

    def count(self, name: str) -> None:
        Gated.runs[name] = Gated.runs.get(name, 0) + 1

    @tool("Answer at once")
    async def before(self, n: int) -> int:
        self.count("before")
        return n

    @tool("Answer once the gate opens")
    async def during(self, n: int) -> int:
        assert Gated.gate is not None
        Gated.started += 1
        await Gated.gate.wait()
        self.count("during")
        return n

    @tool("Answer at once")
    async def after(self, n: int) -> int:
        self.count("after")
        return n


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8 * N:
        pytest.skip(f"needs about {8 * N} file descriptors, the hard limit is {hard}")
    if soft < 8 * N:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def joined(s: Any) -> float:
    return sample(s.metrics, "orchestrator_tool_calls_total", tool="during", outcome="joined")


def why_not_joined(s: Any, ids: list[str]) -> str:
    """Which side held up the joins: the platform not redelivering, or the agent not reading."""
    conversations = s.server.conversimple.conversations
    during = [s.server.conversation(cid).calls[1] for cid in ids]
    deliveries = Counter(call.deliveries for call in during)
    sent_to = Counter(
        "no socket" if open_.sent_to is None
        else ("current" if open_.sent_to is conversations[cid].socket else "older")
        + (" alive" if open_.sent_to.alive else " closed")
        for cid in ids
        for open_ in conversations[cid].pending.values()
    )  # fmt: skip
    states = Counter(info.state for info in s.supervisor.list_conversations())
    restarts = sum(info.restarts for info in s.supervisor.list_conversations())
    return (
        f"{joined(s):.0f} joined, {Gated.started} begun in the agent; "
        f"deliveries of the call in flight {dict(deliveries)}; "
        f"its socket at the platform {dict(sent_to)}; actors {dict(states)}, {restarts} restarts"
    )


async def wait_running(logs: list[Any], n: int, every: float = 0.02) -> None:
    """Wait until every conversation's second call is running in the agent, not merely sent.

    The platform's side is not enough: a request the sandbox has written can still be in
    the proxy or a socket buffer when the outage resets the links. It is lost with them,
    and its redelivery after the outage runs it, once, instead of joining it. That is
    right, but then fewer than ``n`` redeliveries join: a poll that happened to land
    between the last request going out and the agent reading it made the outage test
    fail about one full-suite run in ten.
    """
    await wait_until(
        lambda: all(len(log.calls) == 2 for log in logs), 90, "every conversation's second call sent", every
    )
    await wait_until(lambda: Gated.started == n, 30, "every second call running in the agent", every)


async def wait_joined(s: Any, ids: list[str], n: int, within: float) -> None:
    """Wait until ``n`` redelivered calls joined their running originals; on a timeout,
    say which side held them up."""
    try:
        await wait_until(lambda: joined(s) >= n, within, "every redelivered call to join its original")
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc}: {why_not_joined(s, ids)}")


def gated_plan(n: int) -> Any:
    """``n`` conversations of three calls each: before the outage, across it (held at the
    gate), and after it."""
    return tool_turns(
        ("before", {"n": 1}), ("during", {"n": 2}), ("after", {"n": 3}), agent_id="gated", repeat=n
    )


def worst_window_share(times: list[float], width: float = 1.0) -> tuple[float, int]:
    """The largest share of ``times`` inside any window ``width`` long, and its count."""
    times = sorted(times)
    worst = max(bisect.bisect_right(times, t + width) - i for i, t in enumerate(times))
    return worst / len(times), worst


@pytest.mark.slow
async def test_guarantee_2_thousand_links_ride_out_a_20s_outage_without_a_stampede() -> None:
    raise_open_files_limit()
    Gated.reset()
    policy = LinkPolicy(backoff_initial=4.0, backoff_max=8.0)
    sandbox = SandboxSettings(
        record_messages=False, register_timeout=60, call_timeout=180, timeout_seconds=150
    )
    plan = gated_plan(N)
    async with stack([Gated], policy=policy, sandbox=sandbox, via_proxy=True) as s:
        assert s.proxy is not None
        ids = s.server.add_conversations(scenario(plan))
        logs = [s.server.conversation(cid) for cid in ids]
        await wait_running(logs, N)
        assert Gated.runs == {"before": N}
        attempts_before = len(s.proxy.statistics().accept_times)

        await s.proxy.down_for(OUTAGE)  # every link reset; every connection refused for 20 s
        back_at, up = time.perf_counter(), trio.current_time()
        conversations = s.server.conversimple.conversations
        await wait_until(
            lambda: all(conversations[cid].socket is not None for cid in ids), 60, "every conversation back"
        )
        resumed = trio.current_time()
        # The platform redelivers the call in flight; the redelivery joins the running call.
        await wait_joined(s, ids, N, 30)
        Gated.gate.set()
        with trio.fail_after(60):
            await s.server.wait_done(ids)
        stats = s.proxy.statistics()
        report = s.server.report(ids)
        reconnects = sample(s.metrics, "orchestrator_reconnects_total", reason="closed")

    attempts = list(stats.accept_times[attempts_before:])
    share, worst = worst_window_share(attempts)
    summary = (
        f"{len(attempts)} reconnect attempts ({stats.refused} refused); busiest second {worst} "
        f"({share:.1%}); every conversation back {resumed - up:.1f} s after the outage"
    )
    assert share <= 0.15, summary
    assert reconnects >= N, summary  # every actor's link dropped and came back
    # Every conversation resumed: all three calls answered, each exactly once, each run once.
    for log in logs:
        assert log.outcome == "completed", (log.failures, summary)
        assert [c.status for c in log.calls] == ["ok"] * 3
        assert [c.answers for c in log.calls] == [1, 1, 1]
        assert log.calls[2].sent_at > back_at  # the call made after the outage
    assert Gated.runs == {"before": N, "during": N, "after": N}
    assert Gated.started == N  # each redelivery joined its call: none began a second run
    assert report.calls_lost == 0 and report.duplicates == 0


@pytest.mark.slow
async def test_guarantee_2_outage_the_moment_the_calls_went_out_joins_every_running_call() -> None:
    """The outage test's precondition at its worst moment, every time.

    Polled at every scheduler pass, the sandbox has sent every second call a few passes
    before the agent has read them all: the proxy still holds some. Waiting for the
    platform's side only, the outage begins there, and those calls are run by their
    redeliveries instead of joined (it failed 7 runs in 7 that way, 17 to 19 of 20
    joined). ``wait_running`` waits for the agent, so every redelivery finds its call
    running and joins it. Real sockets through the fault proxy; about 5 s.
    """
    n = 20
    Gated.reset()
    assert Gated.gate is not None
    plan = gated_plan(n)
    policy = LinkPolicy(backoff_initial=0.2, backoff_max=0.5)
    sandbox = SandboxSettings(timeout_seconds=120, call_timeout=150)  # no call times out meanwhile
    async with stack([Gated], policy=policy, sandbox=sandbox, via_proxy=True) as s:
        assert s.proxy is not None
        ids = s.server.add_conversations(scenario(plan))
        logs = [s.server.conversation(cid) for cid in ids]
        await wait_running(logs, n, every=0)  # the outage follows at once: no pass in between
        await s.proxy.down_for(1.0)
        await wait_joined(s, ids, n, 20)
        Gated.gate.set()
        with trio.fail_after(30):
            await s.server.wait_done(ids)
        report = s.server.report(ids)
    once = [("ok", 1, 1), ("ok", 1, 2), ("ok", 1, 1)]  # (status, answers, deliveries)
    for log in logs:
        assert log.outcome == "completed", log.failures
        assert [(c.status, c.answers, c.deliveries) for c in log.calls] == once
    assert Gated.runs == {"before": n, "during": n, "after": n} and Gated.started == n
    assert report.calls_lost == 0 and report.duplicates == 0


def dead_links(caplog: pytest.LogCaptureFixture) -> list[float]:
    """Wall times at which a link was declared dead (the connection logs it at once)."""
    return [r.created for r in caplog.records if "link lost (timeout)" in r.getMessage()]


@pytest.mark.slow
async def test_guarantee_2_blackholed_link_is_detected_within_two_heartbeats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.link")
    interval = 1.0
    policy = LinkPolicy(
        heartbeat_interval=interval, backoff_initial=0.1, backoff_max=0.5, connect_timeout=1, join_timeout=1
    )
    Counting.reset(hold=3.0)
    async with stack([Counting], policy=policy, via_proxy=True) as s:
        assert s.proxy is not None
        plan = tool_turns(("slow", {"text": "bh"}), ("slow", {"text": "after"}), agent_id="counting")
        (cid,) = s.server.add_conversations(scenario(plan))
        await wait_until(lambda: Counting.started.get("bh") == 1, 20, "the call to start")
        Counting.hold = 0.0  # (the next call is instant; this one sleeps its 3 s)
        await trio.sleep(1.5)  # a few heartbeats answered: the links are healthy
        assert dead_links(caplog) == []

        s.proxy.blackhole()
        blackholed = time.time()
        await wait_until(lambda: len(dead_links(caplog)) >= 2, 10 * interval, "both links declared dead")
        took = [t - blackholed for t in dead_links(caplog)[:2]]  # the control link and the conversation's
        assert max(took) <= 2 * interval + 0.25, took

        s.proxy.pass_()  # the path is back: the conversation carries on, its call answered once
        with trio.fail_after(30):
            await s.server.wait_done([cid])
        calls = s.server.conversation(cid).calls
        assert [(c.status, c.answers) for c in calls] == [("ok", 1), ("ok", 1)]
        assert Counting.runs == {"bh": 1, "after": 1}


@pytest.mark.slow
async def test_guarantee_2_dead_link_is_replaced_without_waiting_for_a_close_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once a link is declared dead, the next connection attempt follows within the
    backoff; waiting for a close handshake the dead peer cannot answer only lengthens
    the outage."""
    caplog.set_level(logging.INFO, logger="orchestrator.link")
    interval, backoff_max = 1.0, 0.2
    policy = LinkPolicy(heartbeat_interval=interval, backoff_initial=0.1, backoff_max=backoff_max)
    async with stack([Counting], policy=policy, via_proxy=True) as s:
        assert s.proxy is not None
        await trio.sleep(1.5)
        s.proxy.blackhole()
        await wait_until(
            lambda: len(dead_links(caplog)) >= 1, 10 * interval, "the control link declared dead"
        )
        declared = dead_links(caplog)[0]
        # The proxy stamps arrivals in trio time, the log in wall time.
        declared_trio = declared - (time.time() - trio.current_time())

        def attempts_after() -> list[float]:
            assert s.proxy is not None
            return [t for t in s.proxy.statistics().accept_times if t > declared_trio]

        await wait_until(lambda: bool(attempts_after()), 10, "a new connection attempt")
        reconnect_after = attempts_after()[0] - declared_trio
        assert reconnect_after <= backoff_max + 0.3, (
            f"the first reconnect attempt came {reconnect_after:.2f} s after the link was declared dead"
        )
