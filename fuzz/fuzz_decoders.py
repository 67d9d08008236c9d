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

import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["orchestrator", "cattrs"]):
    from orchestrator import events
    from orchestrator.errors import ProtocolError
    from orchestrator.protocols import arinova, codec, conversimple
    from orchestrator.protocols.arinova import ArinovaClient, ArinovaServer
    from orchestrator.protocols.conversimple import ConversimpleClient, ConversimpleServer

# Decoder bugs found and not yet fixed; tolerated so a bounded CI run stays green while
# it hunts for others. Keep in step with KNOWN_BUGS in tests/test_fuzz_decoders.py.
KNOWN_BUGS: dict[str, Callable[[BaseException], bool]] = {
    "huge integer in a float field": lambda exc: isinstance(exc, OverflowError),
    "non-finite number in a join reply": lambda exc: (
        isinstance(exc, ProtocolError) and str(exc).startswith("value cannot be sent as JSON")
    ),
}


def _joining_client(**limits: int) -> ConversimpleClient:
    client = ConversimpleClient("cust", "conv-1", **limits)
    client.join()
    return client


def _entries(limits: dict[str, int]) -> list[tuple[str, Callable[[Any], Any], bool]]:
    """``(name, decode, never_raises)`` for each entry point, with fresh sessions per input."""
    return [
        ("codec.decode_frame", lambda t: codec.decode_frame(t, **limits), False),
        ("conversimple.decode_server_frame", lambda t: conversimple.decode_server_frame(t, **limits), False),
        ("conversimple.decode_client_push", lambda t: conversimple.decode_client_push(t, **limits), False),
        ("ConversimpleClient.receive", lambda t: ConversimpleClient("cust", **limits).receive(t), True),
        ("ConversimpleClient.receive/joining", lambda t: _joining_client(**limits).receive(t), True),
        ("ConversimpleServer.receive", lambda t: ConversimpleServer(**limits).receive(t), False),
        ("arinova.decode_message", lambda t: arinova.decode_message(t, **limits), False),
        ("ArinovaClient.receive", lambda t: ArinovaClient("bot-token", **limits).receive(t), True),
        ("ArinovaServer.receive", lambda t: ArinovaServer(**limits).receive(t), False),
    ]


ENTRIES = _entries({}) + _entries({"max_bytes": 512, "max_depth": 4})

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


def make_input(data: bytes) -> str | bytes:
    """Raw bytes, text, or a seed frame with fuzzed text spliced in or cut out."""
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    if kind == 1:
        return fdp.ConsumeUnicode(fdp.remaining_bytes())
    seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
    at = fdp.ConsumeIntInRange(0, len(seed))
    cut = fdp.ConsumeIntInRange(0, 16) if kind == 3 else 0
    return seed[:at] + fdp.ConsumeUnicode(fdp.remaining_bytes()) + seed[at + cut :]


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
        if never_raises and any(isinstance(item, events.ProtocolViolation) and not item.reason for item in result):
            raise RuntimeError(f"{name} returned a violation without a reason")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
