"""Conversimple (Phoenix channels): wire messages, client and server sessions, SDK interop."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import events
from orchestrator.errors import HandshakeError, PermanentLinkError, ProtocolError
from orchestrator.protocols import conversimple as cs
from orchestrator.protocols.conversimple import ConversimpleClient, ConversimpleServer, Frame

TOPIC = "customer:cust"

SERVER_MESSAGES: list[Any] = [
    cs.PhxReply("ok", {"k": 1}),
    cs.PhxReply("error", {"reason": "unauthorized"}),
    cs.PhxError({"reason": "crash"}),
    cs.PhxClose(),
    cs.ConversationReady("conv1", "agent7"),
    cs.ConversationReady("conv1"),
    cs.ConversationLifecycle("conversation_started", "conv1"),
    cs.ConversationLifecycle("conversation_ended", "conv1"),
    cs.ToolCallRequest("call1", "get_weather", {"city": "Paris"}, 12.5),
    cs.ToolCallRequest("call1", "get_weather", conversation_id="conv1"),
    cs.ConfigUpdate({"customer_id": "cust", "voice": "calm"}),
    cs.AnalyticsUpdate({"turns": 3}),
    cs.HookEvent({"event_type": "x"}),
    cs.ConnectionWarning({"message": "slow"}),
    cs.ErrorNotification("rate_limited", "too fast", "conv1"),
    cs.ErrorNotification(),
    cs.UnknownServerEvent("brand_new_event", {"x": [1]}),
]
SPEC = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}}
CLIENT_MESSAGES: list[Any] = [
    cs.PhxJoin(),
    cs.Heartbeat(),
    cs.RegisterConversationTools("conv1", (cs.ToolSpec(**SPEC),)),
    cs.ToolCallResponse("call1", "conv1", {"temp": 20}, "get_weather"),
    cs.ToolCallResponse("call1", None, None),
    cs.ToolCallError("call1", "conv1", cs.ToolErrorBody("boom", "2024-01-01T00:00:00+00:00"), "t"),
    cs.UnknownClientEvent("client_thing", {}),
]


def server_frame(event: str, payload: Any, join_ref: Any = None, ref: Any = None) -> str:
    return json.dumps([join_ref, ref, TOPIC, event, payload])


def joined_client(conversation_id: str | None = "conv1") -> ConversimpleClient:
    client = ConversimpleClient("cust", conversation_id, wall_clock=lambda: 1_700_000_000.5)
    client.join()
    assert client.receive(server_frame("phx_reply", {"status": "ok", "response": {}}, "1", "2")) == [
        cs.JoinOk({})
    ]
    return client


# ---------------------------------------------------------------- wire messages


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_server_messages_round_trip(message: Any) -> None:
    frame = Frame("1", "5", TOPIC, message)
    text = cs.encode_server_frame(frame)
    assert isinstance(json.loads(text), list)
    assert cs.decode_server_frame(text) == frame


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=repr)
def test_client_messages_round_trip(message: Any) -> None:
    push = Frame(None, "3", TOPIC, message)
    text = cs.encode_client_push(push)
    assert set(json.loads(text)) == {"join_ref", "ref", "topic", "event", "payload"}
    assert cs.decode_client_push(text) == push


def test_optional_fields_are_omitted_as_the_sdk_does() -> None:
    text = cs.encode_client_push(Frame(None, "3", TOPIC, cs.ToolCallResponse("c", "v", 1)))
    assert json.loads(text)["payload"] == {"call_id": "c", "conversation_id": "v", "result": 1}
    text = cs.encode_server_frame(Frame(None, None, TOPIC, cs.ToolCallRequest("c", "t")))
    assert json.loads(text)[4] == {"call_id": "c", "tool_name": "t", "arguments": {}}


def test_lifecycle_payload_keeps_its_own_event_key() -> None:
    text = cs.encode_server_frame(
        Frame(None, None, TOPIC, cs.ConversationLifecycle("conversation_ended", "c"))
    )
    assert json.loads(text) == [
        None,
        None,
        TOPIC,
        "conversation_lifecycle",
        {"event": "conversation_ended", "conversation_id": "c"},
    ]


SERVER_REJECTS = [
    ("phx_reply", {}),
    ("phx_reply", {"status": 1}),
    ("phx_reply", {"status": "ok", "response": []}),
    ("conversation_ready", {}),
    ("conversation_ready", {"conversation_id": 5}),
    ("conversation_ready", {"conversation_id": "c", "agent_id": 5}),
    ("conversation_lifecycle", {"conversation_id": "c"}),
    ("conversation_lifecycle", {"event": "conversation_started"}),
    ("conversation_lifecycle", {"event": 1, "conversation_id": "c"}),
    ("tool_call_request", {"tool_name": "t"}),
    ("tool_call_request", {"call_id": "c"}),
    ("tool_call_request", {"call_id": 1, "tool_name": "t"}),
    ("tool_call_request", {"call_id": "c", "tool_name": "t", "arguments": "x"}),
    ("tool_call_request", {"call_id": "c", "tool_name": "t", "timeout_seconds": "30"}),
    ("tool_call_request", {"call_id": "c", "tool_name": "t", "timeout_seconds": True}),
    ("tool_call_request", {"call_id": "c", "tool_name": "t", "conversation_id": 3}),
    ("error_notification", {"error_type": 1}),
    ("error_notification", {"error_message": ["x"]}),
]


@pytest.mark.parametrize(("event", "payload"), SERVER_REJECTS)
def test_server_messages_reject_missing_and_ill_typed_fields(event: str, payload: Any) -> None:
    with pytest.raises(ProtocolError):
        cs.decode_server_frame(server_frame(event, payload))


CLIENT_REJECTS = [
    ("register_conversation_tools", {"tools": []}),
    ("register_conversation_tools", {"conversation_id": "c", "tools": {}}),
    ("register_conversation_tools", {"conversation_id": "c", "tools": [{"name": "t"}]}),
    ("register_conversation_tools", {"conversation_id": "c", "tools": [{**SPEC, "parameters": []}]}),
    ("tool_call_response", {"call_id": "c", "conversation_id": "v"}),
    ("tool_call_response", {"call_id": 1, "conversation_id": "v", "result": 1}),
    ("tool_call_response", {"call_id": "c", "result": 1}),
    ("tool_call_response", {"call_id": "c", "conversation_id": "v", "result": 1, "tool_name": 2}),
    ("tool_call_error", {"call_id": "c", "conversation_id": "v"}),
    ("tool_call_error", {"call_id": "c", "conversation_id": "v", "error": "boom"}),
    (
        "tool_call_error",
        {"call_id": "c", "conversation_id": "v", "error": {"message": "m", "timestamp": 1.0}},
    ),
]


@pytest.mark.parametrize(("event", "payload"), CLIENT_REJECTS)
def test_client_messages_reject_missing_and_ill_typed_fields(event: str, payload: Any) -> None:
    push = json.dumps({"join_ref": None, "ref": "3", "topic": TOPIC, "event": event, "payload": payload})
    with pytest.raises(ProtocolError):
        cs.decode_client_push(push)


@pytest.mark.parametrize(
    "raw",
    [
        "{}",
        "[]",
        "[1,2,3]",
        "5",
        '"text"',
        "null",
        '[null,null,"t"]',
        '[null,null,5,"phx_reply",{}]',
        '[null,null,"t",7,{}]',
        '[null,null,"t","e",[]]',
        '[null,null,"t","e","payload"]',
        '[1.5,null,"t","e",{}]',
        '[null,["r"],"t","e",{}]',
        '{"topic":"t","payload":{}}',
        '{"topic":"t","event":"e","payload":null}',
    ],
)
def test_envelopes_that_break_phoenix_are_rejected(raw: str) -> None:
    with pytest.raises(ProtocolError):
        cs.decode_server_frame(raw)
    with pytest.raises(ProtocolError):
        cs.decode_client_push(raw)


def test_envelopes_the_sdk_tolerates_are_accepted() -> None:
    assert cs.decode_server_frame('[null,null,"t","phx_close"]').message == cs.PhxClose()  # 4 items
    as_object = '{"join_ref":"1","ref":"2","topic":"t","event":"phx_reply","payload":{"status":"ok"}}'
    assert cs.decode_server_frame(as_object) == Frame("1", "2", "t", cs.PhxReply("ok"))


# ---------------------------------------------------------------- client session


def test_customer_id_and_url_follow_the_sdk() -> None:
    assert cs.customer_id_from_key("sk_live_abc") == "2a9274bcef54"  # md5(key)[:12]
    assert ConversimpleClient.url("wss://h/customer_sdk/websocket", "k&y", "c1") == (
        "wss://h/customer_sdk/websocket?customer_id=c1&auth_token=k%26y"
    )
    derived = cs.customer_id_from_key("k")
    assert ConversimpleClient.url("wss://h/ws", "k").startswith(f"wss://h/ws?customer_id={derived}&")


def test_join_uses_join_ref_and_ref_from_one_counter() -> None:
    client = ConversimpleClient("cust", "conv1")
    assert json.loads(client.join()) == {
        "join_ref": "1",
        "ref": "2",
        "topic": TOPIC,
        "event": "phx_join",
        "payload": {},
    }
    assert json.loads(client.heartbeat()) == {
        "join_ref": None,
        "ref": "3",
        "topic": TOPIC,
        "event": "heartbeat",
        "payload": {},
    }
    assert not client.joined


def test_join_ok_marks_the_session_joined() -> None:
    client = joined_client()
    assert client.joined
    # A later reply to another push is a plain reply, not a second join.
    reply = server_frame("phx_reply", {"status": "ok", "response": {}}, None, "3")
    assert client.receive(reply) == [cs.PhxReply("ok", {})]


@pytest.mark.parametrize(
    ("reason", "permanent"),
    [
        ("unauthorized", True),
        ("forbidden", True),
        ("customer_suspended", True),
        ("invalid_api_key", True),
        ("Authentication_Failed", True),
        ("join crashed", False),
        ("overloaded", False),
    ],
)
def test_join_errors_are_classified_like_the_sdk(reason: str, permanent: bool) -> None:
    client = ConversimpleClient("cust", "conv1")
    client.join()
    frame = server_frame("phx_reply", {"status": "error", "response": {"reason": reason}}, "1", "2")
    [result] = client.receive(frame)
    assert result == cs.JoinRejected(reason, permanent, {"reason": reason})
    assert not client.joined
    assert type(result.exception()) is (PermanentLinkError if permanent else HandshakeError)
    assert reason in str(result.exception())


def test_join_error_without_reason() -> None:
    client = ConversimpleClient("cust")
    client.join()
    [result] = client.receive(server_frame("phx_reply", {"status": "error"}, "1", "2"))
    assert result == cs.JoinRejected("unknown", False, {})


def test_tool_call_request_becomes_a_neutral_event() -> None:
    client = joined_client()
    payload = {"call_id": "c1", "tool_name": "t", "arguments": {"a": 1}, "timeout_seconds": 5, "new_field": 1}
    assert client.receive(server_frame("tool_call_request", payload)) == [
        events.ToolCallRequest("c1", "t", {"a": 1}, 5.0)
    ]
    assert client.receive(server_frame("tool_call_request", {"call_id": "c2", "tool_name": "t"})) == [
        events.ToolCallRequest("c2", "t", {}, None)
    ]


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    [
        (
            "conversation_lifecycle",
            {"event": "conversation_started", "conversation_id": "conv1"},
            events.ConversationStarted(),
        ),
        (
            "conversation_lifecycle",
            {"event": "conversation_ended", "conversation_id": "conv1"},
            events.ConversationEnded(),
        ),
        (
            "conversation_lifecycle",
            {"event": "conversation_paused", "conversation_id": "conv1"},
            events.UnknownEvent(
                "conversation_lifecycle", {"event": "conversation_paused", "conversation_id": "conv1"}
            ),
        ),
        ("conversation_ready", {"conversation_id": "conv1", "agent_id": "a"}, events.ConversationStarted()),
        ("config_update", {"voice": "calm"}, events.ConfigUpdate({"voice": "calm"})),
        ("analytics_update", {"n": 1}, events.PlatformNotice("analytics_update", {"n": 1})),
        ("hook_event", {"event_type": "x"}, events.PlatformNotice("hook_event", {"event_type": "x"})),
        (
            "connection_warning",
            {"message": "m"},
            events.PlatformNotice("connection_warning", {"message": "m"}),
        ),
        (
            "error_notification",
            {"error_type": "quota", "error_message": "over"},
            events.PlatformError("quota", "over", {"error_type": "quota", "error_message": "over"}),
        ),
        ("never_seen_before", {"x": 1}, events.UnknownEvent("never_seen_before", {"x": 1})),
    ],
)
def test_platform_events_map_to_neutral_events(event: str, payload: Any, expected: Any) -> None:
    assert joined_client().receive(server_frame(event, payload)) == [expected]


def test_events_for_another_conversation_are_foreign() -> None:
    client = joined_client("conv1")
    ended = {"event": "conversation_ended", "conversation_id": "conv2"}
    assert client.receive(server_frame("conversation_lifecycle", ended)) == [
        cs.ForeignEvent("conv2", events.ConversationEnded())
    ]
    call = {"call_id": "c", "tool_name": "t", "conversation_id": "conv2"}
    assert client.receive(server_frame("tool_call_request", call)) == [
        cs.ForeignEvent("conv2", events.ToolCallRequest("c", "t", {}, None))
    ]
    ready = {"conversation_id": "conv9", "agent_id": "a"}
    # An announcement is not foreign: the platform makes it on any socket of the
    # customer, and the platform's side admits it (see platforms.conversimple).
    assert client.receive(server_frame("conversation_ready", ready)) == [cs.ConversationReady("conv9", "a")]
    assert client.receive(server_frame("mystery", {"conversation_id": "conv3"})) == [
        cs.ForeignEvent("conv3", events.UnknownEvent("mystery", {"conversation_id": "conv3"}))
    ]


def test_control_connection_sees_conversation_ready() -> None:
    control = joined_client(None)
    ready = {"conversation_id": "conv5", "agent_id": "support", "customer_id": "cust"}
    assert control.receive(server_frame("conversation_ready", ready)) == [
        cs.ConversationReady("conv5", "support")
    ]
    ended = {"event": "conversation_ended", "conversation_id": "conv5"}
    assert control.receive(server_frame("conversation_lifecycle", ended)) == [
        cs.ForeignEvent("conv5", events.ConversationEnded())
    ]


@pytest.mark.parametrize("event", ["phx_error", "phx_close"])
def test_channel_errors_unjoin_the_session(event: str) -> None:
    client = joined_client()
    [result] = client.receive(server_frame(event, {}, "1"))
    assert isinstance(result, cs.PhxError | cs.PhxClose)
    assert not client.joined


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "bad_frame"),
        (b"\xff", "bad_frame"),
        ('{"a":1}', "bad_frame"),
        ('[null,null,"t","tool_call_request",{"call_id":1}]', "bad_frame"),
        ("[" * 40 + "]" * 40, "frame_too_deep"),
        ('[null,null,"t","e",{"x":"' + "a" * 2000 + '"}]', "frame_too_large"),
    ],
)
def test_bad_frames_become_protocol_violations(text: str | bytes, reason: str) -> None:
    client = ConversimpleClient("cust", "conv1", max_bytes=1000)
    [result] = client.receive(text)
    assert isinstance(result, events.ProtocolViolation)
    assert result.reason == reason


def test_send_encodes_outbound_commands() -> None:
    client = joined_client()
    register = json.loads(client.send(events.RegisterTools((SPEC,))))
    assert register == {
        "join_ref": None,
        "ref": "3",
        "topic": TOPIC,
        "event": "register_conversation_tools",
        "payload": {"conversation_id": "conv1", "tools": [SPEC]},
    }
    result = json.loads(client.send(events.ToolResult("c1", "t", {"ok": True})))
    assert result["ref"] == "4"
    assert result["payload"] == {
        "call_id": "c1",
        "conversation_id": "conv1",
        "result": {"ok": True},
        "tool_name": "t",
    }
    failure = json.loads(client.send(events.ToolFailure("c1", "t", "boom", timestamp=0.0), "conv7"))
    assert failure["event"] == "tool_call_error"
    assert failure["payload"] == {
        "call_id": "c1",
        "conversation_id": "conv7",
        "tool_name": "t",
        "error": {"message": "boom", "timestamp": "2023-11-14T22:13:20.500000+00:00"},
    }
    stamped = json.loads(client.send(events.ToolFailure("c1", "t", "x", timestamp=86400.0)))
    assert stamped["payload"]["error"]["timestamp"] == "1970-01-02T00:00:00+00:00"


@pytest.mark.parametrize(
    "event",
    [
        events.ReplyChunk("t", "x"),
        events.RegisterTools(({"name": "t"},)),
        events.ToolResult("c", "t", object()),
    ],
)
def test_send_rejects_what_conversimple_cannot_carry(event: Any) -> None:
    with pytest.raises(ProtocolError):
        joined_client().send(event)


def test_register_tools_needs_a_conversation() -> None:
    with pytest.raises(ProtocolError):
        joined_client(None).send(events.RegisterTools((SPEC,)))


# ---------------------------------------------------------------- server session


def test_server_session_accepts_a_join_and_pushes_on_the_channel() -> None:
    client, server = ConversimpleClient("cust", "conv1"), ConversimpleServer()
    join = server.receive(client.join())
    assert join == Frame("1", "2", TOPIC, cs.PhxJoin())
    with pytest.raises(ProtocolError):
        server.push(cs.PhxClose())  # no channel yet
    assert client.receive(server.reply(join)) == [cs.JoinOk({})]
    assert (server.topic, server.join_ref) == (TOPIC, "1")
    pushed = server.push(cs.ToolCallRequest("c1", "t", {"q": 1}, 3.0))
    assert json.loads(pushed) == [
        "1",
        None,
        TOPIC,
        "tool_call_request",
        {"call_id": "c1", "tool_name": "t", "arguments": {"q": 1}, "timeout_seconds": 3.0},
    ]
    assert client.receive(pushed) == [events.ToolCallRequest("c1", "t", {"q": 1}, 3.0)]
    heartbeat = server.receive(client.heartbeat())
    assert heartbeat.message == cs.Heartbeat()
    assert json.loads(server.reply(heartbeat)) == [
        None,
        "3",
        TOPIC,
        "phx_reply",
        {"status": "ok", "response": {}},
    ]


def test_server_session_rejects_a_join() -> None:
    client, server = ConversimpleClient("cust"), ConversimpleServer()
    join = server.receive(client.join())
    [result] = client.receive(server.reply(join, "error", {"reason": "customer_suspended"}))
    assert result == cs.JoinRejected("customer_suspended", True, {"reason": "customer_suspended"})
    assert server.topic is None


# ---------------------------------------------------------------- interop with conversimple-sdk 0.2.4


class FakeSocket:
    """Stands in for the SDK's ``websockets`` connection: records sends, replays receives."""

    def __init__(self, incoming: list[str] | None = None) -> None:
        self.sent: list[str] = []
        self.incoming = incoming or []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> str:
        return self.incoming.pop(0)

    async def close(self) -> None:
        pass


