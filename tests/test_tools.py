from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator import events as ev
from orchestrator.agent import Agent, tool, tool_async, tool_schemas
from orchestrator.errors import AgentDefinitionError
from orchestrator.metrics import Metrics
from orchestrator.store import ConversationRecord
from orchestrator.tools import ToolExecutor, ToolSettings, to_json_value

from .helpers import EchoAgent, running_supervisor, sample


def make_executor(settings: ToolSettings | None = None, metrics: Metrics | None = None) -> ToolExecutor:
    return ToolExecutor(
        EchoAgent(),
        ConversationRecord("c1", "echo"),
        trio.CapacityLimiter(4),
        settings or ToolSettings(),
        metrics,
    )


def test_tool_schemas_is_exactly_what_is_registered() -> None:
    schemas = {s["name"]: s for s in tool_schemas(EchoAgent)}
    assert schemas["open_ticket"] == {
        "name": "open_ticket",
        "description": "Open a ticket",
        "parameters": {
            "type": "object",
            "properties": {
                "subject": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "high"], "default": "low"},
            },
            "required": ["subject"],
            "additionalProperties": False,
        },
    }
    with pytest.raises(TypeError):
        tool_schemas(object)  # type: ignore[arg-type]


def test_tool_async_alias_and_bare_decorator_use_docstring() -> None:
    class A(Agent):
        @tool_async
        async def greet(self, name: str) -> str:
            """Say hello.

            Args:
                name: who to greet
            """
            return f"hi {name}"

    (schema,) = tool_schemas(A)
    assert schema["description"] == "Say hello."
    assert schema["parameters"]["properties"]["name"]["description"] == "who to greet"
    assert A.agent_id == "A"


def test_unsupported_hint_fails_at_class_definition_naming_everything() -> None:
    import datetime

    with pytest.raises(AgentDefinitionError, match=r"Bad.*when_to.*when"):

        class Bad(Agent):
            @tool("x")
            def when_to(self, when: datetime.datetime) -> None: ...


def test_bad_restart_type_is_rejected() -> None:
    with pytest.raises(AgentDefinitionError, match="restart"):

        class Bad(Agent):
            restart = "sometimes"  # type: ignore[assignment]


async def test_executor_runs_async_and_sync_tools() -> None:
    ex = make_executor()
    assert await ex.execute(ev.ToolCallRequest("1", "echo", {"text": "hi"})) == ev.ToolResult(
        "1", "echo", {"text": "hi"}
    )
    reply = await ex.execute(ev.ToolCallRequest("2", "echo_sync", {"text": "ab", "times": 2}))
    assert reply == ev.ToolResult("2", "echo_sync", "abab")


async def test_executor_invalid_arguments_never_run_the_body() -> None:
    EchoAgent.runs.clear()
    ex = make_executor()
    reply = await ex.execute(ev.ToolCallRequest("1", "echo", {"text": 5}))
    assert isinstance(reply, ev.ToolFailure)
    assert "text" in reply.message and "string" in reply.message
    missing = await ex.execute(ev.ToolCallRequest("2", "echo", {}))
    assert isinstance(missing, ev.ToolFailure) and "text" in missing.message
    assert EchoAgent.runs == {}


async def test_executor_unknown_tool_is_an_error_reply_counted_under_fixed_label() -> None:
    from prometheus_client import CollectorRegistry

    metrics = Metrics(CollectorRegistry())
    ex = make_executor(metrics=metrics)
    reply = await ex.execute(ev.ToolCallRequest("1", "rm_rf", {}))
    assert isinstance(reply, ev.ToolFailure) and "unknown tool 'rm_rf'" in reply.message
    assert sample(metrics, "orchestrator_tool_calls_total", tool="unknown", outcome="unknown_tool") == 1
    assert (
        metrics.registry.get_sample_value(
            "orchestrator_tool_calls_total", {"tool": "rm_rf", "outcome": "unknown_tool"}
        )
        is None
    )


