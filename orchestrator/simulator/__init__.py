"""The conversation simulator: participants, runners, evaluators, batches and reports.

Simulate customers talking to an agent, decide each conversation's outcome,
and measure pass rates before shipping. Start from a scenario file
(:mod:`.scenarios`) and the ``orchestrator simulate`` command (:mod:`.cli`), or
compose the pieces: participants (:mod:`.participants`, :mod:`.agents`,
:mod:`.drivers` for tool-only agents), a runner (:class:`FullSimulationRunner`
in process, :class:`HybridSimulationRunner` through a :class:`Channel` in real
time; :mod:`.sandbox_channel` reaches a real agent through the bundled sandbox),
an evaluator (:mod:`.evaluators`, :mod:`.judge`) and a :class:`Batch`
with its :class:`BatchSummary`.
"""

from __future__ import annotations

from .agents import AgentParticipant, load_agent_class
from .batch import Batch, BatchObserver, BatchRun, SimulationRecord
from .builder import build_runner
from .cache import CachedLLMClient
from .channels import AgentChannel, Channel, Session, open_session
from .drivers import AgentStep, LLMToolAgent, PlannedCall, ScriptedToolAgent, ToolBox, Tools
from .errors import (
    LLMError,
    LLMTimeout,
    ParticipantError,
    RunnerUsedError,
    ScenarioError,
    SimulationError,
)
from .evaluators import CombinedEvaluator, Evaluator, RuleEvaluator
from .hybrid import HybridSimulationRunner, HybridTiming
from .judge import Criterion, LLMJudge
from .llm import (
    ChatMessage,
    Completion,
    CompletionRequest,
    LangChainClient,
    LLMClient,
    LLMSettings,
    LLMToolCall,
    RateLimiter,
)
from .models import (
    Conversation,
    ConversationResult,
    EndReason,
    Evaluation,
    Intent,
    Message,
    MessageDraft,
    Outcome,
    Outcomes,
    ParticipantRole,
    ToolCall,
    Verdict,
    converter,
    from_json,
    to_json,
)
from .openai_client import OpenAIClient
from .participants import (
    LLMParticipant,
    Participant,
    ReplyRule,
    RuleBasedParticipant,
    ScriptedParticipant,
)
from .report import junit_xml, render_report, summary_json
from .rules import Contains, Matches, ToolCalled, parse_rule
from .runners import FullSimulationRunner, SimulationProgress, SimulationRunner
from .sandbox_channel import (
    SandboxBatch,
    SandboxChannel,
    SandboxSession,
    SandboxTools,
    build_tool_runner,
    drives_tools,
    serve_over_sandbox,
)
from .scenarios import load_scenarios, parse_scenarios
from .specs import ParticipantSpec, Scenario, ScenarioFile
from .summary import BatchSummary, ScenarioSummary, pass_hat_k
from .termination import Ending, TerminationPolicy

__all__ = [
    "AgentChannel",
    "AgentParticipant",
    "AgentStep",
    "Batch",
    "BatchObserver",
    "BatchRun",
    "BatchSummary",
    "CachedLLMClient",
    "Channel",
    "ChatMessage",
    "CombinedEvaluator",
    "Completion",
    "CompletionRequest",
    "Contains",
    "Conversation",
    "ConversationResult",
    "Criterion",
    "EndReason",
    "Ending",
    "Evaluation",
    "Evaluator",
    "FullSimulationRunner",
    "HybridSimulationRunner",
    "HybridTiming",
    "Intent",
    "LLMClient",
    "LLMError",
    "LLMJudge",
    "LLMParticipant",
    "LLMSettings",
    "LLMTimeout",
    "LLMToolAgent",
    "LLMToolCall",
    "LangChainClient",
    "Matches",
    "Message",
    "MessageDraft",
    "OpenAIClient",
    "Outcome",
    "Outcomes",
    "Participant",
    "ParticipantError",
    "ParticipantRole",
    "ParticipantSpec",
    "PlannedCall",
    "RateLimiter",
    "ReplyRule",
    "RuleBasedParticipant",
    "RuleEvaluator",
    "RunnerUsedError",
    "SandboxBatch",
    "SandboxChannel",
    "SandboxSession",
    "SandboxTools",
    "Scenario",
    "ScenarioError",
    "ScenarioFile",
    "ScenarioSummary",
    "ScriptedParticipant",
    "ScriptedToolAgent",
    "Session",
    "SimulationError",
    "SimulationProgress",
    "SimulationRecord",
    "SimulationRunner",
    "TerminationPolicy",
    "ToolBox",
    "ToolCall",
    "ToolCalled",
    "Tools",
    "Verdict",
    "build_runner",
    "build_tool_runner",
    "converter",
    "drives_tools",
    "from_json",
    "junit_xml",
    "load_agent_class",
    "load_scenarios",
    "open_session",
    "parse_rule",
    "parse_scenarios",
    "pass_hat_k",
    "render_report",
    "serve_over_sandbox",
    "summary_json",
    "to_json",
]