def sdk_connection(reply: str | None = None) -> Any:
    from conversimple.connection import WebSocketConnection

    conn = WebSocketConnection(url="wss://h/ws", api_key="k", customer_id="cust")
    conn.websocket = FakeSocket([reply] if reply else [])
    conn.connected = True
    return conn


def test_sdk_connect_url_and_customer_id_match_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    import conversimple.connection
    from conversimple.agent import ConversimpleAgent

    seen: dict[str, Any] = {}

    async def fake_connect(url: str, subprotocols: list[str]) -> Any:
        seen.update(url=url, subprotocols=subprotocols)
        raise OSError("no network in tests")

    monkeypatch.setattr(conversimple.connection.websockets, "connect", fake_connect)
    conn = conversimple.connection.WebSocketConnection(url="wss://h/ws", api_key="k y", customer_id="c1")
    with pytest.raises(OSError):
        asyncio.run(conn.connect(recover=False))
    assert seen == {
        "url": ConversimpleClient.url("wss://h/ws", "k y", "c1"),
        "subprotocols": [cs.SUBPROTOCOL],
    }
    for key in ("k", "sk_live_abc", "ключ"):
        assert ConversimpleAgent._derive_customer_id(None, key) == cs.customer_id_from_key(key)  # type: ignore[arg-type]