async def test_executor_tool_that_raises_gives_error_reply() -> None:
    ex = make_executor()
    reply = await ex.execute(ev.ToolCallRequest("1", "explode", {"message": "kaput"}))
    assert isinstance(reply, ev.ToolFailure)
    assert reply.message == "kaput"  # the exception's message, as conversimple-sdk sends it


async def test_executor_timeout_from_request_is_clamped(autojump_clock: trio.testing.MockClock) -> None:
    ex = make_executor(ToolSettings(default_timeout=5, min_timeout=1, max_timeout=10))
    start = trio.current_time()
    reply = await ex.execute(ev.ToolCallRequest("1", "nap", {"seconds": 100}, timeout_seconds=0.001))
    assert isinstance(reply, ev.ToolFailure) and "timed out after 1 s" in reply.message
    assert trio.current_time() - start == pytest.approx(1)
    reply = await ex.execute(ev.ToolCallRequest("2", "nap", {"seconds": 100}, timeout_seconds=1000))
    assert isinstance(reply, ev.ToolFailure) and "after 10 s" in reply.message
    reply = await ex.execute(ev.ToolCallRequest("3", "nap", {"seconds": 100}))
    assert isinstance(reply, ev.ToolFailure) and "after 5 s" in reply.message
    assert await ex.execute(ev.ToolCallRequest("4", "nap", {"seconds": 2})) == ev.ToolResult(
        "4", "nap", "rested"
    )


async def test_executor_redelivered_call_is_answered_from_cache() -> None:
    EchoAgent.runs.clear()
    ex = make_executor()
    first = await ex.execute(ev.ToolCallRequest("same", "echo", {"text": "once"}))
    again = await ex.execute(ev.ToolCallRequest("same", "echo", {"text": "once"}))
    assert first == again and EchoAgent.runs == {"once": 1}


async def test_executor_call_in_flight_is_joined_not_run_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Slow(Agent):
        runs = 0

        @tool("slow")
        async def slow(self) -> int:
            Slow.runs += 1
            await trio.sleep(1)
            return Slow.runs

    ex = ToolExecutor(Slow(), ConversationRecord("c", "Slow"), trio.CapacityLimiter(1))
    replies: list[Any] = []

    async def call() -> None:
        replies.append(await ex.execute(ev.ToolCallRequest("x", "slow", {})))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        nursery.start_soon(call)
    # The redelivery is answered by nobody at once (it returns while the first still runs);
    # the first request's reply is the one answer.
    assert Slow.runs == 1 and replies == [None, ev.ToolResult("x", "slow", 1)]


async def test_executor_cache_is_bounded() -> None:
    ex = ToolExecutor(
        EchoAgent(),
        ConversationRecord("c", "echo"),
        trio.CapacityLimiter(1),
    )
    ex.record.results.maxsize = 3
    for i in range(5):
        await ex.execute(ev.ToolCallRequest(str(i), "echo", {"text": str(i)}))
    assert len(ex.record.results) == 3 and "0" not in ex.record.results and "4" in ex.record.results


async def test_executor_non_json_result_is_an_error_reply() -> None:
    class Weird(Agent):
        @tool("returns a set")
        async def weird(self) -> Any:
            return {1, 2}

    ex = ToolExecutor(Weird(), ConversationRecord("c", "Weird"), trio.CapacityLimiter(1))
    reply = await ex.execute(ev.ToolCallRequest("1", "weird", {}))
    assert isinstance(reply, ev.ToolFailure) and "not JSON-serialisable" in reply.message


def test_to_json_value_unstructures_attrs_and_enums() -> None:
    import enum

    import attrs

    class Color(enum.Enum):
        RED = "red"

    @attrs.frozen
    class Point:
        x: int
        color: Color

    assert to_json_value({"p": Point(1, Color.RED), "t": (1, 2)}) == {
        "p": {"x": 1, "color": "red"},
        "t": [1, 2],
    }
    with pytest.raises(TypeError):
        to_json_value(float("nan"))


