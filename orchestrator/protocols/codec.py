"""JSON frames and the cattrs converter: the one module that knows JSON.

Every adapter decodes through :func:`decode_frame` (size and nesting limits first,
then orjson, or stdlib ``json`` for what orjson would read differently) and
structures through :data:`converter`, a cattrs converter with strict primitive
hooks: a string field accepts only a JSON string, a number field only a JSON
number (never a bool), an object field only a JSON object. Each protocol module
registers its wire messages as a tagged union on it (:func:`register_union`). Any
failure surfaces as :class:`ProtocolError` (or one of its subclasses) so a bad
frame is an error for its conversation only.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from orchestrator.errors import FrameTooDeepError, FrameTooLargeError, ProtocolError
from orchestrator.events import ProtocolViolation

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH",
    "JsonObject",
    "converter",
    "decode_frame",
    "encode_frame",
    "omit_defaults",
    "register_opaque",
    "register_union",
    "structure",
    "structure_tagged",
    "unstructure",
    "unstructure_tagged",
    "violation",
]

JsonObject = dict[str, Any]
"""A JSON object as decoded: the type of opaque payload fields."""

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32
MAX_DEPTH = 1000
"""The deepest nesting a frame may be allowed: orjson reads 1,024 levels at most."""
TAG = "\x00tag"
"""Key of the tag of externally tagged unions; a peer's own key of that name is dropped."""

# Depth check, all in C (bytes methods and regexes), never recursion: drop escapes
# (they live only inside strings), keep only brackets and quotes, drop strings, then
# peel one level of innermost `[]`/`{}` pairs per pass.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf, which JSON cannot carry back
        raise ValueError(f"number {text[:32]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _as_orjson_writes(value: Any) -> Any:
    """What stdlib json writes for the types orjson writes and it does not: the same."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_as_orjson_writes
)
# orjson reads and writes a frame 5-10x faster than stdlib json, and agrees with it
# (and with this module's rules: no NaN, no lone surrogate) except on what these
# guard: it reads integers past 64 bits as floats (so text with a run of 19 digits
# goes to stdlib), writes NaN and infinities as null (so output with a null is written
# again by stdlib, which refuses them), and refuses what stdlib writes (str and
# int subclasses, non-string keys, big integers: stdlib writes those).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")  # 3x faster than a regex
_LONG_DIGITS = b"0" * 19
_STRICT = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _check_depth(data: bytes, max_depth: int) -> None:
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    # Removing two adjacent quotes never moves a character into or out of a string.
    data = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in data:
        data = _STRING.sub(b"", data)  # the few strings that hold brackets
    if b"[" * (max_depth + 1) in data or b"{" * (max_depth + 1) in data:
        raise FrameTooDeepError(f"frame nests JSON deeper than {max_depth} levels")
    if not data:
        return  # every bracket was inside a string
    for _ in range(max_depth):
        # Mark innermost pairs first so that `{[]}` loses one level per pass, not two.
        peeled = data.replace(b"[]", b"x").replace(b"{}", b"x")
        if len(peeled) == len(data):
            return  # nothing to peel: unbalanced garbage that json rejects
        data = peeled.replace(b"x", b"")
        if not data:
            return
    raise FrameTooDeepError(f"frame nests JSON deeper than {max_depth} levels")


def decode_frame(
    frame: object,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse one frame (str, or UTF-8 bytes) into JSON values, checking size before parsing
    and depth without recursion.

    Raises FrameTooLargeError, FrameTooDeepError, or ProtocolError (invalid UTF-8,
    malformed JSON, NaN/Infinity, no text at all). No other exception escapes.
    """
    if type(frame) is str and len(frame) * 4 <= max_bytes:  # the everyday frame: within the limit
        text, raw = frame, frame.encode("utf-8", "surrogatepass")
    else:
        text, raw = _sized(frame, max_bytes)
    # Fast path: no more openers than the limit cannot nest deeper than it.
    if text.count("[") + text.count("{") > max_depth:
        _check_depth(raw, max_depth)
    try:
        if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
            return orjson.loads(text)  # refuses unpaired surrogates and numbers past a double
        value = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        if "surrogate" in str(exc):
            raise ProtocolError("frame contains an unpaired surrogate") from None
        raise ProtocolError(f"malformed JSON: {exc}") from exc
    if "\\u" in text or not text.isascii():
        # "\ud800" (escaped, or a str given one) is valid JSON but no UTF-8 text: a reply
        # echoing it could never be sent.
        try:
            _ENCODER.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("frame contains an unpaired surrogate") from None
    return value


def _sized(text: object, max_bytes: int) -> tuple[str, bytes]:
    """A frame that may be over ``max_bytes`` (or is no str): as text and UTF-8, checked."""
    data: bytes | None
    if isinstance(text, bytes | bytearray):
        data = bytes(text)
        if len(data) > max_bytes:
            raise FrameTooLargeError(f"frame of {len(data)} bytes exceeds {max_bytes}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("frame is not valid UTF-8") from exc
    elif isinstance(text, str):
        if type(text) is not str:
            text = str.__str__(text)  # orjson reads exact str only
        data = None
        if len(text) * 4 > max_bytes and not text.isascii():
            data = text.encode("utf-8", "surrogatepass")
        if len(text if data is None else data) > max_bytes:
            raise FrameTooLargeError(f"frame of over {max_bytes} bytes")
    else:
        raise ProtocolError(f"frame must be text or bytes, not {type(text).__name__}")
    return text, data or text.encode("utf-8", "surrogatepass")


def encode_frame(value: Any) -> str:
    """Serialize JSON values compactly (UTF-8 text, no NaN); ProtocolError if not JSON-able.

    As orjson does, an enum is written as its value and a UUID as its string.
    """
    try:
        data = orjson.dumps(value, option=_STRICT)
        if b"null" not in data:  # else a NaN may hide behind it: stdlib refuses those
            return data.decode()
    except TypeError:
        pass  # stdlib writes some of it (see _STRICT), or says why not
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"value cannot be sent as JSON: {exc}") from exc


def violation(exc: ProtocolError) -> ProtocolViolation:
    """The neutral value for a rejected frame; ``reason`` is a fixed slug safe as a label."""
    if isinstance(exc, FrameTooLargeError):
        reason = "frame_too_large"
    elif isinstance(exc, FrameTooDeepError):
        reason = "frame_too_deep"
    else:
        reason = "bad_frame"
    return ProtocolViolation(reason=reason, message=str(exc))


# ---------------------------------------------------------------- converter


def _strict(name: str, *types: type) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) in types:
            return value
        raise ProtocolError(f"expected {name}, got {type(value).__name__}")

    return hook


