"""JSON Schema and argument validation from a tool function's type hints.

:func:`compile_signature` reads a tool's signature once, when the agent class is
defined, and builds two things from it: the JSON Schema object the platform shows
the LLM, and a tree of small validator closures that checks incoming JSON
arguments and structures them into the annotated Python types. ``bind`` runs on
every tool call, so each closure does only the work its type needs: a ``str``
parameter costs one ``isinstance``.

=============================  ===============================================
hint                           schema / structured as
=============================  ===============================================
str, int, float, bool, None    string, integer (not bool), number, boolean, null
list[T], Sequence[T]           array of T → list
tuple[T, ...], tuple[A, B]     array (``prefixItems`` when fixed) → tuple
dict[str, T], Mapping[str, T]  object with ``additionalProperties`` → dict
T | None, Union[A, B]          anyOf, members tried in order
Literal["a", 1], Enum          enum → the literal, the Enum member
attrs class, dataclass         object with its fields → an instance
Any                            {} (anything)
Annotated[T, "text"]           T with a description
=============================  ===============================================

Invalid arguments raise :class:`~orchestrator.errors.ToolArgumentsError` naming
the path to the bad value (``argument 'items[2]': expected integer, got string``);
hints that cannot work raise :class:`~orchestrator.errors.AgentDefinitionError`
naming the agent, the tool and the parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from orchestrator.docstrings import docstring_params
from orchestrator.errors import AgentDefinitionError, ToolArgumentsError

__all__ = ["CompiledSignature", "compile_signature"]

_Validator = Callable[[Any], Any]
_NO_DEFAULT: Any = object()
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


class _Mismatch(Exception):
    """A value a validator rejected; never leaves this module.

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

    def inside(self, segment: str) -> _Mismatch:
        """Prefix ``segment``: the container matched, the problem is within it."""
        self.path.append(segment)
        self.wrong_type = False
        return self

    def render(self) -> str:
        """The message for the whole arguments object (path ``.name[2].zip``)."""
        if not self.path:
            return self.message
        return f"argument '{''.join(reversed(self.path))[1:]}': {self.message}"


class _Unsupported(Exception):
    """A hint that cannot become a schema; becomes an AgentDefinitionError."""


def _kind(value: Any) -> str:
    """The JSON type name of ``value``, for messages that should not echo it."""
    kind = _KINDS.get(type(value))
    if kind is None:
        kind = "object" if isinstance(value, Mapping) else type(value).__name__
    return kind


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong(expected: str, value: Any) -> _Mismatch:
    return _Mismatch(f"expected {expected}, got {_kind(value)}", wrong_type=True)


@attrs.frozen(eq=False)
class _Node:
    """One compiled hint: its schema, its validator and a phrase for messages."""

    schema: dict[str, Any]
    check: _Validator
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
            raise _Mismatch("number out of range") from None
    raise _wrong("number", value)


def _check_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise _wrong("boolean", value)


def _check_null(value: Any) -> Any:
    if value is None:
        return None
    raise _wrong("null", value)


_SCALARS = {
    t: _Node({"type": _KINDS[t]}, check, _KINDS[t])
    for t, check in (
        (str, _check_str),
        (int, _check_int),
        (float, _check_float),
        (bool, _check_bool),
        (type(None), _check_null),
    )
}
_NULL = _SCALARS[type(None)]
_ANY = _Node({}, _identity, "any value")


def _choice(values: list[Any], results: list[Any]) -> _Node:
    """An enum: ``values`` (compared type-exactly, so 1 is not True) map to ``results``."""
    lookup = {(type(v), v): r for v, r in zip(values, results, strict=True)}
    value_types = frozenset(type(v) for v in values)
    expected = "one of " + ", ".join(_show(v) for v in values)

    def check(value: Any) -> Any:
        if type(value) in value_types and (type(value), value) in lookup:
            return lookup[type(value), value]
        raise _Mismatch(f"expected {expected}, got {_show(value)}")

    schema: dict[str, Any] = {"enum": list(values)}
    if len(value_types) == 1:
        schema["type"] = _KINDS[next(iter(value_types))]
    return _Node(schema, check, expected)


