"""Agents and fixtures shared by the runtime tests."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from prometheus_client import CollectorRegistry

from orchestrator.actor import ActorExit, ConversationActor
from orchestrator.agent import Agent, tool
from orchestrator.metrics import Metrics
from orchestrator.sandbox.conversation import Socket
from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryPeer, MemoryPlatform


class Exits:
    """Runs an actor and keeps how it ended."""

    def __init__(self) -> None:
        self.exits: list[ActorExit] = []
        self.ended = trio.Event()

    async def run(self, actor: ConversationActor) -> None:
        self.exits.append(await actor.run())
        self.ended.set()

    async def wait(self, within: float) -> list[ActorExit]:
        """How the actor ended, waiting at most ``within`` seconds for it."""
        with trio.fail_after(within):
            await self.ended.wait()
        return self.exits

    async def end(self, peer: MemoryPeer) -> None:
        """End the conversation; the actor must return COMPLETED (every call counted out)."""
        await peer.end()
        assert await self.wait(10) == [ActorExit.COMPLETED]


class ConfigNapper(Agent):
    """Takes 10 s (trio time) over each config update, noting its ``n`` when done."""

    agent_id = "slow"
    seen: list[Any] = []

    async def on_config_update(self, config: Any) -> None:
        await trio.sleep(10)
        ConfigNapper.seen.append(config["n"])


class EchoAgent(Agent):
    agent_id = "echo"
    runs: dict[str, int] = {}

    @tool("Echo the text back")
    async def echo(self, text: str) -> dict[str, Any]:
        EchoAgent.runs[text] = EchoAgent.runs.get(text, 0) + 1
        return {"text": text}

    @tool("Echo in a worker thread")
    def echo_sync(self, text: str, times: int = 1) -> str:
        return text * times

    @tool("Sleep for a while (trio time)")
    async def nap(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"

    @tool("Always raises")
    async def explode(self, message: str = "boom") -> None:
        raise RuntimeError(message)

    @tool("Blocks the event loop with time.sleep (a bug to detect)")
    async def block_loop(self, seconds: float = 0.2) -> str:
        time.sleep(seconds)  # noqa: ASYNC251 - the bug this agent exists to show
        return "blocked"

    @tool("Open a ticket")
    async def open_ticket(self, subject: str, priority: Literal["low", "high"] = "low") -> dict[str, str]:
        return {"subject": subject, "priority": priority}


class CrashOnStartAgent(Agent):
    agent_id = "crasher"
    starts = 0

    async def on_conversation_started(self, conversation: Any) -> None:
        type(self).starts += 1
        raise RuntimeError("cannot start")


@asynccontextmanager
async def running_supervisor(
    agents: list[type[Agent]] | None = None,
    *,
    settings: SupervisorSettings | None = None,
    platform: MemoryPlatform | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[Supervisor, MemoryPlatform, Metrics]]:
    platform = platform or MemoryPlatform()
    metrics = Metrics(CollectorRegistry())
    supervisor = Supervisor(
        agents or [EchoAgent], platform.connect, settings=settings, metrics=metrics, **kwargs
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield supervisor, platform, metrics
        nursery.cancel_scope.cancel()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_until(predicate: Callable[[], bool], within: float, what: str, every: float = 0.02) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, fails after ``within``."""
    start = trio.current_time()
    with trio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - state changed by other tasks, sockets or processes
            await trio.sleep(every)
        return trio.current_time() - start
    pytest.fail(f"timed out after {within:g} s waiting for {what}")


async def control_dropped_behind(server: SandboxServer, nap: float) -> tuple[str, Socket]:
    """A conversation napping ``nap`` seconds on its own socket, and then the control
    socket it was announced on aborted: the conversation's socket is now the earliest
    joined, where the sandbox announces the next conversations. Its id and socket."""
    turn = {"tool": "nap", "arguments": {"seconds": nap}}
    plan = {"conversation": [{"agent_id": "echo", "turn": [turn]}]}
    (holding,) = server.add_conversations(parse_scenario(plan))
    conversations = server.conversimple.conversations
    registered = lambda: getattr(conversations.get(holding), "socket", None) is not None  # noqa: E731
    await wait_until(registered, 30, "the conversation's socket")
    held, control = conversations[holding].socket, conversations[holding].control
    assert held is not None and control is not None and control is not held
    server.conversimple.abort(control)
    return holding, held


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a subprocess to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PARROT_AGENT = """
class Parrot:
    def on_message(self, message):
        return message
"""
ONE_OF_TWO_FAILS = """
agent = "agent.py:Parrot"
[[scenario]]
name = "parrot-passes"
expect = [{ says = "hello" }]
customer = { turns = ["hello"] }
[[scenario]]
name = "parrot-fails"
expect = [{ says = "goodbye" }]
customer = { turns = ["hi"] }
"""


def write_parrot_project(folder: Path) -> Path:
    """A simulator project in ``folder``: an agent that repeats the customer, and a scenario
    file (returned) whose first scenario passes and second fails."""
    (folder / "agent.py").write_text(PARROT_AGENT)
    scenarios = folder / "parrot.toml"
    scenarios.write_text(ONE_OF_TWO_FAILS)
    return scenarios
