"""Agents the benchmarks run that are not examples: the mixed-tools workload.

``MixedToolsAgent`` has one tool of each kind a real agent has, so a run shows
what each costs and that none disturbs the others: an async echo, an async tool
that waits (10 ms, the loop stays free), a sync tool that blocks its worker
thread (5 ms), and a tool that always fails (an error reply, never a crash).
The simulated customer calls them in turn. ``benchmarks/sdk_agents/mixed.py`` is
the same agent for conversimple-sdk.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from orchestrator import Agent, ToolError, tool

NAP_SECONDS = 0.010
BLOCK_SECONDS = 0.005


class MixedToolsAgent(Agent):
    """Echo, nap, block a thread, fail."""

    agent_id = "mixed"

    @tool
    async def echo(self, text: str) -> dict[str, Any]:
        """Return the text unchanged."""
        return {"text": text}

    @tool
    async def nap(self, text: str) -> dict[str, Any]:
        """Wait 10 ms without blocking the event loop, then echo."""
        await trio.sleep(NAP_SECONDS)
        return {"text": text}

    @tool
    def block(self, text: str) -> dict[str, Any]:
        """Block a worker thread for 5 ms, then echo."""
        time.sleep(BLOCK_SECONDS)
        return {"text": text}

    @tool
    async def fail(self, text: str) -> dict[str, Any]:
        """Always fail: the platform gets an error reply."""
        raise ToolError("planned failure")
