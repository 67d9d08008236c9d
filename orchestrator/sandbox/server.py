"""SandboxServer: one trio WebSocket server speaking Conversimple and Arinova, by path.

``ws://HOST:PORT/customer_sdk/websocket`` is the Conversimple Phoenix socket
(conversimple-sdk's path; subprotocol ``phoenix-websocket``) and
``ws://HOST:PORT/ws/agent`` is Arinova's. Any other path gets HTTP 404. Typical use::

    server = SandboxServer(api_keys={"k"})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        ids = server.add_conversations(load_scenario("weather.toml"))
        ...                                   # agents connect to server.conversimple_url
        await server.wait_done(ids)
        print(server.report(ids).table())
        nursery.cancel_scope.cancel()
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import attrs
import trio

from orchestrator.errors import FrameTooLargeError, LinkError
from orchestrator.protocols.conversimple import SUBPROTOCOL
from orchestrator.transport import ServerWebSocket, serve

from .arinova import ArinovaConversation, ArinovaRouter
from .conversation import ConversimpleConversation
from .conversimple import ConversimpleRouter
from .load import LoadReport, build_report
from .recorder import ConversationLog, Recorder
from .scenarios import ConversationPlan, Scenario
from .settings import ARINOVA_PATH, CONVERSIMPLE_PATH, SandboxSettings

__all__ = ["SandboxServer", "SandboxStatistics"]

log = logging.getLogger("orchestrator.sandbox")


@attrs.frozen
class SandboxStatistics:
    sockets: int
    bots: int
    conversations: int
    ended: int
    calls_sent: int
    calls_answered: int
    replies_sent: int
    replies_answered: int
    duplicates: int
    unknown_events: int
    violations: int


class SandboxServer:
    """The bundled platform: accepts agents, announces conversations, drives simulated customers.

    ``SandboxServer(settings, **overrides)``: keyword overrides replace fields of
    ``settings`` (default :class:`SandboxSettings`), e.g. ``SandboxServer(port=4000)``.
    """

    def __init__(self, settings: SandboxSettings | None = None, **overrides: Any) -> None:
        self.settings = attrs.evolve(settings or SandboxSettings(), **overrides)
        self.recorder = Recorder(messages=self.settings.record_messages)
        self.conversimple = ConversimpleRouter(self.settings, self.recorder)
        self.arinova = ArinovaRouter(self.settings, self.recorder)
        self._port: int | None = None
        self._nursery: trio.Nursery | None = None
        self._refusing: int | None = None
        self._index = itertools.count(1)

    # ------------------------------------------------------------ serving
    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(port)`` once listening.

        Cancellation closes every socket and ends every conversation where it is.
        """
        settings = self.settings
        async with trio.open_nursery() as nursery:
            self._nursery = self.conversimple.nursery = nursery
            self._port = await nursery.start(
                partial(
                    serve,
                    self._handle,
                    settings.host,
                    settings.port,
                    subprotocols=[SUBPROTOCOL],
                    max_frame_bytes=settings.max_frame_bytes,
                    reject=self._reject,
                )
            )
            nursery.start_soon(self.conversimple.reap_lost_calls)
            if settings.ping_interval:
                nursery.start_soon(self.arinova.ping_loop, settings.ping_interval)
            log.info("sandbox listening: %s and %s", self.conversimple_url, self.arinova_url)
            task_status.started(self._port)

    async def _handle(self, ws: ServerWebSocket) -> None:
        try:
            if ws.path == ARINOVA_PATH:
                await self.arinova.serve_socket(ws)
            else:
                await self.conversimple.serve_socket(ws)
        except FrameTooLargeError:
            self.recorder.violations += 1  # the transport closed it with 1009
        except LinkError:
            pass  # the agent went away
        except Exception:
            # One socket's surprise must not stop the platform: log it, close that socket only.
            log.exception("sandbox: error serving a socket; closing it")
            await ws.aclose(1011, "internal error")

    def _reject(self, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> int | None:
        if self._refusing is not None:
            return self._refusing
        if path not in (CONVERSIMPLE_PATH, ARINOVA_PATH):
            return 404
        settings = self.settings
        if path == CONVERSIMPLE_PATH and settings.auth_at_handshake:
            if settings.api_keys and query.get("auth_token") not in settings.api_keys:
                return 401
            if query.get("customer_id") in settings.suspended_customers:
                return 403
        return None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not running yet")
        return self._port

    @property
    def base_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}"

    @property
    def conversimple_url(self) -> str:
        """The ``platform_url`` for conversimple-sdk and ``orchestrator run``."""
        return self.base_url + CONVERSIMPLE_PATH

    @property
    def arinova_url(self) -> str:
        """The ``server_url`` for arinova-agent-sdk (which appends ``/ws/agent``)."""
        return self.base_url

    # ------------------------------------------------------------ conversations
    def add_conversations(self, scenario: Scenario) -> list[str]:
        """Open the scenario's conversations (at its rate) and return their ids at once.

        The server must be running. Ids are ``<prefix><n:05d>``, numbered across calls.
        """
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError(
                "start the sandbox (await nursery.start(server.run)) before adding conversations"
            )
        items: list[tuple[ConversationLog, ConversationPlan, random.Random]] = []
        for position, plan in enumerate(scenario.conversations):
            cid = f"{self.settings.conversation_prefix}{next(self._index):05d}"
            clog = self.recorder.open(cid, plan.agent_id, plan.platform)
            items.append((clog, plan, random.Random(scenario.seed * 1_000_003 + position)))
        nursery.start_soon(self._spawn, items, scenario.rate)
        return [clog.conversation_id for clog, _, _ in items]

    async def _spawn(
        self, items: list[tuple[ConversationLog, ConversationPlan, random.Random]], rate: float
    ) -> None:
        assert self._nursery is not None
        start = trio.current_time()
        for index, (clog, plan, rng) in enumerate(items):
            if rate > 0:
                await trio.sleep_until(start + index / rate)
            if plan.platform == "arinova":
                self._nursery.start_soon(
                    self.arinova.run_conversation, ArinovaConversation(self.arinova, clog, plan), rng
                )
            else:
                conv = ConversimpleConversation(self.conversimple, clog, plan)
                self._nursery.start_soon(self.conversimple.run_conversation, conv, rng)

    async def wait_done(self, conversation_ids: Iterable[str] | None = None) -> None:
        """Wait until these conversations (default: all added so far) have ended."""
        ids = list(self.recorder.conversations) if conversation_ids is None else conversation_ids
        for cid in ids:
            await self.recorder.conversations[cid].ended.wait()

    def conversation(self, conversation_id: str) -> ConversationLog:
        """The record of one conversation: outcome, calls or replies, failures, frames."""
        return self.recorder.conversations[conversation_id]

    def report(self, conversation_ids: Iterable[str] | None = None) -> LoadReport:
        return build_report(self.recorder, conversation_ids)

    def statistics(self) -> SandboxStatistics:
        r, c = self.recorder, self.recorder.counters
        return SandboxStatistics(
            self.conversimple.sockets_open, self.arinova.bots_open, len(r.conversations), c["ended"],
            c["calls_sent"], c["calls_answered"], c["replies_sent"], c["replies_answered"],
            r.duplicates, r.unknown_events, r.violations,
        )  # fmt: skip

    # ------------------------------------------------------------ faults
    def refuse_handshakes(self, status: int | None) -> None:
        """Answer every handshake with HTTP ``status`` (e.g. 503, 401) until called with None."""
        self._refusing = status

    def drop_socket(self, conversation_id: str) -> bool:
        """Abort (TCP reset) the conversation's socket now; False if it has none."""
        return self.conversimple.drop_socket(conversation_id)

    def drop_after_next_request(self, conversation_id: str | None = None) -> None:
        """Abort the link right after the next ``tool_call_request`` (for that conversation) is sent."""
        self.conversimple.drop_after_next_request(conversation_id)

    def drop_bot(self, name: str | None = None) -> bool:
        """Abort an Arinova bot's socket now (the earliest, or the one named ``name``)."""
        return self.arinova.drop_bot(name)

    def drop_bot_after_next_chunk(self) -> None:
        """Abort the bot's socket right after the next ``agent_chunk`` arrives (mid-reply)."""
        self.arinova.drop_bot_after_next_chunk()
