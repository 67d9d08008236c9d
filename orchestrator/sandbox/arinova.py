"""The Arinova side of the sandbox (``/ws/agent``): bot sockets, tasks, streamed replies.

A bot authenticates with ``agent_auth {botToken}`` (any token unless tokens are
configured; then a wrong one gets ``auth_error`` and the socket closes). Each
conversation's messages become ``task {taskId, conversationId, content}``, one at a
time, to the bot named like the conversation's agent (else the earliest-connected
bot); ``agent_chunk`` frames are collected in order until ``agent_complete`` or
``agent_error``. A reply cut by a dropped socket may still be finished (or failed) by
the bot after it reconnects; else it is lost after ``reply_timeout``. ``ping`` gets
``pong``; a bad frame closes only its socket (1007).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from orchestrator.errors import LinkError, ProtocolError
from orchestrator.protocols import arinova as wire
from orchestrator.protocols import codec
from orchestrator.transport import ServerWebSocket

from .customers import run_chat_customer
from .recorder import ConversationLog, Recorder, ReplyRecord
from .scenarios import ConversationPlan

if TYPE_CHECKING:
    from .settings import SandboxSettings

__all__ = ["ArinovaConversation", "ArinovaRouter", "Bot"]

log = logging.getLogger("orchestrator.sandbox.arinova")


@attrs.define(eq=False, slots=True)
class Bot:
    """One authenticated bot socket."""

    ws: ServerWebSocket
    session: wire.ArinovaServer
    serial: int
    name: str
    alive: bool = True

    async def send(self, text: str) -> bool:
        try:
            await self.ws.send_text(text)
        except LinkError:
            return False
        return True


@attrs.define(eq=False)
class ArinovaConversation:
    """One Arinova conversation: its customer's messages, one task each."""

    router: ArinovaRouter
    log: ConversationLog
    plan: ConversationPlan
    messages: int = 0

    async def ask(self, content: str) -> ReplyRecord:
        return await self.router.ask(self, content)


