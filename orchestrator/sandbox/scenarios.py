"""Sandbox scenarios: which conversations the simulated customers open, and what they say.

A scenario file is TOML. Every key but ``agent_id`` is optional::

    name = "weather"
    rate = 0                 # conversations started per second; 0 = all at once
    seed = 1                 # for synthetic arguments and messages

    [[conversation]]         # a Conversimple conversation: turns become tool calls
    agent_id = "weather"     # sent in conversation_ready
    repeat = 2               # open this conversation twice (default 1)
    calls = 3                # then make 3 synthetic calls (default 0)

    [[conversation.turn]]
    tool = "get_weather"
    arguments = { city = "Paris" }
    expect_result = { city = "Paris", condition = "partly cloudy" }   # objects match as subsets

    [[conversation.turn]]
    tool = "get_weather"     # a turn without arguments gets synthetic ones from the schema
    arguments = { city = "Atlantis" }
    expect_error = "unknown city"                                      # a substring of the error

    [[conversation]]         # an Arinova conversation: messages become tasks
    platform = "arinova"
    agent_id = "echo"
    messages = 2             # then 2 synthetic messages of `words` words (default 20)

    [[conversation.message]]
    content = "hello there"
    expect_reply = "hello there"   # a substring of the completed reply (or expect_error)

A turn without ``tool`` is synthetic too: the customer picks the registered tools in turn.
A turn expects a result or an error, never both, and a file that opens no conversation is
refused (it would pass having tested nothing).
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from orchestrator.errors import ConfigError

__all__ = [
    "PLATFORMS",
    "UNSET",
    "ConversationPlan",
    "MessageTurn",
    "Platform",
    "Scenario",
    "ToolTurn",
    "load_plan",
    "load_scenario",
    "parse_scenario",
]

Platform = Literal["conversimple", "arinova"]
PLATFORMS: tuple[Platform, ...] = ("conversimple", "arinova")


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""``expect_result`` when the turn expects nothing (``None`` is a result one can expect)."""


@attrs.frozen
class ToolTurn:
    """One customer turn on Conversimple: a tool call, maybe with an expectation."""

    tool: str | None = None
    """``None``: pick the next registered tool."""
    arguments: Mapping[str, Any] | None = None
    """``None``: synthetic, schema-valid arguments from the registered tool's schema."""
    expect_result: Any = UNSET
    expect_error: str | None = None


@attrs.frozen
class MessageTurn:
    """One customer message on Arinova, maybe with an expectation on the reply."""

    content: str
    expect_reply: str | None = None
    expect_error: str | None = None


@attrs.frozen
class ConversationPlan:
    """What the simulated customer of one conversation does."""

    agent_id: str
    platform: Platform = "conversimple"
    turns: tuple[ToolTurn, ...] = ()
    messages: tuple[MessageTurn, ...] = ()
    synthetic: int = 0
    """Synthetic calls (Conversimple) or messages (Arinova) after the scripted ones."""
    words: int = 20
    """Words in a synthetic message."""
    customer_id: str | None = None
    """Announce only to this customer's sockets (default: the earliest-joined socket)."""


@attrs.frozen
class Scenario:
    name: str
    conversations: tuple[ConversationPlan, ...]
    rate: float = 0.0
    seed: int = 0


def load_plan(
    conversations: int,
    calls: int,
    *,
    agent_id: str = "echo",
    platform: Platform = "conversimple",
    rate: float = 0.0,
    words: int = 20,
    seed: int = 0,
) -> Scenario:
    """The load generator's scenario: ``conversations`` alike, ``calls`` synthetic turns each."""
    if conversations < 0 or calls < 0 or rate < 0:
        raise ConfigError("conversations, calls and rate must not be negative")
    plan = ConversationPlan(agent_id, platform, synthetic=calls, words=words)
    return Scenario("load", (plan,) * conversations, rate, seed)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; ConfigError naming the file and the problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(data, source=str(path), default_name=path.stem)


