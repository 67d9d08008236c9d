"""From a scenario to a ready runner: participants, evaluator, termination.

Sample ``k`` of a scenario gets scripted alternatives ``k % len`` and LLM
requests with ``variant = k`` (a distinct cache key and seed), so samples differ
where the scenario allows it and are reproducible everywhere. A scripted
customer without an ``initial_message`` opens with its first turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from .agents import AgentFactory, AgentParticipant, make_agent
from .channels import Channel
from .drivers import LLMToolAgent, ScriptedToolAgent, ToolBox
from .errors import ScenarioError
from .evaluators import CombinedEvaluator, Evaluator, RuleEvaluator
from .hybrid import HybridSimulationRunner
from .judge import LLMJudge
from .llm import LLMClient
from .models import Intent, ParticipantRole
from .participants import LLMParticipant, Participant, RuleBasedParticipant, ScriptedParticipant
from .runners import FullSimulationRunner, ProgressCallback, SimulationRunner
from .specs import ParticipantSpec, Scenario

_AGENT_GOAL = "Help the customer with their request."


def check_runnable(
    scenarios: Sequence[Scenario],
    agent_factory: AgentFactory | None,
    channel: Channel | None,
    llm: LLMClient | None,
) -> None:
    """Raise ScenarioError if some scenario lacks what it needs (an LLM, an agent)."""
    for scenario in scenarios:
        if llm is None and scenario.uses_llm:
            raise ScenarioError(f"scenario {scenario.name!r} needs an LLM ([llm] settings)")
        if scenario.needs_agent and agent_factory is None and channel is None:
            raise ScenarioError(f"scenario {scenario.name!r} needs an agent to test (--agent)")


def build_participant(
    spec: ParticipantSpec, role: ParticipantRole, intent: Intent, sample: int, llm: LLMClient | None
) -> Participant:
    """A participant playing ``role`` as ``spec`` says, for sample ``sample``."""
    if spec.kind == "scripted":
        turns = spec.turns_for(sample)
        texts = [turn for turn in turns if isinstance(turn, str)]
        if len(texts) != len(turns):
            raise ScenarioError("scripted tool steps need the agent under test (--agent)")
        return ScriptedParticipant(texts, role)
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


def build_agent(
    scenario: Scenario, sample: int, agent_factory: AgentFactory | None, llm: LLMClient | None
) -> Participant:
    """The agent side of a full run.

    No ``[scenario.agent]``: the agent's own ``on_message``. Scripted steps with
    tool calls: a :class:`ScriptedToolAgent` over the agent's tools. An ``llm``
    agent with an agent class: an :class:`LLMToolAgent` calling its tools; without
    one, an LLM role-playing the agent. Otherwise a simulated agent.
    """
    spec = scenario.agent
    if spec is None:
        if agent_factory is None:
            raise ScenarioError(f"scenario {scenario.name!r} has no agent to talk to")
        return AgentParticipant.from_factory(agent_factory)
    if agent_factory is not None and (spec.kind == "llm" or scenario.needs_agent):
        toolbox = ToolBox(make_agent(agent_factory, needs_on_message=False))
        if spec.kind != "llm":
            return ScriptedToolAgent(toolbox, spec.turns_for(sample))
        if llm is None:
            raise ScenarioError(f"scenario {scenario.name!r}: an llm agent needs an LLM client")
        instructions = spec.instructions or None
        return LLMToolAgent(
            llm, toolbox, instructions=instructions, temperature=spec.temperature, variant=sample
        )
    goal = Intent(ParticipantRole.AGENT, spec.persona or _AGENT_GOAL)
    return build_participant(spec, ParticipantRole.AGENT, goal, sample, llm)


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

    Without a simulated agent and with a ``channel`` this is a hybrid run against
    the agent behind it; otherwise a full run with :func:`build_agent`'s agent
    side (a failing ``agent_factory`` raises ParticipantError).
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
    agent = build_agent(scenario, sample, agent_factory, llm)
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
