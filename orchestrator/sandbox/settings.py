"""The sandbox's settings and the two socket paths it serves."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from orchestrator.errors import ConfigError
from orchestrator.protocols.codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH

__all__ = ["ARINOVA_PATH", "CONVERSIMPLE_PATH", "DEFAULT_AGENT_NAME", "SandboxSettings"]

CONVERSIMPLE_PATH = "/customer_sdk/websocket"
"""Where conversimple-sdk connects (the path of its default ``platform_url``)."""
ARINOVA_PATH = "/ws/agent"
"""Where arinova-agent-sdk connects (``<server_url>/ws/agent``)."""
DEFAULT_AGENT_NAME = "sandbox-agent"


@attrs.frozen
class SandboxSettings:
    """How the sandbox behaves. Times are seconds of trio time."""

    host: str = "127.0.0.1"
    port: int = 0
    api_keys: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset, repr=False)
    """Conversimple keys accepted; empty: any key."""
    suspended_customers: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    """Customer ids whose join is refused with ``customer_suspended``."""
    auth_at_handshake: bool = False
    """Refuse a wrong key (401) or a suspended customer (403) at the HTTP handshake, not at join."""
    bot_tokens: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    """Arinova bot token → agent name; empty: any token, named :attr:`agent_name`."""
    agent_name: str = DEFAULT_AGENT_NAME
    timeout_seconds: float = 30.0
    """``timeout_seconds`` sent in each ``tool_call_request``."""
    call_timeout: float = 60.0
    """A call unanswered this long after it was first sent is lost."""
    reply_timeout: float = 60.0
    """An Arinova message whose reply has not completed this long after it was sent is lost."""
    register_timeout: float = 30.0
    """An announced conversation nobody registers tools for within this ends ``unregistered``."""
    redelivery_delay: float = 0.5
    """After a re-registration, wait this long for answers the agent kept before redelivering."""
    notify_control_on_end: bool = True
    """Also send ``conversation_ended`` to the socket the conversation was announced on."""
    ping_interval: float | None = None
    """Send Arinova ``ping`` to every bot this often (the agents ping on their own anyway)."""
    auth_timeout: float = 10.0
    """Seconds an Arinova bot gets to send ``agent_auth``."""
    record_messages: bool = True
    """Keep every frame in the transcripts (the load generator turns it off)."""
    max_frame_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    conversation_prefix: str = "conv-"

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        positive = ("timeout_seconds", "call_timeout", "reply_timeout", "register_timeout", "auth_timeout")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.redelivery_delay < 0 or (self.ping_interval is not None and self.ping_interval <= 0):
            raise ConfigError("redelivery_delay must not be negative and ping_interval must be positive")
