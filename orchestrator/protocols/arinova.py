"""Arinova: JSON objects tagged by ``type``, as arinova-agent-sdk 0.0.1 speaks them (sans-IO).

The agent connects to ``<server>/ws/agent`` and sends ``agent_auth {botToken}``; the
server answers ``auth_ok {agentName}`` or ``auth_error {error}`` (permanent: the SDK
stops reconnecting). The server then sends ``task {taskId, conversationId, content}``;
the agent streams ``agent_chunk {taskId, chunk}`` and ends with ``agent_complete
{taskId, content}`` or ``agent_error {taskId, error}``. The agent sends ``ping`` every
30 s and the server answers ``pong``. One socket carries many conversations, so the
client session routes each task by ``conversationId``.
"""

from __future__ import annotations

import attrs

from orchestrator import events
from orchestrator.errors import PermanentLinkError, ProtocolError
from orchestrator.protocols import codec
from orchestrator.protocols.codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, JsonObject

PING_INTERVAL = 30.0
_TAG = "type"


@attrs.frozen
class AgentAuth:
    bot_token: str = attrs.field(alias="botToken", repr=False)


@attrs.frozen
class AuthOk:
    """The server accepted the bot token."""

    agent_name: str | None = attrs.field(default=None, alias="agentName")


@attrs.frozen
class AuthError:
    """The server refused the bot token: permanent, never retried."""

    error: str = "unknown"

    def exception(self) -> PermanentLinkError:
        return PermanentLinkError(f"agent auth failed: {self.error}")


@attrs.frozen
class Task:
    task_id: str = attrs.field(alias="taskId")
    conversation_id: str = attrs.field(alias="conversationId")
    content: str


@attrs.frozen
class AgentChunk:
    task_id: str = attrs.field(alias="taskId")
    chunk: str


@attrs.frozen
class AgentComplete:
    task_id: str = attrs.field(alias="taskId")
    content: str


@attrs.frozen
class AgentError:
    task_id: str = attrs.field(alias="taskId")
    error: str


@attrs.frozen
class Ping:
    """Keepalive; the agent sends one every 30 s."""


@attrs.frozen
class Pong:
    """The server answered a ping: the link is alive."""


@attrs.frozen
class UnknownMessage:
    """A ``type`` this version does not know, kept raw (forward compatible)."""

    type: str
    payload: JsonObject


ServerMessage = AuthOk | AuthError | Task | Ping | Pong
AgentMessage = AgentAuth | AgentChunk | AgentComplete | AgentError | Ping | Pong
Message = AgentAuth | AuthOk | AuthError | Task | AgentChunk | AgentComplete | AgentError | Ping | Pong

_TAGS: dict[type, str] = {
    AgentAuth: "agent_auth", AuthOk: "auth_ok", AuthError: "auth_error", Task: "task",
    AgentChunk: "agent_chunk", AgentComplete: "agent_complete", AgentError: "agent_error",
    Ping: "ping", Pong: "pong",
}  # fmt: skip
_TYPES = {tag: cls for cls, tag in _TAGS.items()}
codec.omit_defaults(AuthOk)
codec.register_union(Message, tag_name=_TAG, tags=_TAGS)


def decode_message(text: str | bytes, **limits: int) -> Message | UnknownMessage:
    """Parse one frame of either direction; raises ProtocolError (never anything else)."""
    raw = codec.decode_frame(text, **limits)
    if type(raw) is not dict:
        raise ProtocolError("an Arinova frame is a JSON object")
    tag = raw.get(_TAG)
    if type(tag) is not str:
        raise ProtocolError("an Arinova frame needs a string 'type'")
    if tag not in _TYPES:
        return UnknownMessage(tag, raw)
    message: Message = codec.structure(raw, Message)
    return message


def encode_message(message: Message | UnknownMessage) -> str:
    """One frame: the message's fields (camelCase on the wire) plus its ``type``."""
    if isinstance(message, UnknownMessage):
        return codec.encode_frame({**message.payload, _TAG: message.type})
    payload = codec.unstructure(message, Message)
    return codec.encode_frame({_TAG: payload.pop(_TAG), **payload})


