"""The mixed-tools workload as a conversimple-sdk 0.2.4 agent (see ``benchmarks/agents.py``)."""

import asyncio
import time

from conversimple import ConversimpleAgent, tool, tool_async

NAP_SECONDS = 0.010
BLOCK_SECONDS = 0.005


class SdkMixedToolsAgent(ConversimpleAgent):
    agent_id = "mixed"

    @tool_async("Return the text unchanged")
    async def echo(self, text: str) -> dict:
        return {"text": text}

    @tool_async("Wait 10 ms without blocking, then echo")
    async def nap(self, text: str) -> dict:
        await asyncio.sleep(NAP_SECONDS)
        return {"text": text}

    @tool("Block a worker thread for 5 ms, then echo")
    def block(self, text: str) -> dict:
        time.sleep(BLOCK_SECONDS)
        return {"text": text}

    @tool_async("Always fail")
    async def fail(self, text: str) -> dict:
        raise ValueError("planned failure")