def parse_scenario(
    data: Mapping[str, Any], *, source: str = "scenario", default_name: str = "scenario"
) -> Scenario:
    """Build a Scenario from TOML data; ConfigError for an unknown key, a value of the wrong
    type, a turn that expects both a result and an error, or a scenario with no conversation
    (it would pass having tested nothing)."""
    _keys(data, {"name", "rate", "seed", "conversation"}, source)
    conversations: list[ConversationPlan] = []
    for index, table in enumerate(_tables(data, "conversation", source)):
        where = f"{source}: conversation[{index}]"
        plan, repeat = _conversation(table, where)
        conversations.extend([plan] * repeat)
    rate = _get(data, "rate", (int, float), source, 0.0)
    if rate < 0:
        raise ConfigError(f"{source}: rate must not be negative")
    if not conversations:
        raise ConfigError(
            f"{source}: the scenario opens no conversation; add a [[conversation]] table with repeat >= 1"
        )
    return Scenario(
        _get(data, "name", str, source, default_name),
        tuple(conversations),
        float(rate),
        _get(data, "seed", int, source, 0),
    )


def _conversation(table: Mapping[str, Any], where: str) -> tuple[ConversationPlan, int]:
    allowed = {
        "agent_id",
        "platform",
        "repeat",
        "calls",
        "messages",
        "words",
        "turn",
        "message",
        "customer_id",
    }
    _keys(table, allowed, where)
    agent_id = _get(table, "agent_id", str, where, None)
    if agent_id is None:
        raise ConfigError(f"{where}: agent_id is required")
    platform = _get(table, "platform", str, where, "conversimple")
    if platform not in PLATFORMS:
        raise ConfigError(f"{where}: platform must be one of {', '.join(PLATFORMS)}, not {platform!r}")
    repeat = _get(table, "repeat", int, where, 1)
    if repeat < 0:
        raise ConfigError(f"{where}: repeat must not be negative")
    turns = tuple(_turn(t, f"{where}.turn[{i}]") for i, t in enumerate(_tables(table, "turn", where)))
    messages = tuple(
        _message(m, f"{where}.message[{i}]") for i, m in enumerate(_tables(table, "message", where))
    )
    if platform == "conversimple" and (messages or "messages" in table):
        raise ConfigError(f"{where}: messages are for arinova conversations; use turn / calls")
    if platform == "arinova" and (turns or "calls" in table):
        raise ConfigError(f"{where}: turns are for conversimple conversations; use message / messages")
    synthetic = _get(table, "calls" if platform == "conversimple" else "messages", int, where, 0)
    words = _get(table, "words", int, where, 20)
    if synthetic < 0 or words < 1:
        raise ConfigError(f"{where}: calls/messages must not be negative and words must be positive")
    customer_id = _get(table, "customer_id", str, where, None)
    plan = ConversationPlan(agent_id, platform, turns, messages, synthetic, words, customer_id)
    return plan, repeat


def _turn(table: Mapping[str, Any], where: str) -> ToolTurn:
    _keys(table, {"tool", "arguments", "expect_result", "expect_error"}, where)
    _one_expectation(table, "expect_result", where)
    arguments = _get(table, "arguments", dict, where, None)
    return ToolTurn(
        _get(table, "tool", str, where, None),
        arguments,
        table.get("expect_result", UNSET),
        _get(table, "expect_error", str, where, None),
    )


def _message(table: Mapping[str, Any], where: str) -> MessageTurn:
    _keys(table, {"content", "expect_reply", "expect_error"}, where)
    _one_expectation(table, "expect_reply", where)
    content = _get(table, "content", str, where, None)
    if content is None:
        raise ConfigError(f"{where}: content is required")
    return MessageTurn(
        content, _get(table, "expect_reply", str, where, None), _get(table, "expect_error", str, where, None)
    )


def _one_expectation(table: Mapping[str, Any], success: str, where: str) -> None:
    """A turn's answer either succeeds or fails: expecting both can never pass."""
    if success in table and "expect_error" in table:
        raise ConfigError(f"{where}: {success} and expect_error exclude each other; keep one")


def _keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )


def _tables(table: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: {key} must be an array of tables ([[{key}]])")
    return value


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    value = table.get(key, default)
    if value is default:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}: {key} must be {names}, got {type(value).__name__}")
    return value
