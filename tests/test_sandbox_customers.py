"""Simulated customers: synthetic arguments are schema-valid, expectations match, scenarios parse."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs
import pytest

from examples.booking import BookingAgent
from examples.customer_service import CustomerServiceAgent
from examples.echo import EchoAgent
from examples.weather import WeatherAgent
from orchestrator.agent import Agent, tool
from orchestrator.errors import ConfigError
from orchestrator.sandbox import (
    ConversationPlan,
    MessageTurn,
    SandboxSettings,
    ToolTurn,
    load_plan,
    load_scenario,
    parse_scenario,
)
from orchestrator.sandbox.customers import matches
from orchestrator.sandbox.scenarios import UNSET
from orchestrator.sandbox.synthetic import ArgumentPool, synthesize, synthetic_message

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Point:
    x: int
    label: Annotated[str, "a name"] = "p"


class ShapesAgent(Agent):
    """Every hint the schema compiler supports, to exercise the generator."""

    agent_id = "shapes"

    @tool("all of them")
    async def everything(
        self,
        pair: tuple[int, str],
        many: tuple[float, ...],
        nested: list[dict[str, list[bool]]],
        maybe: Point | None,
        choice: Literal["a", "b", 3],
        either: int | str,
        anything: Any,
        flag: bool = False,
        points: list[Point] | None = None,
    ) -> None:
        return None


@pytest.mark.parametrize("agent", [EchoAgent, WeatherAgent, CustomerServiceAgent, BookingAgent, ShapesAgent])
def test_synthetic_arguments_validate_against_every_tool(agent: type[Agent]) -> None:
    for name, definition in agent.__tools__.items():
        for seed in range(200):
            arguments = synthesize(definition.schema()["parameters"], random.Random(seed))
            definition.signature.bind(arguments)  # raises ToolArgumentsError if invalid
            assert isinstance(arguments, dict), name


def test_synthesize_is_deterministic_and_varied() -> None:
    schema = WeatherAgent.__tools__["get_weather"].schema()["parameters"]
    first = [synthesize(schema, random.Random(s)) for s in range(30)]
    assert first == [synthesize(schema, random.Random(s)) for s in range(30)]
    assert len({str(a) for a in first}) > 10
    assert {a.get("units") for a in first} >= {"metric", "imperial", None}


@pytest.mark.parametrize(
    ("schema", "check"),
    [
        ({"type": "integer", "minimum": 3, "maximum": 5}, lambda v: type(v) is int and 3 <= v <= 5),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, lambda v: 0 < v <= 1),
        ({"type": "string", "minLength": 30}, lambda v: isinstance(v, str) and len(v) >= 30),
        ({"type": "string", "maxLength": 2}, lambda v: 1 <= len(v) <= 2),
        (
            {"type": "array", "items": {"type": "null"}, "minItems": 2, "maxItems": 2},
            lambda v: v == [None, None],
        ),
        ({"const": {"k": 1}}, lambda v: v == {"k": 1}),
        ({"type": ["null", "boolean"]}, lambda v: v is None or isinstance(v, bool)),
        ({"oneOf": [{"type": "integer"}]}, lambda v: type(v) is int),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            lambda v: all(type(x) is int for x in v.values()),
        ),
        ({"type": "string", "format": "date"}, lambda v: len(v) == 10 and v[4] == "-"),
    ],
)
def test_synthesize_respects_constraints(schema: dict[str, Any], check: Any) -> None:
    for seed in range(50):
        assert check(synthesize(schema, random.Random(seed)))


def test_synthesize_stops_at_depth() -> None:
    deep: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    node = deep
    for _ in range(50):
        child: dict[str, Any] = {
            "anyOf": [{"type": "object", "properties": {}, "required": []}, {"type": "null"}]
        }
        node["properties"]["next"] = child
        node["required"] = ["next"]
        node = child["anyOf"][0]
    value = synthesize(deep, random.Random(1))
    depth = 0
    while isinstance(value, dict):
        value, depth = value.get("next"), depth + 1
    assert depth < 20


def test_argument_pool_keeps_encoded_variants() -> None:
    schema = BookingAgent.__tools__["confirm_booking"].schema()["parameters"]
    pool = ArgumentPool(size=8)
    variants = pool.variants(schema)
    assert len(variants) == 8 and pool.variants(dict(schema)) is variants
    assert variants == ArgumentPool(size=8).variants(schema)  # deterministic per schema
    for arguments, encoded in variants:
        assert json.loads(encoded) == arguments
        BookingAgent.__tools__["confirm_booking"].signature.bind(arguments)


def test_synthetic_message_has_the_words_asked_for() -> None:
    assert len(synthetic_message(random.Random(3), 20).split(" ")) == 20


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"b": 1}, False),
        ([1, 2], [1, 2, 3], False),
        ([{"x": 1}], [{"x": 1, "y": 2}], True),
        (18, 18.0, True),
        (True, 1, False),
        (1, True, False),
        ("s", "s", True),
        (None, None, True),
        ({"a": None}, {}, False),
    ],
)
def test_matches(expected: Any, actual: Any, ok: bool) -> None:
    assert matches(expected, actual) is ok


PARIS = {"city": "Paris"}


def test_parse_scenario_full() -> None:
    scenario = parse_scenario(
        {
            "name": "x",
            "rate": 2,
            "seed": 4,
            "conversation": [
                {
                    "agent_id": "weather",
                    "repeat": 2,
                    "calls": 1,
                    "turn": [{"tool": "get_weather", "arguments": {"city": "Paris"}, "expect_result": PARIS}],
                },
                {"agent_id": "echo", "platform": "arinova", "messages": 2, "words": 3,
                 "message": [{"content": "hi", "expect_reply": "hi"}]},
            ],
        }
    )  # fmt: skip
    assert (scenario.name, scenario.rate, scenario.seed) == ("x", 2.0, 4)
    assert len(scenario.conversations) == 3
    weather = scenario.conversations[0]
    assert weather == scenario.conversations[1]
    assert weather.turns == (ToolTurn("get_weather", {"city": "Paris"}, {"city": "Paris"}),)
    assert weather.synthetic == 1
    arinova = scenario.conversations[2]
    assert arinova == ConversationPlan("echo", "arinova", (), (MessageTurn("hi", "hi"),), 2, 3)
    assert ToolTurn().expect_result is UNSET


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"conversation": [{}]}, "agent_id is required"),
        ({"conversation": [{"agent_id": "a", "color": 1}]}, "unknown key"),
        ({"conversation": [{"agent_id": "a", "platform": "x"}]}, "platform must be one of"),
        ({"conversation": [{"agent_id": "a", "calls": "3"}]}, "calls must be int"),
        ({"conversation": [{"agent_id": "a", "repeat": True}]}, "repeat must be int"),
        ({"conversation": [{"agent_id": "a", "message": [{"content": "x"}]}]}, "messages are for arinova"),
        (
            {"conversation": [{"agent_id": "a", "platform": "arinova", "turn": [{}]}]},
            "turns are for conversimple",
        ),
        (
            {"conversation": [{"agent_id": "a", "platform": "arinova", "message": [{}]}]},
            "content is required",
        ),
        ({"conversation": {"agent_id": "a"}}, "array of tables"),
        ({"rate": -1}, "rate must not be negative"),
    ],
)
def test_parse_scenario_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario(data)


def test_load_scenario_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_scenario(tmp_path / "missing.toml")


def test_load_plan() -> None:
    plan = load_plan(3, 2, agent_id="weather", rate=5)
    assert len(plan.conversations) == 3 and plan.rate == 5
    assert plan.conversations[0] == ConversationPlan("weather", synthetic=2)
    with pytest.raises(ConfigError):
        load_plan(-1, 1)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "scenarios").glob("sandbox_*.toml")), ids=lambda p: p.name
)
def test_example_scenarios_load(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.conversations


@pytest.mark.parametrize(
    "bad", [{"port": 70000}, {"call_timeout": 0}, {"redelivery_delay": -1}, {"ping_interval": 0}]
)
def test_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SandboxSettings(**bad)
