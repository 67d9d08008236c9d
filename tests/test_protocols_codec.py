"""The JSON codec: frame limits, strict structuring, and fuzzing (only ProtocolError escapes)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import FrameTooDeepError, FrameTooLargeError, ProtocolError
from orchestrator.events import ProtocolViolation
from orchestrator.protocols import codec
from orchestrator.protocols.codec import JsonObject, decode_frame, encode_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# ---------------------------------------------------------------- decode / encode


def test_decode_frame_parses_text_and_bytes() -> None:
    assert decode_frame('{"a":[1,2.5,"x",null,true]}') == {"a": [1, 2.5, "x", None, True]}
    assert decode_frame(b'["\xc3\xa9"]') == ["é"]
    assert decode_frame(bytearray(b"[]")) == []


def test_encode_frame_is_compact_and_round_trips_unicode() -> None:
    assert encode_frame({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'
    assert decode_frame(encode_frame((1, 2))) == [1, 2]


@dataclasses.dataclass
class _Point:
    x: int
    y: int


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        {"a": None, "b": [-math.inf]},
        {1j},
        object(),
        {"k": b"bytes"},
        [datetime.datetime(2026, 1, 1)],
        _Point(1, 2),
    ],
)
def test_encode_frame_rejects_values_json_cannot_carry(value: Any) -> None:
    with pytest.raises(ProtocolError):
        encode_frame(value)


class _Text(str):
    pass


class _Number(int):
    pass


def test_encode_frame_writes_what_stdlib_json_writes() -> None:
    # Each of these the fast encoder refuses: the frame still goes, as stdlib writes it.
    assert encode_frame({"n": 2**70, "k": {1: True}}) == '{"n":1180591620717411303424,"k":{"1":true}}'
    assert encode_frame([_Text("x"), _Number(3)]) == '["x",3]'
    assert json.loads(encode_frame({"t": 0.1, "e": 1e16})) == {"t": 0.1, "e": 1e16}


class _Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("extra", [{}, {"note": None}, {"big": 2**70}])
def test_encode_frame_writes_enums_and_uuids_the_same_whichever_encoder_writes(extra: JsonObject) -> None:
    # A null or a big integer sends the value to stdlib json: the enum must not change meaning.
    value = {"c": _Color.RED, "u": uuid.UUID(int=1), **extra}
    assert json.loads(encode_frame(value)) == {"c": "red", "u": str(uuid.UUID(int=1)), **extra}


class _Frame(str):
    pass


def test_decode_frame_reads_a_str_subclass_and_refuses_a_raw_lone_surrogate_on_either_path() -> None:
    assert decode_frame(_Frame('{"a":[1]}')) == {"a": [1]}
    for text in ('["\ud800"]', '["\ud800", 1234567890123456789]'):  # the second goes to stdlib json
        with pytest.raises(ProtocolError, match="surrogate"):
            decode_frame(text)


def test_decode_frame_keeps_integers_past_64_bits_exact() -> None:
    big = 2**64 + 1
    frame = decode_frame(f'{{"n":{big},"m":-{big},"s":"{big}","small":{2**63 - 1}}}')
    assert frame == {"n": big, "m": -big, "s": str(big), "small": 2**63 - 1}
    assert type(frame["n"]) is int and type(frame["small"]) is int


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"a":}',
        "[1,]",
        "NaN",
        "[Infinity]",
        "[-Infinity]",
        "{'a': 1}",
        "[1] x",
        "\ufeff[]",
        "1" * 5000,
    ],
)
def test_decode_frame_rejects_malformed_json(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(text)
    assert type(info.value) is ProtocolError


def test_decode_frame_rejects_invalid_utf8_and_other_types() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_frame(b'["\xff"]')
    with pytest.raises(ProtocolError):
        decode_frame(123)  # type: ignore[arg-type]


def test_decode_frame_checks_size_before_parsing() -> None:
    assert decode_frame("[" + "1," * 40 + "1]", max_bytes=100) is not None
    with pytest.raises(FrameTooLargeError):
        decode_frame("x" * 101, max_bytes=100)  # not JSON: size is checked first
    with pytest.raises(FrameTooLargeError):
        decode_frame(b"x" * 101, max_bytes=100)


def test_decode_frame_counts_utf8_bytes_not_characters() -> None:
    text = json.dumps(["é" * 40], ensure_ascii=False)  # 44 chars, 84 bytes
    assert decode_frame(text, max_bytes=84) == ["é" * 40]
    with pytest.raises(FrameTooLargeError):
        decode_frame(text, max_bytes=83)


@pytest.mark.parametrize("depth", [1, 31, 32])
def test_decode_frame_accepts_nesting_up_to_the_limit(depth: int) -> None:
    assert decode_frame(json.dumps(nested(depth))) == nested(depth)


@pytest.mark.parametrize("depth", [33, 100, 900])
def test_decode_frame_rejects_nesting_past_the_limit(depth: int) -> None:
    with pytest.raises(FrameTooDeepError):
        decode_frame(json.dumps(nested(depth)))


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, "[" * 100_000, "{" * 100_000, '{"a":' * 100_000]
)
def test_decode_frame_rejects_100k_deep_frames_without_recursion(text: str) -> None:
    with pytest.raises(FrameTooDeepError):
        decode_frame(text, max_bytes=1 << 21)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    tricky = ["[[[[{{{{" * 10, 'quote \\" [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[', "\\\\", "{}" * 40]
    assert decode_frame(json.dumps(tricky)) == tricky
    assert decode_frame(json.dumps({"a": tricky, "b": nested(30)})) is not None


def test_many_shallow_brackets_pass_the_depth_check() -> None:
    wide = [{"a": [1, {"b": [2]}]} for _ in range(2000)]
    assert decode_frame(json.dumps(wide)) == wide
    alternating = nested(32, leaf=[])  # `{[{[ ... ]}]}` peels one level per pass
    with pytest.raises(FrameTooDeepError):
        decode_frame(json.dumps(alternating))


def test_violation_maps_errors_to_label_safe_reasons() -> None:
    assert codec.violation(FrameTooLargeError("x")) == ProtocolViolation("frame_too_large", "x")
    assert codec.violation(FrameTooDeepError("y")).reason == "frame_too_deep"
    assert codec.violation(ProtocolError("z")).reason == "bad_frame"


# ---------------------------------------------------------------- converter


@attrs.frozen
class Sample:
    name: str
    count: int = 0
    ratio: float | None = None
    flag: bool = False
    extra: JsonObject = attrs.field(factory=dict)
    items: tuple[JsonObject, ...] = ()
    camel: str = attrs.field(default="", alias="camelCase")


def test_structure_accepts_json_types_and_aliases() -> None:
    value = {
        "name": "n",
        "count": 2,
        "ratio": 1,
        "flag": True,
        "extra": {"x": 1},
        "items": [{}],
        "camelCase": "c",
    }
    assert codec.structure(value, Sample) == Sample("n", 2, 1.0, True, {"x": 1}, ({},), "c")
    assert codec.structure({"name": "n", "unknown": 1}, Sample) == Sample("n")  # forward compatible


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"name": 1},
        {"name": None},
        {"name": "n", "count": "2"},
        {"name": "n", "count": 1.5},
        {"name": "n", "count": True},
        {"name": "n", "ratio": True},
        {"name": "n", "ratio": "1"},
        {"name": "n", "flag": 1},
        {"name": "n", "extra": []},
        {"name": "n", "items": ""},
        {"name": "n", "items": {"a": 1}},
        {"name": "n", "items": [1]},
        {"name": "n", "camelCase": 5},
    ],
)
def test_structure_rejects_missing_and_ill_typed_fields(value: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        codec.structure(value, Sample)


@pytest.mark.parametrize("value", [None, [], "s", 1])
def test_structure_rejects_non_objects(value: Any) -> None:
    with pytest.raises(ProtocolError):
        codec.structure(value, Sample)


# ---------------------------------------------------------------- fuzz


@given(st.text())
def test_fuzz_decode_frame_text_raises_only_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(text, max_bytes=512, max_depth=4)


@given(st.binary())
def test_fuzz_decode_frame_bytes_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data, max_bytes=512, max_depth=4)


@given(json_values)
def test_fuzz_json_values_round_trip(value: Any) -> None:
    assert decode_frame(encode_frame(value)) == value


@settings(max_examples=300)
@given(json_values, st.integers(min_value=0, max_value=6))
def test_fuzz_depth_check_matches_real_depth(value: Any, max_depth: int) -> None:
    text = encode_frame(value)
    if depth_of(value) > max_depth:
        with pytest.raises(FrameTooDeepError):
            decode_frame(text, max_depth=max_depth)
    else:
        assert decode_frame(text, max_depth=max_depth) == value


@given(st.dictionaries(st.sampled_from(["name", "count", "ratio", "flag", "extra", "items"]), json_values))
def test_fuzz_structure_raises_only_protocol_error(value: dict[str, Any]) -> None:
    with contextlib.suppress(ProtocolError):
        codec.structure(value, Sample)
