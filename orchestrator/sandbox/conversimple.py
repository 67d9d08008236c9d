"""The Conversimple side of the sandbox: per-socket sessions and conversation routing.

Routing rules (the contract with the orchestrator's client):

* a socket that joined ``customer:<id>`` is a control candidate; each conversation is
  announced ONCE (``conversation_ready``) to the earliest-joined socket still connected
  (of the plan's customer, if it names one), waiting while none is joined;
* the socket that sends ``register_conversation_tools`` for it becomes its socket (the
  latest registration wins); the first registration gets ``conversation_started``;
* the customer's turns go to that socket as ``tool_call_request``; answers are matched
  by ``call_id`` on any socket of the customer; a second answer is a duplicate;
* a call unanswered when its socket dropped is redelivered, same ``call_id``, to the
  socket that registers next (after ``redelivery_delay``, so an answer the agent kept
  while disconnected is not asked for twice);
* at the end ``conversation_ended`` goes to its socket (and the announcing socket).

A bad frame closes only its socket (1007); unknown events are recorded.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from orchestrator.errors import LinkError, ProtocolError
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.transport import ServerWebSocket

from .customers import ArgumentPool, run_tool_customer
from .recorder import CallRecord, ConversationLog, Recorder
from .scenarios import ConversationPlan

if TYPE_CHECKING:
    from .settings import SandboxSettings

__all__ = ["ConversimpleConversation", "ConversimpleRouter", "Socket"]

log = logging.getLogger("orchestrator.sandbox.conversimple")


@attrs.define(eq=False, slots=True)
class Socket:
    """One accepted agent socket; ``customer_id`` once joined."""

    ws: ServerWebSocket
    session: wire.ConversimpleServer
    serial: int
    customer_id: str | None = None
    alive: bool = True
    prefix: str = ""
    """The encoded ``[join_ref, null, topic,`` every push on this channel starts with."""
    conversations: set[str] = attrs.Factory(set)

    async def push(self, event: str, body: str) -> bool:
        """Send ``[join_ref, null, topic, event, body]``; False if the link is gone."""
        try:
            await self.ws.send_text(f'{self.prefix}"{event}",{body}]')
        except LinkError:
            return False
        return True


@attrs.define(eq=False, slots=True)
class _Pending:
    record: CallRecord
    body: str
    sent_to: Socket | None = None


@attrs.define(eq=False)
class ConversimpleConversation:
    """One conversation: where it was announced, its socket, its tools, its open calls."""

    router: ConversimpleRouter
    log: ConversationLog
    plan: ConversationPlan
    customer_id: str | None = None
    control: Socket | None = None
    socket: Socket | None = None
    tools: list[dict[str, Any]] = attrs.Factory(list)
    registered: trio.Event = attrs.Factory(trio.Event)
    changed: trio.Event = attrs.Factory(trio.Event)
    pending: dict[str, _Pending] = attrs.Factory(dict)
    done: bool = False
    calls: int = 0

    async def call(
        self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None = None
    ) -> CallRecord:
        return await self.router.call(self, tool_name, arguments, encoded)


def _ok(sock: Socket, frame: wire.Frame, status: str = "ok", reason: str | None = None) -> str:
    return sock.session.reply(frame, status, {"reason": reason} if reason else {})


@attrs.define(eq=False)
class ConversimpleRouter:
    settings: SandboxSettings
    recorder: Recorder
    nursery: trio.Nursery | None = None
    conversations: dict[str, ConversimpleConversation] = attrs.Factory(dict)
    _serials: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _joined: dict[Socket, None] = attrs.Factory(dict)
    _joined_event: trio.Event = attrs.Factory(trio.Event)
    _calls: dict[str, tuple[ConversimpleConversation, CallRecord]] = attrs.Factory(dict)
    _drop_armed: set[str | None] = attrs.Factory(set)
    _pool: ArgumentPool = attrs.Factory(ArgumentPool)
    _json: dict[str, str] = attrs.Factory(dict)
    """JSON of strings sent in every call (conversation ids, tool names), encoded once."""
    sockets_open: int = 0

    # ------------------------------------------------------------ sockets
    async def serve_socket(self, ws: ServerWebSocket) -> None:
        """Serve one agent socket until it closes; a bad frame closes it with 1007."""
        settings = self.settings
        sock = Socket(
            ws, wire.ConversimpleServer(settings.max_frame_bytes, settings.max_depth), next(self._serials)
        )
        self.sockets_open += 1
        try:
            while sock.alive:
                text = await ws.receive_text()
                if '"tool_call_response"' in text and self._fast_answer(sock, text):
                    continue
                try:
                    frame = sock.session.receive(text)
                except ProtocolError as exc:
                    self.recorder.violations += 1
                    log.warning("socket %d sent a bad frame, closing it: %s", sock.serial, exc)
                    await ws.aclose(1007, "bad frame")
                    return
                await self._on_frame(sock, frame)
        finally:
            self.sockets_open -= 1
            self.socket_closed(sock)

    def socket_closed(self, sock: Socket) -> None:
        """Forget a socket that dropped or left; its unanswered calls wait for a re-registration."""
        sock.alive = False
        self._leave(sock)

    def _leave(self, sock: Socket) -> None:
        self._joined.pop(sock, None)
        for cid in sock.conversations:
            conv = self.conversations.get(cid)
            if conv is not None and conv.socket is sock:
                conv.socket = None
        sock.conversations.clear()

    async def _on_frame(self, sock: Socket, frame: wire.Frame) -> None:
        message = frame.message
        if isinstance(message, wire.UnknownClientEvent):
            if message.event == "phx_leave" and sock.customer_id is not None:
                self._leave(sock)
                sock.customer_id = None
                await sock.ws.send_text(_ok(sock, frame))
                return
            self.recorder.unknown(message.event, message.payload)
            return
        if self.recorder.messages:
            event, payload = codec.unstructure_tagged(message, wire.ClientMessage)
            cid = payload.get("conversation_id")
            self.recorder.record(cid if cid in self.conversations else None, "in", event, payload)
        if isinstance(message, wire.PhxJoin):
            await self._join(sock, frame)
        elif isinstance(message, wire.Heartbeat):
            await sock.ws.send_text(_ok(sock, frame))
        elif sock.customer_id is None or frame.topic != sock.session.topic:
            await sock.ws.send_text(_ok(sock, frame, "error", "unmatched topic"))
        elif isinstance(message, wire.RegisterConversationTools):
            await self._register(sock, frame, message)
        elif isinstance(message, wire.ToolCallResponse):
            self._answer(sock, message.call_id, "ok", message.result, None)
        elif isinstance(message, wire.ToolCallError):
            self._answer(sock, message.call_id, "error", None, message.error.message)

    async def _join(self, sock: Socket, frame: wire.Frame) -> None:
        settings, query = self.settings, sock.ws.query
        customer = frame.topic.removeprefix("customer:")
        reason = None
        if not frame.topic.startswith("customer:") or not customer:
            reason = "unmatched topic"
        elif query.get("customer_id", customer) != customer:
            reason = "forbidden"
        elif settings.api_keys and query.get("auth_token") not in settings.api_keys:
            reason = "unauthorized"
        elif customer in settings.suspended_customers:
            reason = "customer_suspended"
        if reason is not None:
            await sock.ws.send_text(_ok(sock, frame, "error", reason))
            return
        self._leave(sock)  # a rejoin starts over
        await sock.ws.send_text(_ok(sock, frame))  # the reply comes before any push
        sock.customer_id = customer
        sock.prefix = codec.encode_frame([frame.join_ref, None, frame.topic])[:-1] + ","
        if sock.alive:
            self._joined[sock] = None
            woken, self._joined_event = self._joined_event, trio.Event()
            woken.set()

    async def _register(
        self, sock: Socket, frame: wire.Frame, message: wire.RegisterConversationTools
    ) -> None:
        conv = self.conversations.get(message.conversation_id)
        if conv is None or conv.control is None or conv.customer_id != sock.customer_id:
            await sock.ws.send_text(_ok(sock, frame, "error", "unknown_conversation"))
            return
        if conv.done:
            await sock.ws.send_text(_ok(sock, frame, "error", "conversation_ended"))
            return
        await sock.ws.send_text(_ok(sock, frame))
        conv.socket = sock
        conv.tools = [
            {"name": t.name, "description": t.description, "parameters": t.parameters} for t in message.tools
        ]
        sock.conversations.add(conv.log.conversation_id)
        woken, conv.changed = conv.changed, trio.Event()
        woken.set()
        if not conv.registered.is_set():
            await self._push(sock, "conversation_lifecycle", conv, event="conversation_started")
            conv.registered.set()
        elif conv.pending and self.nursery is not None:
            self.nursery.start_soon(self._redeliver, conv, sock)

    def _fast_answer(self, sock: Socket, text: str) -> bool:
        """The hot path: a well-formed ``tool_call_response`` without the full decode."""
        try:
            raw = codec.decode_frame(
                text, max_bytes=self.settings.max_frame_bytes, max_depth=self.settings.max_depth
            )
        except ProtocolError:
            return False  # the full decode reports it
        if (
            type(raw) is not dict
            or raw.get("event") != "tool_call_response"
            or raw.get("topic") != sock.session.topic
        ):
            return False
        payload = raw.get("payload")
        if sock.customer_id is None or type(payload) is not dict or "result" not in payload:
            return False
        call_id, cid, name = payload.get("call_id"), payload.get("conversation_id"), payload.get("tool_name")
        if (
            type(call_id) is not str
            or not (cid is None or type(cid) is str)
            or not (name is None or type(name) is str)
        ):
            return False
        ref, join_ref = raw.get("ref"), raw.get("join_ref")
        if not (ref is None or type(ref) is str) or not (join_ref is None or type(join_ref) is str):
            return False
        if self.recorder.messages:
            self.recorder.record(
                cid if cid in self.conversations else None, "in", "tool_call_response", payload
            )
        self._answer(sock, call_id, "ok", payload["result"], None)
        return True

    def _answer(self, sock: Socket, call_id: str, status: str, result: Any, error: str | None) -> None:
        found = self._calls.get(call_id)
        recorder = self.recorder
        if found is None or found[0].customer_id != sock.customer_id:
            recorder.unknown_answers += 1
            log.warning("socket %d answered an unknown call", sock.serial)
            return
        conv, record = found
        record.answers += 1
        if record.answers > 1:
            recorder.duplicates += 1
            return
        if record.status == "lost":
            recorder.late_answers += 1
            return
        record.latency = time.perf_counter() - record.sent_at
        record.status, record.result, record.error = ("ok" if status == "ok" else "error"), result, error
        conv.pending.pop(call_id, None)
        recorder.counters["calls_answered"] += 1
        record.done.set()

    # ------------------------------------------------------------ conversations
    async def run_conversation(self, conv: ConversimpleConversation, rng: random.Random) -> None:
        """Announce, wait for registration, play the customer, end. Sets ``log.outcome``."""
        settings, clog = self.settings, conv.log
        self.conversations[clog.conversation_id] = conv
        try:
            while conv.control is None:
                sock = self._control_for(conv.plan.customer_id)
                if sock is None:
                    await self._joined_event.wait()
                    continue
                conv.control, conv.customer_id = sock, sock.customer_id
                if not await self._push(sock, "conversation_ready", conv, agent_id=conv.plan.agent_id):
                    conv.control = None
            with trio.move_on_after(settings.register_timeout):
                await conv.registered.wait()
            if not conv.registered.is_set():
                clog.failures.append(f"no agent registered tools within {settings.register_timeout:g} s")
                clog.outcome = "unregistered"
            else:
                await run_tool_customer(conv, conv.plan, rng, self._pool)
                lost = any(c.status == "lost" for c in clog.calls)
                clog.outcome = "lost" if lost else "failed" if clog.failures else "completed"
            await self._end(conv)
        finally:
            conv.done = True
            self.recorder.counters["ended"] += 1
            clog.ended.set()

    def _control_for(self, customer_id: str | None) -> Socket | None:
        for sock in self._joined:
            if customer_id is None or sock.customer_id == customer_id:
                return sock
        return None

    async def _end(self, conv: ConversimpleConversation) -> None:
        conv.done = True
        if conv.registered.is_set() and conv.socket is None:
            with trio.move_on_after(self.settings.register_timeout):
                while conv.socket is None:
                    await conv.changed.wait()
        targets = [s for s in (conv.socket, conv.control) if s is not None and s.alive]
        if not self.settings.notify_control_on_end and conv.socket is not None:
            targets = targets[:1]
        for sock in dict.fromkeys(targets):
            await self._push(sock, "conversation_lifecycle", conv, event="conversation_ended")

    async def _push(self, sock: Socket, name: str, conv: ConversimpleConversation, **fields: Any) -> bool:
        payload = {"conversation_id": conv.log.conversation_id, **fields}
        self.recorder.record(conv.log.conversation_id, "out", name, payload)
        return await sock.push(name, codec.encode_frame(payload))

    async def call(
        self,
        conv: ConversimpleConversation,
        tool_name: str,
        arguments: Mapping[str, Any],
        encoded: str | None = None,
    ) -> CallRecord:
        """Send one tool call and wait for its answer; lost after ``call_timeout``."""
        conv.calls += 1
        cid = conv.log.conversation_id
        call_id = f"{cid}-c{conv.calls}"
        record = CallRecord(call_id, cid, tool_name, arguments, time.perf_counter())
        # The frame body is assembled from JSON pieces encoded once: per-call work stays small.
        body = (
            f'{{"call_id":{self._encoded(call_id)},"tool_name":{self._encoded(tool_name, keep=True)},'
            f'"arguments":{codec.encode_frame(arguments) if encoded is None else encoded},'
            f'"timeout_seconds":{self._encoded(self.settings.timeout_seconds, keep=True)},'
            f'"conversation_id":{self._encoded(cid, keep=True)}}}'
        )
        pending = _Pending(record, body)
        conv.log.calls.append(record)
        conv.pending[call_id] = pending
        self._calls[call_id] = (conv, record)
        self.recorder.counters["calls_sent"] += 1
        if self.recorder.messages:
            self.recorder.record(cid, "out", "tool_call_request", codec.decode_frame(body))
        if conv.socket is not None:
            await self._deliver(conv, conv.socket, pending)
        with trio.move_on_after(self.settings.call_timeout):
            await record.done.wait()
        if not record.done.is_set():
            record.status = "lost"
            conv.pending.pop(call_id, None)
        return record

    def _encoded(self, value: str | float, *, keep: bool = False) -> str:
        """``value`` as JSON; with ``keep``, cached (names and ids that recur in many calls)."""
        if not keep:
            return codec.encode_frame(value)
        key = str(value)
        found = self._json.get(key)
        if found is None:
            found = self._json[key] = codec.encode_frame(value)
        return found

    async def _deliver(self, conv: ConversimpleConversation, sock: Socket, pending: _Pending) -> None:
        pending.sent_to = sock
        pending.record.deliveries += 1
        if await sock.push("tool_call_request", pending.body) and self._drop_armed:
            cid = conv.log.conversation_id
            for key in (cid, None):
                if key in self._drop_armed:
                    self._drop_armed.discard(key)
                    self.abort(sock)
                    break

    async def _redeliver(self, conv: ConversimpleConversation, sock: Socket) -> None:
        await trio.sleep(self.settings.redelivery_delay)
        for pending in list(conv.pending.values()):
            stale = pending.sent_to is None or not pending.sent_to.alive
            if stale and conv.socket is sock and sock.alive and not pending.record.done.is_set():
                await self._deliver(conv, sock, pending)

    # ------------------------------------------------------------ faults
    def abort(self, sock: Socket) -> None:
        sock.ws.abort()
        self.socket_closed(sock)

    def drop_socket(self, conversation_id: str) -> bool:
        """Abort the conversation's socket (else the one it was announced on); False if none."""
        conv = self.conversations.get(conversation_id)
        sock = None if conv is None else conv.socket or conv.control
        if sock is None or not sock.alive:
            return False
        self.abort(sock)
        return True

    def drop_after_next_request(self, conversation_id: str | None = None) -> None:
        """Abort the link right after the next ``tool_call_request`` (of that conversation) is sent."""
        self._drop_armed.add(conversation_id)
