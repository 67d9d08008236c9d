"""Run conversimple-sdk 0.2.4 against a platform URL (the sandbox, in the interop tests).

    python run_conversimple.py dispatcher URL API_KEY   # the SDK's dispatcher + agents
    python run_conversimple.py agent URL API_KEY        # one SDK agent on one socket

Runs until killed; exits 3 if the agent could not start (e.g. the join was refused).
"""

import asyncio
import logging
import sys
from pathlib import Path

from conversimple import ConversimpleDispatcher

AGENTS = Path(__file__).resolve().parent / "conversimple_agents"
sys.path.insert(0, str(AGENTS))

from echo_agent import SdkEchoAgent  # noqa: E402


async def main(mode: str, url: str, api_key: str) -> int:
    if mode == "dispatcher":
        dispatcher = ConversimpleDispatcher(api_key=api_key, platform_url=url, search_path=AGENTS)
        await dispatcher.start()
    else:
        agent = SdkEchoAgent(api_key=api_key, platform_url=url)
        try:
            await agent.start()
        except RuntimeError as exc:
            print(f"agent did not start: {exc}", flush=True)
            return 3
    print("sdk started", flush=True)
    await asyncio.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
