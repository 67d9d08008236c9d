"""Calls run in place in the mailbox task; a call that waits is kept by that task.

These pin the edges of that design: a reply is sent outside the call's timeout, hooks
are not under it, a waiting call does not hold up the next one, and a conversation
always finishes after its last call. An actor reads a pull connection in that same
task: the event that asks for a call never crosses to another task.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator import events as ev
from orchestrator.actor import ActorExit, ActorSettings, ConversationActor
from orchestrator.agent import Agent, call_hook, tool
from orchestrator.mailbox import OverflowPolicy
from orchestrator.store import ConversationRecord
from orchestrator.testing import MemoryConnection, MemoryPeer
from orchestrator.tools import ToolSettings

from .helpers import ConfigNapper, Exits


class Timed(Agent):
    agent_id = "timed"

    @tool("a commit that must not be torn: its last step is shielded")
    async def commit(self) -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        return "committed"

    @tool("waits")
    async def wait(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "waited"

    @tool("quick")
    async def quick(self) -> str:
        return "ok"


class SlowCompletedHook(Timed):
    async def on_tool_completed(self, tool_name: str, result: Any) -> None:
        await trio.sleep(3)  # longer than the tools' 1 s timeout


def make_actor(
    agent: type[Agent], peer: MemoryPeer, connection: type[MemoryConnection] = MemoryConnection
) -> ConversationActor:
    return ConversationActor(
        ConversationRecord(peer.conversation_id, agent.agent_id),
        agent,
        connection(peer),
        trio.CapacityLimiter(4),
        ActorSettings(tools=ToolSettings(default_timeout=1.0, min_timeout=0.1)),
    )


async def reply_to(peer: MemoryPeer, call_id: str) -> Any:
    while True:
        out = await peer.receive()
        if isinstance(out, ev.ToolResult | ev.ToolFailure) and out.call_id == call_id:
            return out


async def test_call_completing_past_its_deadline_is_answered_with_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer)
    async with trio.open_nursery() as nursery:
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await peer.wait_connected()
        await peer.request_tool("k1", "commit")
        assert await reply_to(peer, "k1") == ev.ToolResult("k1", "commit", "committed")
        # And the conversation still ends: the call was counted out exactly once.
        await exits.end(peer)
    assert actor.record.results.get("k1") == ev.ToolResult("k1", "commit", "committed")


async def test_hooks_are_not_under_the_tools_timeout(autojump_clock: trio.testing.MockClock) -> None:
    peer = MemoryPeer("c1")
    actor = make_actor(SlowCompletedHook, peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await peer.wait_connected()
        await peer.request_tool("k1", "quick")
        await peer.request_tool("k2", "wait", {"seconds": 0.5})
        assert await reply_to(peer, "k1") == ev.ToolResult("k1", "quick", "ok")
        assert await reply_to(peer, "k2") == ev.ToolResult("k2", "wait", "waited")
        nursery.cancel_scope.cancel()


async def test_a_waiting_call_does_not_hold_up_the_next_and_times_out_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer)
    async with trio.open_nursery() as nursery:
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await peer.wait_connected()
        start = trio.current_time()
        await peer.request_tool("slow", "wait", {"seconds": 100})
        await peer.request_tool("fast", "quick")
        assert await reply_to(peer, "fast") == ev.ToolResult("fast", "quick", "ok")
        assert trio.current_time() == start  # not after the slow one
        slow = await reply_to(peer, "slow")
        assert isinstance(slow, ev.ToolFailure) and "timed out after 1 s" in slow.message
        assert trio.current_time() - start == 1
        await exits.end(peer)


class TaskNoted(Agent):
    agent_id = "noted"
    tasks: list[trio.lowlevel.Task] = []

    @tool("notes the task it runs in")
    async def note(self) -> str:
        TaskNoted.tasks.append(trio.lowlevel.current_task())
        return "noted"


class ReaderNoted(MemoryConnection):
    """A MemoryConnection that notes which task read each event."""

    readers: list[trio.lowlevel.Task] = []

    async def receive(self) -> ev.InboundEvent | None:
        event = await super().receive()
        if isinstance(event, ev.ToolCallRequest):
            ReaderNoted.readers.append(trio.lowlevel.current_task())
        return event


async def test_a_call_runs_in_the_task_that_read_its_request(autojump_clock: trio.testing.MockClock) -> None:
    peer = MemoryPeer("c1")
    actor = make_actor(TaskNoted, peer, ReaderNoted)
    TaskNoted.tasks.clear()
    ReaderNoted.readers.clear()
    async with trio.open_nursery() as nursery:
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await peer.wait_connected()
        for i in range(3):
            assert await peer.call_tool(f"n{i}", "note") == ev.ToolResult(f"n{i}", "note", "noted")
        await exits.end(peer)
    assert len(TaskNoted.tasks) == 3 and TaskNoted.tasks == ReaderNoted.readers


async def after_one_call(nursery: trio.Nursery, actor: ConversationActor, peer: MemoryPeer) -> Exits:
    """Run ``actor`` in ``nursery`` until its link is up and it has answered one quick call."""
    exits = Exits()
    nursery.start_soon(exits.run, actor)
    await peer.wait_connected()
    assert await peer.call_tool("q", "quick") == ev.ToolResult("q", "quick", "ok")
    return exits


async def test_an_end_handed_in_from_elsewhere_reaches_an_actor_waiting_on_its_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The control connection's conversation_ended, while the actor's reader waits in
    its own link, ends the conversation at once (the link stays quiet)."""
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer)
    async with trio.open_nursery() as nursery:
        exits = await after_one_call(nursery, actor, peer)
        await trio.testing.wait_all_tasks_blocked()
        asked = trio.current_time()
        actor.notify(ev.ConversationEnded("ended on the control channel"))
        with trio.fail_after(1):
            await exits.ended.wait()
        assert exits.exits == [ActorExit.COMPLETED] and trio.current_time() == asked