async def test_blocking_async_tool_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry

    metrics = Metrics(CollectorRegistry())
    ex = make_executor(ToolSettings(blocking_warn_after=0.05), metrics)
    with caplog.at_level(logging.WARNING, logger="orchestrator.tools"):
        reply = await ex.execute(ev.ToolCallRequest("1", "block_loop", {"seconds": 0.1}))
    assert reply == ev.ToolResult("1", "block_loop", "blocked")
    assert any(
        "block_loop" in r.getMessage() and "blocked the event loop" in r.getMessage() for r in caplog.records
    )
    assert sample(metrics, "orchestrator_blocking_tool_detections_total", tool="block_loop") == 1


class BlockThenNapAgent(Agent):
    agent_id = "block-then-nap"

    @tool
    async def block_then_nap(self, block: float, nap: float) -> str:
        time.sleep(block)  # noqa: ASYNC251 - a first step that blocks the loop
        await trio.sleep(nap)
        return "done"


async def test_a_first_step_that_blocks_the_loop_counts_against_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = ToolSettings(default_timeout=1, min_timeout=0.5, blocking_warn_after=0.05)
    ex = ToolExecutor(BlockThenNapAgent(), ConversationRecord("c1", "x"), trio.CapacityLimiter(1), settings)
    start = trio.current_time()
    reply = await ex.execute(ev.ToolCallRequest("1", "block_then_nap", {"block": 0.3, "nap": 0.8}))
    # The mock clock stood still while the tool blocked: the timeout fired 0.3 s early on it.
    assert isinstance(reply, ev.ToolFailure) and "timed out after 1 s" in reply.message
    assert trio.current_time() - start == pytest.approx(0.7, abs=0.05)
    start = trio.current_time()
    reply = await ex.execute(ev.ToolCallRequest("2", "block_then_nap", {"block": 0.01, "nap": 0.8}))
    assert reply == ev.ToolResult("2", "block_then_nap", "done")  # a short first step does not count
    assert trio.current_time() - start == pytest.approx(0.8)


async def test_one_failing_tool_among_50_conversations_touches_only_its_call() -> None:
    async with running_supervisor() as (sup, platform, metrics):
        for i in range(50):
            sup.start_conversation_nowait(f"c{i}", "echo")
        replies = {}

        async def converse(i: int) -> None:
            peer = platform.peer(f"c{i}")
            tool_name, args = ("explode", {}) if i == 17 else ("echo", {"text": str(i)})
            replies[i] = await peer.call_tool(f"call-{i}", tool_name, args)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(converse, i)
        assert isinstance(replies[17], ev.ToolFailure)
        assert all(
            replies[i] == ev.ToolResult(f"call-{i}", "echo", {"text": str(i)}) for i in range(50) if i != 17
        )
        assert sup.statistics().restarts_total == 0 and len(sup) == 50
        assert sample(metrics, "orchestrator_tool_calls_total", tool="explode", outcome="error") == 1
        assert sample(metrics, "orchestrator_tool_calls_total", tool="echo", outcome="ok") == 49


async def test_business_error_message_reaches_the_platform_unchanged() -> None:
    from orchestrator.errors import ToolError

    class Shop(Agent):
        @tool("refund")
        async def refund(self, order_id: str) -> None:
            raise ToolError(f"order {order_id} was already refunded")

        @tool("who am I")
        async def whoami(self) -> str:
            return self.conversation.conversation_id

    async with running_supervisor([Shop]) as (sup, platform, _):
        await sup.start_conversation("conv-9", "Shop")
        peer = platform.peer("conv-9")
        reply = await peer.call_tool("1", "refund", {"order_id": "A1"})
        assert isinstance(reply, ev.ToolFailure) and reply.message == "order A1 was already refunded"
        assert await peer.call_tool("2", "whoami") == ev.ToolResult("2", "whoami", "conv-9")