def test_sdk_join_matches_ours_and_accepts_our_reply() -> None:
    client, server = ConversimpleClient("cust", "conv1"), ConversimpleServer()
    ours = client.join()
    conn = sdk_connection(server.reply(server.receive(ours)))
    asyncio.run(conn._join_channel())
    assert conn.channel_joined
    assert json.loads(conn.websocket.sent[0]) == json.loads(ours)


@pytest.mark.parametrize("reason", ["unauthorized", "customer_suspended", "forbidden", "server_busy"])
def test_sdk_classifies_our_join_errors_as_we_do(reason: str) -> None:
    client, server = ConversimpleClient("cust"), ConversimpleServer()
    reply = server.reply(server.receive(client.join()), "error", {"reason": reason})
    conn = sdk_connection(reply)
    with pytest.raises(Exception) as info:
        asyncio.run(conn._join_channel())
    [ours] = client.receive(reply)
    assert isinstance(ours, cs.JoinRejected)
    assert ours.permanent is conn._classify_error(info.value)[0]


def sdk_agent_self(conn: Any) -> Any:
    return SimpleNamespace(conversation_id="conv1", connection=conn, registered_conversations=set())


def test_sdk_pushes_match_ours() -> None:
    from conversimple.agent import ConversimpleAgent
    from conversimple.tools import ToolRegistry

    def get_weather(city: str, days: int = 1) -> dict[str, Any]:
        return {}

    registry = ToolRegistry()
    registry.register_sync_tool(get_weather, "Weather for a city")
    tools = registry.get_registered_tools()

    client, conn = joined_client(), sdk_connection()
    conn.message_ref_counter = 2  # the SDK's join used refs 1 and 2, as ours did
    conn.channel_joined = True
    agent = sdk_agent_self(conn)
    asyncio.run(ConversimpleAgent._register_conversation_tools(agent, "conv1", tools))
    asyncio.run(ConversimpleAgent._send_tool_result(agent, "call1", {"temp": 20}, "get_weather"))
    asyncio.run(ConversimpleAgent._send_tool_result(agent, "call2", [1, 2]))
    asyncio.run(ConversimpleAgent._send_tool_error(agent, "call3", "boom", "get_weather"))
    asyncio.run(conn.send_message("heartbeat", {}))
    sdk = [json.loads(text) for text in conn.websocket.sent]
    ours = [
        json.loads(client.send(events.RegisterTools(tuple(tools)))),
        json.loads(client.send(events.ToolResult("call1", "get_weather", {"temp": 20}))),
        json.loads(client.send(events.ToolResult("call2", "", [1, 2]))),
        json.loads(client.send(events.ToolFailure("call3", "get_weather", "boom"))),
        json.loads(client.heartbeat()),
    ]
    sdk_stamp = datetime.fromisoformat(sdk[3]["payload"]["error"].pop("timestamp"))
    our_stamp = datetime.fromisoformat(ours[3]["payload"]["error"].pop("timestamp"))
    assert sdk_stamp.utcoffset() == our_stamp.utcoffset() and our_stamp.utcoffset() is not None
    assert ours == sdk
    server = ConversimpleServer()
    assert [server.receive(json.dumps(push)).message for push in sdk[:2]] == [
        cs.RegisterConversationTools("conv1", (cs.ToolSpec(**tools[0]),)),
        cs.ToolCallResponse("call1", "conv1", {"temp": 20}, "get_weather"),
    ]


