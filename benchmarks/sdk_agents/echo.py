"""The benchmark's echo tool as a conversimple-sdk 0.2.4 agent (what its dispatcher loads).

Same tool, same schema shape as ``examples/echo.py:EchoAgent``: ``echo(text) -> {"text": text}``.
"""

from conversimple import ConversimpleAgent, tool_async


class SdkEchoAgent(ConversimpleAgent):
    agent_id = "echo"

    @tool_async("Return the text unchanged")
    async def echo(self, text: str) -> dict:
        return {"text": text}
