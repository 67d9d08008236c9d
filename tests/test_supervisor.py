from __future__ import annotations

import gc
import itertools
import logging
import random
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from orchestrator import events as ev
from orchestrator.actor import ActorSettings
from orchestrator.agent import Agent, tool
from orchestrator.errors import AdmissionError, ConversationNotFoundError, PermanentLinkError
from orchestrator.metrics import OUTCOMES, RESTART_REASONS
from orchestrator.store import ConversationRecord, ResultCache
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryPlatform

from .helpers import ConfigNapper, CrashOnStartAgent, EchoAgent, running_supervisor, sample


class Flaky(Agent):
    """Crashes when told to (a handler error), otherwise answers."""

    agent_id = "flaky"
    instances = 0

    def __init__(self) -> None:
        Flaky.instances += 1

    @tool("ok")
    async def ping(self) -> str:
        return "pong"

    async def on_config_update(self, config: Any) -> None:
        if config.get("crash"):
            raise RuntimeError("handler bug")


class Temporary(CrashOnStartAgent):
    agent_id = "temporary"
    restart = "temporary"


class Permanent(Agent):
    agent_id = "permanent"
    restart = "permanent"
    starts = 0

    async def on_conversation_started(self, conversation: Any) -> None:
        Permanent.starts += 1


class ErrorWatcher(Agent):
    agent_id = "watcher"
    errors: list[tuple[str, str]] = []

    async def on_error(self, error_type: str, message: str, details: Any) -> None:
        ErrorWatcher.errors.append((error_type, message))


async def test_crash_in_one_conversation_leaves_others_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_supervisor([Flaky]) as (sup, platform, metrics):
        for cid in ("a", "b", "c"):
            await sup.start_conversation(cid, "flaky")
        await platform.peer("b").send(ev.ConfigUpdate({"crash": True}))
        for cid in ("a", "c"):
            reply = await platform.peer(cid).call_tool(f"{cid}-1", "ping")
            assert reply == ev.ToolResult(f"{cid}-1", "ping", "pong")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.inspect("b").restarts == 1
        assert sup.inspect("a").restarts == 0 and sup.inspect("c").restarts == 0
        assert platform.peer("a").connects == 1 and platform.peer("b").connects >= 1
        assert sample(metrics, "orchestrator_actor_restarts_total", agent="flaky", reason="crash") == 1
        await trio.sleep(2)  # backoff
        reply = await platform.peer("b").call_tool("b-2", "ping")
        assert isinstance(reply, ev.ToolResult)


async def test_transient_restarts_on_crash_but_not_on_normal_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_supervisor([Flaky]) as (sup, platform, _):
        await sup.start_conversation("x", "flaky")
        await platform.peer("x").end()
        assert await sup.wait_ended("x") == "completed"
        assert platform.peer("x").connects == 1


async def test_end_watchers_hear_each_end_once_it_has_left_and_a_failing_one_harms_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    Temporary.starts = 0
    heard: list[tuple[str, str, bool]] = []
    async with running_supervisor([Flaky, Temporary]) as (sup, platform, _):

        def broken(conversation_id: str, outcome: str) -> None:
            raise RuntimeError("a watcher's bug")

        sup.watch_ends(broken)
        sup.watch_ends(lambda cid, outcome: heard.append((cid, outcome, cid in sup)))
        await sup.start_conversation("x", "flaky")
        sup.start_conversation_nowait("t", "temporary")
        await platform.peer("x").end()
        assert await sup.wait_ended("x") == "completed"
        await trio.testing.wait_all_tasks_blocked()  # "t" fails at its start
        assert sorted(heard) == [("t", "failed", False), ("x", "completed", False)]
        assert caplog.text.count("a watcher of conversations' ends failed") == 2


async def test_temporary_never_restarts(autojump_clock: trio.testing.MockClock) -> None:
    Temporary.starts = 0
    async with running_supervisor([Temporary]) as (sup, _, metrics):
        sup.start_conversation_nowait("t", "temporary")
        assert await sup.wait_ended("t") == "failed"
        assert Temporary.starts == 1
        assert (
            sample(metrics, "orchestrator_conversations_ended_total", agent="temporary", outcome="failed")
            == 1
        )


async def test_permanent_restarts_after_idle_timeout_transient_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Permanent.starts = 0
    settings = SupervisorSettings(actor=ActorSettings(idle_timeout=10))
    async with running_supervisor([Permanent, EchoAgent], settings=settings) as (sup, _, metrics):
        await sup.start_conversation("p", "permanent")
        await sup.start_conversation("e", "echo")
        assert await sup.wait_ended("e") == "idle"
        assert trio.current_time() == pytest.approx(10, abs=0.01)
        await trio.sleep(12)
        assert Permanent.starts >= 2 and "p" in sup
        assert sample(metrics, "orchestrator_actor_restarts_total", agent="permanent", reason="idle") >= 1