def test_sdk_reads_our_server_frames() -> None:
    server = ConversimpleServer()
    server.reply(server.receive(ConversimpleClient("cust").join()))
    received: list[tuple[str, Any]] = []

    async def handler(event: str, payload: Any) -> None:
        received.append((event, payload))

    conn = sdk_connection()
    conn.set_message_handler(handler)
    for message in SERVER_MESSAGES:
        asyncio.run(conn._handle_message(server.push(message)))
    forwarded = [m for m in SERVER_MESSAGES if not isinstance(m, cs.PhxReply | cs.PhxError)]
    assert [event for event, _ in received] == [
        m.event if isinstance(m, cs.UnknownServerEvent) else cs._event_name(type(m)) for m in forwarded
    ]
    call = next(payload for event, payload in received if event == "tool_call_request")
    assert call == {
        "call_id": "call1",
        "tool_name": "get_weather",
        "arguments": {"city": "Paris"},
        "timeout_seconds": 12.5,
    }


# ---------------------------------------------------------------- fuzz

EVENTS = [*sorted(cs._SERVER_EVENTS), "mystery"]
FIELDS = [
    "status",
    "response",
    "conversation_id",
    "agent_id",
    "event",
    "call_id",
    "tool_name",
    "arguments",
    "timeout_seconds",
    "error_type",
    "error_message",
    "reason",
]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
)
refs = st.none() | st.text(max_size=3) | st.integers()
payloads = st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(["conv1", "ok", "error"]))
phoenix_frames = st.tuples(
    refs, refs, st.just(TOPIC) | st.integers(), st.sampled_from(EVENTS), payloads | json_values
)


