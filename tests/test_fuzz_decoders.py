"""Every decoder entry point fuzzed with hypothesis: only ProtocolError may escape.

The ``receive`` methods of the client sessions never raise: a bad frame comes back
as a :class:`~orchestrator.events.ProtocolViolation`. Inputs: arbitrary text
(surrogates included), bytes, JSON values (deep, huge or non-finite numbers, NaN-like
strings, unicode), frames shaped like each protocol's, and mutations of valid frames.
Examples are bounded so the file runs in seconds; ``fuzz/`` holds the atheris harness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import events
from orchestrator.errors import FrameTooDeepError, FrameTooLargeError, ProtocolError
from orchestrator.protocols import arinova, codec, conversimple
from orchestrator.protocols.arinova import ArinovaClient, ArinovaServer
from orchestrator.protocols.conversimple import ConversimpleClient, ConversimpleServer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULT = (codec.DEFAULT_MAX_BYTES, codec.DEFAULT_MAX_DEPTH)
SMALL = (512, 4)  # (max_bytes, max_depth): the limits trip on ordinary inputs too


@attrs.frozen
class Entry:
    name: str
    decode: Callable[[Any], Any]
    never_raises: bool = False


def entry_points(max_bytes: int, max_depth: int) -> list[Entry]:
    """Every decoder entry point at these limits; sessions are made fresh for each input."""

    def joining(frame: Any) -> Any:
        client = ConversimpleClient("cust", "conv-1", max_bytes=max_bytes, max_depth=max_depth)
        client.join()  # a join is pending: replies take the join path
        return client.receive(frame)

    limits = {"max_bytes": max_bytes, "max_depth": max_depth}
    return [
        Entry("codec.decode_frame", lambda t: codec.decode_frame(t, **limits)),
        Entry("conversimple.decode_server_frame", lambda t: conversimple.decode_server_frame(t, **limits)),
        Entry("conversimple.decode_client_push", lambda t: conversimple.decode_client_push(t, **limits)),
        Entry(
            "ConversimpleClient.receive/control",
            lambda t: ConversimpleClient("cust", max_bytes=max_bytes, max_depth=max_depth).receive(t),
            never_raises=True,
        ),
        Entry("ConversimpleClient.receive/joining", joining, never_raises=True),
        Entry("ConversimpleServer.receive", lambda t: ConversimpleServer(max_bytes, max_depth).receive(t)),
        Entry("arinova.decode_message", lambda t: arinova.decode_message(t, **limits)),
        Entry(
            "ArinovaClient.receive",
            lambda t: ArinovaClient("bot-token", max_bytes, max_depth).receive(t),
            never_raises=True,
        ),
        Entry("ArinovaServer.receive", lambda t: ArinovaServer(max_bytes, max_depth).receive(t)),
    ]


ENTRIES = entry_points(*DEFAULT) + entry_points(*SMALL)
VIOLATION_REASONS = {"frame_too_large", "frame_too_deep", "bad_frame"}


# Decoder bugs this suite found, not yet fixed (see the strict xfail reproducers at
# the end). The fuzzers tolerate exactly these so that they keep hunting for others;
# once a fix lands its reproducer XPASSes, which fails: then drop its entry here.
KNOWN_BUGS: dict[str, Callable[[BaseException], bool]] = {}


def known_bug(exc: BaseException) -> bool:
    return any(matches(exc) for matches in KNOWN_BUGS.values())


def check(frame: Any) -> None:
    """Feed ``frame`` to every entry point; anything but the contract fails the test."""
    for entry in ENTRIES:
        try:
            result = entry.decode(frame)
        except ProtocolError as exc:
            if entry.never_raises and not known_bug(exc):
                raise AssertionError(f"{entry.name} raised {exc!r} for {frame!r:.300}") from exc
            continue
        except Exception as exc:
            if known_bug(exc):
                continue
            raise AssertionError(f"{entry.name} raised {exc!r} for {frame!r:.300}") from exc
        if entry.never_raises:
            assert isinstance(result, list) and result, entry.name
            for item in result:
                if isinstance(item, events.ProtocolViolation):
                    assert item.reason in VIOLATION_REASONS


# ---------------------------------------------------------------- strategies

# Every code point, lone surrogates included (the default alphabet leaves them out).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
NAN_LIKE = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "-0", "\x00tag", ""])
KEYS = st.sampled_from(
    ["join_ref", "ref", "topic", "event", "payload", "status", "response", "reason", "conversation_id",
     "agent_id", "call_id", "tool_name", "arguments", "timeout_seconds", "error_type", "error_message",
     "type", "botToken", "agentName", "error", "taskId", "conversationId", "content", "chunk", "\x00tag"]
)  # fmt: skip
TAGS = st.sampled_from(
    [*conversimple._SERVER_EVENTS, *conversimple._CLIENT_EVENTS, *arinova._TYPES, "conversation_started",
     "conversation_ended", "ok", "error"]
)  # fmt: skip


@attrs.frozen
class Raw:
    """A literal spliced into JSON text as is: numbers json.dumps cannot write."""

    text: str


HOSTILE_NUMBERS = [
    "1e999", "-1e999", "1E400", "1e-999", "-0", "-0.0", "0e0", "1" + "0" * 309, "-" + "9" * 4300,
    "1" * 4301, "NaN", "Infinity",
]  # fmt: skip
RAW_NUMBERS = st.sampled_from(HOSTILE_NUMBERS).map(Raw)
STRINGS = st.text(ANY_CHAR, max_size=30) | NAN_LIKE | TAGS
LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | RAW_NUMBERS | STRINGS
)  # fmt: skip
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS | STRINGS, inner, max_size=5),
    max_leaves=40,
)


def dumps(value: Any) -> str:
    """JSON text, with :class:`Raw` literals spliced in and lone surrogates kept."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