@attrs.define(eq=False)
class ArinovaRouter:
    """All bot sockets and Arinova conversations of one sandbox server."""

    settings: SandboxSettings
    recorder: Recorder
    _serials: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _bots: dict[Bot, None] = attrs.Factory(dict)
    _bot_event: trio.Event = attrs.Factory(trio.Event)
    conversations: dict[str, ArinovaConversation] = attrs.Factory(dict)
    _drop_after_chunk: int = 0
    bots_open: int = 0

    async def serve_socket(self, ws: ServerWebSocket) -> None:
        """Authenticate a bot, then serve its frames until the socket closes."""
        settings = self.settings
        session = wire.ArinovaServer(settings.max_frame_bytes, settings.max_depth)
        text = None
        with trio.move_on_after(settings.auth_timeout):
            text = await ws.receive_text()
        if text is None:
            await ws.aclose(1008, "no agent_auth")
            return
        try:
            message = session.receive(text)
        except ProtocolError as exc:
            await self._bad_frame(ws, exc)
            return
        if not isinstance(message, wire.AgentAuth):
            await ws.send_text(session.auth_error("expected agent_auth first"))
            return
        self.recorder.record(None, "in", "agent_auth", {"botToken": "***"})
        tokens = settings.bot_tokens
        if tokens and message.bot_token not in tokens:
            await ws.send_text(session.auth_error("invalid bot token"))
            return
        bot = Bot(ws, session, next(self._serials), tokens.get(message.bot_token, settings.agent_name))
        await ws.send_text(session.auth_ok(bot.name))
        self._bots[bot] = None
        woken, self._bot_event = self._bot_event, trio.Event()
        woken.set()
        self.bots_open += 1
        try:
            while bot.alive:
                text = await ws.receive_text()
                if '"agent_chunk"' in text and self._fast_chunk(bot, text):
                    continue
                try:
                    message = session.receive(text)
                except ProtocolError as exc:
                    await self._bad_frame(ws, exc)
                    return
                await self._on_message(bot, message)
        finally:
            self.bots_open -= 1
            self.bot_closed(bot)

    async def _bad_frame(self, ws: ServerWebSocket, exc: ProtocolError) -> None:
        self.recorder.violations += 1
        log.warning("a bot sent a bad frame, closing its socket: %s", exc)
        await ws.aclose(1007, "bad frame")

    def bot_closed(self, bot: Bot) -> None:
        bot.alive = False
        self._bots.pop(bot, None)

    async def _on_message(self, bot: Bot, message: wire.AgentMessage | wire.UnknownMessage) -> None:
        if isinstance(message, wire.UnknownMessage):
            self.recorder.unknown(message.type, message.payload)
        elif isinstance(message, wire.Ping):
            await bot.send(bot.session.pong())
        elif isinstance(message, wire.AgentChunk | wire.AgentComplete | wire.AgentError):
            raw = codec.unstructure(message, wire.Message) if self.recorder.messages else None
            match message:
                case (
                    wire.AgentChunk(chunk=value)
                    | wire.AgentComplete(content=value)
                    | wire.AgentError(error=value)
                ):
                    self._reply(bot, type(message), message.task_id, value, raw)

    def _fast_chunk(self, bot: Bot, text: str) -> bool:
        """The hot path: a well-formed ``agent_chunk`` without the full decode."""
        settings = self.settings
        try:
            raw = codec.decode_frame(text, max_bytes=settings.max_frame_bytes, max_depth=settings.max_depth)
        except ProtocolError:
            return False  # the full decode reports it
        if type(raw) is not dict or raw.get("type") != "agent_chunk":
            return False
        task_id, chunk = raw.get("taskId"), raw.get("chunk")
        if type(task_id) is not str or type(chunk) is not str:
            return False
        self._reply(bot, wire.AgentChunk, task_id, chunk, raw)
        return True

    def _find_task(self, task_id: str) -> ReplyRecord | None:
        """The task ``<conversation id>-t<n>`` from its conversation: no index of every task to keep."""
        cid, _, number = task_id.rpartition("-t")
        conv = self.conversations.get(cid)
        if conv is None or not number.isdigit() or not 0 < int(number) <= len(conv.log.replies):
            return None
        record = conv.log.replies[int(number) - 1]
        return record if record.task_id == task_id else None

    def _reply(self, bot: Bot, kind: type, task_id: str, value: str, raw: dict[str, Any] | None) -> None:
        """A chunk, the completed reply or an error reply for ``task_id``."""
        recorder = self.recorder
        record = self._find_task(task_id)
        if record is None:
            recorder.unknown_answers += 1
            return
        if raw is not None:
            recorder.record(record.conversation_id, "in", str(raw.get("type")), raw)
        if record.status != "pending":
            if kind is wire.AgentChunk or record.status == "lost":
                recorder.late_answers += 1
            else:
                record.answers += 1
                recorder.duplicates += 1
            return
        now = time.perf_counter()
        if kind is wire.AgentChunk:
            if record.first_chunk is None:
                record.first_chunk = now - record.sent_at
            record.chunks.append(value)
            recorder.counters["chunks"] += 1
            if self._drop_after_chunk:
                self._drop_after_chunk -= 1
                self.abort(bot)
            return
        record.answers += 1
        record.latency = now - record.sent_at
        if kind is wire.AgentComplete:
            record.status, record.reply = "ok", value
        else:
            record.status, record.error = "error", value
        recorder.counters["replies_answered"] += 1
        record.done.set()

    async def run_conversation(self, conv: ArinovaConversation, rng: random.Random) -> None:
        """Send the plan's messages one by one, collecting replies. Sets ``log.outcome``."""
        clog = conv.log
        self.conversations[clog.conversation_id] = conv
        try:
            await run_chat_customer(conv, conv.plan, rng)
            if any(r.status == "lost" for r in clog.replies):
                clog.outcome = "lost"
            else:
                clog.outcome = "failed" if clog.failures else "completed"
        finally:
            self.recorder.counters["ended"] += 1
            clog.ended.set()

    def _bot_for(self, agent_id: str) -> Bot | None:
        first = None
        for bot in self._bots:
            if bot.name == agent_id:
                return bot
            first = first or bot
        return first

    async def ask(self, conv: ArinovaConversation, content: str) -> ReplyRecord:
        """Send one message as a task and wait for the reply; lost after ``reply_timeout``."""
        conv.messages += 1
        cid = conv.log.conversation_id
        task_id = f"{cid}-t{conv.messages}"
        record = ReplyRecord(task_id, cid, content, time.perf_counter())
        conv.log.replies.append(record)
        self.recorder.counters["replies_sent"] += 1
        with trio.move_on_after(self.settings.reply_timeout):
            while True:  # until a bot takes the task
                bot = self._bot_for(conv.plan.agent_id)
                if bot is None:
                    await self._bot_event.wait()
                    continue
                frame = bot.session.task(task_id, cid, content)
                self.recorder.record(
                    cid, "out", "task", {"taskId": task_id, "conversationId": cid, "content": content}
                )
                if await bot.send(frame):
                    break
                self.bot_closed(bot)
            await record.done.wait()
        if not record.done.is_set():
            record.status = "lost"
        return record

    async def ping_loop(self, interval: float) -> None:
        """Ping every bot every ``interval`` seconds (they answer ``pong``)."""
        while True:
            await trio.sleep(interval)
            for bot in list(self._bots):
                await bot.send(bot.session.send(wire.Ping()))

    def abort(self, bot: Bot) -> None:
        bot.ws.abort()
        self.bot_closed(bot)

    def drop_bot(self, name: str | None = None) -> bool:
        """Abort the earliest bot socket (named ``name``, if given); False if there is none."""
        for bot in list(self._bots):
            if name is None or bot.name == name:
                self.abort(bot)
                return True
        return False

    def drop_bot_after_next_chunk(self) -> None:
        """Abort the bot's socket right after the next ``agent_chunk`` arrives (mid-reply)."""
        self._drop_after_chunk += 1

    @property
    def drops_pending(self) -> int:
        """Drops asked of :meth:`drop_bot_after_next_chunk` that have not happened yet."""
        return self._drop_after_chunk