@given(
    st.text() | st.binary() | json_values.map(json.dumps) | phoenix_frames.map(lambda f: json.dumps(list(f)))
)
def test_fuzz_client_receive_never_raises(text: str | bytes) -> None:
    client = ConversimpleClient("cust", "conv1", max_bytes=4096, max_depth=8)
    client.join()
    results = client.receive(text)
    assert isinstance(results, list) and len(results) == 1


@given(phoenix_frames.map(lambda f: json.dumps(list(f))) | st.text() | st.binary())
def test_fuzz_decoders_raise_only_protocol_error(text: str | bytes) -> None:
    for decode in (cs.decode_server_frame, cs.decode_client_push, ConversimpleServer().receive):
        with contextlib.suppress(ProtocolError):
            decode(text)


# The hot paths (a tool call in, its result out) skip the converter: they must say
# exactly what the general path says, for every frame.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
WRONG = st.sampled_from([True, False, None, 0, 1.5, "s", [], [1], {}, {"a": 1}, 10**309])
"""A value of every JSON type, and a number too large for a float."""


def reads_alike(frame: Any) -> None:
    text = json.dumps(frame)
    for conversation in ("conv1", None):  # a conversation's socket, the control connection
        fast = joined_client(conversation).receive(text)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cs, "_tool_call_request", lambda raw: None)
            patch.setattr(cs, "_conversation_ended", lambda raw: None)
            general = joined_client(conversation).receive(text)
        assert fast == general


