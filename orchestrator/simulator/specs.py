"""What a scenario file becomes: :class:`Scenario` values, ready to build runners from.

The file format is documented in :mod:`.scenarios`; :mod:`.builder` turns a
scenario and a sample number into participants, an evaluator and a runner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .drivers import AgentStep
from .errors import ScenarioError
from .hybrid import HybridTiming
from .judge import Criterion
from .llm import LLMSettings
from .models import Intent, Outcomes
from .participants import ReplyRule
from .rules import Rule
from .termination import TerminationPolicy

Turn = str | AgentStep


@attrs.frozen
class ParticipantSpec:
    """How to simulate one side: ``kind`` and its settings (see the module docstring)."""

    kind: str = "scripted"
    turns: tuple[tuple[Turn, ...], ...] = ()
    persona: str = ""
    instructions: str = ""
    temperature: float = 0.7
    rules: tuple[ReplyRule, ...] = ()
    default_reply: str | None = None
    max_turns: int | None = None

    def turns_for(self, sample: int) -> tuple[Turn, ...]:
        """The scripted turns for sample number ``sample`` (alternatives round-robin)."""
        return tuple(alternatives[sample % len(alternatives)] for alternatives in self.turns)


@attrs.frozen
class Scenario:
    """One simulation to run (``samples`` times in a batch)."""

    name: str
    intent: Intent
    outcomes: Outcomes = attrs.field(factory=Outcomes)
    description: str = ""
    initial_message: str | None = None
    customer: ParticipantSpec = attrs.field(factory=ParticipantSpec)
    agent: ParticipantSpec | None = None
    expectations: tuple[Rule, ...] = ()
    outcome_rules: Mapping[str, tuple[Rule, ...]] = attrs.field(factory=dict)
    default_outcome: str | None = None
    expected_outcomes: tuple[str, ...] = ()
    criteria: tuple[Criterion, ...] = ()
    evaluator: str = "rules"
    max_messages: int = 20
    termination: TerminationPolicy = attrs.field(factory=TerminationPolicy)
    timing: HybridTiming = attrs.field(factory=HybridTiming)

    @property
    def uses_llm(self) -> bool:
        """Whether an LLM client is needed (an LLM participant or the judge)."""
        agent_llm = self.agent is not None and self.agent.kind == "llm"
        return self.evaluator != "rules" or self.customer.kind == "llm" or agent_llm

    @property
    def needs_agent(self) -> bool:
        """Whether the real agent is needed: no simulated agent, or one that calls its tools."""
        if self.agent is None:
            return True
        return any(isinstance(t, AgentStep) for alternatives in self.agent.turns for t in alternatives)


@attrs.frozen
class ScenarioFile:
    """A parsed scenario file. ``agent`` is resolved against ``base_dir``."""

    scenarios: tuple[Scenario, ...]
    base_dir: Path
    agent: str | None = None
    samples: int | None = None
    llm: Mapping[str, Any] | None = None

    @property
    def needs_llm(self) -> bool:
        """Whether any scenario uses an LLM participant or the judge."""
        return any(s.uses_llm for s in self.scenarios)

    def llm_settings(self, environ: Mapping[str, str] | None = None) -> LLMSettings:
        """LLM settings: the environment, then the ``[llm]`` table. Raises ScenarioError."""
        env = os.environ if environ is None else environ
        table = dict(self.llm or {})
        key_env = table.pop("api_key_env", None)
        if key_env is not None:
            if key_env not in env:
                raise ScenarioError(f"[llm] api_key_env: environment variable {key_env} is not set")
            table["api_key"] = env[key_env]
        try:
            return LLMSettings.from_env(env, **table)
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"[llm]: {exc}") from exc