ID = st.none() | st.sampled_from(["1", "2", "3"]) | JSON_VALUES
PAYLOADS = st.dictionaries(KEYS, ID | TAGS, max_size=8) | st.dictionaries(
    KEYS | STRINGS, JSON_VALUES, max_size=4
)
CONVERSIMPLE_FRAMES = st.one_of(
    st.tuples(ID, ID, st.sampled_from(["customer:cust"]) | ID, TAGS | ID, PAYLOADS).map(list),
    st.tuples(ID, ID, ID, TAGS).map(list),
    st.fixed_dictionaries(
        {}, optional={"join_ref": ID, "ref": ID, "topic": ID, "event": TAGS | ID, "payload": PAYLOADS | ID}
    ),
)
ARINOVA_FRAMES = st.builds(lambda tag, rest: {**rest, "type": tag}, TAGS | JSON_VALUES, PAYLOADS)


def valid_frames() -> list[str]:
    """Frames every decoder accepts in some direction, made by the real encoders."""
    server, client = ConversimpleServer(), ConversimpleClient("cust", "conv-1")
    join = conversimple.decode_client_push(client.join())
    frames = [
        client.join(),
        client.heartbeat(),
        server.reply(join),
        server.reply(join, "error", {"reason": "x"}),
    ]
    frames += [
        client.send(events.ToolResult("call-1", "t", {"ok": [1, 2.5, None]})),
        client.send(events.ToolFailure("call-1", "t", "boom", timestamp=1.0)),
        client.send(events.RegisterTools(({"name": "t", "description": "d", "parameters": {}},))),
        server.push(conversimple.ToolCallRequest("call-1", "lookup", {"q": "x"}, 5.0, "conv-1")),
        server.push(conversimple.ConversationReady("conv-1", "agent")),
        server.push(conversimple.ConversationLifecycle("conversation_ended", "conv-1")),
        server.push(conversimple.ErrorNotification("rate", "slow down", "conv-1")),
        server.push(conversimple.ConfigUpdate({"k": "v"})),
        server.push(conversimple.UnknownServerEvent("future_event", {"a": 1})),
        '["1","2","customer:cust","phx_reply",{"status":"ok","response":{}}]',
        '{"join_ref":null,"ref":"7","topic":"customer:cust","event":"heartbeat","payload":{}}',
    ]
    frames += [
        arinova.encode_message(message)
        for message in (
            arinova.AgentAuth("tok"), arinova.AuthOk("bot"), arinova.AuthError("bad"),
            arinova.Task("t1", "conv-1", "hi"), arinova.AgentChunk("t1", "x"),
            arinova.AgentComplete("t1", "done"), arinova.AgentError("t1", "no"), arinova.Ping(),
            arinova.Pong(), arinova.UnknownMessage("future", {"a": [1]}),
        )
    ]  # fmt: skip
    return frames


