"""Guarantee 2: no tool result is lost or executed twice across a dropped link, a server
restart or an actor restart.

"Executed" is counted by the tool body itself (:class:`Counting` counts starts and
completions per argument); "lost" by the platform: the sandbox records every call's
fate, and :class:`MiniPlatform` every answer it received.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from orchestrator import events as ev
from orchestrator.agent import Agent, tool
from orchestrator.connection import LinkPolicy
from orchestrator.metrics import Metrics
from orchestrator.platforms.conversimple import ConversimplePlatform
from orchestrator.supervisor import Supervisor

from .helpers import running_supervisor
from .test_guarantees import (
    API_KEY,
    CUSTOMER,
    Counting,
    MiniPlatform,
    Stack,
    sample,
    scenario,
    stack,
    tool_turns,
    wait_until,
)

FAST_RECONNECT = LinkPolicy(backoff_initial=0.1, backoff_max=0.5)


def one_call(text: str) -> object:
    return scenario(tool_turns(("slow", {"text": text}), agent_id="counting"))


def cached(metrics: Metrics) -> float:
    return sample(metrics, "orchestrator_tool_calls_total", tool="slow", outcome="cached")


async def reply_vanishes(s: Stack, cid: str, text: str) -> None:
    """Blackhole the proxy while the call runs: its reply goes out into a dead link."""
    assert s.proxy is not None
    await wait_until(lambda: Counting.started.get(text) == 1, 20, "the tool to start")
    s.proxy.blackhole()
    await wait_until(
        lambda: sample(s.metrics, "orchestrator_messages_sent_total", event="tool_result") >= 1,
        10,
        "the reply to be sent",
    )
    assert s.server.conversation(cid).calls[0].status == "pending"  # the platform never got it


async def test_guarantee_2_link_dropped_while_the_call_runs_runs_it_once_and_answers() -> None:
    Counting.reset(hold=1.0)
    async with stack([Counting], policy=FAST_RECONNECT) as s:
        plan = tool_turns(("slow", {"text": "a"}), ("slow", {"text": "b"}), agent_id="counting")
        (cid,) = s.server.add_conversations(scenario(plan))
        await wait_until(lambda: Counting.started.get("a") == 1, 20, "the first call to start")
        assert s.server.drop_socket(cid)  # a TCP reset while the tool runs
        with trio.fail_after(30):
            await s.server.wait_done([cid])
        calls = s.server.conversation(cid).calls
        assert [(c.status, c.result) for c in calls] == [("ok", {"text": "a"}), ("ok", {"text": "b"})]
        assert calls[0].deliveries == 2  # the platform redelivered it on the new link...
        assert [c.answers for c in calls] == [1, 1]  # ...and got one answer, not two
        assert sample(s.metrics, "orchestrator_tool_calls_total", tool="slow", outcome="joined") == 1
        assert Counting.started == Counting.runs == {"a": 1, "b": 1}
        assert sample(s.metrics, "orchestrator_reconnects_total", reason="closed") >= 1


async def test_guarantee_2_reply_lost_in_a_dead_link_is_answered_from_the_cache_after_an_outage() -> None:
    Counting.reset(hold=1.0)
    async with stack([Counting], policy=FAST_RECONNECT, via_proxy=True) as s:
        assert s.proxy is not None
        (cid,) = s.server.add_conversations(one_call("t"))
        await reply_vanishes(s, cid, "t")
        await s.proxy.down_for(2.0)  # the platform goes away: every link reset, refused for 2 s
        with trio.fail_after(30):
            await s.server.wait_done([cid])
        (call,) = s.server.conversation(cid).calls
        assert (call.status, call.result, call.deliveries, call.answers) == ("ok", {"text": "t"}, 2, 1)
        assert Counting.started == Counting.runs == {"t": 1}
        assert cached(s.metrics) == 1


async def test_guarantee_2_actor_restart_answers_a_completed_call_from_the_cache() -> None:
    Counting.reset(hold=1.0)
    async with stack([Counting], policy=FAST_RECONNECT, via_proxy=True) as s:
        assert s.proxy is not None
        (cid,) = s.server.add_conversations(one_call("r"))
        await reply_vanishes(s, cid, "r")
        s.supervisor.restart(cid)  # a fresh actor (new Agent instance, new connection)
        s.proxy.reset()
        s.proxy.pass_()
        with trio.fail_after(30):
            await s.server.wait_done([cid])
        (call,) = s.server.conversation(cid).calls
        assert (call.status, call.result, call.deliveries, call.answers) == ("ok", {"text": "r"}, 2, 1)
        assert Counting.started == Counting.runs == {"r": 1}
        assert cached(s.metrics) == 1
        restarts = sample(s.metrics, "orchestrator_actor_restarts_total", agent="counting", reason="manual")
        assert restarts == 1


async def test_guarantee_2_redelivered_call_after_a_server_restart_is_answered_from_the_cache(
    nursery: trio.Nursery,
) -> None:
    """A real restart: the platform's listener and every socket close, and it listens again
    on the same port. It had received the answer but crashed before keeping it, so it
    redelivers the call; the tool must not run again."""
    Counting.reset(hold=0.0)
    mini = MiniPlatform()
    await nursery.start(mini.run)
    metrics = Metrics(CollectorRegistry())
    platform = ConversimplePlatform(mini.url, API_KEY, CUSTOMER, FAST_RECONNECT, metrics=metrics)
    supervisor = Supervisor([Counting], platform.connect, metrics=metrics)
    await nursery.start(supervisor.run)
    await nursery.start(platform.run, supervisor)
    await mini.announce("conv-r", "counting")
    await mini.wait_registered("conv-r")
    await mini.call("conv-r", "call-1", "slow", {"text": "pay once"})
    first = await mini.wait_answer("call-1")
    port = mini.port

    mini.answers.clear()  # lost with the crash
    await mini.restart(down_for=1.0)
    assert mini.port == port
    await mini.wait_registered("conv-r", times=2)  # the actor reconnected and registered again
    await mini.call("conv-r", "call-1", "slow", {"text": "pay once"})  # the redelivery
    second = await mini.wait_answer("call-1")

    assert second["result"] == first["result"] == {"text": "pay once"}
    assert Counting.started == Counting.runs == {"pay once": 1}
    assert cached(metrics) == 1
    assert supervisor.statistics().restarts_total == 0
    nursery.cancel_scope.cancel()


class ChargeOnce(Agent):
    """A tool with a side effect, and an ``on_tool_completed`` hook that raises once."""

    agent_id = "charge-once"
    charges: list[int] = []
    hook_failures = 0

    @tool("charge the card")
    async def charge(self, amount: int, nap: float) -> str:
        ChargeOnce.charges.append(amount)
        if nap:
            await trio.sleep(nap)
        return f"charged {amount}"

    async def on_tool_completed(self, tool_name: str, result: Any) -> None:
        if not ChargeOnce.hook_failures:
            ChargeOnce.hook_failures += 1
            raise RuntimeError("a bug in the hook")


@pytest.mark.parametrize("nap", [0.0, 0.5], ids=["completes-at-once", "waits"])
async def test_guarantee_2_a_crashing_on_tool_completed_hook_never_runs_the_tool_twice(
    autojump_clock: trio.testing.MockClock, nap: float
) -> None:
    ChargeOnce.charges, ChargeOnce.hook_failures = [], 0
    async with running_supervisor([ChargeOnce]) as (sup, platform, metrics):
        await sup.start_conversation("c", "charge-once")
        peer = platform.peer("c")
        await peer.request_tool("pay-1", "charge", {"amount": 5, "nap": nap})
        await wait_until(lambda: sup.inspect("c").restarts == 1, 10, "the hook to crash the actor")
        assert not [out for out in peer.sent if isinstance(out, ev.ToolResult | ev.ToolFailure)]
        # The platform never got an answer: it redelivers the call to the restarted actor.
        reply = await peer.call_tool("pay-1", "charge", {"amount": 5, "nap": nap})
        assert reply == ev.ToolResult("pay-1", "charge", "charged 5")
        assert ChargeOnce.charges == [5]  # the card was charged once
        assert sample(metrics, "orchestrator_tool_calls_total", tool="charge", outcome="cached") == 1
