"""The whole exception tree of orchestrator.

Failures end in ``Error``, timeouts in ``Timeout``. Third-party exceptions are
translated at one boundary per library with ``raise X from exc``::

    OrchestratorError
    ├── ConfigError                    bad settings, flags, TOML or environment
    │   ├── AgentSpecError             an AGENT spec that cannot be loaded
    │   └── UnsafeURLError             ws:// to a non-loopback host, bad scheme
    ├── AgentDefinitionError           an Agent class or @tool that cannot work
    ├── ToolError                      a tool call that produced no result
    │   ├── UnknownToolError           no tool of that name on the agent
    │   ├── ToolArgumentsError         arguments violate the tool's schema
    │   ├── ToolExecutionError         the tool body raised
    │   └── ToolTimeout                the tool ran past its timeout
    ├── MailboxError
    │   ├── MailboxFullError           put_nowait on a full mailbox
    │   └── MailboxClosedError         put or get on a closed mailbox
    ├── AdmissionError                 a conversation the supervisor would not start
    ├── ConversationNotFoundError      no such conversation (inspection API)
    ├── ConversationFailedError        over the restart budget, or a permanent error
    ├── ConversationOverError          a send after the platform ended the conversation
    ├── ProtocolError                  a frame that breaks the wire protocol
    │   ├── FrameTooLargeError         over the frame-size limit
    │   └── FrameTooDeepError          over the JSON nesting limit
    └── LinkError                      the platform link failed
        ├── HandshakeError             the WebSocket or join handshake failed
        │   └── PermanentLinkError     auth, suspension, 400/401/403, bad certificate
        ├── LinkClosedError            the peer closed or the link dropped
        ├── CircuitOpenError           the breaker is open: no more attempts
        ├── RetriesExhaustedError      max attempts or total retry time reached
        └── LinkTimeout                connect, join or heartbeat timeout

Messages never carry credentials: URLs are redacted before they reach an error.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of every error raised by orchestrator."""


class ConfigError(OrchestratorError):
    """Settings, flags, a TOML file or an environment variable are invalid."""


class AgentSpecError(ConfigError):
    """An ``AGENT`` spec (``package.module:Class`` or ``path.py:Class``) cannot be loaded."""


class UnsafeURLError(ConfigError):
    """A platform URL is refused by the safe defaults (scheme, plain ws:// off loopback)."""


class AgentDefinitionError(OrchestratorError):
    """An Agent class or one of its tools is malformed; raised when the class is defined."""


class ToolError(OrchestratorError):
    """A tool call produced no result; the message is what the platform is told."""


class UnknownToolError(ToolError):
    """The platform asked for a tool the agent does not have."""


class ToolArgumentsError(ToolError):
    """The arguments do not match the tool's schema; the body did not run."""


class ToolExecutionError(ToolError):
    """The tool body raised an exception."""


class ToolTimeout(ToolError):
    """The tool ran past its per-call timeout and was cancelled."""


class MailboxError(OrchestratorError):
    """Base class for mailbox errors."""


class MailboxFullError(MailboxError):
    """``put_nowait`` found the mailbox full (overflow policy ``reject`` or ``block``)."""


class MailboxClosedError(MailboxError):
    """The mailbox was closed; no more events go in or come out."""


class AdmissionError(OrchestratorError):
    """The supervisor refused to start a conversation.

    ``reason`` is one of a fixed set (``capacity``, ``memory``, ``draining``,
    ``breaker``, ``duplicate``, ``unknown_agent``) and is safe as a metric label.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConversationNotFoundError(OrchestratorError):
    """No conversation with that id is known to the supervisor."""


class ConversationFailedError(OrchestratorError):
    """A conversation ended as failed: over its restart budget or a permanent error."""


class ConversationOverError(OrchestratorError):
    """The platform ended the conversation: there is no link left to send on."""


class ProtocolError(OrchestratorError):
    """A frame breaks the wire protocol; an error for that conversation only."""


class FrameTooLargeError(ProtocolError):
    """A frame is larger than the configured maximum frame size."""


class FrameTooDeepError(ProtocolError):
    """A frame nests JSON deeper than the configured maximum depth."""


class LinkError(OrchestratorError):
    """The link to the platform failed."""


class HandshakeError(LinkError):
    """The WebSocket handshake or the channel join failed."""


class PermanentLinkError(HandshakeError):
    """A failure that retrying cannot fix: auth, suspension, HTTP 400/401/403, certificates."""


class LinkClosedError(LinkError):
    """The peer closed the link or it dropped."""


class CircuitOpenError(LinkError):
    """The circuit breaker is open; no further attempts are made."""


class RetriesExhaustedError(LinkError):
    """Reconnection gave up: max attempts or total retry duration reached."""


class LinkTimeout(LinkError):
    """Connect, join or heartbeat took too long."""


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, looking through groups of one (a nursery's)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def first_error(error: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, or ``error`` itself: what a
    command reports when trio hands it a group."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