VALID = valid_frames()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame with a few byte-level edits: flips, cuts, inserts, duplications."""
    data = bytearray(draw(st.sampled_from(VALID)).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] = draw(st.sampled_from([0, 0x22, 0x5B, 0x5C, 0x7B, 0x7D, 0xC0, 0xFF])) or data[at] ^ 0x40
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=8) | st.sampled_from([b'"', b"[", b"{", b"\\", b"1e999"])
            )
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
        else:
            data = data[:at]
    return bytes(data)


Path = tuple[int | str, ...]


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every node of a JSON value, the root included."""
    found = [prefix]
    if isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    return found


def replaced(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        return [replaced(item, rest, new) if index == head else item for index, item in enumerate(value)]
    return {key: replaced(item, rest, new) if key == head else item for key, item in value.items()}


VALID_VALUES = [json.loads(frame) for frame in VALID]
# What a hostile peer puts where a well-typed value belongs.
HOSTILE: list[Any] = [Raw(number) for number in HOSTILE_NUMBERS] + [
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "\ud800",
    "NaN",
    "\x00tag",
    [],
    {},
    [[[[[[]]]]]],
    {"a": {"b": {}}},
    Raw("[" * 40),
]


@st.composite
def substituted(draw: st.DrawFn) -> str:
    """A valid frame with one to three of its JSON nodes replaced by arbitrary values."""
    value = draw(st.sampled_from(VALID_VALUES))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(value)))
        value = replaced(value, path, draw(st.sampled_from(HOSTILE) | JSON_VALUES))
    return dumps(value)


# ---------------------------------------------------------------- properties


@FUZZ
@given(st.text(ANY_CHAR, max_size=200))
def test_fuzz_decoders_arbitrary_text(text: str) -> None:
    check(text)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_decoders_arbitrary_bytes(data: bytes) -> None:
    check(data)
    check(bytearray(data))


