"""Serve the benchmark's streaming echo with the real arinova-agent-sdk 0.0.1, as its users do.

    python -m benchmarks.sdk_arinova SERVER_URL BOT_TOKEN

One ``ArinovaAgent`` (one bot socket carrying every conversation) whose task
handler streams the message back word by word (``send_chunk`` per word, each word
with the whitespace after it, as ``examples/echo.py`` does), then
``send_complete`` with the whole text. Runs until SIGTERM or SIGINT (the SDK
handles both).
"""

from __future__ import annotations

import re
import resource
import sys

from arinova_agent import ArinovaAgent

_WORDS = re.compile(r"\s*\S+\s*|\s+")


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    agent = ArinovaAgent(server_url=sys.argv[1], bot_token=sys.argv[2])

    @agent.on_task
    async def echo(task):  # type: ignore[no-untyped-def]
        for word in _WORDS.findall(task.content):
            task.send_chunk(word)
        task.send_complete(task.content)

    agent.run()


if __name__ == "__main__":
    main()
