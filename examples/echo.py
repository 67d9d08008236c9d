"""The smallest agent: echo a tool argument back, or stream a message back word by word.

``echo`` is the benchmark workload (one tiny async tool call, no I/O), so the
numbers measure the runtime and not the agent.

Run it against a platform::

    orchestrator run examples/echo.py:EchoAgent --url wss://platform.example/ws --api-key ...
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.agent import Agent, tool

# Each word with the whitespace after it, so the chunks join back into the message.
_WORDS = re.compile(r"\s*\S+\s*|\s+")


class EchoAgent(Agent):
    """Echoes everything back."""

    agent_id = "echo"

    @tool
    async def echo(self, text: str) -> dict[str, Any]:
        """Return the text unchanged.

        Args:
            text: what to echo back.
        """
        return {"text": text}

    async def on_message(self, message: str) -> AsyncIterator[str]:
        """Stream the message back one word at a time."""
        for word in _WORDS.findall(message):
            yield word  # as the SDK's benchmark agent does: no wait between chunks