async def test_stuck_sync_tool_threads_cannot_starve_other_tools() -> None:
    import threading

    from orchestrator.tools import _STUCK_THREADS

    release = threading.Event()

    class Stuck(Agent):
        agent_id = "stuck"

        @tool("Blocks its worker thread until released")
        def hang(self) -> str:
            release.wait(10)
            return "late"

        @tool("A quick sync tool")
        def quick(self) -> str:
            return "quick"

    shared = trio.CapacityLimiter(6)
    settings = ToolSettings(
        default_timeout=0.2, min_timeout=0.1, threads_per_conversation=2, max_stuck_threads_per_tool=4
    )
    bad = [ToolExecutor(Stuck(), ConversationRecord(f"bad{n}", "stuck"), shared, settings) for n in range(3)]
    good = ToolExecutor(Stuck(), ConversationRecord("good", "stuck"), shared, settings)
    try:
        replies = []
        for i in range(6):  # calls time out and leave their threads stuck
            replies.append(await bad[i % 3].execute(ev.ToolCallRequest(f"h{i}", "hang", {})))
        messages = [r.message for r in replies if isinstance(r, ev.ToolFailure)]
        assert len(messages) == 6
        assert all("timed out" in m for m in messages[:4])
        assert all("unavailable: 4 earlier calls are still blocked" in m for m in messages[4:])
        assert shared.borrowed_tokens == 0  # abandoned threads gave their tokens back
        for i in range(10):
            assert await good.execute(ev.ToolCallRequest(f"q{i}", "quick", {})) == ev.ToolResult(
                f"q{i}", "quick", "quick"
            )
    finally:
        release.set()
    own = (Stuck.__qualname__, "hang")  # other tests' abandoned threads may outlive their trio run
    with trio.fail_after(10):
        while own in _STUCK_THREADS:  # noqa: ASYNC110 - worker threads end on their own
            await trio.sleep(0.01)


# ------------------------------------------------ a completed call survives its hook


class HookFails(Agent):
    """``pay`` counts its runs; ``on_tool_completed`` raises, or naps, as told."""

    runs = 0
    hook: str = "raise"

    @tool("pay")
    async def pay(self) -> int:
        HookFails.runs += 1
        return HookFails.runs

    async def on_tool_completed(self, tool_name: str, result: Any) -> None:
        if HookFails.hook == "raise":
            raise RuntimeError("a bug in the hook")
        await trio.sleep(10)


async def test_executor_result_is_cached_when_on_tool_completed_raises() -> None:
    HookFails.runs, HookFails.hook = 0, "raise"
    ex = ToolExecutor(HookFails(), ConversationRecord("c", "HookFails"), trio.CapacityLimiter(1))
    with pytest.raises(RuntimeError, match="a bug in the hook"):  # the hook crashes its actor...
        await ex.execute(ev.ToolCallRequest("p", "pay", {}))
    # ...and the redelivery is answered from the cache: the body does not run again.
    assert await ex.execute(ev.ToolCallRequest("p", "pay", {})) == ev.ToolResult("p", "pay", 1)
    assert HookFails.runs == 1


async def test_executor_result_is_cached_when_cancelled_in_on_tool_completed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    HookFails.runs, HookFails.hook = 0, "nap"
    ex = ToolExecutor(HookFails(), ConversationRecord("c", "HookFails"), trio.CapacityLimiter(1))
    with trio.move_on_after(1) as scope:  # the actor is stopped while the hook naps
        await ex.execute(ev.ToolCallRequest("p", "pay", {}))
    assert scope.cancelled_caught
    HookFails.hook = "raise"  # a cached call does not reach the hook at all
    assert await ex.execute(ev.ToolCallRequest("p", "pay", {})) == ev.ToolResult("p", "pay", 1)
    assert HookFails.runs == 1


# ------------------------------------------------ a tool's own timeout caps the request's


