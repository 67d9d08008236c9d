"""Scenario files: the simulations to run, in TOML.

A file holds ``[[scenario]]`` tables; ``[defaults]`` supplies any scenario key a
scenario leaves out. Everything but ``name`` is optional::

    agent = "../weather.py:WeatherAgent"   # default --agent, relative to this file
    samples = 3                            # default --samples

    [llm]                                  # for llm participants and the judge only
    base_url = "http://127.0.0.1:11434/v1" # else ORCHESTRATOR_LLM_BASE_URL / OPENAI_BASE_URL
    model = "llama3.1"                     # else ORCHESTRATOR_LLM_MODEL
    api_key_env = "MY_PROVIDER_KEY"        # the variable holding the key, never the key
    requests_per_minute = 120
    seed = 7                               # sample k sends seed + k

    [[scenario]]
    name = "paris-forecast"
    intent = "Learn today's weather in Paris"   # the customer's goal (LLM customer, judge)
    initial_message = "Hi!"                # else the first scripted turn opens
    evaluator = "rules"                    # rules | judge | both
    expected_outcomes = ["answered"]       # to pass, the outcome must be one of these
    default_outcome = "unanswered"         # when no outcome's rules match
    max_messages = 12
    end_on_outcome = false                 # end as soon as an outcome's rules match
    closing_phrases = ['\\bbye\\b']        # customer regexes (default: bye, have a nice day)
    judge_every = 0                        # ask the judge every N messages whether to end
    idle_timeout = 30.0                    # hybrid runs: seconds without any message
    reply_delay = 1.0                      # hybrid: typing time; settle = 0.5, patience = 10.0

    [scenario.customer]
    kind = "scripted"                      # scripted | rules | llm
    turns = ["What's the weather in Paris?", ["Thanks!", "Thank you."], "Bye!"]
    persona = "A hurried commuter"         # llm (with temperature = 0.7)
    rules = [{ when = "which (city|town)", reply = "Paris" }]   # rules, with default_reply

    [[scenario.outcomes]]
    name = "answered"                      # a lowercase slug
    description = "The agent gave the forecast"
    when = [{ tool = "get_weather", args = { city = "Paris" } }]   # rules, see .rules

    [[scenario.expect]]                    # verdicts a passing run needs (rules, see .rules)
    matches = '\\d+ ?°C'

    [[scenario.criteria]]                  # for the judge
    name = "polite"
    description = "The agent is courteous throughout"

A turn that is a list varies by sample: sample k says alternative ``k % len``.

**The agent side.** Without ``[scenario.agent]`` the agent's own
``on_message`` answers. ``[scenario.agent]`` simulates the platform's LLM
instead (for tool-only agents), with the same keys as the customer plus
``instructions``: ``kind = "llm"`` calls the agent's tools by function calling;
``kind = "scripted"`` plays steps, each calling tools then saying a template
filled from the results (``str.format``: ``{tool_name[field]}``, ``{error}``)::

    [[scenario.agent.turns]]
    tools = [{ name = "hold_room", args = { room_type = "suite", date = "2025-07-07", nights = 3 } }]
    say = "Held {hold_room[hold_id]}."
    on_error = "Sorry: {error}"            # said instead when a call failed
    [[scenario.agent.turns]]
    say = "Anything else?"                 # a step without tools is plain text

A call that fails is said with ``on_error`` (or a ``say`` naming ``{error}``);
a step with neither ends the simulation in error, naming the call and why. The
tools steps call and rules name are checked against the agent's when it is known.

Every value is checked at load, and a mistake names the scenario, the key's path
and what was expected (``scenario 'x': agent.turns[1].tools[0].args: expected a
table, got 'now'``); see :mod:`.tables`.

(Inline tables must fit on one line in TOML, so steps read best as
``[[scenario.agent.turns]]``; plain ``turns = [...]`` strings work too.) With no
agent class at all, a scripted or rules agent without tool steps is simulated
entirely.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .drivers import AgentStep, PlannedCall
from .errors import ScenarioError
from .hybrid import HybridTiming
from .judge import Criterion
from .models import Intent, Outcome, Outcomes, ParticipantRole
from .participants import ReplyRule
from .rules import Rule, parse_rule
from .specs import ParticipantSpec, Scenario, ScenarioFile, Turn
from .tables import Table, expected
from .termination import TerminationPolicy

__all__ = ["ParticipantSpec", "Scenario", "ScenarioFile", "load_scenarios", "parse_scenarios"]

KINDS = ("scripted", "rules", "llm")
EVALUATORS = ("rules", "judge", "both")
_TOP = {"agent", "samples", "llm", "defaults", "scenario"}
_PARTICIPANT = {
    "kind",
    "turns",
    "persona",
    "instructions",
    "temperature",
    "rules",
    "default_reply",
    "max_turns",
}
_LLM = {"base_url", "model", "api_key_env", "timeout_seconds", "requests_per_minute", "max_retries", "seed"}
_POLICY = {"idle_timeout", "closing_phrases", "end_on_outcome", "judge_every"}
_TIMING = {"reply_delay", "settle", "patience"}
_SCENARIO = {
    "name", "description", "intent", "initial_message", "evaluator", "expected_outcomes",
    "default_outcome", "max_messages", "customer", "agent", "outcomes", "expect", "criteria",
} | _POLICY | _TIMING  # fmt: skip


def load_scenarios(path: str | os.PathLike[str]) -> ScenarioFile:
    """Parse the scenario file at ``path``. Raises ScenarioError naming what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # as the sandbox reports its scenario files
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from exc
    return parse_scenarios(data, base_dir=path.parent)


