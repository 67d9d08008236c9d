from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Optional, Union

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.docstrings import docstring_params, docstring_summary
from orchestrator.errors import AgentDefinitionError, ToolArgumentsError
from orchestrator.schema import CompiledSignature, compile_signature

# ------------------------------------------------------------------ fixtures
# Module level on purpose: with ``from __future__ import annotations`` every
# hint below is a string that get_type_hints resolves in this module.


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Level(enum.IntEnum):
    ONE = 1
    TWO = 2


@attrs.frozen
class Address:
    street: str
    zip: str
    country: str = "NL"


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.frozen
class Order:
    id: int
    ship_to: Address
    points: list[Point] = attrs.Factory(list)


@attrs.frozen
class Positive:
    value: int = attrs.field(validator=attrs.validators.gt(0))


@attrs.define
class Private:
    _secret: str


@attrs.frozen
class Node:
    children: list[Node]


@attrs.frozen
class HasDate:
    when: datetime.datetime


class Colour(enum.Enum):
    RGB = (1, 2, 3)


def _address_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "street": {"type": "string"},
            "zip": {"type": "string"},
            "country": {"type": "string", "default": "NL"},
        },
        "required": ["street", "zip"],
        "additionalProperties": False,
    }


class SupportAgent:
    def ticket(self, subject: str, count: int = 3, priority: Literal["low", "high"] = "low") -> str:
        """Open a support ticket.

        The ticket goes to the on-call queue.

        Args:
            subject: The subject
                line of the ticket.
            count (int): How many copies.
        """
        return subject

    def everything(
        self,
        order: Order,
        point: Point,
        priority: Priority,
        level: Level,
        pair: tuple[int, str],
        many: tuple[float, ...] = (),
        labels: dict[str, int] | None = None,
        ratio: float = 0.5,
        flag: bool = False,
        anything: Any = None,
        mixed: int | list[int] | str = 0,
        private: Private | None = None,
    ) -> None:
        """Take one of each."""

    def numpy_doc(self, a: int, b: str = "x") -> None:
        """Numpy style.

        Parameters
        ----------
        a : int
            The a value,
            over two lines.
        b : str, optional
            The b value.

        Returns
        -------
        None
            Nothing at all.
        """

    def annotated(self, n: Annotated[int, "from Annotated"] = 1) -> None:
        """Annotated wins.

        Args:
            n: from the docstring
        """

    def defaults(
        self,
        p: Priority = Priority.HIGH,
        t: tuple[int, int] = (1, 2),
        o: Any = object(),  # noqa: B008 - a default that is not JSON
        n: int | None = None,
    ) -> None:
        pass

    def undefined(self, a: int, b: Missing) -> None:  # type: ignore[name-defined] # noqa: F821
        pass

    def returns_unknown(self, a: int) -> Receipt:  # type: ignore[name-defined] # noqa: F821
        raise NotImplementedError

    def star_args(self, *args: int) -> None:
        pass

    def star_kwargs(self, **kwargs: int) -> None:
        pass

    def positional(self, a: int, /) -> None:
        pass

    def unannotated(self, a) -> None:  # type: ignore[no-untyped-def]
        pass


def _compile(name: str) -> CompiledSignature:
    return compile_signature(getattr(SupportAgent, name), agent="SupportAgent", tool=name)


def _tool_taking(hint: Any) -> Callable[..., Any]:
    """A tool whose single parameter ``value`` has the (non-string) ``hint``."""

    def lookup(self: object, value: Any) -> None:
        pass

    lookup.__annotations__ = {"value": hint}
    return lookup


