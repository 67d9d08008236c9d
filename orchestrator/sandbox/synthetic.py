"""Synthetic, schema-valid tool arguments: for customers with no scripted turns.

:func:`synthesize` builds a value valid against a tool's JSON Schema: the subset
:mod:`orchestrator.schema` emits and a bit more (strings, integers, numbers,
booleans, null, enums, const, arrays with ``items`` or ``prefixItems``, objects
with ``properties`` / ``required`` / ``additionalProperties``, ``anyOf`` /
``oneOf``, type lists and ``{}``). :class:`ArgumentPool` keeps a few variants per
schema, already encoded, so a load test spends nothing per call on them.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping
from typing import Any

from orchestrator.protocols import codec

__all__ = ["ArgumentPool", "synthesize", "synthetic_message"]

MAX_DEPTH = 6
_WORDS = ("hello", "weather", "order", "ticket", "refund", "today", "please", "thanks", "paris",
          "booking", "room", "help", "status", "quick", "question", "agent", "world", "again")  # fmt: skip
_TYPE_ORDER = ("string", "integer", "number", "boolean", "array", "object", "null")


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
