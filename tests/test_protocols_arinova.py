"""Arinova: wire messages, client and server sessions, interop with arinova-agent-sdk 0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import events
from orchestrator.errors import PermanentLinkError, ProtocolError
from orchestrator.protocols import arinova as ar
from orchestrator.protocols.arinova import ArinovaClient, ArinovaServer

MESSAGES: list[tuple[Any, dict[str, Any]]] = [
    (ar.AgentAuth("tok"), {"type": "agent_auth", "botToken": "tok"}),
    (ar.AuthOk("Helper"), {"type": "auth_ok", "agentName": "Helper"}),
    (ar.AuthOk(), {"type": "auth_ok"}),
    (ar.AuthError("bad token"), {"type": "auth_error", "error": "bad token"}),
    (ar.Task("t1", "c1", "hi"), {"type": "task", "taskId": "t1", "conversationId": "c1", "content": "hi"}),
    (ar.AgentChunk("t1", "he"), {"type": "agent_chunk", "taskId": "t1", "chunk": "he"}),
    (ar.AgentComplete("t1", "hello"), {"type": "agent_complete", "taskId": "t1", "content": "hello"}),
    (ar.AgentError("t1", "oops"), {"type": "agent_error", "taskId": "t1", "error": "oops"}),
    (ar.Ping(), {"type": "ping"}),
    (ar.Pong(), {"type": "pong"}),
    (ar.UnknownMessage("typing", {"type": "typing", "on": True}), {"type": "typing", "on": True}),
]


@pytest.mark.parametrize(("message", "wire"), MESSAGES, ids=repr)
def test_messages_round_trip(message: Any, wire: dict[str, Any]) -> None:
    text = ar.encode_message(message)
    assert json.loads(text) == wire
    assert ar.decode_message(text) == message


REJECTS = [
    {"type": "agent_auth"},
    {"type": "agent_auth", "botToken": 1},
    {"type": "agent_auth", "bot_token": "tok"},
    {"type": "auth_ok", "agentName": 3},
    {"type": "auth_error", "error": None},
    {"type": "task", "conversationId": "c", "content": "x"},
    {"type": "task", "taskId": "t", "content": "x"},
    {"type": "task", "taskId": "t", "conversationId": "c"},
    {"type": "task", "taskId": 1, "conversationId": "c", "content": "x"},
    {"type": "task", "taskId": "t", "conversationId": "c", "content": ["x"]},
    {"type": "agent_chunk", "taskId": "t"},
    {"type": "agent_chunk", "taskId": "t", "chunk": 5},
    {"type": "agent_complete", "content": "x"},
    {"type": "agent_error", "taskId": "t", "error": {}},
]


@pytest.mark.parametrize("wire", REJECTS, ids=repr)
def test_messages_reject_missing_and_ill_typed_fields(wire: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        ar.decode_message(json.dumps(wire))


@pytest.mark.parametrize(
    "text", ["[]", "1", "null", '"ping"', "{}", '{"type": 1}', '{"type": null}', "nope", b"\xfe"]
)
def test_frames_that_are_not_typed_objects_are_rejected(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        ar.decode_message(text)


def test_agent_url_follows_the_sdk() -> None:
    assert ar.agent_url("wss://chat.example/") == "wss://chat.example/ws/agent"
    assert ar.agent_url("ws://127.0.0.1:9000") == "ws://127.0.0.1:9000/ws/agent"


def test_bot_token_stays_out_of_reprs() -> None:
    assert "s3cret" not in repr(ar.AgentAuth("s3cret"))
    assert "s3cret" not in repr(ArinovaClient("s3cret"))


# ---------------------------------------------------------------- client session


def test_client_authenticates() -> None:
    client = ArinovaClient("tok")
    assert json.loads(client.auth()) == {"type": "agent_auth", "botToken": "tok"}
    assert client.receive('{"type":"auth_ok","agentName":"Bot"}') == [ar.AuthOk("Bot")]
    assert client.authenticated


def test_auth_error_is_permanent() -> None:
    client = ArinovaClient("tok")
    [result] = client.receive('{"type":"auth_error","error":"invalid bot token"}')
    assert result == ar.AuthError("invalid bot token")
    assert isinstance(result, ar.AuthError)
    assert isinstance(result.exception(), PermanentLinkError)
    assert "invalid bot token" in str(result.exception())
    assert not client.authenticated
    assert client.receive('{"type":"auth_error"}') == [ar.AuthError("unknown")]


def test_tasks_are_routed_by_conversation() -> None:
    client = ArinovaClient("tok")
    task = {"type": "task", "taskId": "t1", "conversationId": "c9", "content": "hello", "extra": 1}
    assert client.receive(json.dumps(task)) == [ar.Routed("c9", events.CustomerMessage("t1", "hello"))]


def test_keepalive() -> None:
    client = ArinovaClient("tok")
    assert json.loads(client.ping()) == {"type": "ping"}
    assert client.receive('{"type":"pong"}') == [ar.Pong()]
    [reply] = client.receive('{"type":"ping"}')
    assert isinstance(reply, ar.Outgoing)
    assert json.loads(reply.frame) == {"type": "pong"}


def test_unknown_and_misdirected_frames() -> None:
    client = ArinovaClient("tok")
    assert client.receive('{"type":"typing","on":true}') == [
        events.UnknownEvent("typing", {"type": "typing", "on": True})
    ]
    [result] = client.receive('{"type":"agent_chunk","taskId":"t","chunk":"x"}')
    assert isinstance(result, events.ProtocolViolation)
    assert result.reason == "bad_frame"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "bad_frame"),
        ('{"type":"task","taskId":"t"}', "bad_frame"),
        (
            '{"type":"task","taskId":"t","conversationId":"c","content":"' + "x" * 200 + '"}',
            "frame_too_large",
        ),
        ('{"type":"x","a":' + "[" * 20 + "]" * 20 + "}", "frame_too_deep"),
    ],
)
def test_bad_frames_become_protocol_violations(text: str, reason: str) -> None:
    [result] = ArinovaClient("tok", max_bytes=200, max_depth=8).receive(text)
    assert isinstance(result, events.ProtocolViolation)
    assert result.reason == reason


def test_send_encodes_replies() -> None:
    client = ArinovaClient("tok")
    assert json.loads(client.send(events.ReplyChunk("t1", "he"))) == {
        "type": "agent_chunk",
        "taskId": "t1",
        "chunk": "he",
    }
    assert json.loads(client.send(events.ReplyComplete("t1", "hey"))) == {
        "type": "agent_complete",
        "taskId": "t1",
        "content": "hey",
    }
    assert json.loads(client.send(events.ReplyFailure("t1", "no"))) == {
        "type": "agent_error",
        "taskId": "t1",
        "error": "no",
    }
    with pytest.raises(ProtocolError):
        client.send(events.ToolResult("c", "t", 1))


# ---------------------------------------------------------------- server session


def test_server_session_talks_to_the_client_session() -> None:
    client, server = ArinovaClient("tok"), ArinovaServer()
    assert server.receive(client.auth()) == ar.AgentAuth("tok")
    assert client.receive(server.auth_ok("Bot")) == [ar.AuthOk("Bot")]
    assert server.authenticated
    assert client.receive(server.task("t1", "c1", "hi")) == [
        ar.Routed("c1", events.CustomerMessage("t1", "hi"))
    ]
    assert server.receive(client.send(events.ReplyChunk("t1", "h"))) == ar.AgentChunk("t1", "h")
    assert server.receive(client.send(events.ReplyComplete("t1", "hi!"))) == ar.AgentComplete("t1", "hi!")
    assert server.receive(client.ping()) == ar.Ping()
    assert client.receive(server.pong()) == [ar.Pong()]
    assert client.receive(server.send(ar.UnknownMessage("news", {"x": 1}))) == [
        events.UnknownEvent("news", {"x": 1, "type": "news"})
    ]
    assert client.receive(server.auth_error("revoked")) == [ar.AuthError("revoked")]
    assert not server.authenticated


@pytest.mark.parametrize(
    "wire", ['{"type":"task","taskId":"t","conversationId":"c","content":"x"}', '{"type":"auth_ok"}']
)
def test_server_session_rejects_server_messages_from_agents(wire: str) -> None:
    with pytest.raises(ProtocolError):
        ArinovaServer().receive(wire)


# ---------------------------------------------------------------- interop with arinova-agent-sdk 0.0.1


class FakeSocket:
    """Stands in for the SDK's ``websockets`` connection: records sends, replays frames."""

    def __init__(self, first: str, rest: list[str]) -> None:
        self.sent: list[str] = []
        self.first, self.rest = first, rest

    async def __aenter__(self) -> FakeSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> str:
        return self.first

    async def close(self) -> None:
        pass

    async def __aiter__(self) -> Any:
        for text in self.rest:
            yield text
        for _ in range(50):  # let the SDK's handler tasks run before the socket "closes"
            await asyncio.sleep(0)