def _schema_of(hint: Any) -> dict[str, Any]:
    compiled = compile_signature(_tool_taking(hint), agent="SupportAgent", tool="lookup")
    return compiled.schema["properties"]["value"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (type(None), {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array", "items": {}}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Mapping[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict, {"type": "object", "additionalProperties": {}}),
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (Optional[str], {"anyOf": [{"type": "string"}, {"type": "null"}]}),  # noqa: UP045
        (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal[True], {"type": "boolean", "enum": [True]}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Priority, {"type": "string", "enum": ["low", "high"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (Annotated[int, "how many"], {"type": "integer", "description": "how many"}),
        (Address, _address_schema()),
        (
            Point,
            {
                "type": "object",
                "properties": {
                    "x": {"type": "number"},
                    "y": {"type": "number", "default": 0.0},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["x"],
                "additionalProperties": False,
            },
        ),
        (
            list[Annotated[str, "a tag"]] | None,
            {
                "anyOf": [
                    {"type": "array", "items": {"type": "string", "description": "a tag"}},
                    {"type": "null"},
                ]
            },
        ),
    ],
)
def test_schema_for_each_supported_hint(hint: Any, schema: dict[str, Any]) -> None:
    assert _schema_of(hint) == schema


def test_schema_of_a_tool_with_defaults_and_docstring() -> None:
    assert _compile("ticket").schema == {
        "type": "object",
        "properties": {
            "subject": {"type": "string", "description": "The subject line of the ticket."},
            "count": {"type": "integer", "description": "How many copies.", "default": 3},
            "priority": {"type": "string", "enum": ["low", "high"], "default": "low"},
        },
        "required": ["subject"],
        "additionalProperties": False,
    }


def test_schema_nested_records_from_string_annotations() -> None:
    order = _compile("everything").schema["properties"]["order"]
    assert order == {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "ship_to": _address_schema(),
            "points": {"type": "array", "items": _schema_of(Point)},
        },
        "required": ["id", "ship_to"],
        "additionalProperties": False,
    }


def test_schema_defaults_are_json_or_left_out() -> None:
    properties = _compile("defaults").schema["properties"]
    assert properties["p"] == {"type": "string", "enum": ["low", "high"], "default": "high"}
    assert properties["t"]["default"] == [1, 2]
    assert properties["o"] == {}
    assert properties["n"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert _compile("defaults").schema["required"] == []


def test_schema_annotated_description_beats_docstring() -> None:
    assert _compile("annotated").schema["properties"]["n"] == {
        "type": "integer",
        "description": "from Annotated",
        "default": 1,
    }


def test_schema_private_attrs_field_uses_its_init_name() -> None:
    assert _schema_of(Private)["properties"] == {"secret": {"type": "string"}}


def test_compile_accepts_a_bound_method() -> None:
    bound = compile_signature(SupportAgent().ticket, agent="SupportAgent", tool="ticket")
    assert bound == _compile("ticket")


# ---------------------------------------------------------------- docstrings


def test_docstring_summary_is_the_first_paragraph() -> None:
    assert docstring_summary(SupportAgent.ticket) == "Open a support ticket."
    assert docstring_summary(SupportAgent.undefined) == ""


def test_docstring_params_google_style() -> None:
    assert docstring_params(SupportAgent.ticket) == {
        "subject": "The subject line of the ticket.",
        "count": "How many copies.",
    }


def test_docstring_params_numpy_style() -> None:
    assert docstring_params(SupportAgent.numpy_doc) == {
        "a": "The a value, over two lines.",
        "b": "The b value.",
    }


def test_docstring_params_none() -> None:
    assert docstring_params(SupportAgent.everything) == {}
    assert docstring_params(SupportAgent.undefined) == {}


# ----------------------------------------------------------- compile errors


@pytest.mark.parametrize(
    ("hint", "problem"),
    [
        (datetime.datetime, "unsupported type hint datetime.datetime"),
        (bytes, "unsupported type hint bytes"),
        (set[int], "unsupported type hint set[int]"),
        (SupportAgent, f"unsupported type hint {__name__}.SupportAgent"),
        (Callable[[], int], "unsupported type hint collections.abc.Callable[[], int]"),
        (dict[int, str], "unsupported type hint dict[int, str] (object keys must be str)"),
        (list[datetime.date], "unsupported type hint datetime.date"),
        (int | bytes, "unsupported type hint bytes"),
        (Literal[1.5], "unsupported type hint typing.Literal[1.5]"),
        (Colour, f"unsupported type hint {__name__}.Colour (enum values must be"),
        (Node, "recursive type Node is not supported (field Node.children)"),
        (HasDate, "unsupported type hint datetime.datetime (field HasDate.when)"),
    ],
)
def test_compile_rejects_unsupported_hints(hint: Any, problem: str) -> None:
    with pytest.raises(AgentDefinitionError) as info:
        compile_signature(_tool_taking(hint), agent="SupportAgent", tool="lookup")
    assert str(info.value).startswith(f"SupportAgent.lookup: parameter 'value': {problem}")


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("star_args", "SupportAgent.star_args: parameter 'args': *args is not supported"),
        ("star_kwargs", "SupportAgent.star_kwargs: parameter 'kwargs': **kwargs is not supported"),
        (
            "positional",
            "SupportAgent.positional: parameter 'a': positional-only parameters are not supported",
        ),
        ("unannotated", "SupportAgent.unannotated: parameter 'a': missing type annotation"),
    ],
)
def test_compile_rejects_unsupported_parameters(tool: str, message: str) -> None:
    with pytest.raises(AgentDefinitionError) as info:
        _compile(tool)
    assert str(info.value) == message


def test_compile_unresolvable_string_annotation_names_the_parameter() -> None:
    with pytest.raises(AgentDefinitionError) as info:
        _compile("undefined")
    assert str(info.value) == (
        "SupportAgent.undefined: parameter 'b': cannot resolve type hint 'Missing': "
        "NameError: name 'Missing' is not defined"
    )


def test_compile_ignores_the_return_annotation() -> None:
    assert _compile("returns_unknown").bind({"a": 1}) == {"a": 1}


def test_compile_rejects_a_function_without_self() -> None:
    def lonely() -> None:
        pass

    with pytest.raises(AgentDefinitionError, match=r"^SupportAgent\.lonely: "):
        compile_signature(lonely, agent="SupportAgent", tool="lonely")


# ---------------------------------------------------------------------- bind


def test_bind_returns_kwargs_without_omitted_defaults() -> None:
    assert _compile("ticket").bind({"subject": "help"}) == {"subject": "help"}
    assert _compile("ticket").bind({"subject": "help", "count": 2, "priority": "high"}) == {
        "subject": "help",
        "count": 2,
        "priority": "high",
    }


def test_bind_structures_every_kind() -> None:
    kwargs = _compile("everything").bind(
        {
            "order": {
                "id": 7,
                "ship_to": {"street": "Main 1", "zip": "1234"},
                "points": [{"x": 1, "tags": ["a"]}],
            },
            "point": {"x": 1.5, "y": 2},
            "priority": "high",
            "level": 2,
            "pair": [1, "one"],
            "many": [1, 2.5],
            "labels": {"a": 1},
            "ratio": 1,
            "flag": True,
            "anything": {"free": ["form"]},
            "mixed": [1, 2],
            "private": {"secret": "s"},
        }
    )
    assert kwargs == {
        "order": Order(7, Address("Main 1", "1234"), [Point(1.0, tags=["a"])]),
        "point": Point(1.5, 2.0),
        "priority": Priority.HIGH,
        "level": Level.TWO,
        "pair": (1, "one"),
        "many": (1.0, 2.5),
        "labels": {"a": 1},
        "ratio": 1.0,
        "flag": True,
        "anything": {"free": ["form"]},
        "mixed": [1, 2],
        "private": Private("s"),
    }
    assert kwargs["priority"] is Priority.HIGH
    assert type(kwargs["ratio"]) is float
    assert type(kwargs["point"].y) is float
    assert type(kwargs["level"]) is Level


def test_bind_union_tries_members_in_order() -> None:
    compiled = compile_signature(_tool_taking(int | float | str), agent="A", tool="t")
    assert compiled.bind({"value": 1}) == {"value": 1}
    assert type(compiled.bind({"value": 1})["value"]) is int
    assert compiled.bind({"value": 1.5}) == {"value": 1.5}
    assert compiled.bind({"value": "x"}) == {"value": "x"}


def test_bind_accepts_an_integral_float_as_int() -> None:
    compiled = compile_signature(_tool_taking(int), agent="A", tool="t")
    assert compiled.bind({"value": 2.0}) == {"value": 2}
    assert type(compiled.bind({"value": 2.0})["value"]) is int


_ORDER: dict[str, Any] = {"id": 1, "ship_to": {"street": "s", "zip": "z"}}
_BASE: dict[str, Any] = {"order": _ORDER, "point": {"x": 0}, "priority": "low", "level": 1, "pair": [1, "a"]}


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("ticket", {}, "missing required argument 'subject'"),
        ("everything", {}, "missing required arguments 'order', 'point', 'priority', 'level', 'pair'"),
        ("ticket", {"subject": "s", "foo": 1}, "unexpected argument 'foo'"),
        ("ticket", ["subject"], "arguments must be a JSON object, got array"),
        ("ticket", None, "arguments must be a JSON object, got null"),
        ("ticket", {"subject": 1}, "argument 'subject': expected string, got integer"),
        ("ticket", {"subject": "s", "count": True}, "argument 'count': expected integer, got boolean"),
        ("ticket", {"subject": "s", "count": 1.5}, "argument 'count': expected integer, got number"),
        ("ticket", {"subject": "s", "count": "3"}, "argument 'count': expected integer, got string"),
        (
            "ticket",
            {"subject": "s", "priority": "urgent"},
            "argument 'priority': expected one of 'low', 'high', got 'urgent'",
        ),
        ("everything", {**_BASE, "ratio": False}, "argument 'ratio': expected number, got boolean"),
        ("everything", {**_BASE, "ratio": 10**400}, "argument 'ratio': number out of range"),
        ("everything", {**_BASE, "flag": 1}, "argument 'flag': expected boolean, got integer"),
        (
            "everything",
            {**_BASE, "priority": "LOW"},
            "argument 'priority': expected one of 'low', 'high', got 'LOW'",
        ),
        ("everything", {**_BASE, "level": True}, "argument 'level': expected one of 1, 2, got True"),
        (
            "everything",
            {**_BASE, "pair": [1, "a", 2]},
            "argument 'pair': expected an array of 2 items, got 3",
        ),
        ("everything", {**_BASE, "pair": [1, 2]}, "argument 'pair[1]': expected string, got integer"),
        ("everything", {**_BASE, "pair": "1a"}, "argument 'pair': expected array, got string"),
        ("everything", {**_BASE, "many": [1, "2"]}, "argument 'many[1]': expected number, got string"),
        (
            "everything",
            {**_BASE, "labels": {"a": "b"}},
            "argument 'labels[\"a\"]': expected integer, got string",
        ),
        ("everything", {**_BASE, "labels": [1]}, "argument 'labels': expected object or null, got array"),
        ("everything", {**_BASE, "mixed": [1, "b"]}, "argument 'mixed[1]': expected integer, got string"),
        (
            "everything",
            {**_BASE, "mixed": 1.5},
            "argument 'mixed': expected integer, array or string, got number",
        ),
        (
            "everything",
            {**_BASE, "order": {"id": 1, "ship_to": {"street": "s", "zip": 1}}},
            "argument 'order.ship_to.zip': expected string, got integer",
        ),
        (
            "everything",
            {**_BASE, "order": {"id": 1, "ship_to": {"street": "s"}}},
            "argument 'order.ship_to': missing required field 'zip'",
        ),
        (
            "everything",
            {**_BASE, "order": {"id": 1, "ship_to": {}}},
            "argument 'order.ship_to': missing required fields 'street', 'zip'",
        ),
        (
            "everything",
            {**_BASE, "order": {"id": 1, "ship_to": "home"}},
            "argument 'order.ship_to': expected object, got string",
        ),
        (
            "everything",
            {**_BASE, "order": {**_ORDER, "extra": 1}},
            "argument 'order': unexpected field 'extra'",
        ),
        (
            "everything",
            {**_BASE, "order": {**_ORDER, "points": [{"x": 1}, {"x": "a"}]}},
            "argument 'order.points[1].x': expected number, got string",
        ),
        (
            "everything",
            {**_BASE, "point": {"x": 1, "tags": [None]}},
            "argument 'point.tags[0]': expected string, got null",
        ),
        (
            "everything",
            {**_BASE, "private": {"_secret": "s"}},
            "argument 'private': unexpected field '_secret'",
        ),
    ],
)
def test_bind_rejects_with_a_message_naming_the_path(tool: str, arguments: Any, message: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        _compile(tool).bind(arguments)
    assert str(info.value) == message


def test_bind_reports_a_failing_record_validator() -> None:
    compiled = compile_signature(_tool_taking(Positive), agent="A", tool="t")
    assert compiled.bind({"value": {"value": 1}}) == {"value": Positive(1)}
    with pytest.raises(ToolArgumentsError, match=r"^argument 'value': invalid Positive: "):
        compiled.bind({"value": {"value": 0}})


def test_bind_optional_accepts_null() -> None:
    compiled = _compile("everything")
    assert compiled.bind({**_BASE, "labels": None, "private": None})["labels"] is None


# ---------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_names = st.sampled_from(
    [
        "order",
        "point",
        "priority",
        "level",
        "pair",
        "many",
        "labels",
        "ratio",
        "flag",
        "anything",
        "mixed",
        "private",
        "ship_to",
        "x",
        "id",
        "subject",
        "count",
    ]
)
_structured = st.fixed_dictionaries(
    {},
    optional={
        "order": st.fixed_dictionaries(
            {"id": _json, "ship_to": st.dictionaries(st.sampled_from(["street", "zip"]), _json)},
            optional={"points": st.lists(st.dictionaries(st.sampled_from(["x", "y"]), _json))},
        ),
        "point": st.dictionaries(st.sampled_from(["x", "y", "tags"]), _json),
        "priority": st.sampled_from(["low", "high", "mid"]) | _json,
        "pair": st.tuples(_json, _json).map(list) | _json,
        "mixed": _json,
    },
)


@pytest.mark.parametrize("tool", ["ticket", "everything"])
@given(arguments=_json | st.dictionaries(_names | st.text(max_size=3), _json) | _structured)
def test_bind_only_ever_returns_or_raises_tool_arguments_error(tool: str, arguments: Any) -> None:
    compiled = _compile(tool)
    try:
        kwargs = compiled.bind(arguments)
    except ToolArgumentsError as exc:
        assert str(exc)
    else:
        assert set(kwargs) <= set(compiled.schema["properties"])