def parse_scenarios(data: Mapping[str, Any], base_dir: Path | None = None) -> ScenarioFile:
    """A :class:`ScenarioFile` from already-parsed TOML data; ScenarioError naming the key at fault."""
    top = Table(data)
    top.check_keys(_TOP)
    defaults = Table.at(data.get("defaults", {}), "[defaults]", _SCENARIO - {"name"})
    llm = _llm(Table.at(data.get("llm", {}), "[llm]")) if "llm" in data else None
    tables = data.get("scenario", [])
    if not isinstance(tables, list) or not tables:
        raise ScenarioError("the file has no [[scenario]] tables")
    scenarios = tuple(_scenario(Table.at(t, "[[scenario]]"), defaults) for t in tables)
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"duplicate scenario name(s): {', '.join(duplicates)}")
    samples = top.optional_integer("samples", minimum=1)
    agent = data.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise ScenarioError("agent must be a string like 'package.module:Class' or 'file.py:Class'")
    return ScenarioFile(scenarios, base_dir or Path.cwd(), agent, samples, llm)


def _llm(table: Table) -> dict[str, Any] | None:
    """The ``[llm]`` table, its values checked (the environment fills in the rest later)."""
    if "api_key" in table:
        raise ScenarioError("[llm]: never put an API key in a file; name its variable in api_key_env")
    table.check_keys(_LLM)
    for key in ("base_url", "model", "api_key_env"):
        table.optional_text(key)
    table.number("timeout_seconds", positive=True)
    table.number("requests_per_minute", positive=True)
    table.optional_integer("max_retries", minimum=0)
    table.optional_integer("seed")
    return dict(table.data) or None


def _scenario(table: Table, defaults: Table) -> Scenario:
    name = table.data.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("every [[scenario]] needs a non-empty name")
    inherited = frozenset(defaults.data) - frozenset(table.data)
    merged = Table({**defaults.data, **table.data}, inherited=inherited)
    try:
        Table(table.data).check_keys(_SCENARIO)
        return _build(name, merged)
    except (ValueError, TypeError, ScenarioError) as exc:
        raise ScenarioError(f"scenario {name!r}: {exc}") from exc


def _rule(table: Table) -> Rule:
    try:
        return parse_rule(table.data)
    except ValueError as exc:
        raise ScenarioError(f"{table.path}: {exc}") from exc


