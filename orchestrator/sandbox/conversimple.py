"""The Conversimple side of the sandbox: per-socket sessions and conversation routing.

Routing rules (the contract with the orchestrator's client):

* a socket that joined ``customer:<id>`` is a control candidate; each conversation is
  announced ONCE (``conversation_ready``) to the earliest-joined socket still connected
  (of the plan's customer, if it names one), waiting while none is joined;
* the socket that sends ``register_conversation_tools`` for it becomes its socket (the
  latest registration wins); the first registration gets ``conversation_started``;
  once its ``conversation_ended`` is on its way a registration is refused
  (``conversation_ended``), but one that comes while the end waits for a socket (the
  last one dropped) is accepted and hears the end;
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
from collections.abc import Awaitable
from typing import Any

import attr
import trio

from orchestrator.errors import ProtocolError
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.transport import ServerWebSocket

from .conversation import ConversimpleConversation, Socket
from .recorder import CallRecord, Recorder
from .settings import SandboxSettings
from .synthetic import ArgumentPool

__all__ = ["ConversimpleRouter"]

log = logging.getLogger("orchestrator.sandbox.conversimple")


_OK_RESPONSE = '{"status":"ok","response":{}}'


def _ok(sock: Socket, frame: wire.Frame, status: str = "ok", reason: str | None = None) -> str:
    return sock.session.reply(frame, status, {"reason": reason} if reason else {})


@attr.s(auto_attribs=True, eq=False, slots=True)
class ConversimpleRouter:
    """All Conversimple sockets and conversations of one sandbox server."""

    settings: SandboxSettings
    recorder: Recorder
    nursery: trio.Nursery | None = None
    conversations: dict[str, ConversimpleConversation] = attr.Factory(dict)
    _serials: itertools.count[int] = attr.Factory(lambda: itertools.count(1))
    _joined: dict[Socket, None] = attr.Factory(dict)
    _joined_event: trio.Event = attr.Factory(trio.Event)
    _active: set[ConversimpleConversation] = attr.Factory(set)
    _drop_armed: set[str | None] = attr.Factory(set)
    pool: ArgumentPool = attr.Factory(ArgumentPool)
    _json: dict[str, str] = attr.Factory(dict)
    """JSON of strings sent in every call (conversation ids, tool names), encoded once."""
    sockets_open: int = 0
    encoded_timeout: str = attr.ib(init=False)
    """``timeout_seconds`` as JSON, for every request."""

    def __attrs_post_init__(self) -> None:
        self.encoded_timeout = codec.encode_frame(self.settings.timeout_seconds)

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
                if '"tool_call_response"' in text:
                    payload = self._fast_answer(sock, text)
                    if payload is not None:
                        sending = self._answer(sock, payload["call_id"], "ok", payload["result"], None)
                        if sending is not None:
                            await sending
                        continue
                elif '"heartbeat"' in text:
                    reply = self._fast_heartbeat(sock, text)
                    if reply is not None:
                        await ws.send_text(reply)
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
        elif isinstance(message, wire.ToolCallResponse | wire.ToolCallError):
            if isinstance(message, wire.ToolCallResponse):
                sending = self._answer(sock, message.call_id, "ok", message.result, None)
            else:
                sending = self._answer(sock, message.call_id, "error", None, message.error.message)
            if sending is not None:
                await sending

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
        if conv.end_told:
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
        if conv.done:
            return  # ending: the end waited for this socket, and goes out on it
        if not conv.registered.is_set():
            await conv.push(sock, "conversation_lifecycle", event="conversation_started")
            conv.registered.set()
            self.recorder.counters["registered"] += 1
        elif conv.pending and self.nursery is not None:
            self.nursery.start_soon(conv.redeliver, sock, self.settings.redelivery_delay)

    def _fast_answer(self, sock: Socket, text: str) -> dict[str, Any] | None:
        """The hot path: a well-formed ``tool_call_response``'s payload without the full
        decode (None for the full decode)."""
        try:
            raw = codec.decode_frame(
                text, max_bytes=self.settings.max_frame_bytes, max_depth=self.settings.max_depth
            )
        except ProtocolError:
            return None  # the full decode reports it
        if (
            type(raw) is not dict
            or raw.get("event") != "tool_call_response"
            or raw.get("topic") != sock.session.topic
        ):
            return None
        payload = raw.get("payload")
        if sock.customer_id is None or type(payload) is not dict or "result" not in payload:
            return None
        call_id, cid, name = payload.get("call_id"), payload.get("conversation_id"), payload.get("tool_name")
        if (
            type(call_id) is not str
            or not (cid is None or type(cid) is str)
            or not (name is None or type(name) is str)
        ):
            return None
        ref, join_ref = raw.get("ref"), raw.get("join_ref")
        if not (ref is None or type(ref) is str) or not (join_ref is None or type(join_ref) is str):
            return None
        if self.recorder.messages:
            self.recorder.record(
                cid if cid in self.conversations else None, "in", "tool_call_response", payload
            )
        return payload

    def _fast_heartbeat(self, sock: Socket, text: str) -> str | None:
        """The other frame every socket sends: a well-formed ``heartbeat``'s reply, or None
        for the full decode (which also records it, when messages are recorded)."""
        if self.recorder.messages:
            return None
        try:
            raw = codec.decode_frame(
                text, max_bytes=self.settings.max_frame_bytes, max_depth=self.settings.max_depth
            )
        except ProtocolError:
            return None  # the full decode reports it
        if type(raw) is not dict or raw.get("event") != "heartbeat":
            return None
        join_ref, ref, topic = raw.get("join_ref"), raw.get("ref"), raw.get("topic")
        if type(topic) is not str or type(raw.get("payload", {})) is not dict:
            return None
        if not (join_ref is None or type(join_ref) is str) or not (ref is None or type(ref) is str):
            return None
        head = ",".join("null" if p is None else codec.encode_frame(p) for p in (join_ref, ref, topic))
        return f'[{head},"phx_reply",{_OK_RESPONSE}]'

    def _find_call(self, call_id: str) -> tuple[ConversimpleConversation, CallRecord] | None:
        """The call ``<conversation id>-c<n>`` from its conversation: no index of every call to keep."""
        cid, _, number = call_id.rpartition("-c")
        conv = self.conversations.get(cid)
        if conv is None:
            return None
        call = conv.pending.get(call_id)
        if call is not None:  # the common case: an answer to an open call
            return conv, call.record
        if not number.isdigit() or not 0 < int(number) <= len(conv.log.calls):
            return None
        record = conv.log.calls[int(number) - 1]
        return (conv, record) if record.call_id == call_id else None

    def _answer(
        self, sock: Socket, call_id: str, status: str, result: Any, error: str | None
    ) -> Awaitable[None] | None:
        """Record an answer. Where the customer's next call is ready for this task to send
        (see :meth:`ConversimpleConversation.converse`), it is sent: at once, else this
        returns what to await to send it."""
        conv = self.conversations.get(call_id.rpartition("-c")[0])
        if conv is not None and conv.customer_id == sock.customer_id:
            call = conv.pending.pop(call_id, None)
            if call is not None:  # the common case: the first answer to an open call
                record = call.record
                record.latency = time.perf_counter() - record.sent_at
                record.answers += 1
                record.status = "ok" if status == "ok" else "error"
                record.result, record.error = result, error
                self.recorder.counters["calls_answered"] += 1
                return conv.send_next() if conv.answered(record, go_on=True) else None
        self._answer_closed(sock, call_id)
        return None

    def _answer_closed(self, sock: Socket, call_id: str) -> None:
        """An answer to no open call: to an unknown one, a duplicate, or late (it was lost)."""
        found = self._find_call(call_id)
        recorder = self.recorder
        if found is None or found[0].customer_id != sock.customer_id:
            recorder.unknown_answers += 1
            log.warning("socket %d answered an unknown call", sock.serial)
            return
        record = found[1]
        record.answers += 1
        if record.answers > 1:
            recorder.duplicates += 1
        elif record.status == "lost":  # (an open call is answered in _answer)
            recorder.late_answers += 1

    # ------------------------------------------------------------ conversations
    async def run_conversation(self, conv: ConversimpleConversation, rng: random.Random) -> None:
        """Run one conversation to its end (see :meth:`ConversimpleConversation.run`)."""
        self.conversations[conv.log.conversation_id] = conv
        self._active.add(conv)
        try:
            await conv.run(rng)
        finally:
            conv.done = True
            conv.end_told = True  # also when cancelled before its end: nothing is left to tell
            self._active.discard(conv)
            self._json.pop(conv.log.conversation_id, None)
            self.recorder.counters["ended"] += 1
            conv.log.ended.set()

    async def wait_control(self, customer_id: str | None) -> Socket:
        """The earliest-joined live socket (of ``customer_id``, if given); waits for one."""
        while True:
            for sock in self._joined:
                if customer_id is None or sock.customer_id == customer_id:
                    return sock
            await self._joined_event.wait()

    def take_drop(self, conv: ConversimpleConversation) -> bool:
        """A ``tool_call_request`` of ``conv`` is about to go out: whether an armed drop
        (see :meth:`drop_after_next_request`) is for it, disarmed if so."""
        if self._drop_armed:
            for key in (conv.log.conversation_id, None):
                if key in self._drop_armed:
                    self._drop_armed.discard(key)
                    return True
        return False

    def encoded(self, text: str) -> str:
        """``text`` as JSON, cached: tool names and conversation ids recur in many calls."""
        found = self._json.get(text)
        if found is None:
            found = self._json[text] = codec.encode_frame(text)
        return found

    async def reap_lost_calls(self) -> None:
        """Mark calls unanswered past their deadline lost, checking every ``call_timeout / 20``.

        One sweep over the open calls replaces a timeout per call (a cancel scope per
        call costs more than the rest of the sandbox's work for it).
        """
        interval = max(0.01, self.settings.call_timeout / 20)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for conv in [c for c in self._active if c.pending]:
                conv.lose_overdue(now)

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
