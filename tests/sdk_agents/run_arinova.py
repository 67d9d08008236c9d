"""Run an arinova-agent-sdk 0.0.1 echo agent against a server URL (the sandbox).

    python run_arinova.py SERVER_URL BOT_TOKEN [RECONNECT_INTERVAL]

Streams each message back word by word (one ``send_chunk`` per word), then
``send_complete`` with the whole text. Runs until killed or refused.
"""

import logging
import sys

from arinova_agent import ArinovaAgent


def main(server_url: str, token: str, reconnect: str = "5") -> None:
    agent = ArinovaAgent(server_url=server_url, bot_token=token, reconnect_interval=float(reconnect))

    @agent.on_task
    async def echo(task):
        words = task.content.split(" ")
        for index, word in enumerate(words):
            task.send_chunk(word if index == len(words) - 1 else word + " ")
        task.send_complete(task.content)

    agent.on_connected(lambda: print("sdk connected", flush=True))
    agent.on_error(lambda exc: print(f"sdk error: {exc}", flush=True))
    agent.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    main(*sys.argv[1:4])
