"""The example agents, driven through the real Supervisor over the in-memory platform."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from examples.booking import HOLD_SECONDS, BookingAgent
from examples.customer_service import CustomerServiceAgent
from examples.echo import EchoAgent
from examples.weather import WeatherAgent
from orchestrator import events as ev
from orchestrator.agent import Agent, tool_schemas
from orchestrator.replies import answer_message
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryPeer, MemoryPlatform

from .helpers import running_supervisor

EXAMPLES: list[type[Agent]] = [WeatherAgent, CustomerServiceAgent, BookingAgent, EchoAgent]


async def open_conversation(
    sup: Supervisor, platform: MemoryPlatform, conversation_id: str, agent_id: str
) -> MemoryPeer:
    """Start a conversation and consume its tool registration."""
    await sup.start_conversation(conversation_id, agent_id)
    peer = platform.peer(conversation_id)
    registered = await peer.receive()
    assert isinstance(registered, ev.RegisterTools)
    return peer


async def ok(peer: MemoryPeer, call_id: str, tool: str, arguments: Mapping[str, Any] | None = None) -> Any:
    reply = await peer.call_tool(call_id, tool, arguments)
    assert isinstance(reply, ev.ToolResult), reply
    return reply.result


async def fails(peer: MemoryPeer, call_id: str, tool: str, arguments: Mapping[str, Any] | None = None) -> str:
    """The message of a business-rule error reply (a ValueError raised by the tool)."""
    reply = await peer.call_tool(call_id, tool, arguments)
    assert isinstance(reply, ev.ToolFailure), reply
    assert not reply.message.startswith(("invalid arguments", "unknown tool")), reply.message
    return reply.message


async def stream_reply(peer: MemoryPeer, task_id: str, content: str) -> tuple[list[str], str]:
    """Send a customer message; return the streamed chunks and the completed text."""
    await peer.send(ev.CustomerMessage(task_id, content))
    chunks: list[str] = []
    while True:
        out = await peer.receive()
        if isinstance(out, ev.ReplyChunk):
            assert out.task_id == task_id
            chunks.append(out.chunk)
        else:
            assert isinstance(out, ev.ReplyComplete) and out.task_id == task_id, out
            return chunks, out.content


# ------------------------------------------------------------------ all examples


def test_examples_have_distinct_agent_ids_and_described_tools() -> None:
    assert [a.agent_id for a in EXAMPLES] == ["weather", "customer-service", "booking", "echo"]
    for agent in EXAMPLES:
        for schema in tool_schemas(agent):
            assert schema["description"], schema["name"]
            for name, prop in schema["parameters"]["properties"].items():
                assert prop.get("description"), f"{agent.agent_id}.{schema['name']}({name})"


_PLAIN: dict[str, Any] = {"string": "x", "integer": 1, "number": 1.0, "boolean": True}
_VARIANTS: list[dict[str, Any]] = [
    _PLAIN,
    {"string": "", "integer": 0, "number": 0.0, "boolean": False},
    {"string": "  ¿Qué? 🙂 ", "integer": -1, "number": -2.5, "boolean": True},
    {"string": "x" * 5000, "integer": 10**12, "number": 1e300, "boolean": False},
    # plausible values (every string a date) get past the first checks, deeper into the rules
    {"string": "2025-06-16", "integer": 2, "number": 10.0, "boolean": True},
    {"string": "2025-06-16", "integer": 2, "number": 10.0, "boolean": True},
]


def synthesize(schema: Mapping[str, Any], variant: int) -> Any:
    """A schema-valid value: scalars from ``_VARIANTS``, the variant-th enum/anyOf choice.

    Even variants fill in required properties only, odd ones every property.
    """
    values = _VARIANTS[variant % len(_VARIANTS)]
    if "enum" in schema:
        return schema["enum"][variant % len(schema["enum"])]
    if "anyOf" in schema:
        members = schema["anyOf"]
        return synthesize(members[variant % len(members)], variant)
    kind = schema.get("type")
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        names = list(properties) if variant % 2 else list(schema.get("required", []))
        return {name: synthesize(properties[name], variant) for name in names}
    if kind == "array":
        return [synthesize(schema["items"], variant)] if variant % 2 else []
    if kind == "null":
        return None
    if kind in values:
        return values[kind]
    return "anything"  # {} (Any)


def test_synthesize_makes_schema_valid_arguments() -> None:
    for agent in EXAMPLES:
        for tool in agent.__tools__.values():
            for variant in range(len(_VARIANTS)):
                tool.signature.bind(synthesize(tool.signature.schema, variant))


@pytest.mark.parametrize("agent", EXAMPLES, ids=lambda a: a.agent_id)
async def test_every_tool_survives_synthetic_schema_valid_arguments(agent: type[Agent]) -> None:
    async with running_supervisor(EXAMPLES) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "synthetic", agent.agent_id)
        for variant in range(len(_VARIANTS)):
            for schema in tool_schemas(agent):
                arguments = synthesize(schema["parameters"], variant)
                call_id = f"{schema['name']}-{variant}"
                reply = await peer.call_tool(call_id, schema["name"], arguments)
                if isinstance(reply, ev.ToolFailure):  # a business error, never a bug or a schema gap
                    assert not reply.message.startswith(("invalid arguments", "unknown tool", "tool ")), (
                        arguments,
                        reply.message,
                    )
        assert sup.inspect("synthetic").restarts == 0
        assert sup.inspect("synthetic").state == "running"


# ------------------------------------------------------------------ weather


async def test_weather_registers_tools_with_enum_and_defaults() -> None:
    async with running_supervisor([WeatherAgent]) as (sup, platform, _):
        await sup.start_conversation("w", "weather")
        registered = await platform.peer("w").receive()
    assert isinstance(registered, ev.RegisterTools)
    tools = {t["name"]: t for t in registered.tools}
    assert list(tools) == ["get_weather", "get_forecast"]
    assert list(registered.tools) == tool_schemas(WeatherAgent)
    params = tools["get_weather"]["parameters"]
    assert params["required"] == ["city"]
    assert params["properties"]["units"] == {
        "type": "string",
        "enum": ["metric", "imperial"],
        "default": "metric",
        "description": '"metric" (°C, km/h) or "imperial" (°F, mph).',
    }
    assert tools["get_forecast"]["parameters"]["properties"]["days"]["default"] == 3


async def test_weather_happy_path_in_both_units() -> None:
    async with running_supervisor([WeatherAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "w", "weather")
        metric = await ok(peer, "1", "get_weather", {"city": "paris"})
        assert metric["city"] == "Paris" and metric["temperature"] == 18.0
        assert metric["temperature_unit"] == "C" and metric["condition"] == "partly cloudy"
        imperial = await ok(peer, "2", "get_weather", {"city": "Paris, FR", "units": "imperial"})
        assert imperial["temperature"] == 64.4 and imperial["temperature_unit"] == "F"
        assert imperial["wind_unit"] == "mph"
        forecast = await ok(peer, "3", "get_forecast", {"city": "Lisbon", "days": 7})
        assert len(forecast["days"]) == 7 and forecast["days"][0]["day"] == 1
        assert len((await ok(peer, "4", "get_forecast", {"city": "Tokyo"}))["days"]) == 3


async def test_weather_business_errors_are_error_replies() -> None:
    async with running_supervisor([WeatherAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "w", "weather")
        message = await fails(peer, "1", "get_weather", {"city": "Atlantis"})
        assert "unknown city 'Atlantis'" in message and "Paris" in message
        assert "between 1 and 7, got 8" in await fails(
            peer, "2", "get_forecast", {"city": "Paris", "days": 8}
        )
        assert "got 0" in await fails(peer, "3", "get_forecast", {"city": "Paris", "days": 0})
        invalid = await peer.call_tool("4", "get_weather", {"city": "Paris", "units": "kelvin"})
        assert isinstance(invalid, ev.ToolFailure) and "invalid arguments" in invalid.message
        assert isinstance(await peer.call_tool("5", "get_weather", {"city": "Oslo"}), ev.ToolFailure)
        assert sup.inspect("w").restarts == 0


async def test_weather_streams_text_answers_through_the_actor() -> None:
    async with running_supervisor([WeatherAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "w", "weather")
        chunks, content = await stream_reply(peer, "t1", "What's the weather in Berlin?")
        assert len(chunks) > 1 and content == "".join(chunks)
        assert content == "Right now in Berlin: 17.5°C and partly cloudy, humidity 61%."
        chunks, content = await stream_reply(peer, "t2", "forecast for london please")
        assert content.startswith("Tomorrow in London: sunny")
        _, content = await stream_reply(peer, "t3", "hello")
        assert content.startswith("I can tell you the weather in Amsterdam")


async def test_weather_on_message_with_answer_message() -> None:
    sent: list[ev.OutboundEvent] = []

    async def send(event: ev.OutboundEvent) -> None:
        sent.append(event)

    await answer_message(WeatherAgent(), ev.CustomerMessage("t", "tokyo and paris?"), send)
    *chunks, complete = sent
    assert all(isinstance(c, ev.ReplyChunk) for c in chunks) and len(chunks) >= 4
    assert isinstance(complete, ev.ReplyComplete)
    assert complete.content.startswith("Right now in Paris") and "Tokyo" in complete.content


# ------------------------------------------------------------------ echo


async def test_echo_tool_and_word_by_word_stream() -> None:
    async with running_supervisor([EchoAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "e", "echo")
        assert await ok(peer, "1", "echo", {"text": "ping"}) == {"text": "ping"}
        chunks, content = await stream_reply(peer, "t", "hello  big\nworld ")
        assert chunks == ["hello  ", "big\n", "world "] and content == "hello  big\nworld "
        chunks, content = await stream_reply(peer, "t2", "")
        assert chunks == [] and content == ""
    assert tool_schemas(EchoAgent) == [
        {
            "name": "echo",
            "description": "Return the text unchanged.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string", "description": "what to echo back."}},
                "required": ["text"],
                "additionalProperties": False,
            },
        }
    ]


# ------------------------------------------------------------------ customer service


def test_customer_service_descriptions_come_from_docstring_args() -> None:
    tools = {t["name"]: t for t in tool_schemas(CustomerServiceAgent)}
    assert list(tools) == [
        "lookup_customer",
        "check_order_status",
        "open_ticket",
        "list_tickets",
        "refund_order",
    ]
    ticket = tools["open_ticket"]["parameters"]
    assert ticket["required"] == ["subject"]
    assert ticket["properties"]["priority"]["enum"] == ["low", "normal", "high"]
    assert ticket["properties"]["customer_id"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert tools["lookup_customer"]["parameters"]["properties"]["customer_id"]["description"] == (
        'the customer\'s id, e.g. "C-100".'
    )
    assert not CustomerServiceAgent.__tools__["lookup_customer"].is_async
    assert not CustomerServiceAgent.__tools__["list_tickets"].is_async


async def test_customer_service_lookups() -> None:
    async with running_supervisor([CustomerServiceAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "cs", "customer-service")
        customer = await ok(peer, "1", "lookup_customer", {"customer_id": "c-100"})
        assert customer["name"] == "Ada Lovelace" and customer["orders"] == ["O-5001", "O-5002"]
        assert "no customer with id 'C-999'" in await fails(
            peer, "2", "lookup_customer", {"customer_id": "C-999"}
        )
        status = await ok(peer, "3", "check_order_status", {"order_id": "O-5002"})
        assert status["status"] == "shipped" and status["carrier"] == "UPS"
        assert "no order" in await fails(peer, "4", "check_order_status", {"order_id": "nope"})


async def test_customer_service_refund_rules() -> None:
    async with running_supervisor([CustomerServiceAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "cs", "customer-service")
        too_much = await fails(
            peer, "1", "refund_order", {"order_id": "O-5001", "reason": "x", "amount": 100}
        )
        assert "more than the 59.90 left" in too_much
        partial = await ok(
            peer, "2", "refund_order", {"order_id": "O-5001", "reason": "dented", "amount": 10}
        )
        assert partial == {"order_id": "O-5001", "refunded": 10.0, "remaining": 49.9, "reason": "dented"}
        status = await ok(peer, "3", "check_order_status", {"order_id": "O-5001"})
        assert status["status"] == "partially_refunded" and status["refunded"] == 10.0
        rest = await ok(peer, "4", "refund_order", {"order_id": "O-5001", "reason": "broken"})
        assert rest["refunded"] == 49.9 and rest["remaining"] == 0
        again = await fails(peer, "5", "refund_order", {"order_id": "O-5001", "reason": "again"})
        assert "already refunded" in again
        assert "already refunded" in await fails(
            peer, "6", "refund_order", {"order_id": "O-5004", "reason": "x"}
        )
        assert "still processing" in await fails(
            peer, "7", "refund_order", {"order_id": "O-5003", "reason": "x"}
        )
        negative = await fails(peer, "8", "refund_order", {"order_id": "O-5002", "reason": "x", "amount": -5})
        assert "must be positive" in negative
        assert "needs a reason" in await fails(
            peer, "9", "refund_order", {"order_id": "O-5002", "reason": " "}
        )


async def test_customer_service_tickets_are_per_conversation() -> None:
    async with running_supervisor([CustomerServiceAgent]) as (sup, platform, _):
        a = await open_conversation(sup, platform, "a", "customer-service")
        b = await open_conversation(sup, platform, "b", "customer-service")
        first = await ok(a, "1", "open_ticket", {"subject": "  parcel   lost ", "customer_id": "C-101"})
        assert first == {
            "ticket_id": "T-1001",
            "subject": "parcel lost",
            "priority": "normal",
            "customer_id": "C-101",
            "status": "open",
        }
        await ok(a, "2", "open_ticket", {"subject": "wrong size", "priority": "high"})
        await ok(b, "1", "open_ticket", {"subject": "invoice missing", "priority": "low"})
        assert [t["subject"] for t in await ok(a, "3", "list_tickets")] == ["parcel lost", "wrong size"]
        listed_b = await ok(b, "2", "list_tickets")
        assert [(t["ticket_id"], t["subject"]) for t in listed_b] == [("T-1001", "invoice missing")]
        assert "needs a subject" in await fails(b, "3", "open_ticket", {"subject": "   "})
        assert "no customer" in await fails(b, "4", "open_ticket", {"subject": "s", "customer_id": "C-1"})
        assert len(await ok(b, "5", "list_tickets")) == 1


async def test_customer_service_hooks_log_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="examples.customer_service")
    async with running_supervisor([CustomerServiceAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "cs-log", "customer-service")
        await ok(peer, "1", "open_ticket", {"subject": "help"})
        await peer.end()
        assert await sup.wait_ended("cs-log") == "completed"
    messages = [r.getMessage() for r in caplog.records if r.name == "examples.customer_service"]
    assert messages[0] == "conversation cs-log started"
    assert messages[-1] == "conversation cs-log ended: 1 ticket(s) opened, 0 refund(s) issued"


# ------------------------------------------------------------------ booking

FRIDAY = "2025-06-13"
MONDAY = "2025-06-16"
ADA = {"name": "Ada Lovelace", "email": "ada@example.com"}


def test_booking_confirm_takes_a_nested_guest_object() -> None:
    tools = {t["name"]: t for t in tool_schemas(BookingAgent)}
    assert list(tools) == ["check_availability", "hold_room", "confirm_booking", "cancel_booking"]
    guest = tools["confirm_booking"]["parameters"]["properties"]["guest"]
    assert guest["type"] == "object" and guest["required"] == ["name", "email"]
    assert guest["properties"]["name"] == {"type": "string", "description": "the guest's full name"}
    assert guest["additionalProperties"] is False


async def test_booking_check_hold_confirm_cancel() -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "bk", "booking")
        found = await ok(peer, "1", "check_availability", {"date": MONDAY, "nights": 2, "guests": 2})
        assert [r["room_type"] for r in found["rooms"]] == ["double", "suite"]
        assert found["rooms"][0]["total"] == 258.0
        hold = await ok(peer, "2", "hold_room", {"room_type": "double", "date": MONDAY, "nights": 2})
        assert hold["hold_id"] == "H-1" and hold["expires_in_seconds"] == HOLD_SECONDS
        booking = await ok(peer, "3", "confirm_booking", {"hold_id": "H-1", "guest": ADA})
        assert booking == {
            "booking_id": "B-1",
            "room_type": "double",
            "check_in": MONDAY,
            "nights": 2,
            "guest": ADA,
            "total": 258.0,
            "status": "confirmed",
        }
        assert "already confirmed" in await fails(
            peer, "4", "confirm_booking", {"hold_id": "H-1", "guest": ADA}
        )
        assert await ok(peer, "5", "cancel_booking", {"booking_id": "b-1"}) == {
            "booking_id": "B-1",
            "status": "cancelled",
            "refund": 258.0,
        }
        assert "already cancelled" in await fails(peer, "6", "cancel_booking", {"booking_id": "B-1"})
        assert "no booking 'B-7'" in await fails(peer, "7", "cancel_booking", {"booking_id": "B-7"})


async def test_booking_steps_out_of_order_are_business_errors() -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "bk", "booking")
        assert "no holds in this conversation" in await fails(
            peer, "1", "confirm_booking", {"hold_id": "H-1", "guest": ADA}
        )
        early = await fails(peer, "2", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        assert "check availability first" in early
        await ok(peer, "3", "check_availability", {"date": MONDAY, "nights": 1})
        other_stay = await fails(peer, "4", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 3})
        assert "check availability first for 2025-06-16, 3 night(s)" in other_stay
        await ok(peer, "5", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        assert "no hold 'H-9'; holds: H-1" in await fails(
            peer, "6", "confirm_booking", {"hold_id": "H-9", "guest": ADA}
        )


async def test_booking_room_rules() -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "bk", "booking")
        friday = await ok(peer, "1", "check_availability", {"date": FRIDAY, "guests": 1})
        assert [r["room_type"] for r in friday["rooms"]] == ["single", "double"]  # suites sold out
        sold_out = await fails(peer, "2", "hold_room", {"room_type": "suite", "date": FRIDAY, "nights": 1})
        assert "no suite room is available from 2025-06-13" in sold_out
        long_stay = await ok(peer, "3", "check_availability", {"date": MONDAY, "nights": 3})
        assert (
            "suite" not in [r["room_type"] for r in long_stay["rooms"]] and "at most 2" in long_stay["note"]
        )
        too_long = await fails(peer, "4", "hold_room", {"room_type": "suite", "date": MONDAY, "nights": 3})
        assert "at most 2 nights" in too_long
        crowd = await ok(peer, "5", "check_availability", {"date": MONDAY, "guests": 3})
        assert [r["room_type"] for r in crowd["rooms"]] == ["suite"]
        assert "between 1 and 4" in await fails(
            peer, "6", "check_availability", {"date": MONDAY, "guests": 5}
        )
        assert "between 1 and 14" in await fails(
            peer, "7", "check_availability", {"date": MONDAY, "nights": 0}
        )
        assert "YYYY-MM-DD" in await fails(peer, "8", "check_availability", {"date": "13/06/2025"})
        assert "not a calendar date" in await fails(peer, "9", "check_availability", {"date": "2025-02-30"})


async def test_booking_hold_expires_after_three_failed_confirmations() -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "bk", "booking")
        await ok(peer, "1", "check_availability", {"date": MONDAY})
        await ok(peer, "2", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        bad = {"name": "Ada", "email": "not-an-email"}
        first = await fails(peer, "3", "confirm_booking", {"hold_id": "H-1", "guest": bad})
        assert "is not an email address; 2 attempt(s) left" in first
        nameless = await fails(
            peer, "4", "confirm_booking", {"hold_id": "H-1", "guest": {**ADA, "name": " "}}
        )
        assert "name is empty; 1 attempt(s) left" in nameless
        last = await fails(peer, "5", "confirm_booking", {"hold_id": "H-1", "guest": bad})
        assert "has now expired" in last
        after = await fails(peer, "6", "confirm_booking", {"hold_id": "H-1", "guest": ADA})
        assert "expired after 3 failed confirmation attempts" in after
        await ok(peer, "7", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        assert (await ok(peer, "8", "confirm_booking", {"hold_id": "H-2", "guest": ADA}))[
            "booking_id"
        ] == "B-1"


async def test_booking_hold_expires_after_its_time(autojump_clock: trio.testing.MockClock) -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        peer = await open_conversation(sup, platform, "bk", "booking")
        await ok(peer, "1", "check_availability", {"date": MONDAY})
        await ok(peer, "2", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        await ok(peer, "3", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        await trio.sleep(HOLD_SECONDS - 1)
        await ok(peer, "4", "confirm_booking", {"hold_id": "H-1", "guest": ADA})
        await trio.sleep(1)
        expired = await fails(peer, "5", "confirm_booking", {"hold_id": "H-2", "guest": ADA})
        assert "hold H-2 expired; holds last 15 minutes" in expired


async def test_booking_state_is_per_conversation() -> None:
    async with running_supervisor([BookingAgent]) as (sup, platform, _):
        a = await open_conversation(sup, platform, "a", "booking")
        b = await open_conversation(sup, platform, "b", "booking")
        await ok(a, "1", "check_availability", {"date": MONDAY})
        await ok(a, "2", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        hold_in_b = await fails(b, "1", "hold_room", {"room_type": "single", "date": MONDAY, "nights": 1})
        assert "check availability first" in hold_in_b
        assert "no holds" in await fails(b, "2", "confirm_booking", {"hold_id": "H-1", "guest": ADA})