async def test_idle_timeout_waits_for_calls_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    settings = SupervisorSettings(actor=ActorSettings(idle_timeout=5))
    async with running_supervisor(settings=settings) as (sup, platform, _):
        await sup.start_conversation("c", "echo")
        peer = platform.peer("c")
        await peer.receive()  # tool registration
        await peer.request_tool("1", "nap", {"seconds": 8})
        reply = await peer.receive()
        assert reply == ev.ToolResult("1", "nap", "rested")
        assert await sup.wait_ended("c") == "idle"
        assert trio.current_time() == pytest.approx(13, abs=0.01)


async def test_restart_budget_exactly_three_restarts_with_jitter_then_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    CrashOnStartAgent.starts = 0
    settings = SupervisorSettings(restart_budget=3, restart_window=5)
    async with running_supervisor(
        [CrashOnStartAgent, EchoAgent], settings=settings, rng=random.Random(7)
    ) as (sup, platform, metrics):
        await sup.start_conversation("healthy", "echo")
        sup.start_conversation_nowait("bad", "crasher")
        starts: list[float] = []
        original = CrashOnStartAgent.on_conversation_started

        async def timed(self: Any, conversation: Any) -> None:
            starts.append(trio.current_time())
            await original(self, conversation)

        CrashOnStartAgent.on_conversation_started = timed  # type: ignore[method-assign]
        try:
            assert await sup.wait_ended("bad") == "failed"
        finally:
            CrashOnStartAgent.on_conversation_started = original  # type: ignore[method-assign]
        assert len(starts) == 4  # the first start plus exactly three restarts
        delays = [b - a for a, b in itertools.pairwise(starts)]
        assert all(0.5 <= d <= 30 for d in delays)
        assert len(set(round(d, 6) for d in delays)) == 3  # jittered, not a fixed schedule
        assert sample(metrics, "orchestrator_actor_restarts_total", agent="crasher", reason="crash") == 3
        assert (
            sample(metrics, "orchestrator_conversations_ended_total", agent="crasher", outcome="failed") == 1
        )
        reply = await platform.peer("healthy").call_tool("h1", "echo", {"text": "still here"})
        assert reply == ev.ToolResult("h1", "echo", {"text": "still here"})
        assert sup.statistics().ended_total["failed"] == 1 and "healthy" in sup


async def test_restart_backoff_resets_after_a_healthy_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SupervisorSettings(restart_budget=1, restart_window=5, healthy_after=60)
    async with running_supervisor([Flaky], settings=settings) as (sup, platform, _):
        await sup.start_conversation("f", "flaky")
        peer = platform.peer("f")
        for round_ in range(4):  # budget 1, but each crash follows a healthy minute
            await trio.sleep(61)
            await peer.send(ev.ConfigUpdate({"crash": True}))
            await trio.sleep(1.5)
            assert "f" in sup, f"round {round_}"
        assert sup.inspect("f").restarts == 4