def _build(name: str, table: Table) -> Scenario:
    outcome_list, outcome_rules = [], {}
    for item in table.tables("outcomes", {"name", "description", "when"}):
        label = item.text("name")
        try:
            outcome_list.append(Outcome(label, item.text("description", "")))
        except ValueError as exc:
            raise ScenarioError(f"{item.where('name')}: {exc}") from exc
        outcome_rules[label] = tuple(_rule(r) for r in item.tables("when"))
    outcomes = Outcomes(outcome_list)
    expected = table.texts("expected_outcomes")
    default_outcome = table.optional_text("default_outcome")
    for label in (*expected, *([default_outcome] if default_outcome else [])):
        if outcomes.get_outcome_by_name(label) is None:
            raise ValueError(f"outcome {label!r} is not declared in outcomes")
    evaluator = table.choice("evaluator", "rules", EVALUATORS)
    customer = _participant(table.table("customer"), customer=True)
    agent = _participant(table.table("agent"), customer=False) if "agent" in table else None
    initial = table.optional_text("initial_message")
    if initial is None and customer.kind == "rules":
        raise ValueError("a rules customer needs an initial_message")
    if customer.kind == "scripted" and not customer.turns and initial is None:
        raise ValueError("a scripted customer needs turns or an initial_message")
    criteria = [
        Criterion(c.text("name", empty=False), c.text("description", ""))
        for c in table.tables("criteria", {"name", "description"})
    ]
    policy: dict[str, Any] = {
        "closing_phrases": table.texts("closing_phrases") if "closing_phrases" in table else None,
        "idle_timeout": table.number("idle_timeout", positive=True),
        "end_on_outcome": table.flag("end_on_outcome", False) if "end_on_outcome" in table else None,
        "judge_every": table.optional_integer("judge_every", minimum=0),
    }
    timing: dict[str, Any] = {
        "reply_delay": table.number("reply_delay", minimum=0),
        "settle": table.number("settle", minimum=0),
        "patience": table.number("patience", positive=True),
    }
    description = table.text("description", "")
    return Scenario(
        name=name,
        intent=Intent(ParticipantRole.CUSTOMER, table.text("intent", description)),
        outcomes=outcomes,
        description=description,
        initial_message=initial,
        customer=customer,
        agent=agent,
        expectations=tuple(_rule(r) for r in table.tables("expect")),
        outcome_rules=outcome_rules,
        default_outcome=default_outcome,
        expected_outcomes=expected,
        criteria=tuple(criteria),
        evaluator=evaluator,
        max_messages=table.integer("max_messages", 20, minimum=1),
        termination=TerminationPolicy(**{key: value for key, value in policy.items() if value is not None}),
        timing=HybridTiming(**{key: value for key, value in timing.items() if value is not None}),
    )


def _participant(table: Table, *, customer: bool) -> ParticipantSpec:
    table.check_keys(_PARTICIPANT)
    kind = table.choice("kind", "scripted", KINDS)
    turns = tuple(_turn(item, where, customer) for where, item in table.items("turns", "a list of turns"))
    rules = []
    for rule in table.tables("rules", {"when", "reply", "once"}):
        try:
            rules.append(ReplyRule(rule.text("when"), rule.text("reply"), rule.flag("once", False)))
        except ValueError as exc:  # a regex that does not compile
            raise ScenarioError(f"{rule.where('when')}: {exc}") from exc
    default_reply = table.optional_text("default_reply")
    if kind == "rules" and not rules and default_reply is None:
        raise ValueError(f"a rules {table.path} needs rules or a default_reply")
    temperature = table.number("temperature", minimum=0)
    return ParticipantSpec(
        kind=kind,
        turns=turns,
        persona=table.text("persona", ""),
        instructions=table.text("instructions", ""),
        temperature=0.7 if temperature is None else temperature,
        rules=tuple(rules),
        default_reply=default_reply,
        max_turns=table.optional_integer("max_turns", minimum=1),
    )


def _turn(value: Any, where: str, customer: bool) -> tuple[Turn, ...]:
    """One turn: a string, a step table, or a list of alternatives (by sample)."""
    if not isinstance(value, list):
        return (_alternative(value, where, customer),)
    if not value:
        raise ScenarioError(f"{where}: an empty list of alternatives")
    return tuple(_alternative(item, f"{where}[{index}]", customer) for index, item in enumerate(value))


def _alternative(value: Any, where: str, customer: bool) -> Turn:
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        what = "a string" if customer else "a string or a step table (tools, say, on_error)"
        raise expected(where, what, value)
    step = _step(Table.at(value, where, {"tools", "say", "on_error"}))
    if customer and not isinstance(step, str):
        raise ScenarioError(f"{where}: a customer's turns are text (tool steps are for the agent)")
    return step


def _step(table: Table) -> Turn:
    calls = [
        PlannedCall(call.text("name", empty=False), dict(call.table("args").data))
        for call in table.tables("tools", {"name", "args"})
    ]
    say, on_error = table.text("say"), table.optional_text("on_error")
    if not calls:
        return say  # a table with only 'say' is plain text
    return AgentStep(tuple(calls), say, on_error)
