"""orchestrator.testing: a peer's waits end when its conversation does.

Found by a user: ``call_tool`` on a conversation whose agent raised in a hook
waited for ever once the conversation went over its restart budget. Each test
runs under ``trio.fail_after``, so a wait that never ends fails rather than hangs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator import events as ev
from orchestrator.agent import Agent, tool
from orchestrator.errors import ConversationFailedError, ConversationOverError
from orchestrator.store import ConversationRecord
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryPlatform


class StartBoom(Agent):
    agent_id = "start-boom"

    @tool("Never reached")
    async def x(self) -> dict[str, int]:
        return {"ok": 1}

    async def on_conversation_started(self, conversation: ConversationRecord) -> None:
        raise RuntimeError("start boom")


class CalledBoom(Agent):
    agent_id = "called-boom"

    @tool("Never reached")
    async def x(self) -> dict[str, int]:
        return {"ok": 1}

    async def on_tool_called(self, tool_name: str, arguments: Mapping[str, Any]) -> None:
        raise RuntimeError(f"no calls to {tool_name}")


class Fine(Agent):
    agent_id = "fine"

    @tool("Say ok")
    async def x(self) -> dict[str, int]:
        return {"ok": 1}


@asynccontextmanager
async def hosting(
    agent: type[Agent], settings: SupervisorSettings | None = None
) -> AsyncIterator[tuple[Supervisor, MemoryPlatform, trio.Nursery]]:
    """A supervisor hosting ``agent`` on a MemoryPlatform, cancelled at the block's end."""
    platform = MemoryPlatform()
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(
            Supervisor([agent], platform.connect, settings=settings or SupervisorSettings()).run
        )
        yield sup, platform, nursery
        nursery.cancel_scope.cancel()


async def test_call_tool_raises_when_a_start_hook_sends_the_conversation_over_its_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosting(StartBoom) as (sup, platform, _):
        sup.start_conversation_nowait("c1", "start-boom")
        with trio.fail_after(600), pytest.raises(ConversationFailedError) as failed:
            await platform.peer("c1").call_tool("1", "x", {})
    message = str(failed.value)
    assert "conversation 'c1' ended before a reply to call '1' came, after 3 restart(s)" in message
    assert "over its restart budget" in message
    assert message.endswith("last error: RuntimeError: start boom")


async def test_call_tool_raises_when_the_tool_called_hook_fails_every_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SupervisorSettings(restart_budget=1)
    async with hosting(CalledBoom, settings) as (sup, platform, _):
        sup.start_conversation_nowait("c1", "called-boom")
        peer = platform.peer("c1")
        with trio.fail_after(600), pytest.raises(ConversationFailedError) as failed:
            # Each new actor is asked again (the call is redelivered as a platform would).
            for attempt in range(5):
                await peer.call_tool(f"call-{attempt}", "x", {})
    assert "after 1 restart(s)" in str(failed.value)
    assert str(failed.value).endswith("last error: RuntimeError: no calls to x")


async def test_receive_reads_what_was_sent_then_raises_once_the_platform_ended_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosting(Fine) as (sup, platform, _):
        await sup.start_conversation("c1", "fine")
        peer = platform.peer("c1")
        await peer.request_tool("1", "x")
        await peer.end()
        assert await sup.wait_ended("c1") == "completed"
        with trio.fail_after(60):
            assert isinstance(await peer.receive(), ev.RegisterTools)
            assert await peer.receive() == ev.ToolResult("1", "x", {"ok": 1})
            with pytest.raises(ConversationOverError, match=r"'c1' is over \(the platform ended it\)"):
                await peer.receive()


async def test_a_stopped_conversation_ends_the_wait_and_a_new_one_under_its_id_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hosting(Fine) as (sup, platform, nursery):
        await sup.start_conversation("c1", "fine")
        peer = platform.peer("c1")
        assert isinstance(await peer.receive(), ev.RegisterTools)

        async def stop_soon() -> None:
            await trio.sleep(1)
            sup.stop("c1")

        nursery.start_soon(stop_soon)
        with trio.fail_after(60), pytest.raises(ConversationFailedError, match="after 0 restart"):
            await peer.receive()
        await sup.start_conversation("c1", "fine")
        with trio.fail_after(60):
            assert await peer.call_tool("2", "x") == ev.ToolResult("2", "x", {"ok": 1})


async def test_the_watch_leaves_no_handler_behind_once_conversations_are_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor_log = logging.getLogger("orchestrator.supervisor")
    before = list(supervisor_log.handlers)
    async with hosting(Fine) as (sup, platform, _):
        await sup.start_conversation("c1", "fine")
        assert len(supervisor_log.handlers) == len(before) + 1
        await platform.peer("c1").end()
        await sup.wait_ended("c1")
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor_log.handlers == before


async def test_a_connection_made_outside_a_supervisor_waits_as_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    platform = MemoryPlatform()
    peer = platform.peer("c1")
    with trio.move_on_after(5) as waited:
        await peer.receive()
    assert waited.cancelled_caught  # cancelled from outside: the peer's wait does not swallow it


class SlowStartBoom(Agent):
    agent_id = "slow-start-boom"
    crashed = False

    @tool("Say ok")
    async def x(self) -> dict[str, int]:
        return {"ok": 1}

    async def on_conversation_started(self, conversation: ConversationRecord) -> None:
        if not SlowStartBoom.crashed:  # the first actor crashes before it reads its link
            SlowStartBoom.crashed = True
            await trio.sleep(0.01)
            raise RuntimeError("start boom")


async def test_a_request_the_crashed_actor_never_read_is_not_sent_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # call_tool sent its request again to the restarted actor although the first copy was
    # still queued: the new actor read both, and the cache's answer to the second was left
    # for the test's next receive().
    settings = SupervisorSettings(backoff_min=0.05, backoff_max=0.05)
    async with hosting(SlowStartBoom, settings) as (sup, platform, _):
        sup.start_conversation_nowait("c1", "slow-start-boom")
        peer = platform.peer("c1")
        with trio.fail_after(60):
            assert await peer.call_tool("1", "x") == ev.ToolResult("1", "x", {"ok": 1})
        await trio.sleep(1)
        with pytest.raises(trio.WouldBlock):
            peer.receive_nowait()
