"""Atheris (libFuzzer) harness over every decoder entry point: only ProtocolError may escape.

Run a short bounded session from the repository root::

    python fuzz/fuzz_decoders.py -atheris_runs=20000 -seed=1

The client sessions' ``receive`` methods must not raise at all (a bad frame comes back
as a ProtocolViolation value). Any other exception is a crash: libFuzzer prints it,
writes the input to ``crash-<sha1>`` and exits non-zero. Inputs are raw bytes, text
(surrogates included), or a valid frame with fuzzed bytes spliced in; each goes to
every entry point at the default limits and at small ones. tests/test_fuzz_decoders.py
holds the same contract as hypothesis properties.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["orchestrator", "cattrs"]):
    from orchestrator import events
    from orchestrator.errors import ProtocolError
    from orchestrator.protocols import arinova, codec, conversimple
    from orchestrator.protocols.arinova import ArinovaClient, ArinovaServer
    from orchestrator.protocols.conversimple import ConversimpleClient, ConversimpleServer

# Decoder bugs found and not yet fixed; tolerated so a bounded CI run stays green while
# it hunts for others. Keep in step with KNOWN_BUGS in tests/test_fuzz_decoders.py.
KNOWN_BUGS: dict[str, Callable[[BaseException], bool]] = {}


def _entries(max_bytes: int, max_depth: int) -> list[tuple[str, Callable[[Any], Any], bool]]:
    """``(name, decode, never_raises)`` for each entry point; sessions are fresh per input."""

    def joining(frame: Any) -> Any:
        client = ConversimpleClient("cust", "conv-1", max_bytes=max_bytes, max_depth=max_depth)
        client.join()  # a join is pending: replies take the join path
        return client.receive(frame)

    limits = {"max_bytes": max_bytes, "max_depth": max_depth}
    return [
        ("codec.decode_frame", lambda t: codec.decode_frame(t, **limits), False),
        ("conversimple.decode_server_frame", lambda t: conversimple.decode_server_frame(t, **limits), False),
        ("conversimple.decode_client_push", lambda t: conversimple.decode_client_push(t, **limits), False),
        (
            "ConversimpleClient.receive",
            lambda t: ConversimpleClient("cust", max_bytes=max_bytes, max_depth=max_depth).receive(t),
            True,
        ),
        ("ConversimpleClient.receive/joining", joining, True),
        ("ConversimpleServer.receive", lambda t: ConversimpleServer(max_bytes, max_depth).receive(t), False),
        ("arinova.decode_message", lambda t: arinova.decode_message(t, **limits), False),
        (
            "ArinovaClient.receive",
            lambda t: ArinovaClient("bot-token", max_bytes, max_depth).receive(t),
            True,
        ),
        ("ArinovaServer.receive", lambda t: ArinovaServer(max_bytes, max_depth).receive(t), False),
    ]


ENTRIES = _entries(codec.DEFAULT_MAX_BYTES, codec.DEFAULT_MAX_DEPTH) + _entries(512, 4)

SEEDS = [
    '["1","2","customer:cust","phx_reply",{"status":"ok","response":{}}]',
    '["1","2","customer:cust","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]',
    '["1",null,"customer:cust","tool_call_request",{"call_id":"c1","tool_name":"t","arguments":{"q":1},'
    '"timeout_seconds":5.0,"conversation_id":"conv-1"}]',
    '["1",null,"customer:cust","conversation_ready",{"conversation_id":"conv-1","agent_id":"a"}]',
    '["1",null,"customer:cust","conversation_lifecycle",{"event":"conversation_ended","conversation_id":"x"}]',
    '["1",null,"customer:cust","error_notification",{"error_type":"e","error_message":"m"}]',
    '{"join_ref":null,"ref":"3","topic":"customer:cust","event":"tool_call_error","payload":'
    '{"call_id":"c1","conversation_id":"conv-1","error":{"message":"m","timestamp":"t"},"tool_name":"t"}}',
    '{"join_ref":null,"ref":"4","topic":"customer:cust","event":"register_conversation_tools","payload":'
    '{"conversation_id":"c","tools":[{"name":"t","description":"d","parameters":{}}]}}',
    '{"type":"task","taskId":"t1","conversationId":"conv-1","content":"hi"}',
    '{"type":"auth_ok","agentName":"bot"}',
    '{"type":"agent_chunk","taskId":"t1","chunk":"x"}',
    '{"type":"agent_auth","botToken":"tok"}',
    '{"type":"ping"}',
]


# What a hostile peer puts where a well-typed value belongs (spliced as JSON text).
HOSTILE = ["1e999", "-1e999", "1" + "0" * 309, "-" + "9" * 4300, "1" * 4301, "-0", "NaN", "null", "true",
           '""', '"\\ud800"', '"\\u0000tag"', "[]", "{}", "[" * 40 + "]" * 40, '{"a":{"b":{}}}']  # fmt: skip
SEED_VALUES = [json.loads(seed) for seed in SEEDS]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    items = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ()
    for key, item in items:
        found += _nodes(item, (*path, key))
    return found


def _dumps(value: Any, path: tuple[Any, ...], literal: str) -> str:
    """``value`` as JSON text with the node at ``path`` written as ``literal``."""
    if not path:
        return literal
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        return (
            "["
            + ",".join(_dumps(v, rest, literal) if i == head else json.dumps(v) for i, v in enumerate(value))
            + "]"
        )
    parts = (
        f"{json.dumps(k)}:{_dumps(v, rest, literal) if k == head else json.dumps(v)}"
        for k, v in value.items()
    )
    return "{" + ",".join(parts) + "}"


def make_input(data: bytes) -> str | bytes:
    """Raw bytes, text, a seed frame with fuzzed text spliced in (or cut out), or a seed
    frame with one JSON node replaced by a hostile literal or fuzzed text."""
    fdp = atheris.FuzzedDataProvider(data)
    kind: int = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        raw: bytes = fdp.ConsumeBytes(fdp.remaining_bytes())
        return raw
    if kind == 1:
        text: str = fdp.ConsumeUnicode(fdp.remaining_bytes())
        return text
    index: int = fdp.ConsumeIntInRange(0, len(SEEDS) - 1)
    if kind == 4:
        nodes = _nodes(SEED_VALUES[index])
        path = nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)]
        choice: int = fdp.ConsumeIntInRange(0, len(HOSTILE))
        literal: str = HOSTILE[choice] if choice < len(HOSTILE) else fdp.ConsumeUnicode(fdp.remaining_bytes())
        return _dumps(SEED_VALUES[index], path, literal)
    seed = SEEDS[index]
    at: int = fdp.ConsumeIntInRange(0, len(seed))
    cut: int = fdp.ConsumeIntInRange(0, 16) if kind == 3 else 0
    spliced: str = fdp.ConsumeUnicode(fdp.remaining_bytes())
    return seed[:at] + spliced + seed[at + cut :]


def test_one_input(data: bytes) -> None:
    """The contract; an exception escaping here is a crash."""
    frame = make_input(data)
    for name, decode, never_raises in ENTRIES:
        try:
            result = decode(frame)
        except Exception as exc:
            allowed = isinstance(exc, ProtocolError) and not never_raises
            if allowed or any(matches(exc) for matches in KNOWN_BUGS.values()):
                continue
            raise RuntimeError(f"{name} let {type(exc).__name__} escape for {frame!r:.500}") from exc
        if never_raises and not (isinstance(result, list) and result):
            raise RuntimeError(f"{name} returned {result!r:.200} for {frame!r:.500}")
        if never_raises and any(
            isinstance(item, events.ProtocolViolation) and not item.reason for item in result
        ):
            raise RuntimeError(f"{name} returned a violation without a reason")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