async def test_breaker_opens_on_restart_storm_and_stops_admission(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SupervisorSettings(breaker_threshold=5, breaker_window=10, breaker_cooldown=30)
    async with running_supervisor([Flaky, EchoAgent], settings=settings) as (sup, platform, metrics):
        await sup.start_conversation("healthy", "echo")
        for i in range(5):
            await sup.start_conversation(f"f{i}", "flaky")
        for i in range(5):
            await platform.peer(f"f{i}").send(ev.ConfigUpdate({"crash": True}))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.breaker_open and sup.readiness() == (False, "breaker_open")
        assert sample(metrics, "orchestrator_breaker_open") == 1
        with pytest.raises(AdmissionError) as info:
            sup.start_conversation_nowait("new", "echo")
        assert info.value.reason == "breaker"
        reply = await platform.peer("healthy").call_tool("1", "echo", {"text": "fine"})
        assert isinstance(reply, ev.ToolResult)
        await trio.sleep(31)
        assert not sup.breaker_open and sup.readiness() == (True, "ok")
        assert sample(metrics, "orchestrator_breaker_open") == 0
        await sup.start_conversation("new", "echo")


@pytest.mark.parametrize("limit", [1, 4, 10])
def test_history_keeps_the_latest_entries_in_order_and_nothing_for_the_collector_to_walk(limit: int) -> None:
    record = ConversationRecord("c1", "echo", history_limit=limit)
    assert record.history == ()
    for i in range(57):
        record.record(float(i), "tool_call", {"call_id": f"call-{i}", "tool": "echo", "ok": True})
        expected = [float(j) for j in range(max(0, i + 1 - limit), i + 1)]
        assert [entry.at for entry in record.history] == expected
    assert record.history[-1] == (56.0, "tool_call", {"call_id": "call-56", "tool": "echo", "ok": True})
    (flat,) = [ref for ref in gc.get_referents(record) if type(ref) is list]
    assert flat and not any(gc.is_tracked(item) for item in flat)


def test_result_cache_answers_what_it_kept_evicts_the_oldest_and_keeps_no_result_object() -> None:
    cache = ResultCache(maxsize=3)
    failure = ev.ToolFailure("f", "echo", "boom", 2.0)
    cache.put(failure)
    for i in range(4):
        cache.put(ev.ToolResult(f"r{i}", "echo", {"text": str(i), "n": i}))
    assert len(cache) == 3 and "f" not in cache and "r0" not in cache
    assert cache.get("f") is None and cache.get("r0") is None and cache.get("nope") is None
    assert cache.get("r3") == ev.ToolResult("r3", "echo", {"text": "3", "n": 3})
    cache.put(failure)
    assert cache.get("f") == failure and "r1" not in cache
    cache.put(ev.ToolResult("none", "echo", None))  # a tool may return null
    assert cache.get("none") == ev.ToolResult("none", "echo", None)
    # A kept result of plain values is no object a young collection walks.
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is ev.ToolResult and o.call_id in ("r2", "r3")]


async def test_restart_keeps_history_and_answers_redelivered_call_from_cache(
    autojump_clock: trio.testing.MockClock,
) -> None:
    EchoAgent.runs.clear()
    async with running_supervisor() as (sup, platform, _):
        await sup.start_conversation("c", "echo")
        peer = platform.peer("c")
        assert isinstance(await peer.receive(), ev.RegisterTools)
        first = await peer.call_tool("call-1", "echo", {"text": "once"})
        sup.restart("c")
        again = await peer.receive()
        assert isinstance(again, ev.RegisterTools)  # the new actor re-registers its tools
        redelivered = await peer.call_tool("call-1", "echo", {"text": "once"})
        assert redelivered == first and EchoAgent.runs == {"once": 1}
        info = sup.inspect("c")
        assert info.restarts == 1 and info.conversation_id == "c"
        record = sup.store.get("c")
        assert record is not None and [h.kind for h in record.history][:1] == ["tool_call"]
        assert record.history[0].data == {"call_id": "call-1", "tool": "echo", "ok": True}


async def test_admission_cap_holds_under_a_burst_of_10000() -> None:
    settings = SupervisorSettings(max_conversations=500)
    async with running_supervisor(settings=settings) as (sup, _platform, metrics):
        admitted = rejected = peak = 0

        async def burst(offset: int) -> None:
            nonlocal admitted, rejected, peak
            for i in range(offset, 10_000, 10):
                try:
                    sup.start_conversation_nowait(f"c{i}", "echo")
                    admitted += 1
                except AdmissionError as exc:
                    assert exc.reason == "capacity"
                    rejected += 1
                peak = max(peak, len(sup))
                if i % 7 == 0:
                    await trio.lowlevel.checkpoint()
                    peak = max(peak, len(sup))

        async with trio.open_nursery() as nursery:
            for offset in range(10):
                nursery.start_soon(burst, offset)
        assert peak == 500 and admitted == 500 and rejected == 9_500
        stats = sup.statistics()
        assert stats.active == 500 and sum(stats.by_state.values()) == 500
        assert sample(metrics, "orchestrator_admissions_rejected_total", reason="capacity") == 9_500


async def test_admission_cap_counts_restarting_actors(autojump_clock: trio.testing.MockClock) -> None:
    settings = SupervisorSettings(max_conversations=1, restart_budget=10)
    async with running_supervisor([CrashOnStartAgent, EchoAgent], settings=settings) as (sup, _, _m):
        sup.start_conversation_nowait("bad", "crasher")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.inspect("bad").state == "restarting"
        with pytest.raises(AdmissionError, match="capacity"):
            sup.start_conversation_nowait("other", "echo")


async def test_memory_ceiling_stops_admission() -> None:
    rss = [100]
    settings = SupervisorSettings(memory_limit_bytes=1000)
    async with running_supervisor(settings=settings, memory_probe=lambda: rss[0]) as (sup, _, metrics):
        await sup.start_conversation("a", "echo")
        rss[0] = 2000
        with pytest.raises(AdmissionError) as info:
            sup.start_conversation_nowait("b", "echo")
        assert info.value.reason == "memory" and sup.readiness() == (False, "admission_stopped")
        assert sample(metrics, "orchestrator_admissions_rejected_total", reason="memory") == 1


