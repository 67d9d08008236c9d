"""Conversimple: Phoenix channels as conversimple-sdk 0.2.4 speaks them (sans-IO).

Connect to ``platform_url?customer_id=…&auth_token=…`` (subprotocol ``phoenix-websocket``),
join ``customer:<id>``. Agents push objects ``{join_ref, ref, topic, event, payload}``; the
platform sends arrays ``[join_ref, ref, topic, event, payload]`` (objects too, as the SDK
allows). Refs are decimal strings from one counter per socket; only the join has a
``join_ref``. :class:`ConversimpleClient` maps frames to :mod:`orchestrator.events`;
:class:`ConversimpleServer` is the platform end, for the sandbox.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import urlencode

import attrs

from orchestrator import events
from orchestrator.errors import HandshakeError, PermanentLinkError, ProtocolError
from orchestrator.protocols import codec
from orchestrator.protocols.codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, JsonObject

SUBPROTOCOL = "phoenix-websocket"
HEARTBEAT_INTERVAL = 30.0
# Substrings of a join error that the SDK classifies as permanent (its circuit breaker opens).
PERMANENT_JOIN_ERRORS = ("authentication_failed", "invalid_credentials", "customer_suspended",
    "missing_credentials", "invalid_api_key", "unauthorized", "forbidden", "not authorized")  # fmt: skip


@attrs.frozen
class _Opaque:  # the whole free-form payload is the message
    payload: JsonObject = attrs.field(factory=dict)


# --------------------------------------------------------- server → client
@attrs.frozen
class PhxReply:
    status: str
    response: JsonObject = attrs.field(factory=dict)


class PhxError(_Opaque): ...


class PhxClose(_Opaque): ...


@attrs.frozen
class ConversationReady:  # to the control connection: start this conversation
    conversation_id: str
    agent_id: str | None = None


@attrs.frozen
class ConversationLifecycle:
    event: str  # conversation_started | conversation_ended
    conversation_id: str


@attrs.frozen
class ToolCallRequest:
    call_id: str
    tool_name: str
    arguments: JsonObject = attrs.field(factory=dict)
    timeout_seconds: float | None = None
    conversation_id: str | None = None


class ConfigUpdate(_Opaque): ...


class AnalyticsUpdate(_Opaque): ...


class HookEvent(_Opaque): ...


class ConnectionWarning(_Opaque): ...


@attrs.frozen
class ErrorNotification:
    error_type: str = "unknown"
    error_message: str = ""
    conversation_id: str | None = None


@attrs.frozen
class UnknownServerEvent:  # a platform event this version does not know, kept raw
    event: str
    payload: JsonObject


ServerMessage = (PhxReply | PhxError | PhxClose | ConversationReady | ConversationLifecycle | ToolCallRequest
    | ConfigUpdate | AnalyticsUpdate | HookEvent | ConnectionWarning | ErrorNotification)  # fmt: skip


# --------------------------------------------------------- client → server
class PhxJoin(_Opaque): ...


class Heartbeat(_Opaque): ...


@attrs.frozen
class ToolSpec:
    name: str
    description: str
    parameters: JsonObject


@attrs.frozen
class RegisterConversationTools:
    conversation_id: str
    tools: tuple[ToolSpec, ...]


@attrs.frozen
class ToolCallResponse:
    call_id: str
    conversation_id: str | None
    result: Any
    tool_name: str | None = None  # omitted when None, as the SDK does


@attrs.frozen
class ToolErrorBody:
    message: str
    timestamp: str  # ISO 8601 with offset, as the SDK sends it


@attrs.frozen
class ToolCallError:
    call_id: str
    conversation_id: str | None
    error: ToolErrorBody
    tool_name: str | None = None


@attrs.frozen
class UnknownClientEvent:  # an agent event this version does not know, kept raw
    event: str
    payload: JsonObject


ClientMessage = PhxJoin | Heartbeat | RegisterConversationTools | ToolCallResponse | ToolCallError


def _event_name(cls: type) -> str:
    name = cls.__name__.replace("Phx", "phx")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


_SERVER_EVENTS = {_event_name(c): c for c in get_args(ServerMessage)}
_CLIENT_EVENTS = {_event_name(c): c for c in get_args(ClientMessage)}
codec.register_opaque(PhxError, PhxClose, ConfigUpdate, AnalyticsUpdate, HookEvent,
                      ConnectionWarning, PhxJoin, Heartbeat)  # fmt: skip
codec.omit_defaults(ConversationReady, ToolCallRequest, ErrorNotification, ToolCallResponse, ToolCallError,
                    keep=("arguments",))  # fmt: skip
codec.register_union(ServerMessage, {c: e for e, c in _SERVER_EVENTS.items()})
codec.register_union(ClientMessage, {c: e for e, c in _CLIENT_EVENTS.items()})


@attrs.frozen
class Frame:  # one channel message, either direction
    join_ref: str | None
    ref: str | None
    topic: str
    message: ServerMessage | UnknownServerEvent | ClientMessage | UnknownClientEvent


def _decode(text: str | bytes, limits: dict[str, int], server: bool) -> tuple[Frame, JsonObject]:
    return _structure(codec.decode_frame(text, **limits), server)


def _structure(raw: Any, server: bool) -> tuple[Frame, JsonObject]:
    if type(raw) is list and len(raw) >= 4:  # the SDK reads 4+ items; payload defaults {}
        join_ref, ref, topic, event = raw[:4]
        payload = raw[4] if len(raw) > 4 else {}
    elif type(raw) is dict:
        join_ref, ref, topic = raw.get("join_ref"), raw.get("ref"), raw.get("topic")
        event, payload = raw.get("event"), raw.get("payload", {})
    else:
        raise ProtocolError("a frame is an array [join_ref, ref, topic, event, payload] or object")
    if type(topic) is not str or type(event) is not str or type(payload) is not dict:
        raise ProtocolError("topic and event must be strings and payload an object")
    if not (join_ref is None or type(join_ref) is str) or not (ref is None or type(ref) is str):
        raise ProtocolError("join_ref and ref must be strings or null")
    known, union = (_SERVER_EVENTS, ServerMessage) if server else (_CLIENT_EVENTS, ClientMessage)
    if event in known:
        message = codec.structure_tagged(event, payload, union)
    else:
        message = (UnknownServerEvent if server else UnknownClientEvent)(event, payload)
    return Frame(join_ref, ref, topic, message), payload


def _tool_call_request(raw: Any) -> tuple[events.ToolCallRequest, str | None] | None:
    """The hot path of :func:`_structure` and :func:`_inbound`: a well-formed
    ``tool_call_request`` array, checked as strictly, straight to its event and the
    conversation it names; None for anything else (which takes the general path, and
    its errors)."""
    if type(raw) is not list or len(raw) != 5 or raw[3] != "tool_call_request":
        return None
    join_ref, ref, topic, _, payload = raw
    if type(payload) is not dict or type(topic) is not str:
        return None
    if not (join_ref is None or type(join_ref) is str) or not (ref is None or type(ref) is str):
        return None
    call_id, tool_name = payload.get("call_id"), payload.get("tool_name")
    arguments, timeout = payload.get("arguments", {}), payload.get("timeout_seconds")
    cid = payload.get("conversation_id")
    if type(call_id) is not str or type(tool_name) is not str or type(arguments) is not dict:
        return None
    if not (cid is None or type(cid) is str) or not (timeout is None or type(timeout) in (int, float)):
        return None
    try:
        seconds = None if timeout is None else float(timeout)
    except OverflowError:
        return None
    return events.ToolCallRequest(call_id, tool_name, arguments, seconds), cid


def _conversation_ended(raw: Any) -> str | None:
    """The other hot frame of :meth:`ConversimpleClient.receive`: a well-formed
    ``conversation_lifecycle`` ``conversation_ended`` array (every conversation's end
    comes twice, on its socket and on the control connection), straight to the id it
    names; None for anything else, which takes the general path."""
    if type(raw) is not list or len(raw) != 5 or raw[3] != "conversation_lifecycle":
        return None
    join_ref, ref, topic, _, payload = raw
    if type(payload) is not dict or len(payload) != 2 or type(topic) is not str:
        return None
    if not (join_ref is None or type(join_ref) is str) or not (ref is None or type(ref) is str):
        return None
    cid = payload.get("conversation_id")
    return cid if payload.get("event") == "conversation_ended" and type(cid) is str else None


def decode_server_frame(text: str | bytes, **limits: int) -> Frame:
    """Parse a platform frame; raises ProtocolError (never anything else)."""
    return _decode(text, limits, server=True)[0]


def decode_client_push(text: str | bytes, **limits: int) -> Frame:
    """Parse an agent's push; raises ProtocolError (never anything else)."""
    return _decode(text, limits, server=False)[0]


