"""Raw clients for the sandbox tests, built from the protocol codecs and the transport only.

:class:`RawSocket` is one Conversimple socket driven by hand; :class:`RawAgent` is a
minimal platform client (a control socket plus one socket per conversation, like
the orchestrator) hosting orchestrator ``Agent`` classes through the real
``ToolExecutor``; :class:`RawBot` is one Arinova bot socket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import trio

from orchestrator import events
from orchestrator.agent import Agent, tool_schemas
from orchestrator.errors import LinkError
from orchestrator.protocols import arinova as ar
from orchestrator.protocols import conversimple as wire
from orchestrator.store import ConversationRecord
from orchestrator.tools import ToolExecutor
from orchestrator.transport import WebSocket, connect


class RawSocket:
    def __init__(self, ws: WebSocket, client: wire.ConversimpleClient) -> None:
        self.ws, self.client = ws, client

    @classmethod
    async def open(cls, url: str, *, api_key: str = "key", customer_id: str = "cust") -> RawSocket:
        client = wire.ConversimpleClient(customer_id)
        ws = await connect(
            wire.ConversimpleClient.url(url, api_key, customer_id), subprotocols=[wire.SUBPROTOCOL]
        )
        return cls(ws, client)

    async def join(self) -> wire.JoinOk | wire.JoinRejected:
        await self.ws.send_text(self.client.join())
        while True:
            for result in self.client.receive(await self.ws.receive_text()):
                if isinstance(result, wire.JoinOk | wire.JoinRejected):
                    return result

    async def next(self, *, replies: bool = False) -> wire.Frame:
        """The next server frame (``phx_reply`` frames skipped unless ``replies``)."""
        while True:
            frame = wire.decode_server_frame(await self.ws.receive_text())
            if replies or not isinstance(frame.message, wire.PhxReply):
                return frame

    async def expect(self, kind: type[Any]) -> Any:
        frame = await self.next()
        assert isinstance(frame.message, kind), frame
        return frame.message

    async def send(self, event: events.OutboundEvent, conversation_id: str) -> None:
        await self.ws.send_text(self.client.send(event, conversation_id))

    async def register(self, conversation_id: str, tools: list[dict[str, Any]]) -> None:
        await self.send(events.RegisterTools(tuple(tools)), conversation_id)

    async def answer(self, request: wire.ToolCallRequest, result: Any) -> None:
        assert request.conversation_id is not None
        await self.send(
            events.ToolResult(request.call_id, request.tool_name, result), request.conversation_id
        )

    async def aclose(self) -> None:
        await self.ws.aclose()


class RawAgent:
    """Hosts Agent classes: a control socket, and per announced conversation its own socket."""

    def __init__(
        self,
        url: str,
        agents: Mapping[str, type[Agent]],
        *,
        api_key: str = "key",
        customer_id: str = "cust",
        on_request: Callable[[wire.ToolCallRequest], Any] | None = None,
    ) -> None:
        self.url, self.agents, self.api_key, self.customer_id = url, agents, api_key, customer_id
        self.on_request = on_request
        self.requests: Counter[str] = Counter()
        self.ended: set[str] = set()

    async def _open(self) -> RawSocket:
        sock = await RawSocket.open(self.url, api_key=self.api_key, customer_id=self.customer_id)
        assert isinstance(await sock.join(), wire.JoinOk)
        return sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        control = await self._open()
        async with trio.open_nursery() as nursery:
            task_status.started()
            try:
                while True:
                    message = (await control.next()).message
                    if isinstance(message, wire.ConversationReady):
                        nursery.start_soon(self._converse, message)
            except LinkError:
                return  # the platform went away
            finally:
                await control.aclose()

    async def _converse(self, ready: wire.ConversationReady) -> None:
        assert ready.agent_id is not None
        cls = self.agents[ready.agent_id]
        cid = ready.conversation_id
        executor = ToolExecutor(cls(), ConversationRecord(cid, ready.agent_id), trio.CapacityLimiter(4))
        sock = await self._open()
        try:
            await sock.register(cid, tool_schemas(cls))
            while True:
                message = (await sock.next()).message
                if isinstance(message, wire.ToolCallRequest):
                    self.requests[message.call_id] += 1
                    if self.on_request is not None:
                        self.on_request(message)
                    request = events.ToolCallRequest(
                        message.call_id, message.tool_name, message.arguments, message.timeout_seconds
                    )
                    outcome = await executor.execute(request)
                    assert outcome is not None
                    await sock.send(outcome, cid)
                elif (
                    isinstance(message, wire.ConversationLifecycle) and message.event == "conversation_ended"
                ):
                    self.ended.add(cid)
                    return
        except LinkError:
            return
        finally:
            await sock.aclose()


class RawBot:
    """One Arinova bot socket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.client = ws, ar.ArinovaClient("token")

    @classmethod
    async def open(cls, base_url: str, token: str = "token") -> tuple[RawBot, ar.AuthOk | ar.AuthError]:
        bot = cls(await connect(ar.agent_url(base_url)))
        bot.client = ar.ArinovaClient(token)
        await bot.ws.send_text(bot.client.auth())
        reply = ar.decode_message(await bot.ws.receive_text())
        assert isinstance(reply, ar.AuthOk | ar.AuthError)
        return bot, reply

    async def task(self) -> ar.Task:
        while True:
            message = ar.decode_message(await self.ws.receive_text())
            if isinstance(message, ar.Task):
                return message

    async def send(self, event: events.OutboundEvent) -> None:
        await self.ws.send_text(self.client.send(event))

    async def stream(self, task: ar.Task, chunks: list[str]) -> None:
        for chunk in chunks:
            await self.send(events.ReplyChunk(task.task_id, chunk))
        await self.send(events.ReplyComplete(task.task_id, "".join(chunks)))

    async def serve_agent(self, cls: type[Agent]) -> None:
        """Answer every task with ``cls.on_message`` (an instance per conversation), streamed."""
        instances: dict[str, Any] = {}
        try:
            while True:
                task = await self.task()
                agent = instances.setdefault(task.conversation_id, cls())
                chunks = [chunk async for chunk in agent.on_message(task.content)]
                await self.stream(task, chunks)
        except LinkError:
            return

    async def serve_echo(self) -> None:
        """Answer every task by streaming its words back (until the socket closes)."""
        try:
            while True:
                task = await self.task()
                words = task.content.split(" ")
                await self.stream(task, [w + " " for w in words[:-1]] + [words[-1]])
        except LinkError:
            return
