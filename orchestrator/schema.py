"""JSON Schema and argument validation from a tool function's type hints.

:func:`compile_signature` reads a tool's signature once, when the agent class is
defined, and builds two things from it: the JSON Schema object the platform shows
the LLM, and a tree of small validator closures (:mod:`.validators`) that checks
incoming JSON arguments and structures them into the annotated Python types.
``bind`` runs on every tool call, so each closure does only the work its type
needs: a ``str`` parameter costs one ``isinstance``.

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

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from orchestrator.docstrings import docstring_params
from orchestrator.errors import AgentDefinitionError, ToolArgumentsError

from .validators import (
    ANY,
    NULL,
    SCALARS,
    Mismatch,
    Node,
    Property,
    array,
    choice,
    fixed_tuple,
    kind_of,
    mapping,
    object_node,
    union,
)

__all__ = ["CompiledSignature", "compile_signature"]


class _Unsupported(Exception):
    """A hint that cannot become a schema; becomes an AgentDefinitionError."""


def _record(cls: type, stack: tuple[type, ...]) -> Node:
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
    props: list[Property] = []
    for name, attribute, mandatory, default in fields:
        try:
            if attribute not in hints:
                raise _Unsupported("missing type annotation")
            node = _compile(hints[attribute], (*stack, cls))
        except _Unsupported as exc:
            raise _Unsupported(f"{exc} (field {cls.__qualname__}.{attribute})") from None
        props.append((name, node, mandatory, default, None))
    schema, check_fields = object_node(props, "field")

    def check(value: Any) -> Any:
        kwargs = check_fields(value)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # the class's own validators said no
            raise Mismatch(f"invalid {cls.__name__}: {exc}") from None

    return Node(schema, check, "object")


# ----------------------------------------------------------------- compiler


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type) and get_origin(hint) is None:
        if hint.__module__ == "builtins":
            return hint.__qualname__
        return f"{hint.__module__}.{hint.__qualname__}"
    return repr(hint)


def _compile(hint: Any, stack: tuple[type, ...] = ()) -> Node:
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
        return ANY
    if hint is None or hint is type(None):
        return NULL
    if origin is None and isinstance(hint, type) and hint in SCALARS:
        return SCALARS[hint]
    if origin is Literal:
        if not all(v is None or type(v) in (str, int, bool) for v in args):
            raise _Unsupported(f"unsupported type hint {hint!r} (literals must be str, int, bool)")
        return choice(list(args), list(args))
    if origin is Union or origin is types.UnionType:
        return union([_compile(a, stack) for a in args])
    if hint in (list, Sequence) or origin in (list, Sequence):
        return array(_compile(args[0], stack) if args else ANY, list)
    if hint is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return array(_compile(args[0], stack) if args else ANY, tuple)
        return fixed_tuple([_compile(a, stack) for a in args])
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        if args and args[0] is not str:
            raise _Unsupported(f"unsupported type hint {hint!r} (object keys must be str)")
        return mapping(_compile(args[1], stack) if args else ANY)
    if origin is None and isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            members = list(hint)
            if not all(type(m.value) in (str, int, float, bool) for m in members):
                raise _Unsupported(
                    f"unsupported type hint {_hint_name(hint)} (enum values must be str, int, float or bool)"
                )
            return choice([m.value for m in members], members)
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
            raise ToolArgumentsError(f"arguments must be a JSON object, got {kind_of(arguments)}")
        try:
            return self._check(arguments)
        except Mismatch as exc:
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
    props: list[Property] = []
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
    return CompiledSignature(*object_node(props, "argument"))