@pytest.mark.parametrize("where", ["link", "elsewhere"])
async def test_a_link_that_handed_out_the_end_is_left_to_close_itself(
    where: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling the connection raises a Cancelled in the actor's task too (where it
    waits for its nursery): only a connection still up is cancelled."""
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer)
    async with trio.open_nursery() as nursery:
        exits = await after_one_call(nursery, actor, peer)
        if where == "link":
            await exits.end(peer)
        else:
            actor.notify(ev.ConversationEnded("ended on the control channel"))
            assert await exits.wait(1) == [ActorExit.COMPLETED]
    assert actor._nursery is not None
    assert actor._nursery.cancel_scope.cancel_called == (where == "elsewhere")


class SlowToConnect(MemoryConnection):
    """A MemoryConnection that takes 5 s to come up, noting the nursery it waits in."""

    nurseries: list[trio.Nursery] = []

    async def maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        parent = trio.lowlevel.current_task().parent_nursery
        assert parent is not None
        SlowToConnect.nurseries.append(parent)
        await trio.sleep(5)
        await super().maintain(task_status=task_status)


async def test_the_connection_runs_in_the_actors_nursery_from_its_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``nursery.start`` opened a nursery of its own per actor for the connection to
    come up in (time, and memory every idle conversation kept)."""
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer, SlowToConnect)
    SlowToConnect.nurseries.clear()
    started_at: list[float] = []

    class Status:
        def started(self, value: None = None) -> None:
            started_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: actor.run(task_status=Status()))  # type: ignore[arg-type]
        await peer.wait_connected()
        assert SlowToConnect.nurseries == [actor._nursery]
        assert await peer.call_tool("q", "quick") == ev.ToolResult("q", "quick", "ok")
        await peer.end()
    assert started_at == [5.0]  # once the link was up, not before


async def test_an_actor_stopped_while_its_link_comes_up_stops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer, SlowToConnect)
    async with trio.open_nursery() as nursery:
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await trio.sleep(1)
        actor.cancel()
        assert await exits.wait(1) == [ActorExit.STOPPED]
    assert peer.connects == 0


class ReturnsAtOnce(MemoryConnection):
    """A connection breaking the rule: it returns without ever calling started()."""

    async def maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in leaves(inner)]
    return [group]


async def test_a_connection_that_returns_before_it_is_up_fails_its_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found in review: as nursery.start did, not a wait for ever."""
    peer = MemoryPeer("c1")
    actor = make_actor(Timed, peer, ReturnsAtOnce)
    with trio.fail_after(1), pytest.raises(BaseExceptionGroup) as caught:
        await actor.run()
    assert [str(e) for e in leaves(caught.value)] == [
        "the connection returned without calling task_status.started()"
    ]


async def test_a_drop_policy_actor_still_queues_and_drops_in_its_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Pulling would leave nothing to drop: an actor with a drop policy is pushed to."""
    ConfigNapper.seen = []
    peer = MemoryPeer("c1")
    actor = ConversationActor(
        ConversationRecord("c1", "slow"),
        ConfigNapper,
        MemoryConnection(peer),
        trio.CapacityLimiter(4),
        ActorSettings(mailbox_capacity=1, mailbox_policy=OverflowPolicy.DROP_NEWEST),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await peer.wait_connected()
        await peer.send(ev.ConfigUpdate({"n": 0}))
        await trio.testing.wait_all_tasks_blocked()  # the actor is busy with it
        for n in range(1, 4):
            await peer.send(ev.ConfigUpdate({"n": n}))
        await trio.sleep(100)
        assert ConfigNapper.seen == [0, 1] and actor.mailbox.statistics().dropped == 2
        nursery.cancel_scope.cancel()


async def test_call_hook_runs_the_hooks_an_agent_overrides_and_skips_its_no_ops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, bool]] = []

    class Hooked(Agent):
        async def on_conversation_started(self, conversation: ConversationRecord) -> None:
            calls.append(("async", threading.current_thread() is threading.main_thread()))

        def on_conversation_ended(self, conversation: ConversationRecord) -> None:  # type: ignore[override]
            calls.append(("sync", threading.current_thread() is threading.main_thread()))

    agent, record = Hooked(), ConversationRecord("c", "hooked")
    await call_hook(agent, "on_conversation_started", record)
    await call_hook(agent, "on_conversation_ended", record)
    assert calls == [("async", True), ("sync", False)]  # a sync hook runs in a worker thread

    def looked_at(func: Any) -> bool:
        raise AssertionError(f"{func!r} was looked at")

    monkeypatch.setattr(inspect, "iscoroutinefunction", looked_at)
    assert await call_hook(agent, "on_error", "link", "gone", {}) is None  # Agent's no-op
    with pytest.raises(AssertionError, match="was looked at"):
        await call_hook(agent, "on_conversation_started", record)