def _split(message: Any) -> tuple[str, JsonObject]:  # -> (event, payload)
    if isinstance(message, UnknownServerEvent | UnknownClientEvent):
        return message.event, message.payload
    union = ServerMessage if isinstance(message, get_args(ServerMessage)) else ClientMessage
    return codec.unstructure_tagged(message, union)


def encode_server_frame(frame: Frame) -> str:
    """A platform frame as the Phoenix V2 array ``[join_ref, ref, topic, event, payload]``."""
    event, payload = _split(frame.message)
    return codec.encode_frame([frame.join_ref, frame.ref, frame.topic, event, payload])


def encode_client_push(push: Frame) -> str:
    """An agent push as the object ``{join_ref, ref, topic, event, payload}`` the SDK sends."""
    event, payload = _split(push.message)
    frame = {"join_ref": push.join_ref, "ref": push.ref, "topic": push.topic, "event": event}
    return codec.encode_frame({**frame, "payload": payload})


def customer_id_from_key(api_key: str) -> str:
    """The SDK's fallback customer id: the first 12 hex digits of md5(api_key)."""
    return hashlib.md5(api_key.encode(), usedforsecurity=False).hexdigest()[:12]


# ---------------------------------------------------------------- sessions
@attrs.frozen
class JoinOk:
    response: JsonObject