class OwnTimeout(Agent):
    @tool("naps; 2 s at most", timeout=2)
    async def capped(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"

    @tool("naps; 0.5 s at most, below the settings' minimum", timeout=0.5)
    async def tiny(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"


@pytest.mark.parametrize(
    ("tool_name", "requested", "expected"),
    [
        ("capped", 30, 2),  # the platform's longer timeout does not lengthen the tool's
        ("capped", 1.5, 1.5),  # a shorter request still wins
        ("capped", None, 2),
        ("capped", 0.01, 1),  # a request is clamped to min_timeout...
        ("tiny", 30, 1),  # ...and so is a tool's own timeout, with a request or without
        ("tiny", None, 1),
    ],
)
async def test_executor_tool_timeout_caps_the_request_timeout(
    autojump_clock: trio.testing.MockClock, tool_name: str, requested: float | None, expected: float
) -> None:
    settings = ToolSettings(default_timeout=5, min_timeout=1, max_timeout=10)
    ex = ToolExecutor(OwnTimeout(), ConversationRecord("c", "x"), trio.CapacityLimiter(1), settings)
    start = trio.current_time()
    reply = await ex.execute(ev.ToolCallRequest("1", tool_name, {"seconds": 100}, requested))
    assert isinstance(reply, ev.ToolFailure) and reply.message.endswith(f"timed out after {expected:g} s")
    assert trio.current_time() - start == pytest.approx(expected)


async def test_actor_applies_the_tool_timeout_over_the_request_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_supervisor([OwnTimeout]) as (sup, platform, _):
        await sup.start_conversation("c", "OwnTimeout")
        peer = platform.peer("c")
        start = trio.current_time()
        reply = await peer.call_tool("1", "capped", {"seconds": 10}, timeout_seconds=30)
        assert isinstance(reply, ev.ToolFailure) and reply.message == "tool 'capped' timed out after 2 s"
        assert trio.current_time() - start == pytest.approx(2)
        assert await peer.call_tool("2", "capped", {"seconds": 1}, timeout_seconds=30) == ev.ToolResult(
            "2", "capped", "rested"
        )


# ------------------------------------------------ definitions that cannot work


def test_two_tools_with_one_public_name_are_rejected() -> None:
    with pytest.raises(AgentDefinitionError) as info:

        class Twice(Agent):
            @tool("a")
            async def foo(self) -> None: ...

            @tool("b", name="foo")
            async def bar(self) -> None: ...

    assert str(info.value) == "Twice: tools 'foo' and 'bar' are both named 'foo'"


def test_a_tool_named_like_an_inherited_one_is_rejected_but_an_override_is_not() -> None:
    class Base(Agent):
        @tool("a")
        async def foo(self) -> str:
            return "base"

    class Override(Base):
        @tool("a, again")
        async def foo(self) -> str:
            return "override"

    assert Override.__tools__["foo"].description == "a, again"
    with pytest.raises(AgentDefinitionError, match=r"^Clash: tools 'foo' and 'bar' are both named 'foo'$"):

        class Clash(Base):
            @tool("b", name="foo")
            async def bar(self) -> None: ...


@pytest.mark.parametrize("wrapper", [staticmethod, classmethod])
def test_tool_above_staticmethod_or_classmethod_is_rejected(wrapper: Any) -> None:
    with pytest.raises(AgentDefinitionError) as info:

        class Wrapped(Agent):
            @tool("a")  # type: ignore[misc]
            @wrapper
            async def foo(*args: Any) -> None: ...

    assert str(info.value) == "Wrapped.foo: a tool must be a plain method"


def test_generator_tools_are_rejected() -> None:
    with pytest.raises(AgentDefinitionError) as info:

        class Streams(Agent):
            @tool("a")
            async def chunks(self) -> Any:
                yield "a"

    assert str(info.value) == "Streams.chunks: a tool must return its result, not be a generator"
    with pytest.raises(AgentDefinitionError, match=r"^Yields\.chunks: .*not be a generator$"):

        class Yields(Agent):
            @tool("a")
            def chunks(self) -> Any:
                yield "a"


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 10**400, 0, -1.5, "5", True])
def test_tool_timeout_must_be_a_finite_positive_number(timeout: Any) -> None:
    with pytest.raises(AgentDefinitionError) as info:

        class Bad(Agent):
            @tool("a", timeout=timeout)
            async def slow(self) -> None: ...

    assert str(info.value) == (
        f"test_tool_timeout_must_be_a_finite_positive_number.<locals>.Bad.slow: "
        f"tool timeout must be a finite, positive number of seconds, got {timeout!r}"
    )


