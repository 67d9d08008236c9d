"""Guarantee 6: bad input never crashes the process. Oversized, malformed, deeply nested,
non-object or unknown frames end in a protocol error for that conversation only.

A real ``orchestrator run`` subprocess serves two conversations of :class:`Steady` for
:class:`MiniPlatform`, which pushes hostile frames at one of them (and at the control
connection) and, after each one, a tool call to the other, which must be answered at once.
The decoders themselves are fuzzed in ``tests/test_fuzz_decoders.py`` (hypothesis) and
``tests/test_fuzz_atheris.py``; this test checks what the running process makes of it.
"""

from __future__ import annotations

import pytest
import trio

from .test_guarantees import CUSTOMER, KIT, MiniPlatform, child

TOPIC = f"customer:{CUSTOMER}"
MAX_FRAME = 1 << 20  # the default max_frame_bytes


def push(event: str, payload: str) -> str:
    return f'["1",null,"{TOPIC}","{event}",{payload}]'


HOSTILE: dict[str, str] = {
    "malformed JSON": push("tool_call_request", '{"call_id": "x", '),
    "truncated": '["1",null,"customer:',
    "not JSON at all": "\x00\x01 hello <html>",
    "NaN": push(
        "tool_call_request", '{"call_id":"n","tool_name":"ping","arguments":{},"timeout_seconds":NaN}'
    ),
    "huge number": push("tool_call_request", '{"call_id":"h","tool_name":"ping","timeout_seconds":1e999}'),
    "deeply nested": push("tool_call_request", "[" * 5000 + "]" * 5000),
    "deep object": push("config_update", '{"a":' * 200 + "1" + "}" * 200),
    "a number": "42",
    "a string": '"tool_call_request"',
    "null": "null",
    "an empty array": "[]",
    "a short array": '["1", null]',
    "an object without fields": "{}",
    "wrong field types": '{"join_ref":1,"ref":[],"topic":5,"event":null,"payload":"x"}',
    "payload not an object": push("tool_call_request", "[1,2,3]"),
    "call with bad types": push(
        "tool_call_request",
        '{"call_id":7,"tool_name":["ping"],"arguments":"text","timeout_seconds":"soon","conversation_id":"bad"}',
    ),
    "unknown event": push("mystery_event", '{"conversation_id":"bad","x":[1,{"y":null}]}'),
    "unknown tool": push("tool_call_request", '{"call_id":"u","tool_name":"nope","conversation_id":"bad"}'),
    "another conversation's call": push(
        "tool_call_request",
        '{"call_id":"f","tool_name":"ping","arguments":{"text":"x"},"conversation_id":"good"}',
    ),
    "oversized": push("tool_call_request", '{"pad":"' + "x" * (MAX_FRAME + 1000) + '"}'),
}


ARGS = [f"{KIT}:Steady", "--api-key", "guarantee-6-key", "--customer-id", CUSTOMER, "--url"]


def value(metrics: str, name: str, label: str = "") -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
async def test_guarantee_6_hostile_frames_are_protocol_errors_for_their_conversation_only(
    nursery: trio.Nursery,
) -> None:
    mini = MiniPlatform()
    await nursery.start(mini.run)
    async with child(*ARGS, mini.url, "--log-level", "warning") as running:
        for cid in ("good", "bad"):
            await mini.announce(cid, "steady")
            await mini.wait_registered(cid)
        registrations = mini.registrations["bad"]
        for number, (name, text) in enumerate(HOSTILE.items()):
            await mini.wait_registered("bad")
            await mini.send_text("bad", text)
            control = mini.control()
            if control is not None and name != "oversized":
                await control.ws.send_text(text)  # the control connection gets the same
            # The other conversation answers at once, every time.
            await mini.call("good", f"g-{number}", "ping", {"text": name})
            with trio.fail_after(2):
                answer = await mini.wait_answer(f"g-{number}")
            assert answer["result"] == {"text": name}, (name, answer)
            assert running.process.returncode is None, (name, running.output)

        # The oversized frame closed the bad conversation's link (1009); it came back,
        # and the conversation itself goes on.
        bad = await mini.wait_registered("bad", times=registrations + 1)
        assert bad is mini.sockets["bad"]
        await mini.call("bad", "b-1", "ping", {"text": "still here"})
        assert (await mini.wait_answer("b-1"))["result"] == {"text": "still here"}

        assert (await running.get("/healthz")).status_code == 200
        metrics = (await running.get("/metrics")).text
        status = (await running.get("/status")).json()
    assert value(metrics, "orchestrator_protocol_errors_total", 'reason="frame_too_large"') >= 1
    assert value(metrics, "orchestrator_protocol_errors_total", 'reason="frame_too_deep"') >= 2
    assert value(metrics, "orchestrator_protocol_errors_total", 'reason="bad_frame"') >= 10
    assert value(metrics, "orchestrator_events_ignored_total", 'reason="unknown_event"') >= 1
    assert status["restarts_total"] == 0 and status["conversations"]["active"] == 2, status
    assert "Traceback" not in running.output, running.output
    assert [a["call_id"] for a in mini.answers if a["conversation_id"] == "good"] == [
        f"g-{n}" for n in range(len(HOSTILE))
    ]  # nothing reached the good conversation but its own calls


@pytest.mark.slow
async def test_guarantee_6_lone_surrogate_in_a_call_is_a_protocol_error_not_a_crash(
    nursery: trio.Nursery,
) -> None:
    """``"\\ud800"`` is valid JSON but no UTF-8 text can carry it: echoed back in the reply
    (``call_id``, or a result made from the arguments) it cannot be sent. It must end as a
    protocol error or an error reply for that call, not crash the conversation's actor."""
    mini = MiniPlatform()
    await nursery.start(mini.run)
    async with child(*ARGS, mini.url, "--log-level", "warning") as running:
        await mini.announce("bad", "steady")
        await mini.wait_registered("bad")
        for call_id, text in (("\\ud800", "fine"), ("s-2", "\\udfff")):
            payload = f'{{"call_id":"{call_id}","tool_name":"ping","arguments":{{"text":"{text}"}}}}'
            await mini.send_text("bad", push("tool_call_request", payload))
            await trio.sleep(0.5)
            await mini.wait_registered("bad")  # (after a crash, the restarted actor's socket)
            await mini.call("bad", "after", "ping", {"text": "next"})
            with trio.fail_after(5):
                assert (await mini.wait_answer("after"))["result"] == {"text": "next"}
            mini.answers.clear()
        status = (await running.get("/status")).json()
        metrics = (await running.get("/metrics")).text
    assert status["restarts_total"] == 0, running.output
    assert value(metrics, "orchestrator_actor_restarts_total") == 0
    assert "UnicodeEncodeError" not in running.output, running.output
