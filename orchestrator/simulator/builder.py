"""From a scenario to a ready runner: participants, evaluator, termination.

Sample ``k`` of a scenario gets scripted alternatives ``k % len`` and LLM
requests with ``variant = k`` (a distinct cache key and seed), so samples differ
where the scenario allows it and are reproducible everywhere. A scripted
customer without an ``initial_message`` opens with its first turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from .agents import AgentFactory, AgentParticipant
from .channels import Channel
from .errors import ScenarioError
from .evaluators import CombinedEvaluator, Evaluator, RuleEvaluator
from .hybrid import HybridSimulationRunner
from .judge import LLMJudge
from .llm import LLMClient
from .models import Intent, ParticipantRole
from .participants import LLMParticipant, Participant, RuleBasedParticipant, ScriptedParticipant
from .runners import FullSimulationRunner, ProgressCallback, SimulationRunner
from .scenarios import ParticipantSpec, Scenario

_AGENT_GOAL = "Help the customer with their request."


def uses_llm(scenario: Scenario) -> bool:
    """Whether ``scenario`` needs an LLM client (LLM participant or judge)."""
    agent_llm = scenario.agent is not None and scenario.agent.kind == "llm"
    return scenario.evaluator != "rules" or scenario.customer.kind == "llm" or agent_llm


def check_runnable(
    scenarios: Sequence[Scenario],
    agent_factory: AgentFactory | None,
    channel: Channel | None,
    llm: LLMClient | None,
) -> None:
    """Raise ScenarioError if some scenario lacks what it needs (an LLM, an agent)."""
    for scenario in scenarios:
        if llm is None and uses_llm(scenario):
            raise ScenarioError(f"scenario {scenario.name!r} needs an LLM ([llm] settings)")
        if scenario.agent is None and agent_factory is None and channel is None:
            raise ScenarioError(f"scenario {scenario.name!r} needs an agent to test (--agent)")


def build_participant(
    spec: ParticipantSpec, role: ParticipantRole, intent: Intent, sample: int, llm: LLMClient | None
) -> Participant:
    """A participant playing ``role`` as ``spec`` says, for sample ``sample``."""
    if spec.kind == "scripted":
        return ScriptedParticipant(spec.turns_for(sample), role)
    if spec.kind == "rules":
        return RuleBasedParticipant(
            spec.rules, default=spec.default_reply, role=role, max_turns=spec.max_turns
        )
    if llm is None:
        raise ScenarioError("an llm participant needs an LLM client")
    return LLMParticipant(llm, intent, persona=spec.persona, temperature=spec.temperature, variant=sample)


def build_evaluator(scenario: Scenario, llm: LLMClient | None) -> Evaluator:
    """The evaluator ``scenario.evaluator`` names (rules, judge or both)."""
    expected = scenario.expected_outcomes
    rules_only = scenario.evaluator == "rules"
    rules = RuleEvaluator(
        scenario.expectations,
        scenario.outcome_rules,
        scenario.default_outcome,
        expected if rules_only else (),
    )
    if rules_only:
        return rules
    if llm is None:
        raise ScenarioError(f"scenario {scenario.name!r}: the judge needs an LLM client")
    judge_only = scenario.evaluator == "judge"
    judge = LLMJudge(
        llm, scenario.criteria, intent=scenario.intent, expected_outcomes=expected if judge_only else ()
    )
    if judge_only:
        return judge
    return CombinedEvaluator((rules, judge), expected)


def build_runner(
    scenario: Scenario,
    sample: int = 0,
    *,
    agent_factory: AgentFactory | None = None,
    channel: Channel | None = None,
    llm: LLMClient | None = None,
    progress_callback: ProgressCallback | None = None,
) -> SimulationRunner:
    """A single-use runner for sample ``sample`` of ``scenario``.

    The agent side is the scenario's simulated agent if it has one, else the
    agent behind ``channel`` (a hybrid run), else a fresh ``agent_factory()``
    in process (a full run; a failing factory raises ParticipantError).
    """
    customer = build_participant(scenario.customer, ParticipantRole.CUSTOMER, scenario.intent, sample, llm)
    initial = scenario.initial_message
    if initial is None and isinstance(customer, ScriptedParticipant) and customer.turns:
        initial, customer.turns = customer.turns[0], customer.turns[1:]
    evaluator = build_evaluator(scenario, llm)
    intent, outcomes, cap, termination = (
        scenario.intent,
        scenario.outcomes,
        scenario.max_messages,
        scenario.termination,
    )
    if scenario.agent is None and channel is not None:
        return HybridSimulationRunner(
            customer,
            channel,
            initial,
            intent,
            outcomes,
            cap,
            progress_callback=progress_callback,
            evaluator=evaluator,
            termination=termination,
            timing=scenario.timing,
        )
    agent: Participant
    if scenario.agent is not None:
        goal = Intent(ParticipantRole.AGENT, scenario.agent.persona or _AGENT_GOAL)
        agent = build_participant(scenario.agent, ParticipantRole.AGENT, goal, sample, llm)
    elif agent_factory is not None:
        agent = AgentParticipant.from_factory(agent_factory)
    else:
        raise ScenarioError(f"scenario {scenario.name!r} has no agent to talk to")
    return FullSimulationRunner(
        customer,
        agent,
        initial,
        intent,
        outcomes,
        cap,
        progress_callback=progress_callback,
        evaluator=evaluator,
        termination=termination,
    )