def test_tool_timeout_may_be_an_int() -> None:
    class Fine(Agent):
        @tool("a", timeout=3)
        async def slow(self) -> None: ...

    assert Fine.__tools__["slow"].timeout == 3.0


# ------------------------------------------------ what a failing tool logs


class Failing(Agent):
    @tool("divides")
    async def boom(self, secret: str) -> float:
        return len(secret) / 0

    @tool("a business error")
    async def refuse(self, secret: str) -> None:
        from orchestrator.errors import ToolError

        raise ToolError("no refunds today")

    @tool("returns a datetime deep inside")
    async def weird(self, secret: str) -> Any:
        import datetime

        return {"ok": [1, {"fine": "yes"}], "rows": [{"n": 1}, {"when": datetime.datetime(2024, 1, 1)}]}

    @tool("naps")
    async def nap(self, secret: str) -> None:
        await trio.sleep(100)


def failing_executor() -> ToolExecutor:
    settings = ToolSettings(default_timeout=1, min_timeout=0.5)
    return ToolExecutor(Failing(), ConversationRecord("c", "x"), trio.CapacityLimiter(1), settings)


def tool_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "orchestrator.tools"]


async def test_a_raising_tool_is_one_line_at_info_with_its_traceback_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = failing_executor()
    with caplog.at_level(logging.INFO, logger="orchestrator.tools"):
        await ex.execute(ev.ToolCallRequest("1", "boom", {"secret": "hunter2"}))
    (record,) = tool_records(caplog)
    assert record.levelno == logging.INFO and not record.exc_info
    assert record.getMessage() == "tool boom raised ZeroDivisionError: division by zero"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="orchestrator.tools"):
        await ex.execute(ev.ToolCallRequest("2", "boom", {"secret": "hunter2"}))
    (record,) = tool_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "in boom" in caplog.text and "len(secret) / 0" in caplog.text  # where it raised
    assert "hunter2" not in caplog.text  # never the arguments' values


async def test_a_business_error_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="orchestrator.tools"):
        reply = await failing_executor().execute(ev.ToolCallRequest("1", "refuse", {"secret": "x"}))
    assert isinstance(reply, ev.ToolFailure) and reply.message == "no refunds today"
    assert tool_records(caplog) == []


async def test_a_tool_timeout_is_logged_with_the_tool_and_seconds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orchestrator.tools"):
        reply = await failing_executor().execute(ev.ToolCallRequest("1", "nap", {"secret": "hunter2"}))
    assert isinstance(reply, ev.ToolFailure)
    assert [r.getMessage() for r in tool_records(caplog)] == ["tool nap timed out after 1 s"]
    assert "hunter2" not in caplog.text


async def test_an_unserialisable_result_is_named_as_such_with_its_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="orchestrator.tools"):
        reply = await failing_executor().execute(ev.ToolCallRequest("1", "weird", {"secret": "hunter2"}))
    problem = (
        'returned a value JSON cannot carry at result["rows"][1]["when"]: datetime is not JSON-serialisable'
    )
    assert isinstance(reply, ev.ToolFailure) and reply.message == f"tool 'weird' {problem}"
    assert [r.getMessage() for r in tool_records(caplog)] == [f"tool weird {problem}"]
    assert "raised" not in caplog.text and "hunter2" not in caplog.text


def test_culprit_paths_follow_the_conversion() -> None:
    import dataclasses
    import enum

    import attrs

    from orchestrator.tools import _culprit

    class Kind(enum.Enum):
        ODD = {1, 2}

    @attrs.frozen
    class Point:
        x: Any

    @dataclasses.dataclass
    class Box:
        items: Any

    assert _culprit(object()) == "result"
    assert _culprit(Box([Point(1), Point(float("nan"))])) == "result.items[1].x"
    assert _culprit({"a": (1, Kind.ODD)}) == 'result["a"][1].value'
    assert _culprit({"a": {1: "x"}}) == 'result["a"]'  # a key that is not a string