async def test_unknown_agent_and_duplicate_are_rejected() -> None:
    async with running_supervisor() as (sup, _, _m):
        await sup.start_conversation("a", "echo")
        with pytest.raises(AdmissionError) as dup:
            sup.start_conversation_nowait("a", "echo")
        with pytest.raises(AdmissionError) as unknown:
            sup.start_conversation_nowait("b", "nobody")
        assert (dup.value.reason, unknown.value.reason) == ("duplicate", "unknown_agent")
        assert len(sup) == 1
        # Found by a user: the warning did not say which id, nor what is served.
        assert "agent_id 'nobody' (served: " in str(unknown.value) and "echo" in str(unknown.value)
        with pytest.raises(AdmissionError) as long:
            sup.start_conversation_nowait("c", "x" * 10_000)
        assert len(str(long.value)) < 200  # a platform's id is shown cut short


async def test_drain_lets_calls_in_flight_finish_admits_nothing_and_meets_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SupervisorSettings(drain_timeout=10, actor=ActorSettings(shutdown_timeout=2))
    async with running_supervisor(settings=settings) as (sup, platform, metrics):
        for i in range(5):
            await sup.start_conversation(f"c{i}", "echo")
            peer = platform.peer(f"c{i}")
            await peer.receive()
            await peer.request_tool(f"call-{i}", "nap", {"seconds": 3})
        await sup.start_conversation("quiet", "echo")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        results: dict[str, Any] = {}

        async def finish(i: int) -> None:
            peer = platform.peer(f"c{i}")
            results[f"c{i}"] = await peer.receive()
            await peer.end()

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(finish, i)
            await trio.testing.wait_all_tasks_blocked()
            clean: list[bool] = []

            async def drain() -> None:
                clean.append(await sup.drain())

            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert sup.readiness() == (False, "draining")
            assert sample(metrics, "orchestrator_draining") == 1
            with pytest.raises(AdmissionError, match="shutting down"):
                sup.start_conversation_nowait("late", "echo")
        assert all(isinstance(r, ev.ToolResult) and r.result == "rested" for r in results.values())
        assert clean == [False]  # "quiet" never ended by itself and was cancelled
        assert len(sup) == 0
        assert trio.current_time() - start <= 10 + 2 + 1
        assert sup.statistics().ended_total["completed"] == 5
        assert sup.statistics().ended_total["cancelled"] == 1


async def test_drain_returns_true_when_everything_ends_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_supervisor() as (sup, platform, _):
        await sup.start_conversation("c", "echo")

        async def end_later() -> None:
            await trio.sleep(3)
            await platform.peer("c").end()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_later)
            assert await sup.drain(timeout=10) is True
        assert trio.current_time() == pytest.approx(3)


async def test_inspection_api_lists_inspects_stops_and_restarts() -> None:
    async with running_supervisor() as (sup, platform, metrics):
        await sup.start_conversation("a", "echo")
        await sup.start_conversation("b", "echo")
        assert [i.conversation_id for i in sup.list_conversations()] == ["a", "b"]
        info = sup.inspect("a")
        assert info.state == "running" and info.agent_id == "echo"
        assert info.details["mailbox_capacity"] == 64
        sup.restart("a")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.inspect("a").restarts == 1 and platform.peer("a").connects == 2
        assert sample(metrics, "orchestrator_actor_restarts_total", agent="echo", reason="manual") == 1
        sup.stop("b")
        assert await sup.wait_ended("b") == "stopped"
        with pytest.raises(ConversationNotFoundError):
            sup.inspect("b")
        assert sup.status()["conversations"]["active"] == 1  # type: ignore[index]


async def test_permanent_link_error_fails_once_without_restart_and_calls_on_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ErrorWatcher.errors.clear()
    async with running_supervisor([ErrorWatcher]) as (sup, platform, _):
        await sup.start_conversation("w", "watcher")
        peer = platform.peer("w")
        await peer.fail_link(PermanentLinkError("join refused: unauthorized"))
        assert await sup.wait_ended("w") == "failed"
        assert peer.connects == 1
        assert ErrorWatcher.errors == [("connection", "join refused: unauthorized")]
        peer2 = platform.peer("w2")
        peer2.fail_next_connect = PermanentLinkError("HTTP 401")
        sup.start_conversation_nowait("w2", "watcher")
        assert await sup.wait_ended("w2") == "failed"
        assert peer2.connects == 1 and len(ErrorWatcher.errors) == 2


