"""Serve the benchmark's agents with the real conversimple-sdk 0.2.4, as its users do.

    python -m benchmarks.sdk_conversimple URL API_KEY

Runs the SDK's own ``ConversimpleDispatcher`` (one control connection that
receives ``conversation_ready``, then one ``ConversimpleAgent`` instance with its
own WebSocket per conversation), loading the agents in ``benchmarks/sdk_agents/``
(``echo`` and ``mixed``, the same tools as the orchestrator's). Runs until
SIGTERM or SIGINT. The SDK logs at INFO to stdout by default; the harness sets
``CONVERSIMPLE_LOG_LEVEL=WARNING`` so per-call log lines do not weigh on it.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from pathlib import Path

from conversimple import ConversimpleDispatcher

AGENTS = Path(__file__).resolve().parent / "sdk_agents"


async def serve(url: str, api_key: str) -> None:
    dispatcher = ConversimpleDispatcher(api_key=api_key, platform_url=url, search_path=AGENTS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await dispatcher.start()
    print("sdk dispatcher started", flush=True)
    await stop.wait()
    await dispatcher.stop()


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
