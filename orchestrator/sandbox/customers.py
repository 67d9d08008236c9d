"""Simulated customers: turn a conversation plan into tool calls or messages, and check answers.

With no scripted turns a customer calls the agent's registered tools in turn with
*synthetic* arguments: :func:`synthesize` builds a value valid against a tool's
JSON Schema (the subset :mod:`orchestrator.schema` emits and a bit more: strings,
integers, numbers, booleans, null, enums, const, arrays with ``items`` or
``prefixItems``, objects with ``properties`` / ``required`` /
``additionalProperties``, ``anyOf`` / ``oneOf``, type lists and ``{}``).
Expectations: ``expect_result`` matches objects as subsets (recursively), arrays
item by item, scalars by value and JSON type; ``expect_error`` / ``expect_reply``
are substrings.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator.protocols import codec

from .recorder import CallRecord, ConversationLog, ReplyRecord
from .scenarios import UNSET, ConversationPlan, MessageTurn, ToolTurn

__all__ = [
    "ArgumentPool",
    "ChatConversation",
    "ToolConversation",
    "matches",
    "run_chat_customer",
    "run_tool_customer",
    "synthesize",
    "synthetic_message",
]

MAX_DEPTH = 6
_WORDS = ("hello", "weather", "order", "ticket", "refund", "today", "please", "thanks", "paris",
          "booking", "room", "help", "status", "quick", "question", "agent", "world", "again")  # fmt: skip
_TYPE_ORDER = ("string", "integer", "number", "boolean", "array", "object", "null")


class ToolConversation(Protocol):
    """A Conversimple conversation as its customer sees it."""

    @property
    def log(self) -> ConversationLog: ...

    @property
    def tools(self) -> Sequence[Mapping[str, Any]]:
        """The tools last registered: ``{name, description, parameters}`` each."""
        ...

    async def call(
        self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None = None
    ) -> CallRecord:
        """Send a tool call and wait for its answer (or for it to be lost).

        ``encoded``: the arguments' JSON, when the caller has it already.
        """
        ...


class ChatConversation(Protocol):
    """An Arinova conversation as its customer sees it."""

    @property
    def log(self) -> ConversationLog: ...

    async def ask(self, content: str) -> ReplyRecord:
        """Send a message and wait for the streamed reply to complete (or be lost)."""
        ...


class ArgumentPool:
    """Synthetic arguments made once per tool schema, kept with their JSON encoding.

    A load test then spends no time per call on generating or encoding arguments:
    each call picks one of ``size`` variants (deterministic for a schema).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._variants: dict[str, list[tuple[Mapping[str, Any], str]]] = {}

    def variants(self, schema: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], str]]:
        key = codec.encode_frame(schema)
        found = self._variants.get(key)
        if found is None:
            rng = random.Random(key)
            made = [synthesize(schema, rng) for _ in range(self.size)]
            found = self._variants[key] = [(value, codec.encode_frame(value)) for value in made]
        return found


_SYNTHETIC = ToolTurn()


async def run_tool_customer(
    conversation: ToolConversation, plan: ConversationPlan, rng: random.Random, pool: ArgumentPool
) -> None:
    """Play the plan's turns, then its synthetic calls; record failures on the log."""
    log = conversation.log
    known: object = None
    names: list[str] = []
    schemas: dict[str, Mapping[str, Any]] = {}
    variants: dict[str, list[tuple[Mapping[str, Any], str]]] = {}
    picked = 0
    for index, turn in enumerate([*plan.turns, *[_SYNTHETIC] * plan.synthetic]):
        if conversation.tools is not known:  # (re-)registered: refresh the catalogue
            known = conversation.tools
            schemas = {str(spec.get("name")): _parameters(spec) for spec in conversation.tools}
            names, variants = list(schemas), {}
        name = turn.tool
        if name is None:
            if not names:
                log.failures.append(f"turn {index}: no registered tool to call")
                break
            name = names[picked % len(names)]
            picked += 1
        arguments, encoded = turn.arguments, None
        if arguments is None:
            options = variants.get(name)
            if options is None:
                options = variants[name] = pool.variants(schemas.get(name, {"type": "object"}))
            arguments, encoded = options[rng.randrange(len(options))]
        record = await conversation.call(name, arguments, encoded)
        failure = _check_call(turn, record)
        if failure is not None:
            record.failure = failure
            log.failures.append(f"turn {index} ({name}): {failure}")