async def test_result_produced_while_link_is_down_is_sent_after_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_supervisor() as (sup, platform, _):
        await sup.start_conversation("c", "echo")
        peer = platform.peer("c")
        await peer.receive()
        await peer.request_tool("1", "nap", {"seconds": 5})
        await trio.sleep(1)
        peer.drop_link()
        await trio.sleep(10)
        with pytest.raises(trio.WouldBlock):
            peer.receive_nowait()
        await peer.restore_link()
        got = [await peer.receive(), await peer.receive()]
        assert ev.ToolResult("1", "nap", "rested") in got
        assert any(isinstance(g, ev.RegisterTools) for g in got)


async def test_mailbox_overflow_policy_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    from orchestrator.mailbox import OverflowPolicy

    ConfigNapper.seen = []
    settings = SupervisorSettings(
        actor=ActorSettings(mailbox_capacity=2, mailbox_policy=OverflowPolicy.DROP_OLDEST)
    )
    async with running_supervisor([ConfigNapper], settings=settings) as (sup, platform, metrics):
        await sup.start_conversation("s", "slow")
        peer = platform.peer("s")
        for n in range(6):
            await peer.send(ev.ConfigUpdate({"n": n}))
        await trio.sleep(100)
        assert ConfigNapper.seen == [0, 4, 5]
        assert sample(metrics, "orchestrator_mailbox_overflows_total", policy="drop_oldest") == 3


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_class_without_an_agent_id_is_not_hosted(blank: str) -> None:
    # The loader refuses `run orchestrator:Agent` (found by a user); a program that hands
    # the base class to a Supervisor itself got an agent hosted under the empty id.
    class Blank(Agent):
        pass

    Blank.agent_id = blank
    for agents in ([Agent], [EchoAgent, Blank]):
        with pytest.raises(ValueError, match=r"has no agent_id to be hosted under"):
            Supervisor(agents, MemoryPlatform().connect)


@pytest.mark.parametrize("count", [1, 2])
async def test_drain_deadline_warns_how_many_conversations_and_calls_it_cancels(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """Found by an operator: the line said nothing of what was cut short, at INFO, and
    began a one-conversation drain with "draining 1 conversations"."""
    caplog.set_level(logging.INFO, logger="orchestrator.supervisor")
    async with running_supervisor() as (sup, platform, _):
        for i in range(count):
            await sup.start_conversation(f"c{i}", "echo")
            await platform.peer(f"c{i}").request_tool(f"call-{i}", "nap", {"seconds": 60})
        await sup.start_conversation("quiet", "echo")  # no call in flight
        await trio.testing.wait_all_tasks_blocked()
        assert await sup.drain(timeout=10) is False
        assert trio.current_time() < 60  # the naps were cancelled, not waited for
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "orchestrator.supervisor"]
    conversations = "2 conversations" if count == 1 else "3 conversations"
    calls = "1 tool call" if count == 1 else "2 tool calls"
    assert (logging.INFO, f"draining {conversations} (deadline 10.0 s)") in lines
    assert (
        logging.WARNING,
        f"drain deadline reached (10.0 s), stragglers cancelled: {conversations}, {calls} in flight",
    ) in lines


async def test_a_one_conversation_drain_says_so_in_the_singular(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.supervisor")
    async with running_supervisor() as (sup, _, _):
        await sup.start_conversation("quiet", "echo")
        assert await sup.drain(timeout=5) is False
    assert "draining 1 conversation (deadline 5.0 s)" in caplog.messages
    assert "drain deadline reached (5.0 s), stragglers cancelled: 1 conversation, 0 tool calls in flight" in (
        caplog.messages
    )


async def test_every_restart_reason_counted_is_one_the_metric_documents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SupervisorSettings(actor=ActorSettings(idle_timeout=10))
    async with running_supervisor([Flaky, Permanent], settings=settings) as (sup, platform, metrics):
        await sup.start_conversation("crashes", "flaky")
        await sup.start_conversation("idles", "permanent")
        await sup.start_conversation("restarted", "flaky")
        await platform.peer("crashes").send(ev.ConfigUpdate({"crash": True}))
        sup.restart("restarted")
        await trio.sleep(15)  # past the idle timeout and the crash's backoff
        family = next(f for f in metrics.registry.collect() if f.name == "orchestrator_actor_restarts")
        reasons = {s.labels["reason"] for s in family.samples if s.name.endswith("_total") and s.value}
    assert reasons == set(RESTART_REASONS)
    assert set(sup.statistics().ended_total) == set(OUTCOMES)