@given(
    fields=st.fixed_dictionaries(
        {"call_id": st.text(max_size=8), "tool_name": st.text(max_size=8)},
        optional={
            "arguments": st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
            "timeout_seconds": st.none() | st.floats(0, 100) | st.integers(0, 100),
            "conversation_id": st.sampled_from([None, "conv1", "conv2"]),
            "extra": JSON_VALUES,
        },
    ),
    broken=st.sampled_from([None, "call_id", "tool_name", "arguments", "timeout_seconds", "conversation_id"]),
    value=WRONG,
)
def test_a_tool_call_reads_as_the_general_path_reads_it(
    fields: dict[str, Any], broken: str | None, value: Any
) -> None:
    if broken is not None:  # one field of another type
        fields[broken] = value
    reads_alike([None, "5", TOPIC, "tool_call_request", fields])


@given(join_ref=WRONG | st.just("1"), ref=WRONG | st.just("5"), topic=WRONG | st.just(TOPIC))
def test_a_tool_call_in_any_envelope_reads_as_the_general_path_reads_it(
    join_ref: Any, ref: Any, topic: Any
) -> None:
    payload = {"call_id": "c1", "tool_name": "t"}
    reads_alike([join_ref, ref, topic, "tool_call_request", payload])
    reads_alike(
        {"join_ref": join_ref, "ref": ref, "topic": topic, "event": "tool_call_request", "payload": payload}
    )
    reads_alike([join_ref, ref, topic, "tool_call_request"])
    reads_alike([join_ref, ref, topic, "tool_call_request", payload, "more"])