@attrs.frozen
class JoinRejected:
    """The join was refused; ``permanent`` when retrying cannot help (auth, suspension)."""

    reason: str
    permanent: bool
    response: JsonObject

    def exception(self) -> HandshakeError:
        cls = PermanentLinkError if self.permanent else HandshakeError
        return cls(f"channel join refused: {self.reason}")


@attrs.frozen
class ForeignEvent:
    """An event for a conversation this session does not own; the caller logs and counts it."""

    conversation_id: str
    event: events.InboundEvent


ClientResult = (JoinOk | JoinRejected | PhxReply | PhxError | PhxClose | ConversationReady
                | ForeignEvent | events.InboundEvent)  # fmt: skip


def _inbound(message: Any, raw: JsonObject) -> events.InboundEvent:
    match message:
        case ToolCallRequest(call_id, tool_name, arguments, timeout):
            return events.ToolCallRequest(call_id, tool_name, arguments, timeout)
        case ConversationReady() | ConversationLifecycle(event="conversation_started"):
            return events.ConversationStarted()
        case ConversationLifecycle(event="conversation_ended"):
            return events.ConversationEnded()
        case ConfigUpdate():
            return events.ConfigUpdate(message.payload)
        case AnalyticsUpdate() | HookEvent() | ConnectionWarning():
            return events.PlatformNotice(_event_name(type(message)), message.payload)
        case ErrorNotification():
            return events.PlatformError(message.error_type, message.error_message, raw)
        case UnknownServerEvent():
            return events.UnknownEvent(message.event, raw)
    return events.UnknownEvent(_event_name(type(message)), raw)


