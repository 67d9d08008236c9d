"""The validators a tool's JSON arguments are checked with: one node per type hint.

A :class:`Node` pairs a hint's JSON Schema with a closure that checks a JSON value
against it and structures it into the annotated Python type (``str`` costs one
``isinstance``; a ``list[int]`` one loop). :mod:`.schema` compiles a tool's
signature into a tree of them, once per agent class; ``bind`` runs the tree on
every call. A rejected value raises :class:`Mismatch`, which collects the path to
the bad value as it unwinds, so the success path never builds one.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "ANY",
    "NO_DEFAULT",
    "NULL",
    "SCALARS",
    "Mismatch",
    "Node",
    "Property",
    "Validator",
    "array",
    "choice",
    "fixed_tuple",
    "kind_of",
    "mapping",
    "object_node",
    "union",
]

Validator = Callable[[Any], Any]
"""Checks one JSON value and returns it structured; raises :class:`Mismatch`."""
NO_DEFAULT: Any = object()
"""A property's default when it has none (so ``None`` can be one)."""
_KINDS = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
}


class Mismatch(Exception):
    """A value a validator rejected; never leaves the validators and :mod:`.schema`.

    ``path`` collects segments (``[2]``, ``.zip``) innermost first as the
    exception unwinds, so the success path never builds a path string.
    ``wrong_type`` marks a value of the wrong JSON type at this very node; a
    union prefers to report a member's error that is not one.
    """

    def __init__(self, message: str, *, wrong_type: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.wrong_type = wrong_type
        self.path: list[str] = []

    def inside(self, segment: str) -> Mismatch:
        """Prefix ``segment``: the container matched, the problem is within it."""
        self.path.append(segment)
        self.wrong_type = False
        return self

    def render(self) -> str:
        """The message for the whole arguments object (path ``.name[2].zip``)."""
        if not self.path:
            return self.message
        return f"argument '{''.join(reversed(self.path))[1:]}': {self.message}"


def kind_of(value: Any) -> str:
    """The JSON type name of ``value``, for messages that should not echo it."""
    kind = _KINDS.get(type(value))
    if kind is None:
        kind = "object" if isinstance(value, Mapping) else type(value).__name__
    return kind


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong(expected: str, value: Any) -> Mismatch:
    return Mismatch(f"expected {expected}, got {kind_of(value)}", wrong_type=True)


@attrs.frozen(eq=False)
class Node:
    """One compiled hint: its schema, its validator and a phrase for messages."""

    schema: dict[str, Any]
    check: Validator
    expected: str


# ------------------------------------------------------------------ leaves


def _identity(value: Any) -> Any:
    return value


def _check_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise _wrong("string", value)


def _check_int(value: Any) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():  # JSON Schema: 2.0 is an integer
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise _wrong("integer", value)


def _check_float(value: Any) -> Any:
    if type(value) is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise Mismatch("number out of range") from None
    raise _wrong("number", value)


def _check_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise _wrong("boolean", value)


def _check_null(value: Any) -> Any:
    if value is None:
        return None
    raise _wrong("null", value)


SCALARS = {
    t: Node({"type": _KINDS[t]}, check, _KINDS[t])
    for t, check in (
        (str, _check_str),
        (int, _check_int),
        (float, _check_float),
        (bool, _check_bool),
        (type(None), _check_null),
    )
}
NULL = SCALARS[type(None)]
ANY = Node({}, _identity, "any value")


def choice(values: list[Any], results: list[Any]) -> Node:
    """An enum: ``values`` (compared type-exactly, so 1 is not True) map to ``results``."""
    lookup = {(type(v), v): r for v, r in zip(values, results, strict=True)}
    value_types = frozenset(type(v) for v in values)
    expected = "one of " + ", ".join(_show(v) for v in values)

    def check(value: Any) -> Any:
        if type(value) in value_types and (type(value), value) in lookup:
            return lookup[type(value), value]
        raise Mismatch(f"expected {expected}, got {_show(value)}")

    schema: dict[str, Any] = {"enum": list(values)}
    if len(value_types) == 1:
        schema["type"] = _KINDS[next(iter(value_types))]
    return Node(schema, check, expected)


# --------------------------------------------------------------- containers


def union(members: list[Node]) -> Node:
    """Members are tried in order; ``None`` is checked first when it is one."""
    nullable = any(m is NULL for m in members)
    checks = tuple(m.check for m in members if m is not NULL)
    phrases = [m.expected for m in members]
    expected = ", ".join(phrases[:-1]) + " or " + phrases[-1]

    def check(value: Any) -> Any:
        if nullable and value is None:
            return None
        near: list[Mismatch] = []
        for member in checks:
            try:
                return member(value)
            except Mismatch as exc:
                if not exc.wrong_type:
                    near.append(exc)
        if len(near) == 1:  # only one member accepted the JSON type: its error says most
            raise near[0]
        raise _wrong(expected, value)

    return Node({"anyOf": [m.schema for m in members]}, check, expected)


def array(item: Node, make: Callable[[Any], Any]) -> Node:
    """``list[T]`` (``make=list``) or ``tuple[T, ...]`` (``make=tuple``)."""
    check_item = item.check

    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _wrong("array", value)
        if check_item is _identity:
            return make(value)
        out: list[Any] = []
        try:
            for element in value:
                out.append(check_item(element))
        except Mismatch as exc:
            raise exc.inside(f"[{len(out)}]") from None
        return make(out)

    return Node({"type": "array", "items": item.schema}, check, "array")


def fixed_tuple(items: list[Node]) -> Node:
    """``tuple[A, B]``: exactly one item per member, structured to a tuple."""
    checks, size = tuple(i.check for i in items), len(items)

    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _wrong("array", value)
        if len(value) != size:
            raise Mismatch(f"expected an array of {size} items, got {len(value)}")
        out: list[Any] = []
        try:
            for check_item, element in zip(checks, value, strict=True):
                out.append(check_item(element))
        except Mismatch as exc:
            raise exc.inside(f"[{len(out)}]") from None
        return tuple(out)

    schema = {"type": "array", "prefixItems": [i.schema for i in items], "minItems": size, "maxItems": size}
    return Node(schema, check, "array")


def mapping(item: Node) -> Node:
    """``dict[str, T]``: any string keys, each value checked against ``T``."""
    check_item = item.check

    def check(value: Any) -> Any:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise _wrong("object", value)
        out: dict[str, Any] = {}
        for key, element in value.items():
            if not isinstance(key, str):
                raise Mismatch(f"object keys must be strings, got {_show(key)}")
            try:
                out[key] = check_item(element)
            except Mismatch as exc:
                raise exc.inside(f"[{json.dumps(key)}]") from None
        return out

    return Node({"type": "object", "additionalProperties": item.schema}, check, "object")


def _property(node: Node, default: Any, description: str | None) -> dict[str, Any]:
    """A property schema: the type's schema plus a description and a JSON default."""
    schema = dict(node.schema)
    if description and "description" not in schema:  # Annotated text wins
        schema["description"] = description
    if default is not NO_DEFAULT:
        if isinstance(default, enum.Enum):
            default = default.value
        # Not JSON (a Factory, an object): the default still applies, unshown.
        with contextlib.suppress(TypeError, ValueError, RecursionError):
            schema["default"] = json.loads(json.dumps(default, allow_nan=False))
    return schema


Property = tuple[str, Node, bool, Any, "str | None"]  # name, node, required, default, text


def object_node(props: list[Property], what: str) -> tuple[dict[str, Any], Validator]:
    """An object of named properties: its schema, and a validator returning a kwargs dict.

    ``what`` ("argument" or "field") words the unexpected / missing messages.
    """
    checks = {name: node.check for name, node, *_ in props}
    order = [name for name, _, mandatory, *_ in props if mandatory]
    required = frozenset(order)

    def check(value: Any) -> dict[str, Any]:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise _wrong("object", value)
        kwargs: dict[str, Any] = {}
        for key, element in value.items():
            check_one = checks.get(key)
            if check_one is None:
                raise Mismatch(f"unexpected {what} {_show(key)}")
            try:
                kwargs[key] = check_one(element)
            except Mismatch as exc:
                raise exc.inside(f".{key}") from None
        if not kwargs.keys() >= required:
            missing = [name for name in order if name not in kwargs]
            plural = "s" if len(missing) > 1 else ""
            raise Mismatch(f"missing required {what}{plural} " + ", ".join(map(repr, missing)))
        return kwargs

    properties = {
        name: _property(node, NO_DEFAULT if mandatory else default, text)
        for name, node, mandatory, default, text in props
    }
    schema = {"type": "object", "properties": properties, "required": order, "additionalProperties": False}
    return schema, check