@given(
    event=st.sampled_from(["conversation_ended", "conversation_started"]) | WRONG,
    conversation=st.sampled_from(["conv1", "conv2"]) | WRONG,
    extra=st.none() | JSON_VALUES,
    join_ref=st.just("1") | WRONG,
    ref=st.none() | WRONG,
    topic=st.just(TOPIC) | WRONG,
)
def test_a_conversation_end_reads_as_the_general_path_reads_it(
    event: Any, conversation: Any, extra: Any, join_ref: Any, ref: Any, topic: Any
) -> None:
    payload = {"event": event, "conversation_id": conversation}
    if extra is not None:
        payload["extra"] = extra
    reads_alike([join_ref, ref, topic, "conversation_lifecycle", payload])
    reads_alike([join_ref, ref, topic, "conversation_lifecycle", {"event": event}])
    reads_alike([join_ref, ref, topic, "conversation_lifecycle", payload, "more"])


def test_a_conversation_end_takes_the_hot_path() -> None:
    ended = json.dumps(["1", None, TOPIC, "conversation_lifecycle",
                        {"event": "conversation_ended", "conversation_id": "conv1"}])  # fmt: skip
    own, control = joined_client("conv1"), joined_client(None)
    with pytest.MonkeyPatch.context() as patch:  # the general path would fail loudly
        patch.setattr(cs, "_structure", lambda raw, server: pytest.fail("took the general path"))
        assert own.receive(ended) == [events.ConversationEnded()]
        assert control.receive(ended) == [cs.ForeignEvent("conv1", events.ConversationEnded())]