# --------------------------------------------------------------- containers


def _union(members: list[_Node]) -> _Node:
    """Members are tried in order; ``None`` is checked first when it is one."""
    nullable = any(m is _NULL for m in members)
    checks = tuple(m.check for m in members if m is not _NULL)
    phrases = [m.expected for m in members]
    expected = ", ".join(phrases[:-1]) + " or " + phrases[-1]

    def check(value: Any) -> Any:
        if nullable and value is None:
            return None
        near: list[_Mismatch] = []
        for member in checks:
            try:
                return member(value)
            except _Mismatch as exc:
                if not exc.wrong_type:
                    near.append(exc)
        if len(near) == 1:  # only one member accepted the JSON type: its error says most
            raise near[0]
        raise _wrong(expected, value)

    return _Node({"anyOf": [m.schema for m in members]}, check, expected)


def _array(item: _Node, make: Callable[[Any], Any]) -> _Node:
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
        except _Mismatch as exc:
            raise exc.inside(f"[{len(out)}]") from None
        return make(out)

    return _Node({"type": "array", "items": item.schema}, check, "array")


def _fixed_tuple(items: list[_Node]) -> _Node:
    """``tuple[A, B]``: exactly one item per member, structured to a tuple."""
    checks, size = tuple(i.check for i in items), len(items)

    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _wrong("array", value)
        if len(value) != size:
            raise _Mismatch(f"expected an array of {size} items, got {len(value)}")
        out: list[Any] = []
        try:
            for check_item, element in zip(checks, value, strict=True):
                out.append(check_item(element))
        except _Mismatch as exc:
            raise exc.inside(f"[{len(out)}]") from None
        return tuple(out)

    schema = {"type": "array", "prefixItems": [i.schema for i in items], "minItems": size, "maxItems": size}
    return _Node(schema, check, "array")


def _mapping(item: _Node) -> _Node:
    """``dict[str, T]``: any string keys, each value checked against ``T``."""
    check_item = item.check

    def check(value: Any) -> Any:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise _wrong("object", value)
        out: dict[str, Any] = {}
        for key, element in value.items():
            if not isinstance(key, str):
                raise _Mismatch(f"object keys must be strings, got {_show(key)}")
            try:
                out[key] = check_item(element)
            except _Mismatch as exc:
                raise exc.inside(f"[{json.dumps(key)}]") from None
        return out

    return _Node({"type": "object", "additionalProperties": item.schema}, check, "object")


def _property(node: _Node, default: Any, description: str | None) -> dict[str, Any]:
    """A property schema: the type's schema plus a description and a JSON default."""
    schema = dict(node.schema)
    if description and "description" not in schema:  # Annotated text wins
        schema["description"] = description
    if default is not _NO_DEFAULT:
        if isinstance(default, enum.Enum):
            default = default.value
        # Not JSON (a Factory, an object): the default still applies, unshown.
        with contextlib.suppress(TypeError, ValueError, RecursionError):
            schema["default"] = json.loads(json.dumps(default, allow_nan=False))
    return schema


_Property = tuple[str, _Node, bool, Any, "str | None"]  # name, node, required, default, text


def _object(props: list[_Property], what: str) -> tuple[dict[str, Any], _Validator]:
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
                raise _Mismatch(f"unexpected {what} {_show(key)}")
            try:
                kwargs[key] = check_one(element)
            except _Mismatch as exc:
                raise exc.inside(f".{key}") from None
        if not kwargs.keys() >= required:
            missing = [name for name in order if name not in kwargs]
            plural = "s" if len(missing) > 1 else ""
            raise _Mismatch(f"missing required {what}{plural} " + ", ".join(map(repr, missing)))
        return kwargs

    properties = {
        name: _property(node, _NO_DEFAULT if mandatory else default, text)
        for name, node, mandatory, default, text in props
    }
    schema = {"type": "object", "properties": properties, "required": order, "additionalProperties": False}
    return schema, check