def _parameters(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    schema = spec.get("parameters")
    return schema if isinstance(schema, Mapping) else {"type": "object"}


async def run_chat_customer(
    conversation: ChatConversation, plan: ConversationPlan, rng: random.Random
) -> None:
    """Send the plan's messages in order, each after the previous reply completed."""
    log = conversation.log
    turns = [
        *plan.messages,
        *(MessageTurn(synthetic_message(rng, plan.words)) for _ in range(plan.synthetic)),
    ]
    for index, turn in enumerate(turns):
        record = await conversation.ask(turn.content)
        failure = _check_reply(turn, record)
        if failure is not None:
            record.failure = failure
            log.failures.append(f"message {index}: {failure}")


def _check_call(turn: ToolTurn, record: CallRecord) -> str | None:
    if record.status == "lost":
        return "no answer (lost)"
    if turn.expect_error is not None:
        if record.status != "error":
            return f"expected an error containing {turn.expect_error!r}, got result {_short(record.result)}"
        if turn.expect_error not in (record.error or ""):
            return f"expected an error containing {turn.expect_error!r}, got {record.error!r}"
    if turn.expect_result is not UNSET:
        if record.status != "ok":
            return f"expected result {_short(turn.expect_result)}, got error {record.error!r}"
        if not matches(turn.expect_result, record.result):
            return f"expected result {_short(turn.expect_result)}, got {_short(record.result)}"
    return None


def _check_reply(turn: MessageTurn, record: ReplyRecord) -> str | None:
    if record.status == "lost":
        return "no reply (lost)"
    if record.chunks and record.reply is not None and "".join(record.chunks) != record.reply:
        return "the chunks do not add up to the completed reply"
    if turn.expect_error is not None and turn.expect_error not in (record.error or ""):
        return f"expected an error containing {turn.expect_error!r}, got {record.status} {record.error!r}"
    if turn.expect_reply is not None and turn.expect_reply not in (record.reply or ""):
        return f"expected a reply containing {turn.expect_reply!r}, got {record.reply or record.error!r}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def matches(expected: Any, actual: Any) -> bool:
    """``actual`` has everything ``expected`` has: objects as subsets, arrays item by item."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float):
        return isinstance(actual, int | float) and expected == actual
    return bool(expected == actual)


def synthetic_message(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(1, words)))


def synthesize(schema: Mapping[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A JSON value valid against ``schema``; deterministic for a seeded ``rng``."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if isinstance(members, list) and members:
            if depth >= MAX_DEPTH and any(m.get("type") == "null" for m in members):
                return None
            return synthesize(rng.choice(members), rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in _TYPE_ORDER if k in kind] or ["string"]
        kind = rng.choice(kinds)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BUILDERS.get(str(kind), _string)(schema, rng, depth)


def _string(schema: Mapping[str, Any], rng: random.Random, depth: int) -> str:
    if schema.get("format") == "date":
        return f"20{rng.randint(24, 30)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    low = int(schema.get("minLength", 1))
    high = max(low, int(schema.get("maxLength", max(low, 12))))
    size = rng.randint(low, min(high, low + 12))
    word = rng.choice(_WORDS)
    text = (word + "".join(rng.choices(string.ascii_lowercase, k=size)))[:size]
    return text.ljust(size, "x")


def _integer(schema: Mapping[str, Any], rng: random.Random, depth: int) -> int:
    low, high = _bounds(schema, 0, 20)
    return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))


def _number(schema: Mapping[str, Any], rng: random.Random, depth: int) -> float:
    low, high = _bounds(schema, 0.0, 100.0)
    return min(high, max(low, round(rng.uniform(low, high), 2)))


def _bounds(schema: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    if "minimum" in schema:
        low = float(schema["minimum"])
    if "exclusiveMinimum" in schema:
        low = float(schema["exclusiveMinimum"]) + 1
    if "maximum" in schema:
        high = float(schema["maximum"])
    if "exclusiveMaximum" in schema:
        high = float(schema["exclusiveMaximum"]) - 1
    if high < low:
        high = low + 20 if "maximum" not in schema and "exclusiveMaximum" not in schema else high
        low = min(low, high)
    return low, high


def _boolean(schema: Mapping[str, Any], rng: random.Random, depth: int) -> bool:
    return rng.random() < 0.5


def _null(schema: Mapping[str, Any], rng: random.Random, depth: int) -> None:
    return None


def _array(schema: Mapping[str, Any], rng: random.Random, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    out = [synthesize(s, rng, depth + 1) for s in prefix] if isinstance(prefix, list) else []
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", max(low, 3)))
    items = schema.get("items")
    if isinstance(items, Mapping):
        wanted = low if depth >= MAX_DEPTH else rng.randint(low, max(low, min(high, low + 3)))
        out.extend(synthesize(items, rng, depth + 1) for _ in range(max(0, wanted - len(out))))
    return out


def _object(schema: Mapping[str, Any], rng: random.Random, depth: int) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: dict[str, Any] = {}
    for name, sub in properties.items():
        if name in required or (depth < MAX_DEPTH and rng.random() < 0.5):
            out[name] = synthesize(sub, rng, depth + 1)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and not properties and depth < MAX_DEPTH:
        for n in range(rng.randint(0, 2)):
            out[f"key{n}"] = synthesize(extra, rng, depth + 1)
    return out


_BUILDERS = {"string": _string, "integer": _integer, "number": _number, "boolean": _boolean,
             "null": _null, "array": _array, "object": _object}  # fmt: skip