@attrs.define(eq=False)
class ConversimpleClient:
    """One socket's client session: builds frames to send, maps received frames to results.

    ``conversation_id`` is the conversation this socket serves; ``None`` makes it the
    control connection, which receives ``conversation_ready``. Never raises on input.
    """

    customer_id: str
    conversation_id: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    wall_clock: Callable[[], float] = time.time  # stamps a ToolFailure whose timestamp is 0
    joined: bool = attrs.field(default=False, init=False)
    _refs: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _pending_join: str | None = attrs.field(default=None, init=False)

    @property
    def topic(self) -> str:
        return f"customer:{self.customer_id}"

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def url(platform_url: str, api_key: str, customer_id: str | None = None) -> str:
        """The connect URL; it carries the api key: log only ``redact.redact_url`` of it.
        (The same for every conversation of a customer: built once, not per link.)"""
        cid = customer_id or customer_id_from_key(api_key)
        joiner = "&" if "?" in platform_url else "?"
        return f"{platform_url}{joiner}{urlencode({'customer_id': cid, 'auth_token': api_key})}"

    def _push(self, message: ClientMessage, ref: str | None = None) -> str:
        return encode_client_push(Frame(None, ref or str(next(self._refs)), self.topic, message))

    def join(self) -> str:
        """The ``phx_join`` push; its reply comes out of :meth:`receive` as JoinOk/JoinRejected."""
        self.joined = False
        join_ref, self._pending_join = str(next(self._refs)), str(next(self._refs))
        return encode_client_push(Frame(join_ref, self._pending_join, self.topic, PhxJoin()))

    def heartbeat(self) -> str:
        """The SDK's ``heartbeat`` push on the customer topic (every 30 s)."""
        return self._push(Heartbeat())

    def send(self, event: events.OutboundEvent, conversation_id: str | None = None) -> str:
        """Encode an outbound command; ProtocolError if it has no form here or is not JSON."""
        cid = conversation_id or self.conversation_id
        tool_name = getattr(event, "tool_name", None) or None
        ref: str | None = None
        if type(event) is events.ToolResult:  # the hot path: what _push would write, written directly
            payload = {"call_id": event.call_id, "conversation_id": cid, "result": event.result}
            if tool_name is not None:
                payload["tool_name"] = tool_name
            ref = str(next(self._refs))
            topic = "customer:" + self.customer_id
            frame = {"ref": ref, "topic": topic, "event": "tool_call_response", "payload": payload}
            # (try, not contextlib.suppress: a context manager per reply cost 2 % of a call)
            try:  # join_ref null written here: a null in the value would send it to stdlib json
                return '{"join_ref":null,' + codec.encode_frame(frame)[1:]
            except ProtocolError:
                pass  # not plain JSON: the converter's turn, same ref
        match event:
            case events.RegisterTools(tools=tools) if cid is not None:
                specs = tuple(codec.structure(dict(spec), ToolSpec) for spec in tools)
                return self._push(RegisterConversationTools(cid, specs))
            case events.ToolResult(call_id=call_id, result=result):
                return self._push(ToolCallResponse(call_id, cid, result, tool_name), ref)
            case events.ToolFailure(call_id=call_id, message=text, timestamp=stamp):
                at = datetime.fromtimestamp(stamp or self.wall_clock(), tz=UTC).isoformat()
                return self._push(ToolCallError(call_id, cid, ToolErrorBody(text, at), tool_name))
        raise ProtocolError(f"{type(event).__name__} cannot be sent on Conversimple here")

    def receive(self, text: str | bytes) -> list[ClientResult]:
        """Map one platform frame to results; a bad frame is a ProtocolViolation, not a raise."""
        got = self.receive_call(text)
        return got if isinstance(got, list) else [got]

    def receive_call(self, text: str | bytes) -> events.ToolCallRequest | list[ClientResult]:
        """:meth:`receive`, but a tool call for this socket's conversation (the everyday
        frame) comes back alone, not in a list of results."""
        try:
            raw = codec.decode_frame(text, max_bytes=self.max_bytes, max_depth=self.max_depth)
            hot = _tool_call_request(raw)
            if hot is not None:
                request, cid = hot
                return request if cid is None or cid == self.conversation_id else [ForeignEvent(cid, request)]
            ended = _conversation_ended(raw)
            if ended is not None:
                end = events.ConversationEnded()
                return [end if ended == self.conversation_id else ForeignEvent(ended, end)]
            frame, payload = _structure(raw, server=True)
        except ProtocolError as exc:
            return [codec.violation(exc)]
        message = frame.message
        if isinstance(message, PhxReply):
            return [self._reply(frame.ref, message)]
        if isinstance(message, PhxError | PhxClose):  # the channel is gone: rejoin
            self.joined = False
            return [message]
        if isinstance(message, ConversationReady) and message.conversation_id != self.conversation_id:
            return [message]  # the platform announces on any socket of the customer
        cid, event = payload.get("conversation_id"), _inbound(message, payload)
        if type(cid) is not str or cid == self.conversation_id:
            return [event]
        return [ForeignEvent(cid, event)]

    def _reply(self, ref: str | None, reply: PhxReply) -> ClientResult:
        if self._pending_join is None or ref not in (self._pending_join, None):
            return reply  # to a push other than the join
        self._pending_join = None
        if reply.status == "ok":
            self.joined = True
            return JoinOk(reply.response)
        reason = reply.response.get("reason")
        detail = codec.encode_frame(reply.response).lower()
        permanent = any(pattern in detail for pattern in PERMANENT_JOIN_ERRORS)
        return JoinRejected(reason if type(reason) is str else "unknown", permanent, reply.response)


@attrs.define(eq=False)
class ConversimpleServer:
    """The platform end of one socket (for the sandbox): decodes pushes, encodes arrays.

    Accepting a join (an ok :meth:`reply` to ``phx_join``) fixes the channel's topic and
    ``join_ref``, which every later :meth:`push` carries, as Phoenix does.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    topic: str | None = attrs.field(default=None, init=False)
    join_ref: str | None = attrs.field(default=None, init=False)

    def receive(self, text: str | bytes) -> Frame:
        """Decode one client push; ProtocolError for anything that is not one."""
        return decode_client_push(text, max_bytes=self.max_bytes, max_depth=self.max_depth)

    def reply(self, push: Frame, status: str = "ok", response: JsonObject | None = None) -> str:
        """The ``phx_reply`` to ``push``; ok to a ``phx_join`` joins, ``error`` wants a ``reason``."""
        if isinstance(push.message, PhxJoin) and status == "ok":
            self.topic, self.join_ref = push.topic, push.join_ref
        frame = Frame(push.join_ref, push.ref, push.topic, PhxReply(status, response or {}))
        return encode_server_frame(frame)

    def push(self, message: ServerMessage | UnknownServerEvent) -> str:
        """A server event on the joined channel: ``[join_ref, null, topic, event, payload]``."""
        if self.topic is None:
            raise ProtocolError("no channel joined yet")
        return encode_server_frame(Frame(self.join_ref, None, self.topic, message))