def _record(cls: type, stack: tuple[type, ...]) -> _Node:
    """An attrs class or dataclass: an object of its ``__init__`` fields, built into one."""
    if cls in stack:
        raise _Unsupported(f"recursive type {cls.__qualname__} is not supported")
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # NameError, TypeError, SyntaxError from user annotations
        raise _Unsupported(f"cannot resolve the type hints of {cls.__qualname__}: {exc}") from exc
    if attrs.has(cls):
        fields = [
            (a.alias or a.name, a.name, a.default is attrs.NOTHING, a.default)
            for a in attrs.fields(cls)
            if a.init
        ]
    else:
        missing = dataclasses.MISSING
        fields = [
            (f.name, f.name, f.default is missing and f.default_factory is missing, f.default)
            for f in dataclasses.fields(cls)
            if f.init
        ]
    props: list[_Property] = []
    for name, attribute, mandatory, default in fields:
        try:
            if attribute not in hints:
                raise _Unsupported("missing type annotation")
            node = _compile(hints[attribute], (*stack, cls))
        except _Unsupported as exc:
            raise _Unsupported(f"{exc} (field {cls.__qualname__}.{attribute})") from None
        props.append((name, node, mandatory, default, None))
    schema, check_fields = _object(props, "field")

    def check(value: Any) -> Any:
        kwargs = check_fields(value)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # the class's own validators said no
            raise _Mismatch(f"invalid {cls.__name__}: {exc}") from None

    return _Node(schema, check, "object")


# ----------------------------------------------------------------- compiler


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type) and get_origin(hint) is None:
        if hint.__module__ == "builtins":
            return hint.__qualname__
        return f"{hint.__module__}.{hint.__qualname__}"
    return repr(hint)


def _compile(hint: Any, stack: tuple[type, ...] = ()) -> _Node:
    """Compile one type hint into a node, or raise :class:`_Unsupported`.

    ``stack`` holds the records being compiled, to refuse recursive types.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Annotated:
        node = _compile(args[0], stack)
        notes = [m for m in hint.__metadata__ if isinstance(m, str)]
        if notes:
            return attrs.evolve(node, schema={**node.schema, "description": notes[0]})
        return node
    if hint is Any:
        return _ANY
    if hint is None or hint is type(None):
        return _NULL
    if origin is None and isinstance(hint, type) and hint in _SCALARS:
        return _SCALARS[hint]
    if origin is Literal:
        if not all(v is None or type(v) in (str, int, bool) for v in args):
            raise _Unsupported(f"unsupported type hint {hint!r} (literals must be str, int, bool)")
        return _choice(list(args), list(args))
    if origin is Union or origin is types.UnionType:
        return _union([_compile(a, stack) for a in args])
    if hint in (list, Sequence) or origin in (list, Sequence):
        return _array(_compile(args[0], stack) if args else _ANY, list)
    if hint is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _array(_compile(args[0], stack) if args else _ANY, tuple)
        return _fixed_tuple([_compile(a, stack) for a in args])
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        if args and args[0] is not str:
            raise _Unsupported(f"unsupported type hint {hint!r} (object keys must be str)")
        return _mapping(_compile(args[1], stack) if args else _ANY)
    if origin is None and isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            members = list(hint)
            if not all(type(m.value) in (str, int, float, bool) for m in members):
                raise _Unsupported(
                    f"unsupported type hint {_hint_name(hint)} (enum values must be str, int, float or bool)"
                )
            return _choice([m.value for m in members], members)
        if attrs.has(hint) or dataclasses.is_dataclass(hint):
            return _record(hint, stack)
    raise _Unsupported(f"unsupported type hint {_hint_name(hint)}")


# ------------------------------------------------------------------- public


@attrs.frozen
class CompiledSignature:
    """A tool's parameter schema and the compiled validator that enforces it.

    ``schema`` is the JSON Schema object sent to the platform; treat it as
    read-only. Two signatures are equal when their schemas are.
    """

    schema: dict[str, Any]
    _check: Callable[[Any], dict[str, Any]] = attrs.field(eq=False, repr=False)

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validate JSON ``arguments`` and structure them into keyword arguments.

        Omitted optional parameters are left out, so Python fills in their
        defaults. Raises :class:`ToolArgumentsError` naming the offending
        argument and the path inside it; the tool body must not run then.
        """
        if type(arguments) is not dict and not isinstance(arguments, Mapping):
            raise ToolArgumentsError(f"arguments must be a JSON object, got {_kind(arguments)}")
        try:
            return self._check(arguments)
        except _Mismatch as exc:
            raise ToolArgumentsError(exc.render()) from None


