"""Scenario files: the simulations to run, in TOML.

A file holds any number of ``[[scenario]]`` tables; ``[defaults]`` supplies any
scenario key a scenario leaves out. Everything but ``name`` is optional::

    agent = "../weather_agent.py:WeatherAgent"   # default for --agent; relative to this file
    samples = 3                                  # default for --samples

    [llm]                          # only for llm participants and the judge
    base_url = "http://127.0.0.1:11434/v1"       # else ORCHESTRATOR_LLM_BASE_URL / OPENAI_BASE_URL
    model = "llama3.1"                           # else ORCHESTRATOR_LLM_MODEL
    api_key_env = "MY_PROVIDER_KEY"              # the variable holding the key; never the key itself
    requests_per_minute = 120
    seed = 7

    [defaults]
    max_messages = 20

    [[scenario]]
    name = "paris-forecast"
    description = "A customer asks for the weather in Paris"
    intent = "Learn today's weather in Paris"    # the customer's goal (LLM customer, judge)
    initial_message = "Hi!"                      # else the first scripted turn opens
    evaluator = "rules"                          # rules | judge | both
    expected_outcomes = ["answered"]             # the outcome must be one of these to pass
    default_outcome = "unresolved"               # when no outcome's rules match
    max_messages = 12
    end_on_outcome = false                       # stop as soon as an outcome's rules match
    closing_phrases = ['\\bbye\\b']              # regexes (default: bye, have a nice day...)
    judge_every = 0                              # ask the judge every N messages to stop
    idle_timeout = 30.0                          # hybrid runs: seconds without a message
    reply_delay = 1.0                            # hybrid runs: the customer's typing time
    settle = 0.5                                 # hybrid runs: quiet time before replying
    patience = 10.0                              # hybrid runs: speak again when unanswered

    [scenario.customer]
    kind = "scripted"                            # scripted | rules | llm
    turns = ["What's the weather in Paris?", ["Thanks!", "Great, thank you."], "Bye!"]
    # a turn that is a list varies by sample: sample i says alternative i % len
    persona = "A hurried commuter"               # llm
    temperature = 0.7                            # llm
    rules = [{ when = "which city", reply = "Paris" }]   # rules; reply may use \\1
    default_reply = "Thanks, bye!"               # rules: when nothing matches
    max_turns = 5                                # rules

    [scenario.agent]                             # optional: a simulated agent, same keys
    turns = ["Sunny, 21 °C in Paris.", "You're welcome!"]

    [[scenario.outcomes]]
    name = "answered"                            # a lowercase slug
    description = "The agent gave the forecast"
    when = [{ tool = "get_weather", args = { city = "Paris" } }]   # rules (see .rules)

    [[scenario.expect]]                          # verdicts a passing run needs
    matches = '\\d+ ?°C'
    [[scenario.expect]]
    no_tool = "open_ticket"

    [[scenario.criteria]]                        # for the judge
    name = "polite"
    description = "The agent is courteous throughout"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ScenarioError
from .hybrid import HybridTiming
from .judge import Criterion
from .llm import LLMSettings
from .models import Intent, Outcome, Outcomes, ParticipantRole
from .participants import ReplyRule
from .rules import Rule, parse_rule
from .termination import TerminationPolicy

KINDS = ("scripted", "rules", "llm")
EVALUATORS = ("rules", "judge", "both")
_TOP = {"agent", "samples", "llm", "defaults", "scenario"}
_PARTICIPANT = {"kind", "turns", "persona", "temperature", "rules", "default_reply", "max_turns"}
_LLM = {"base_url", "model", "api_key_env", "timeout_seconds", "requests_per_minute", "max_retries", "seed"}
_POLICY = {"idle_timeout", "closing_phrases", "end_on_outcome", "judge_every"}
_TIMING = {"reply_delay", "settle", "patience"}
_SCENARIO = {
    "name", "description", "intent", "initial_message", "evaluator", "expected_outcomes",
    "default_outcome", "max_messages", "customer", "agent", "outcomes", "expect", "criteria",
} | _POLICY | _TIMING  # fmt: skip


@attrs.frozen
class ParticipantSpec:
    """How to simulate one side: ``kind`` and its settings (see the module docstring)."""

    kind: str = "scripted"
    turns: tuple[tuple[str, ...], ...] = ()
    persona: str = ""
    temperature: float = 0.7
    rules: tuple[ReplyRule, ...] = ()
    default_reply: str | None = None
    max_turns: int | None = None

    def turns_for(self, sample: int) -> tuple[str, ...]:
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
        return any(
            s.evaluator != "rules" or s.customer.kind == "llm" or (s.agent and s.agent.kind == "llm")
            for s in self.scenarios
        )

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
        _no_unknown(llm, _LLM, "[llm]")
        if "api_key" in llm:
            raise ScenarioError("[llm]: never put an API key in a file; name its variable in api_key_env")
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
    turns = tuple(_strings(turn, f"{where}.turns entries") for turn in table.get("turns", []))
    if any(not alternatives for alternatives in turns):
        raise ValueError(f"{where}.turns: an empty list of alternatives")
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
        temperature=float(table.get("temperature", 0.7)),
        rules=tuple(rules),
        default_reply=table.get("default_reply"),
        max_turns=table.get("max_turns"),
    )