class _GeneralToolResult(events.ToolResult):
    """A ToolResult the hot path does not recognise (it matches the exact type)."""


@given(
    result=JSON_VALUES, tool_name=st.sampled_from(["t", ""]), conversation=st.sampled_from([None, "conv9"])
)
def test_a_tool_result_is_written_as_the_general_path_writes_it(
    result: Any, tool_name: str, conversation: str | None
) -> None:
    fast = joined_client().send(events.ToolResult("c1", tool_name, result), conversation)
    general = joined_client().send(_GeneralToolResult("c1", tool_name, result), conversation)
    # The same JSON, keys in the same order. The text may differ in how a float is
    # written (orjson writes 6.103515625e-5 where stdlib json, which the general path's
    # join_ref null sends the frame to, writes 6.103515625e-05): the same number.
    assert json.loads(fast, object_pairs_hook=list) == json.loads(general, object_pairs_hook=list)


@attrs.frozen
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "result", [Point(1, 2), Colour.RED, (1, 2), {"set": {1}}, {1: "int key"}, float("nan"), object()]
)
def test_a_result_the_hot_path_cannot_write_is_written_by_the_converter_with_the_next_ref(
    result: Any,
) -> None:
    def send(event: events.ToolResult) -> Any:
        client = ConversimpleClient("cust", "conv")
        try:
            return json.loads(client.send(event)), json.loads(client.send(events.ToolResult("c2", "t", 1)))[
                "ref"
            ]
        except ProtocolError as exc:
            return type(exc)

    assert send(events.ToolResult("c1", "t", result)) == send(_GeneralToolResult("c1", "t", result))