def run_sdk(monkeypatch: pytest.MonkeyPatch, first: str, rest: list[str]) -> tuple[FakeSocket, list[str]]:
    import arinova_agent.client
    from arinova_agent import ArinovaAgent

    urls: list[str] = []
    socket = FakeSocket(first, rest)

    def fake_connect(url: str) -> FakeSocket:
        urls.append(url)
        return socket

    monkeypatch.setattr(arinova_agent.client.websockets, "connect", fake_connect)
    agent = ArinovaAgent(server_url="ws://sandbox/", bot_token="tok", ping_interval=0)

    @agent.on_task
    async def handle(task: Any) -> None:
        task.send_chunk("hel")
        task.send_complete("hello " + task.conversation_id)

    asyncio.run(agent._connect_once(True))
    return socket, urls


def test_sdk_speaks_our_server_session(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = ArinovaServer(), ArinovaClient("tok")
    socket, urls = run_sdk(monkeypatch, server.auth_ok("Bot"), [server.pong(), server.task("t1", "c1", "hi")])
    assert urls == [ar.agent_url("ws://sandbox/")]
    sent = socket.sent
    assert json.loads(sent[0]) == json.loads(client.auth())
    received = [server.receive(text) for text in sent]
    assert received[0] == ar.AgentAuth("tok")
    assert ar.Ping() in received
    assert json.loads(client.ping()) in [json.loads(text) for text in sent]
    replies = [m for m in received if not isinstance(m, ar.Ping)][1:]
    assert replies == [ar.AgentChunk("t1", "hel"), ar.AgentComplete("t1", "hello c1")]
    ours = [client.send(events.ReplyChunk("t1", "hel")), client.send(events.ReplyComplete("t1", "hello c1"))]
    assert [json.loads(text) for text in ours] == [json.loads(text) for text in sent if '"ping"' not in text][
        1:
    ]


def test_sdk_stops_on_our_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="Agent auth failed: revoked"):
        run_sdk(monkeypatch, ArinovaServer().auth_error("revoked"), [])