def agent_url(server_url: str) -> str:
    """The SDK's socket URL: ``<server>/ws/agent``."""
    return f"{server_url.rstrip('/')}/ws/agent"


# ---------------------------------------------------------------- sessions


@attrs.frozen
class Routed:
    """An event for one conversation on the shared socket."""

    conversation_id: str
    event: events.InboundEvent


@attrs.frozen
class Outgoing:
    """A frame the caller must send now (the ``pong`` answering the server's ``ping``)."""

    frame: str


ClientResult = AuthOk | AuthError | Routed | Outgoing | Pong | events.InboundEvent


@attrs.define(eq=False)
class ArinovaClient:
    """The agent end of one socket: builds frames to send, maps received frames to results.

    Tasks come back as ``Routed(conversation_id, CustomerMessage(task_id, content))``;
    the caller forwards each to that conversation's actor. Never raises on input.
    """

    bot_token: str = attrs.field(repr=False)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    authenticated: bool = attrs.field(default=False, init=False)

    def auth(self) -> str:
        """The ``agent_auth`` frame, the first the agent sends."""
        return encode_message(AgentAuth(self.bot_token))

    def ping(self) -> str:
        return encode_message(Ping())

    def send(self, event: events.OutboundEvent) -> str:
        """Encode a reply; ProtocolError for a command Arinova has no form for."""
        if type(event) is events.ReplyChunk:  # the hot path: what encode_message writes, directly
            return codec.encode_frame({_TAG: "agent_chunk", "taskId": event.task_id, "chunk": event.chunk})
        match event:
            case events.ReplyChunk():
                return encode_message(AgentChunk(event.task_id, event.chunk))
            case events.ReplyComplete():
                return encode_message(AgentComplete(event.task_id, event.content))
            case events.ReplyFailure():
                return encode_message(AgentError(event.task_id, event.error))
        raise ProtocolError(f"{type(event).__name__} cannot be sent on Arinova")

    def receive(self, text: str | bytes) -> list[ClientResult]:
        """Map one server frame to results; a bad frame is a ProtocolViolation, not a raise."""
        try:
            message = decode_message(text, max_bytes=self.max_bytes, max_depth=self.max_depth)
        except ProtocolError as exc:
            return [codec.violation(exc)]
        match message:
            case Task():
                customer_message = events.CustomerMessage(message.task_id, message.content)
                return [Routed(message.conversation_id, customer_message)]
            case AuthOk():
                self.authenticated = True
                return [message]
            case AuthError():
                self.authenticated = False
                return [message]
            case Pong():
                return [message]
            case Ping():
                return [Outgoing(encode_message(Pong()))]
            case UnknownMessage():
                return [events.UnknownEvent(message.type, message.payload)]
        reason = f"{_TAGS[type(message)]} is sent by agents, not servers"
        return [events.ProtocolViolation("bad_frame", reason)]


@attrs.define(eq=False)
class ArinovaServer:
    """The server end of one socket (the sandbox): decodes agent frames, encodes its own.

    :meth:`receive` raises ProtocolError for a bad frame; the server decides what follows.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    authenticated: bool = attrs.field(default=False, init=False)

    def receive(self, text: str | bytes) -> AgentMessage | UnknownMessage:
        """Decode one agent frame; ProtocolError for anything an agent does not send."""
        message = decode_message(text, max_bytes=self.max_bytes, max_depth=self.max_depth)
        if isinstance(message, AuthOk | AuthError | Task):
            raise ProtocolError(f"{_TAGS[type(message)]} is sent by servers, not agents")
        return message

    def auth_ok(self, agent_name: str | None = None) -> str:
        self.authenticated = True
        return encode_message(AuthOk(agent_name))

    def auth_error(self, error: str) -> str:
        self.authenticated = False
        return encode_message(AuthError(error))

    def task(self, task_id: str, conversation_id: str, content: str) -> str:
        return encode_message(Task(task_id, conversation_id, content))

    def pong(self) -> str:
        """The answer to an agent's ``ping``."""
        return encode_message(Pong())

    def send(self, message: ServerMessage | UnknownMessage) -> str:
        return encode_message(message)
