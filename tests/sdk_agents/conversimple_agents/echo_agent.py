"""A conversimple-sdk 0.2.4 agent, written the way the SDK documents it.

Loaded by the SDK's own dispatcher (it scans this folder for ConversimpleAgent
subclasses with an ``agent_id``) or run alone by ``../run_conversimple.py``.
"""

from conversimple import ConversimpleAgent, tool, tool_async


class SdkEchoAgent(ConversimpleAgent):
    agent_id = "sdk-echo"

    @tool_async("Echo the text back")
    async def echo(self, text: str) -> dict:
        return {"text": text}

    @tool("Add two integers")
    def add(self, a: int, b: int) -> dict:
        return {"sum": a + b}

    @tool("Always fails with the given message")
    def fail(self, message: str) -> dict:
        raise ValueError(message)