def _number(value: Any, _: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise ProtocolError("number out of range") from None
    raise ProtocolError(f"expected number, got {type(value).__name__}")


def _is_homogeneous_tuple(cls: Any) -> bool:
    args = get_args(cls)
    return get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis


def _homogeneous_tuple(cls: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    item = get_args(cls)[0]
    item_hook = converter.get_structure_hook(item)

    def hook(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise ProtocolError(f"expected array, got {type(value).__name__}")
        return tuple([item_hook(element, item) for element in value])

    return hook


converter = cattrs.Converter(detailed_validation=False, use_alias=True)
"""Structures JSON values into wire messages and back; hooks are strict about JSON types."""

converter.register_structure_hook(str, _strict("string", str))
converter.register_structure_hook(int, _strict("integer", int))
converter.register_structure_hook(bool, _strict("boolean", bool))
converter.register_structure_hook(float, _number)
converter.register_structure_hook_func(lambda t: t == JsonObject, _strict("object", dict))
converter.register_unstructure_hook_func(lambda t: t == JsonObject, dict)
converter.register_structure_hook_factory(_is_homogeneous_tuple, _homogeneous_tuple)


def omit_defaults(*classes: type, keep: tuple[str, ...] = ()) -> None:
    """Unstructure these classes without the fields still at their defaults (optional keys).

    Fields named in ``keep`` are always written.
    """
    for cls in classes:
        kept: dict[str, Any] = {
            n: override(omit_if_default=False) for n in keep if hasattr(attrs.fields(cls), n)
        }
        hook: Callable[[Any], Any] = make_dict_unstructure_fn(
            cls, converter, _cattrs_omit_if_default=True, **kept
        )
        converter.register_unstructure_hook(cls, hook)


def register_union(union: Any, tags: Mapping[type, str], *, tag_name: str = TAG) -> None:
    """Register a tagged union of wire messages; ``tags`` maps each member to its tag.

    With the default ``tag_name`` the tag lives outside the payload (a Phoenix
    ``event``): use :func:`structure_tagged` / :func:`unstructure_tagged`.
    """
    configure_tagged_union(union, converter, tag_generator=tags.__getitem__, tag_name=tag_name)


def register_opaque(*classes: type) -> None:
    """Messages whose one field ``payload`` holds the whole free-form JSON object."""
    for cls in classes:
        converter.register_structure_hook(cls, lambda obj, cl: cl({k: v for k, v in obj.items() if k != TAG}))
        converter.register_unstructure_hook(cls, lambda message: dict(message.payload))


def structure_tagged(tag: str, payload: JsonObject, union: Any) -> Any:
    """Structure a payload whose tag travels beside it; ProtocolError if it does not fit."""
    return structure({**payload, TAG: tag}, union)


def unstructure_tagged(message: Any, union: Any) -> tuple[str, JsonObject]:
    """``(tag, payload)`` for a member of a union registered with the default tag name."""
    payload = converter.unstructure(message, unstructure_as=union)
    return payload.pop(TAG), payload


def structure(value: Any, cls: Any) -> Any:
    """Structure JSON values into ``cls`` (a message class or registered union).

    Raises ProtocolError for a missing field, an ill-typed field or an unknown tag.
    """
    if type(value) is not dict:
        raise ProtocolError(f"expected object, got {type(value).__name__}")
    try:
        return converter.structure(value, cls)
    except ProtocolError:
        raise
    except KeyError as exc:
        raise ProtocolError(f"missing or unknown field {exc.args[0]!r}") from exc
    except (TypeError, ValueError, AttributeError, cattrs.BaseValidationError) as exc:
        raise ProtocolError(f"ill-formed message: {exc}") from exc


def unstructure(value: Any, cls: Any = None) -> Any:
    """Unstructure a wire message (through its union when ``cls`` is given) into JSON values."""
    return converter.unstructure(value, unstructure_as=cls)