@FUZZ
@given(JSON_VALUES)
def test_fuzz_decoders_arbitrary_json_values(value: Any) -> None:
    text = dumps(value)
    check(text)
    check(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(CONVERSIMPLE_FRAMES | ARINOVA_FRAMES)
def test_fuzz_decoders_protocol_shaped_frames(frame: Any) -> None:
    check(dumps(frame))


@FUZZ
@given(mutated())
def test_fuzz_decoders_mutated_valid_frames(data: bytes) -> None:
    check(data)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    check(text)


@FUZZ
@given(substituted())
def test_fuzz_decoders_valid_frames_with_hostile_fields(text: str) -> None:
    check(text)


def test_fuzz_decoders_every_field_of_every_valid_frame_replaced() -> None:
    """Systematic: each node of each valid frame, replaced by each hostile value."""
    for value in VALID_VALUES:
        for path in paths(value):
            for hostile in HOSTILE:
                check(dumps(replaced(value, path, hostile)))


def test_fuzz_decoders_valid_frames_decode() -> None:
    for frame in VALID:
        check(frame)
        value = codec.decode_frame(frame)
        assert isinstance(value, list | dict)


# ---------------------------------------------------------------- direct cases


def nested(depth: int, kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_fuzz_decoders_deep_nesting_is_a_protocol_error(kind: str, depth: int) -> None:
    text = nested(depth, kind)
    with pytest.raises(FrameTooDeepError):
        codec.decode_frame(text)
    check(text)
    check(text.encode())
    payload = '["1","2","customer:cust","phx_reply",' + nested(depth, kind) + "]"
    check(payload)
    [reply] = ConversimpleClient("cust").receive(payload)
    assert isinstance(reply, events.ProtocolViolation) and reply.reason == "frame_too_deep"


def test_fuzz_decoders_depth_limit_is_exact() -> None:
    codec.decode_frame(nested(32))
    codec.decode_frame(nested(32, "{"))
    # Brackets inside strings, escaped quotes and mixed nesting do not fool the count.
    codec.decode_frame('["' + "[" * 100 + '\\"' + "{" * 100 + '"]')
    mixed = "[{" * 16 + '"' + "}]" * 16
    assert isinstance(codec.decode_frame('{"a":' * 31 + '"[[[[\\\\"' + "}" * 31), dict)
    with pytest.raises(FrameTooDeepError):
        codec.decode_frame("[{" * 16 + "[]" + "}]" * 16)
    with pytest.raises(ProtocolError):
        codec.decode_frame(mixed)


def test_fuzz_decoders_unbalanced_and_garbage_brackets() -> None:
    for text in ["[" * 40, "]" * 40, "{" * 40, "[{" * 40 + "]" * 80, '"' + "[" * 40, "[]" * 100_000]:
        check(text)
        check(text.encode())


@pytest.mark.parametrize("kind", ["ascii", "multibyte", "bytes", "surrogates"])
def test_fuzz_decoders_oversized_frames(kind: str) -> None:
    limit = codec.DEFAULT_MAX_BYTES
    frame: str | bytes
    if kind == "ascii":
        frame = '"' + "x" * limit + '"'
    elif kind == "multibyte":
        frame = '"' + "€" * (limit // 3 + 1) + '"'  # few characters, over the limit in bytes
    elif kind == "bytes":
        frame = b'"' + b"x" * limit + b'"'
    else:
        frame = '"' + "\ud800" * (limit // 3 + 1) + '"'
    with pytest.raises(FrameTooLargeError):
        codec.decode_frame(frame)
    check(frame)
    assert ConversimpleClient("cust").receive(frame)[0].reason == "frame_too_large"  # type: ignore[union-attr]
    assert ArinovaClient("tok").receive(frame)[0].reason == "frame_too_large"  # type: ignore[union-attr]


def test_fuzz_decoders_frames_just_under_the_limit_decode() -> None:
    limit = codec.DEFAULT_MAX_BYTES
    assert codec.decode_frame('"' + "€" * ((limit - 2) // 3) + '"')
    assert codec.decode_frame(b'"' + b"x" * (limit - 2) + b'"')


@pytest.mark.parametrize(
    "frame",
    [None, 42, 1.5, ["a"], {"type": "ping"}, object()],
)
def test_fuzz_decoders_non_text_input_is_a_protocol_error(frame: Any) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_frame(frame)
    check(frame)


def test_fuzz_decoders_huge_and_non_finite_numbers() -> None:
    for literal in ["1" * 5000, "-" + "9" * 10_000, "NaN", "Infinity", "-Infinity"]:
        with pytest.raises(ProtocolError):
            codec.decode_frame(literal)
    for literal in ["1e999", "-1e999", "1e-999", "1" * 4000]:
        check(literal)
        check(f'{{"type":"task","taskId":"t","conversationId":"c","content":{literal}}}')


# ---------------------------------------------------------------- known bugs (see KNOWN_BUGS)

HUGE_TIMEOUT = (
    '[null,null,"customer:c","tool_call_request",{"call_id":"a","tool_name":"b","timeout_seconds":1'
    + "0" * 309
    + "}]"
)
INFINITE_REPLY = '[null,"2","customer:cust","phx_reply",{"status":"error","response":{"x":1e999}}]'


def test_fuzz_decoders_huge_integer_timeout_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        conversimple.decode_server_frame(HUGE_TIMEOUT)
    result = ConversimpleClient("c").receive(HUGE_TIMEOUT)
    assert isinstance(result[0], events.ProtocolViolation)


def test_fuzz_decoders_non_finite_number_in_join_reply_is_a_violation() -> None:
    client = ConversimpleClient("cust")
    client.join()
    result = client.receive(INFINITE_REPLY)
    assert isinstance(result[0], conversimple.JoinRejected | events.ProtocolViolation)
