"""orchestrator: a trio runtime hosting thousands of live customer/AI-agent conversations.

The public surface, re-exported here; everything else is an implementation module
with its own documented API (``orchestrator.supervisor``, ``orchestrator.testing``…).
"""

from __future__ import annotations

from .actor import ActorExit, ActorSettings, ConversationActor
from .agent import Agent, RestartType, tool, tool_async, tool_schemas
from .config import HttpSettings, LogSettings, PlatformSettings, Settings
from .errors import (
    AdmissionError,
    AgentDefinitionError,
    AgentSpecError,
    ConfigError,
    ConversationFailedError,
    LinkError,
    OrchestratorError,
    PermanentLinkError,
    ProtocolError,
    ToolError,
)
from .mailbox import Mailbox, OverflowPolicy
from .metrics import Metrics
from .store import ConversationRecord, ConversationStore, MemoryStore
from .supervision import SupervisorSettings
from .supervisor import Supervisor
from .tools import ToolExecutor, ToolSettings

__version__ = "0.1.0"

__all__ = [
    "ActorExit",
    "ActorSettings",
    "AdmissionError",
    "Agent",
    "AgentDefinitionError",
    "AgentSpecError",
    "ConfigError",
    "ConversationActor",
    "ConversationFailedError",
    "ConversationRecord",
    "ConversationStore",
    "HttpSettings",
    "LinkError",
    "LogSettings",
    "Mailbox",
    "MemoryStore",
    "Metrics",
    "OrchestratorError",
    "OverflowPolicy",
    "PermanentLinkError",
    "PlatformSettings",
    "ProtocolError",
    "RestartType",
    "Settings",
    "Supervisor",
    "SupervisorSettings",
    "ToolError",
    "ToolExecutor",
    "ToolSettings",
    "__version__",
    "tool",
    "tool_async",
    "tool_schemas",
]