_KIND_PROBLEMS: dict[object, str] = {
    inspect.Parameter.VAR_POSITIONAL: "*args is not supported",
    inspect.Parameter.VAR_KEYWORD: "**kwargs is not supported",
    inspect.Parameter.POSITIONAL_ONLY: "positional-only parameters are not supported",
}


def _resolve_hints(
    func: Callable[..., Any], parameters: list[inspect.Parameter], where: str
) -> dict[str, Any]:
    """Evaluate each parameter's hint (string annotations too) in ``func``'s module.

    One ``get_type_hints`` per parameter, so an unresolvable name is reported
    against its parameter, and the return annotation (often imported only for
    type checkers) is never evaluated.
    """
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
    hints: dict[str, Any] = {}
    for p in parameters:
        if p.annotation is not inspect.Parameter.empty:
            probe = types.SimpleNamespace(__annotations__={p.name: p.annotation})
            try:
                hints.update(typing.get_type_hints(probe, namespace, include_extras=True))
            except Exception as exc:  # NameError, SyntaxError, TypeError from user code
                raise AgentDefinitionError(
                    f"{where}: parameter {p.name!r}: cannot resolve type hint "
                    f"{p.annotation!r}: {type(exc).__name__}: {exc}"
                ) from exc
    return hints


def compile_signature(func: Callable[..., Any], *, agent: str, tool: str) -> CompiledSignature:
    """Compile a tool method's signature into a schema and a validator.

    ``func`` is the plain function as defined in the class; its first parameter
    (``self``) is skipped. Raises :class:`AgentDefinitionError` naming
    ``agent.tool`` and the parameter for a missing annotation, an unsupported
    hint, ``*args``, ``**kwargs`` or a positional-only parameter.
    """
    where = f"{agent}.{tool}"
    if inspect.ismethod(func):
        func = func.__func__
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise AgentDefinitionError(f"{where}: cannot read the signature: {exc}") from exc
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise AgentDefinitionError(f"{where}: a tool must be a method taking self first")
    parameters = parameters[1:]
    hints = _resolve_hints(func, parameters, where)
    texts = docstring_params(func)
    props: list[_Property] = []
    for p in parameters:
        problem = _KIND_PROBLEMS.get(p.kind)
        if problem is None and p.name not in hints:
            problem = "missing type annotation"
        if problem is not None:
            raise AgentDefinitionError(f"{where}: parameter {p.name!r}: {problem}")
        try:
            node = _compile(hints[p.name])
        except _Unsupported as exc:
            raise AgentDefinitionError(f"{where}: parameter {p.name!r}: {exc}") from None
        mandatory = p.default is inspect.Parameter.empty
        props.append((p.name, node, mandatory, p.default, texts.get(p.name)))
    return CompiledSignature(*_object(props, "argument"))
