"""Platform-neutral events between a conversation actor and its connection.

Protocol adapters translate wire frames to and from these values, so the actor,
the tool executor and the supervisor never see a wire format. Inbound events
flow platform → actor through the actor's mailbox; outbound commands flow actor →
platform through ``Connection.send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

# ---------------------------------------------------------------- inbound


@attrs.frozen
class LinkUp:
    """The link is established and the conversation joined; ``reconnect`` after a drop."""

    reconnect: bool = False


@attrs.frozen
class LinkDown:
    """The link dropped; the connection is reconnecting. ``reason`` is a fixed slug."""

    reason: str = "closed"


@attrs.frozen
class ConversationStarted:
    """The platform says the conversation has started."""


@attrs.frozen
class ConversationEnded:
    """The platform ended the conversation; the actor finishes normally."""

    reason: str = "ended"


@attrs.frozen
class ToolCallRequest:
    """The platform's LLM asks for a tool call."""

    call_id: str
    tool_name: str
    arguments: Mapping[str, Any]
    timeout_seconds: float | None = None


@attrs.frozen
class CustomerMessage:
    """A customer's message that the agent answers with text (Arinova ``task``)."""

    task_id: str
    content: str


@attrs.frozen
class ConfigUpdate:
    """The platform changed the agent's configuration."""

    config: Mapping[str, Any]


@attrs.frozen
class PlatformNotice:
    """An informational event (``analytics_update``, ``hook_event``, ``connection_warning``)."""

    kind: str
    payload: Mapping[str, Any]


@attrs.frozen
class PlatformError:
    """The platform reported an error (``error_notification``)."""

    error_type: str
    message: str
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UnknownEvent:
    """An event this version does not know; kept for forward compatibility, never a crash."""

    event: str
    payload: Any


@attrs.frozen
class ProtocolViolation:
    """A frame for this conversation broke the protocol; logged and counted, never a crash."""

    reason: str
    message: str


InboundEvent = (
    LinkUp
    | LinkDown
    | ConversationStarted
    | ConversationEnded
    | ToolCallRequest
    | CustomerMessage
    | ConfigUpdate
    | PlatformNotice
    | PlatformError
    | UnknownEvent
    | ProtocolViolation
)

# ---------------------------------------------------------------- outbound


@attrs.frozen
class RegisterTools:
    """Tell the platform which tools this conversation offers (``{name, description, parameters}``)."""

    tools: tuple[Mapping[str, Any], ...]


@attrs.frozen
class ToolResult:
    """A tool call's result."""

    call_id: str
    tool_name: str
    result: Any


@attrs.frozen
class ToolFailure:
    """A tool call that produced an error reply; ``message`` names the problem."""

    call_id: str
    tool_name: str
    message: str
    timestamp: float = 0.0


@attrs.frozen
class ReplyChunk:
    """One streamed chunk of a reply to a customer message."""

    task_id: str
    chunk: str


@attrs.frozen
class ReplyComplete:
    """The complete reply to a customer message."""

    task_id: str
    content: str


@attrs.frozen
class ReplyFailure:
    """An error reply to a customer message."""

    task_id: str
    error: str


OutboundEvent = RegisterTools | ToolResult | ToolFailure | ReplyChunk | ReplyComplete | ReplyFailure
