"""From a scenario to a ready runner: participants, evaluator, termination.

Sample ``k`` of a scenario gets scripted alternatives ``k % len`` and LLM
requests with ``variant = k`` (a distinct cache key and seed), so samples differ
where the scenario allows it and are reproducible everywhere. A scripted
customer without an ``initial_message`` opens with its first turn.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence

from .agents import AgentFactory, AgentParticipant, make_agent
from .channels import Channel
from .drivers import AgentStep, LLMToolAgent, ScriptedToolAgent, ToolBox
from .errors import ScenarioError
from .evaluators import CombinedEvaluator, Evaluator, RuleEvaluator
from .hybrid import HybridSimulationRunner
from .judge import LLMJudge
from .llm import LLMClient
from .models import Intent, ParticipantRole
from .participants import LLMParticipant, Participant, RuleBasedParticipant, ScriptedParticipant
from .rules import ToolCalled
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


def uses_agent_class(scenario: Scenario) -> bool:
    """Whether ``scenario`` talks to the agent under test or drives its tools (given a class)."""
    return scenario.agent is None or scenario.needs_agent or scenario.agent.kind == "llm"


def check_tools(scenarios: Sequence[Scenario], agent: object) -> None:
    """Raise ScenarioError for a tool a step calls or a rule names that ``agent`` does not have.

    ``agent`` is the class under test; its tools are its ``__tools__`` (none for a
    plain class with ``on_message``). Scenarios that never reach it are not checked.
    """
    tools = getattr(agent, "__tools__", None)
    available = sorted(map(str, tools)) if isinstance(tools, Mapping) else []
    agent_id = getattr(agent, "agent_id", None)
    name = agent_id if isinstance(agent_id, str) and agent_id else getattr(agent, "__name__", "the agent")
    for scenario in scenarios:
        if not uses_agent_class(scenario):
            continue
        for where, tool in _tools_named(scenario):
            if tool not in available:
                guess = difflib.get_close_matches(tool, available, n=1)
                hint = f"did you mean {guess[0]}? " if guess else ""
                its = f"{hint}its tools: {', '.join(available)}" if available else "it has no tools"
                raise ScenarioError(
                    f"scenario {scenario.name!r}: {where}: agent {name!r} has no tool {tool!r} ({its})"
                )


def _tools_named(scenario: Scenario) -> Iterator[tuple[str, str]]:
    """``(path, tool name)`` for each tool the scenario's rules name and its agent steps call."""
    rules: list[tuple[str, object]] = [(f"expect[{i}]", rule) for i, rule in enumerate(scenario.expectations)]
    for index, outcome in enumerate(scenario.outcomes.names):
        when = scenario.outcome_rules.get(outcome, ())
        rules.extend((f"outcomes[{index}].when[{i}]", rule) for i, rule in enumerate(when))
    for where, rule in rules:
        if isinstance(rule, ToolCalled):
            yield f"{where}.{'no_tool' if rule.negate else 'tool'}", rule.tool
    turns = scenario.agent.turns if scenario.agent is not None else ()
    for index, alternatives in enumerate(turns):
        for number, turn in enumerate(alternatives):
            where = f"agent.turns[{index}]" + (f"[{number}]" if len(alternatives) > 1 else "")
            if isinstance(turn, AgentStep):
                for call, planned in enumerate(turn.calls):
                    yield f"{where}.tools[{call}].name", planned.tool


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
