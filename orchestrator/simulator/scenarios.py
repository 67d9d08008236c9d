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
from .rules import parse_rule
from .specs import ParticipantSpec, Scenario, ScenarioFile, Turn
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
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from exc
    return parse_scenarios(data, base_dir=path.parent)


def parse_scenarios(data: Mapping[str, Any], base_dir: Path | None = None) -> ScenarioFile:
    """A :class:`ScenarioFile` from already-parsed TOML data."""
    _no_unknown(data, _TOP, "the file")
    defaults = _table(data.get("defaults", {}), "[defaults]")
    _no_unknown(defaults, _SCENARIO - {"name"}, "[defaults]")
    llm = _table(data.get("llm", {}), "[llm]") or None
    if llm is not None:
        if "api_key" in llm:
            raise ScenarioError("[llm]: never put an API key in a file; name its variable in api_key_env")
        _no_unknown(llm, _LLM, "[llm]")
    tables = data.get("scenario", [])
    if not isinstance(tables, list) or not tables:
        raise ScenarioError("the file has no [[scenario]] tables")
    scenarios = tuple(_scenario({**defaults, **_table(t, "[[scenario]]")}) for t in tables)
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"duplicate scenario name(s): {', '.join(duplicates)}")
    samples = data.get("samples")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise ScenarioError("samples must be a positive integer")
    agent = data.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise ScenarioError("agent must be a string like 'package.module:Class' or 'file.py:Class'")
    return ScenarioFile(scenarios, base_dir or Path.cwd(), agent, samples, llm)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a table")
    return dict(value)


def _no_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} must be a string or a list of strings")
    return tuple(value)


def _scenario(table: dict[str, Any]) -> Scenario:
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("every [[scenario]] needs a non-empty name")
    try:
        _no_unknown(table, _SCENARIO, "unknown key")
        return _build(name, table)
    except (ValueError, TypeError, ScenarioError) as exc:
        raise ScenarioError(f"scenario {name!r}: {exc}") from exc


def _build(name: str, table: dict[str, Any]) -> Scenario:
    outcome_list, outcome_rules = [], {}
    for item in table.get("outcomes", []):
        item = _table(item, "outcomes")
        _no_unknown(item, {"name", "description", "when"}, "outcomes")
        outcome_list.append(Outcome(item["name"], item.get("description", "")))
        outcome_rules[item["name"]] = tuple(parse_rule(_table(r, "when")) for r in item.get("when", []))
    outcomes = Outcomes(outcome_list)
    expected = _strings(table.get("expected_outcomes", []), "expected_outcomes")
    default_outcome = table.get("default_outcome")
    for label in (*expected, *([default_outcome] if default_outcome else [])):
        if outcomes.get_outcome_by_name(label) is None:
            raise ValueError(f"outcome {label!r} is not declared in outcomes")
    evaluator = table.get("evaluator", "rules")
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}")
    customer = _participant(_table(table.get("customer", {}), "customer"), "customer")
    agent = _participant(_table(table["agent"], "agent"), "agent") if "agent" in table else None
    initial = table.get("initial_message")
    if initial is None and customer.kind == "rules":
        raise ValueError("a rules customer needs an initial_message")
    if customer.kind == "scripted" and not customer.turns and initial is None:
        raise ValueError("a scripted customer needs turns or an initial_message")
    criteria = [_table(c, "criteria") for c in table.get("criteria", [])]
    policy = {key: table[key] for key in _POLICY if key in table}
    if "closing_phrases" in policy:
        policy["closing_phrases"] = _strings(policy["closing_phrases"], "closing_phrases")
    return Scenario(
        name=name,
        intent=Intent(ParticipantRole.CUSTOMER, str(table.get("intent", table.get("description", "")))),
        outcomes=outcomes,
        description=str(table.get("description", "")),
        initial_message=initial,
        customer=customer,
        agent=agent,
        expectations=tuple(parse_rule(_table(r, "expect")) for r in table.get("expect", [])),
        outcome_rules=outcome_rules,
        default_outcome=default_outcome,
        expected_outcomes=expected,
        criteria=tuple(Criterion(str(c["name"]), str(c.get("description", ""))) for c in criteria),
        evaluator=evaluator,
        max_messages=int(table.get("max_messages", 20)),
        termination=TerminationPolicy(**policy),
        timing=HybridTiming(**{key: table[key] for key in _TIMING if key in table}),
    )


def _participant(table: dict[str, Any], where: str) -> ParticipantSpec:
    _no_unknown(table, _PARTICIPANT, where)
    kind = table.get("kind", "scripted")
    if kind not in KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(KINDS)}")
    turns = tuple(_turn(turn, where) for turn in table.get("turns", []))
    if where == "customer" and any(not isinstance(t, str) for alts in turns for t in alts):
        raise ValueError("customer.turns must be strings (tool steps are for the agent)")
    rules = []
    for rule in table.get("rules", []):
        rule = _table(rule, f"{where}.rules")
        _no_unknown(rule, {"when", "reply", "once"}, f"{where}.rules")
        rules.append(ReplyRule(str(rule["when"]), str(rule["reply"]), bool(rule.get("once", False))))
    if kind == "rules" and not rules and table.get("default_reply") is None:
        raise ValueError(f"a rules {where} needs rules or a default_reply")
    return ParticipantSpec(
        kind=kind,
        turns=turns,
        persona=str(table.get("persona", "")),
        instructions=str(table.get("instructions", "")),
        temperature=float(table.get("temperature", 0.7)),
        rules=tuple(rules),
        default_reply=table.get("default_reply"),
        max_turns=table.get("max_turns"),
    )


def _turn(value: Any, where: str) -> tuple[Turn, ...]:
    alternatives = value if isinstance(value, list) else [value]
    if not alternatives:
        raise ValueError(f"{where}.turns: an empty list of alternatives")
    return tuple(
        _step(item, where) if isinstance(item, Mapping) else _text(item, where) for item in alternatives
    )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}.turns entries must be strings, tables or lists of them")
    return value


def _step(table: Mapping[str, Any], where: str) -> Turn:
    _no_unknown(table, {"tools", "say", "on_error"}, f"{where}.turns step")
    calls = []
    for call in table.get("tools", []):
        call = _table(call, f"{where}.turns step tools")
        _no_unknown(call, {"name", "args"}, f"{where}.turns step tools")
        if not isinstance(call.get("name"), str):
            raise ValueError(f"{where}.turns: each tool call needs a name")
        calls.append(PlannedCall(call["name"], _table(call.get("args", {}), "args")))
    say, on_error = table.get("say"), table.get("on_error")
    if not isinstance(say, str) or (on_error is not None and not isinstance(on_error, str)):
        raise ValueError(f"{where}.turns: a step needs 'say' (and optionally 'on_error') text")
    if not calls:
        return say  # a table with only 'say' is plain text
    return AgentStep(tuple(calls), say, on_error)
