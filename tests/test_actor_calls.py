"""Calls run in place in the mailbox task; a call that waits is kept by that task.

These pin the edges of that design: a reply is sent outside the call's timeout, hooks
are not under it, a waiting call does not hold up the next one, and a conversation
always finishes after its last call.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from orchestrator import events as ev
from orchestrator.actor import ActorExit, ActorSettings, ConversationActor
from orchestrator.agent import Agent, tool
from orchestrator.store import ConversationRecord
from orchestrator.testing import MemoryConnection, MemoryPeer
from orchestrator.tools import ToolSettings


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


def make_actor(agent: type[Agent], peer: MemoryPeer) -> ConversationActor:
    return ConversationActor(
        ConversationRecord(peer.conversation_id, agent.agent_id),
        agent,
        MemoryConnection(peer),
        trio.CapacityLimiter(4),
        ActorSettings(tools=ToolSettings(default_timeout=1.0, min_timeout=0.1)),
    )


class Exits:
    """Runs an actor and keeps how it ended."""

    def __init__(self) -> None:
        self.exits: list[ActorExit] = []
        self.ended = trio.Event()

    async def run(self, actor: ConversationActor) -> None:
        self.exits.append(await actor.run())
        self.ended.set()

    async def end(self, peer: MemoryPeer) -> None:
        """End the conversation; the actor must return COMPLETED (every call counted out)."""
        await peer.end()
        with trio.fail_after(10):
            await self.ended.wait()
        assert self.exits == [ActorExit.COMPLETED]


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