# ---------------------------------------------------------------- fuzz

TYPES = [*sorted(ar._TYPES), "mystery"]
KEYS = ["type", "botToken", "agentName", "error", "taskId", "conversationId", "content", "chunk"]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
)
frames = st.builds(
    lambda tag, body: json.dumps({**body, "type": tag}),
    st.sampled_from(TYPES) | scalars,
    st.dictionaries(st.sampled_from(KEYS), json_values | st.just("x")),
)


@given(frames | st.text() | st.binary() | json_values.map(json.dumps))
def test_fuzz_client_receive_never_raises(text: str | bytes) -> None:
    results = ArinovaClient("tok", max_bytes=4096, max_depth=8).receive(text)
    assert isinstance(results, list) and len(results) == 1


@given(frames | st.text() | st.binary())
def test_fuzz_decoders_raise_only_protocol_error(text: str | bytes) -> None:
    for decode in (ar.decode_message, ArinovaServer().receive):
        with contextlib.suppress(ProtocolError):
            decode(text)


@given(task_id=st.text(max_size=10), chunk=st.text(max_size=20))
def test_a_chunk_is_written_as_the_converter_writes_it(task_id: str, chunk: str) -> None:
    """The chunk hot path skips the converter; the frame must not change."""
    fast = ArinovaClient("t").send(events.ReplyChunk(task_id, chunk))
    assert fast == ar.encode_message(ar.AgentChunk(task_id, chunk))
    assert ArinovaServer().receive(fast) == ar.AgentChunk(task_id, chunk)
