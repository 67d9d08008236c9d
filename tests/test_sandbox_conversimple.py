"""The sandbox's Conversimple side, driven by a raw client built from the protocol codecs."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from examples.echo import EchoAgent
from examples.weather import WeatherAgent
from orchestrator import events
from orchestrator.agent import tool_schemas
from orchestrator.errors import HandshakeError, LinkClosedError, PermanentLinkError
from orchestrator.protocols import conversimple as wire
from orchestrator.sandbox import CallRecord, ConversationPlan, SandboxServer, Scenario, ToolTurn, load_plan
from orchestrator.sandbox.conversation import PUSH_GRACE, ConversimpleConversation, OpenCall, Socket
from orchestrator.sandbox.load import progress_line
from orchestrator.testing import memory_websocket_pair
from orchestrator.transport import ServerWebSocket, connect, serve
from tests.helpers import wait_until
from tests.sandbox_client import RawAgent, RawSocket

ECHO_TOOLS = tool_schemas(EchoAgent)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[SandboxServer]:
    options = getattr(request, "param", {})
    sandbox = SandboxServer(**options)
    async with trio.open_nursery() as nursery:
        await nursery.start(sandbox.run)
        yield sandbox
        nursery.cancel_scope.cancel()


def echo_calls(*texts: str, agent_id: str = "echo") -> Scenario:
    turns = tuple(ToolTurn("echo", {"text": t}, expect_result={"text": t}) for t in texts)
    return Scenario("t", (ConversationPlan(agent_id, turns=turns),))


async def joined(server: SandboxServer, **options: Any) -> RawSocket:
    sock = await RawSocket.open(server.conversimple_url, **options)
    assert isinstance(await sock.join(), wire.JoinOk)
    return sock


async def registered(server: SandboxServer, *texts: str) -> tuple[RawSocket, RawSocket, str]:
    """A conversation of echo calls registered on a socket of its own: (the control
    socket, kept open; that socket; the conversation id)."""
    control = await joined(server)
    (cid,) = server.add_conversations(echo_calls(*texts))
    await control.expect(wire.ConversationReady)
    sock = await joined(server)
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    return control, sock, cid


async def running(
    server: SandboxServer, nursery: trio.Nursery, conv: Any, cid: str
) -> tuple[RawSocket, RawSocket]:
    """``conv`` run by the router in ``nursery``, announced and registered on a socket of
    its own: (the control socket, kept open; that socket)."""
    control = await joined(server)
    nursery.start_soon(server.conversimple.run_conversation, conv, random.Random(0))
    await control.expect(wire.ConversationReady)
    sock = await joined(server)
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    return control, sock


async def dropped_after_its_request(
    server: SandboxServer, text: str
) -> tuple[RawSocket, str, wire.ToolCallRequest]:
    """A one-call conversation registered on a socket the sandbox drops once the request
    is out: (the control socket, kept open; the conversation id; the request)."""
    control, sock, cid = await registered(server, text)
    request = await sock.expect(wire.ToolCallRequest)
    assert server.drop_socket(cid)
    with pytest.raises(LinkClosedError):
        await sock.next()
    return control, cid, request


# ---------------------------------------------------------------- join and handshake


async def test_join_accepts_any_key_when_none_configured(server: SandboxServer) -> None:
    sock = await RawSocket.open(server.conversimple_url, api_key="whatever")
    assert sock.ws.subprotocol == wire.SUBPROTOCOL
    assert isinstance(await sock.join(), wire.JoinOk)


@pytest.mark.parametrize("server", [{"api_keys": {"good"}, "suspended_customers": {"bad-co"}}], indirect=True)
async def test_join_rejections(server: SandboxServer) -> None:
    assert isinstance(
        await (await RawSocket.open(server.conversimple_url, api_key="good")).join(), wire.JoinOk
    )
    wrong = await (await RawSocket.open(server.conversimple_url, api_key="nope")).join()
    assert isinstance(wrong, wire.JoinRejected) and wrong.reason == "unauthorized" and wrong.permanent
    sock = await RawSocket.open(server.conversimple_url, api_key="good", customer_id="bad-co")
    suspended = await sock.join()
    assert isinstance(suspended, wire.JoinRejected) and suspended.reason == "customer_suspended"
    assert suspended.permanent


@pytest.mark.parametrize("server", [{"api_keys": {"good"}, "auth_at_handshake": True}], indirect=True)
async def test_handshake_rejections(server: SandboxServer) -> None:
    with pytest.raises(PermanentLinkError, match="401"):
        await RawSocket.open(server.conversimple_url, api_key="nope")
    await joined(server, api_key="good")
    server.refuse_handshakes(503)
    with pytest.raises(HandshakeError, match="503") as caught:
        await RawSocket.open(server.conversimple_url, api_key="good")
    assert not isinstance(caught.value, PermanentLinkError)
    server.refuse_handshakes(None)
    await joined(server, api_key="good")
    with pytest.raises(HandshakeError, match="404"):
        await connect(server.base_url + "/elsewhere")


# ---------------------------------------------------------------- routing


async def test_conversation_is_announced_once_to_the_earliest_socket(server: SandboxServer) -> None:
    first, second = await joined(server), await joined(server)
    (cid,) = server.add_conversations(echo_calls("hi"))
    ready = await first.expect(wire.ConversationReady)
    assert (ready.conversation_id, ready.agent_id) == (cid, "echo")
    await first.aclose()
    await wait_until(lambda: server.conversimple.sockets_open == 1, 5, "the server to let the first go")
    # The next conversation goes to the socket that is now the earliest; the first is not re-announced.
    (cid2,) = server.add_conversations(echo_calls("again"))
    ready2 = await second.expect(wire.ConversationReady)
    assert ready2.conversation_id == cid2
    assert [e.event for e in server.recorder.transcript(cid)] == ["conversation_ready"]


async def test_announcement_waits_for_a_joined_socket(server: SandboxServer) -> None:
    (cid,) = server.add_conversations(echo_calls("hi"))
    await trio.testing.wait_all_tasks_blocked()
    sock = await joined(server)
    assert (await sock.expect(wire.ConversationReady)).conversation_id == cid


async def test_register_start_calls_and_end(server: SandboxServer) -> None:
    control = await joined(server)
    (cid,) = server.add_conversations(echo_calls("one", "two"))
    await control.expect(wire.ConversationReady)
    sock = await joined(server)
    await sock.register(cid, ECHO_TOOLS)
    reply = (await sock.next(replies=True)).message
    assert reply == wire.PhxReply("ok", {})
    assert await sock.expect(wire.ConversationLifecycle) == wire.ConversationLifecycle(
        "conversation_started", cid
    )
    for text in ("one", "two"):
        request = await sock.expect(wire.ToolCallRequest)
        assert (request.tool_name, request.arguments, request.conversation_id) == (
            "echo",
            {"text": text},
            cid,
        )
        assert request.timeout_seconds == server.settings.timeout_seconds
        await sock.answer(request, {"text": text})
    assert await sock.expect(wire.ConversationLifecycle) == wire.ConversationLifecycle(
        "conversation_ended", cid
    )
    # ...and the control connection hears the end too.
    assert (await control.expect(wire.ConversationLifecycle)).event == "conversation_ended"
    await server.wait_done([cid])
    log = server.conversation(cid)
    assert log.outcome == "completed" and not log.failures
    assert [c.status for c in log.calls] == ["ok", "ok"]
    assert [e.event for e in log.entries] == [
        "conversation_ready", "register_conversation_tools", "conversation_lifecycle",
        "tool_call_request", "tool_call_response", "tool_call_request", "tool_call_response",
        "conversation_lifecycle", "conversation_lifecycle",  # to its socket and to the control socket
    ]  # fmt: skip


async def test_single_socket_agent_serves_everything(server: SandboxServer) -> None:
    sock = await joined(server)
    (cid,) = server.add_conversations(echo_calls("x"))
    assert (await sock.expect(wire.ConversationReady)).conversation_id == cid
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    await sock.answer(await sock.expect(wire.ToolCallRequest), {"text": "x"})
    ended = await sock.expect(wire.ConversationLifecycle)
    assert ended.event == "conversation_ended"
    await server.wait_done([cid])
    assert server.conversation(cid).outcome == "completed"
    assert [e.event for e in server.conversation(cid).entries].count("conversation_lifecycle") == 2


async def test_errors_and_failed_expectations(server: SandboxServer) -> None:
    turns = (
        ToolTurn("echo", {"text": "a"}, expect_result={"text": "b"}),
        ToolTurn("echo", {"text": "a"}, expect_error="boom"),
        ToolTurn("echo", {"text": "a"}, expect_error="boom"),
    )
    agent_calls: list[Any] = []
    sock = await joined(server)
    (cid,) = server.add_conversations(Scenario("t", (ConversationPlan("echo", turns=turns),)))
    await sock.expect(wire.ConversationReady)
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    first = await sock.expect(wire.ToolCallRequest)
    await sock.answer(first, {"text": "a"})
    second = await sock.expect(wire.ToolCallRequest)
    await sock.send(events.ToolFailure(second.call_id, "echo", "boom!", 1.0), cid)
    third = await sock.expect(wire.ToolCallRequest)
    await sock.send(events.ToolFailure(third.call_id, "echo", "other", 1.0), cid)
    agent_calls.extend([first, second, third])
    await server.wait_done([cid])
    log = server.conversation(cid)
    assert log.outcome == "failed"
    assert [c.status for c in log.calls] == ["ok", "error", "error"]
    assert log.calls[1].error == "boom!"
    assert len(log.failures) == 2 and "turn 0" in log.failures[0] and "turn 2" in log.failures[1]


@attrs.define(eq=False)
class _NotingConversation(ConversimpleConversation):
    """Notes which task opened each of its calls."""

    opened_by: list[trio.lowlevel.Task] = attrs.Factory(list)

    def open_call(self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None) -> OpenCall:
        self.opened_by.append(trio.lowlevel.current_task())
        return super().open_call(tool_name, arguments, encoded)


async def test_the_answers_task_sends_the_next_call_in_order(server: SandboxServer) -> None:
    """The fast path: an answer's socket task checks it and sends the next call (the
    customer's task sleeps through them), in order, with the frames the customer's own
    task would send."""
    router = server.conversimple
    texts = ("one", "two", "three", "four")
    plan = ConversationPlan(
        "echo", turns=tuple(ToolTurn("echo", {"text": t}, expect_result={"text": t}) for t in texts)
    )
    conv = _NotingConversation(router, server.recorder.open("c-chain", "echo", "conversimple"), plan)
    async with trio.open_nursery() as nursery:
        _control, sock = await running(server, nursery, conv, "c-chain")
        for number, text in enumerate(texts, 1):
            request = await sock.expect(wire.ToolCallRequest)
            assert (request.call_id, request.tool_name, request.arguments) == (
                f"c-chain-c{number}",
                "echo",
                {"text": text},
            )
            await sock.answer(request, {"text": "wrong" if number == 2 else text})
        assert (await sock.expect(wire.ConversationLifecycle)).event == "conversation_ended"
    customer_task, *answer_tasks = conv.opened_by
    assert len(set(answer_tasks)) == 1 and customer_task not in answer_tasks  # the socket's task
    log = conv.log
    assert [c.status for c in log.calls] == ["ok"] * 4 and [c.deliveries for c in log.calls] == [1] * 4
    assert all(c.latency is not None and c.latency >= 0 for c in log.calls)
    assert log.outcome == "failed" and len(log.failures) == 1 and log.failures[0].startswith("turn 1 (echo)")
    assert [e.event for e in log.entries].count("tool_call_request") == 4
    assert not conv.pending


async def test_a_customer_that_thinks_first_sends_its_calls_itself(server: SandboxServer) -> None:
    """The fast path's fallback: where the customer must wait before a call, its own task sends it."""

    @attrs.define(eq=False)
    class Waiting(_NotingConversation):
        def can_call_now(self) -> bool:
            return False

    conv = Waiting(
        server.conversimple,
        server.recorder.open("c-wait", "echo", "conversimple"),
        echo_calls("a", "b", "c").conversations[0],
    )
    async with trio.open_nursery() as nursery:
        _control, sock = await running(server, nursery, conv, "c-wait")
        for text in ("a", "b", "c"):
            await sock.answer(await sock.expect(wire.ToolCallRequest), {"text": text})
        assert (await sock.expect(wire.ConversationLifecycle)).event == "conversation_ended"
    assert len(set(conv.opened_by)) == 1  # the customer's task, every time
    assert conv.log.outcome == "completed" and [c.status for c in conv.log.calls] == ["ok"] * 3


async def test_a_customer_failing_in_the_answers_task_fails_its_own_task_not_the_socket(
    server: SandboxServer,
) -> None:
    @attrs.define(eq=False)
    class Broken(ConversimpleConversation):
        def after_call(self, record: CallRecord) -> None:
            raise RuntimeError(f"broken after {record.call_id}")

    router = server.conversimple
    conv = Broken(
        router,
        server.recorder.open("c-broken", "echo", "conversimple"),
        echo_calls("a", "b").conversations[0],
    )
    sock = await joined(server)

    async def agent() -> None:
        await sock.expect(wire.ConversationReady)
        await sock.register("c-broken", ECHO_TOOLS)
        await sock.expect(wire.ConversationLifecycle)
        await sock.answer(await sock.expect(wire.ToolCallRequest), {"text": "a"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        with pytest.raises(RuntimeError, match="broken after c-broken-c1"):
            await router.run_conversation(conv, random.Random(0))
    assert [c.status for c in conv.log.calls] == ["ok"]  # no second call went out
    await sock.ws.send_text(sock.client.heartbeat())  # the socket is still served
    assert (await sock.next(replies=True)).message == wire.PhxReply("ok", {})


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("server", [{"redelivery_delay": 0.5}], indirect=True)
async def test_unanswered_call_is_redelivered_after_reregistration(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        _control, cid, request = await dropped_after_its_request(server, "lost?")
        again = await joined(server)
        await again.register(cid, ECHO_TOOLS)
        redelivered = await again.expect(wire.ToolCallRequest)  # no second conversation_started
        assert redelivered.call_id == request.call_id
        await again.answer(redelivered, {"text": "lost?"})
        await server.wait_done([cid])
        (call,) = server.conversation(cid).calls
        assert (call.status, call.deliveries, call.answers) == ("ok", 2, 1)
        assert server.conversation(cid).outcome == "completed"


async def test_drop_right_after_request_and_answer_after_reconnect(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    """The agent keeps the result while disconnected and sends it after re-registering: once."""
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        control = await joined(server)
        (cid,) = server.add_conversations(echo_calls("kept"))
        await control.expect(wire.ConversationReady)
        server.drop_after_next_request(cid)
        sock = await joined(server)
        await sock.register(cid, ECHO_TOOLS)
        await sock.expect(wire.ConversationLifecycle)
        call_id = f"{cid}-c1"
        with pytest.raises(LinkClosedError):
            while True:
                await sock.next()
        again = await joined(server)
        await again.register(cid, ECHO_TOOLS)
        await again.send(events.ToolResult(call_id, "echo", {"text": "kept"}), cid)
        ended = await again.expect(wire.ConversationLifecycle)  # no redelivery came first
        assert ended.event == "conversation_ended"
        await server.wait_done([cid])
        (call,) = server.conversation(cid).calls
        assert (call.status, call.deliveries, call.answers) == ("ok", 1, 1)
        assert server.recorder.duplicates == 0


async def test_a_call_sent_by_the_answers_task_is_redelivered_after_reconnect(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        _control, sock, cid = await registered(server, "a", "b", "c")
        first = await sock.expect(wire.ToolCallRequest)
        server.drop_after_next_request(cid)  # the second request, sent by the socket's own task
        await sock.answer(first, {"text": "a"})
        with pytest.raises(LinkClosedError):
            while True:
                await sock.next()
        again = await joined(server)
        await again.register(cid, ECHO_TOOLS)
        second = await again.expect(wire.ToolCallRequest)
        assert (second.call_id, second.arguments) == (f"{cid}-c2", {"text": "b"})
        await again.answer(second, {"text": "b"})
        third = await again.expect(wire.ToolCallRequest)
        assert third.call_id == f"{cid}-c3"
        await again.answer(third, {"text": "c"})
        await server.wait_done([cid])
        log = server.conversation(cid)
        assert log.outcome == "completed"
        assert [(c.status, c.deliveries, c.answers) for c in log.calls] == [
            ("ok", 1, 1),
            ("ok", 2, 1),
            ("ok", 1, 1),
        ]


@pytest.mark.parametrize("server", [{"call_timeout": 5.0}], indirect=True)
async def test_a_call_sent_by_the_answers_task_is_lost_and_the_customer_goes_on(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        sock = await joined(server)
        (cid,) = server.add_conversations(echo_calls("a", "b", "c"))
        await sock.expect(wire.ConversationReady)
        await sock.register(cid, ECHO_TOOLS)
        await sock.expect(wire.ConversationLifecycle)
        await sock.answer(await sock.expect(wire.ToolCallRequest), {"text": "a"})
        second = await sock.expect(wire.ToolCallRequest)  # left unanswered
        sent = trio.current_time()
        third = await sock.expect(wire.ToolCallRequest)  # once the reaper lost the second
        assert third.call_id == f"{cid}-c3" and trio.current_time() - sent >= 5.0
        await sock.answer(third, {"text": "c"})
        await server.wait_done([cid])
        await sock.answer(second, {"text": "b"})  # too late
        await trio.testing.wait_all_tasks_blocked()
        log = server.conversation(cid)
        assert [c.status for c in log.calls] == ["ok", "lost", "ok"]
        assert log.outcome == "lost" and log.failures == ["turn 1 (echo): no answer (lost)"]
        assert server.recorder.late_answers == 1 and server.recorder.duplicates == 0


async def test_duplicate_answer_is_counted(server: SandboxServer) -> None:
    sock = await joined(server)
    (cid,) = server.add_conversations(echo_calls("d", "e"))
    await sock.expect(wire.ConversationReady)
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    request = await sock.expect(wire.ToolCallRequest)
    await sock.answer(request, {"text": "d"})
    await sock.answer(request, {"text": "d"})
    await sock.answer(await sock.expect(wire.ToolCallRequest), {"text": "e"})
    await server.wait_done([cid])
    assert server.recorder.duplicates == 1
    assert server.conversation(cid).calls[0].answers == 2
    assert server.report([cid]).duplicates == 1


@pytest.mark.parametrize("server", [{"call_timeout": 5.0, "register_timeout": 3.0}], indirect=True)
async def test_timeouts_lose_calls_and_unregistered_conversations(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        sock = await joined(server)
        first, second = server.add_conversations(
            Scenario(
                "t",
                (
                    ConversationPlan("echo", turns=(ToolTurn("echo", {"text": "x"}),)),
                    ConversationPlan("nobody"),
                ),
            )
        )
        for _ in range(2):
            await sock.expect(wire.ConversationReady)
        await sock.register(first, ECHO_TOOLS)
        await sock.expect(wire.ConversationLifecycle)
        request = await sock.expect(wire.ToolCallRequest)
        await server.wait_done()
        assert server.conversation(first).outcome == "lost"
        assert server.conversation(second).outcome == "unregistered"
        await sock.answer(request, {"text": "x"})  # too late
        await trio.testing.wait_all_tasks_blocked()
        assert server.recorder.late_answers == 1
        assert server.report().calls_lost == 1


@pytest.mark.parametrize("server", [{"call_timeout": 5.0, "register_timeout": 100.0}], indirect=True)
async def test_a_registration_while_the_end_waits_for_a_socket_hears_the_end(
    autojump_clock: trio.abc.Clock, server: SandboxServer
) -> None:
    """The socket dropped and the customer finished: the end waits for the agent to be
    back. Its registration is accepted (refusing it as ended left both sides waiting
    until ``register_timeout``) and the end goes out on it; once the end is on its way,
    a registration is refused."""
    with trio.fail_after(1000):  # virtual time: a deadlock fails instead of spinning
        _control, cid, _ = await dropped_after_its_request(server, "gone")
        await trio.sleep(10)  # past call_timeout: the call is lost, the customer done
        assert server.conversation(cid).calls[0].status == "lost"
        back = trio.current_time()
        again = await joined(server)
        await again.register(cid, ECHO_TOOLS)
        assert (await again.next(replies=True)).message == wire.PhxReply("ok", {})
        # Next on that socket is the end: no conversation_started, no redelivery.
        assert (await again.next()).message == wire.ConversationLifecycle("conversation_ended", cid)
        await server.wait_done([cid])
        assert trio.current_time() - back < 1
        assert server.conversation(cid).outcome == "lost"
        late = await joined(server)
        await late.register(cid, ECHO_TOOLS)
        assert (await late.next(replies=True)).message == wire.PhxReply(
            "error", {"reason": "conversation_ended"}
        )


async def test_a_conversation_cancelled_before_its_end_refuses_a_registration(server: SandboxServer) -> None:
    # Found in review: it accepted one and then said nothing, ever.
    control = await joined(server)
    router = server.conversimple
    plan = ConversationPlan("echo", turns=(ToolTurn("echo", {"text": "x"}),))
    conv = ConversimpleConversation(router, server.recorder.open("c-cancelled", "echo", "conversimple"), plan)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(router.run_conversation, conv, random.Random(0))
        await control.expect(wire.ConversationReady)
        nursery.cancel_scope.cancel()
    sock = await joined(server)
    await sock.register("c-cancelled", ECHO_TOOLS)
    assert (await sock.next(replies=True)).message == wire.PhxReply("error", {"reason": "conversation_ended"})


async def test_progress_says_how_many_announced_conversations_an_agent_took(server: SandboxServer) -> None:
    # Found by a user: a load for an agent id nobody served showed "conversations 0/20"
    # for 30 s, with nothing to say the agent never took them.
    control = await joined(server)
    (cid,) = server.add_conversations(echo_calls("x"))
    await control.expect(wire.ConversationReady)
    await wait_until(lambda: server.recorder.counters["announced"] == 1, 5, "the announcement counted")
    assert "conversations 0/1  registered 0/1  calls" in progress_line(server.recorder, 1, 0.0)
    sock = await joined(server)
    await sock.register(cid, ECHO_TOOLS)
    await sock.expect(wire.ConversationLifecycle)
    assert "registered 1/1" in progress_line(server.recorder, 1, 0.0)


async def test_bad_frames_close_only_that_socket(server: SandboxServer) -> None:
    bad, good = await joined(server), await joined(server)
    await bad.ws.send_text("{not json")
    with pytest.raises(LinkClosedError):
        await bad.next()
    assert bad.ws.close_code == 1007
    assert server.recorder.violations == 1
    await good.ws.send_text(good.client.heartbeat())
    assert (await good.next(replies=True)).message == wire.PhxReply("ok", {})
    await good.ws.send_text('{"topic":"customer:cust","event":"brand_new","payload":{"x":1},"ref":"9"}')
    await good.ws.send_text(good.client.heartbeat())
    await good.next(replies=True)
    assert server.recorder.unknown_events == 1
    assert server.recorder.other[-2].event == "brand_new"


@pytest.mark.parametrize("server", [{"record_messages": False}, {}], indirect=True)
async def test_heartbeats_are_answered_as_the_full_decode_answers_them(
    server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heartbeats are read on a fast path unless messages are recorded: the reply is the same text.
    # Counted where the full decode reads a frame: the session, not the (compiled) router.
    full: list[str] = []
    receive = wire.ConversimpleServer.receive

    def counted(self: wire.ConversimpleServer, text: str) -> wire.Frame:
        frame = receive(self, text)
        full.append(type(frame.message).__name__)
        return frame

    monkeypatch.setattr(wire.ConversimpleServer, "receive", counted)
    sock = await joined(server)
    frames = [
        '{"join_ref":null,"ref":"5","topic":"customer:cust","event":"heartbeat","payload":{}}',
        '{"join_ref":"1","ref":null,"topic":"phoenix","event":"heartbeat"}',
        '{"ref":"6","topic":"customer:\\u00e9\\"q","event":"heartbeat","payload":{"x":[1]}}',
    ]
    for text in frames:
        await sock.ws.send_text(text)
        expected = wire.ConversimpleServer().reply(wire.decode_client_push(text))
        assert await sock.ws.receive_text() == expected
    await sock.ws.send_text('{"ref":"7","topic":"customer:cust","event":"heartbeat","payload":[]}')
    with pytest.raises(LinkClosedError):
        await sock.next()
    assert sock.ws.close_code == 1007
    heartbeats = [m for m in server.recorder.other if m.event == "heartbeat"]
    assert len(heartbeats) == full.count("Heartbeat") == (3 if server.recorder.messages else 0)


async def test_push_before_join_is_refused(server: SandboxServer) -> None:
    sock = await RawSocket.open(server.conversimple_url)
    await sock.register("conv-x", ECHO_TOOLS)
    reply = (await sock.next(replies=True)).message
    assert reply == wire.PhxReply("error", {"reason": "unmatched topic"})


async def test_register_for_an_unknown_conversation_is_refused(server: SandboxServer) -> None:
    sock = await joined(server)
    await sock.register("conv-nope", ECHO_TOOLS)
    assert (await sock.next(replies=True)).message == wire.PhxReply(
        "error", {"reason": "unknown_conversation"}
    )


async def test_synthetic_calls_cover_every_tool_with_valid_arguments(server: SandboxServer) -> None:
    agent = RawAgent(server.conversimple_url, {"weather": WeatherAgent})
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        ids = server.add_conversations(load_plan(3, 4, agent_id="weather", seed=7))
        with trio.fail_after(30):
            await server.wait_done(ids)
        nursery.cancel_scope.cancel()
    for cid in ids:
        log = server.conversation(cid)
        assert log.outcome == "completed"
        assert [c.tool_name for c in log.calls] == ["get_weather", "get_forecast"] * 2
        for call in log.calls:
            assert "invalid arguments" not in (call.error or ""), call.error


@pytest.mark.parametrize("server", [{"max_frame_bytes": 1000}], indirect=True)
async def test_oversized_frame_closes_only_that_socket(server: SandboxServer) -> None:
    big, other = await joined(server), await joined(server)
    pad = "x" * 2000
    await big.ws.send_text('{"topic":"customer:cust","event":"heartbeat","payload":{"pad":"' + pad + '"}}')
    with pytest.raises(LinkClosedError):
        await big.next()
    assert big.ws.close_code == 1009
    await trio.testing.wait_all_tasks_blocked()
    assert server.recorder.violations == 1
    await other.ws.send_text(other.client.heartbeat())
    assert (await other.next(replies=True)).message == wire.PhxReply("ok", {})


async def test_leave_stops_announcements_to_that_socket(server: SandboxServer) -> None:
    first, second = await joined(server), await joined(server)
    leave = '{"join_ref":"1","ref":"7","topic":"customer:cust","event":"phx_leave","payload":{}}'
    await first.ws.send_text(leave)
    assert (await first.next(replies=True)).message == wire.PhxReply("ok", {})
    (cid,) = server.add_conversations(echo_calls("x"))
    assert (await second.expect(wire.ConversationReady)).conversation_id == cid


async def test_a_drop_armed_while_a_sent_request_yields_is_for_the_next_one(server: SandboxServer) -> None:
    # Found in CI, once in a full run: a request's frame had left, its task was yielding
    # (as a send does every few frames), the peer read it and armed "drop after the next
    # request", and the drop fired for this one: the link was cut before its answer.
    router = server.conversimple
    plan = ConversationPlan("echo", turns=(ToolTurn("echo", {"text": "x"}),))
    conv = ConversimpleConversation(router, server.recorder.open("c-drop", "echo", "conversimple"), plan)
    aborted: list[object] = []

    class YieldingWebSocket:
        """Takes the frame at once, then yields before its sender goes on."""

        def send_text_soon(self, text: str, *, yielding: bool = True) -> Any:
            return trio.lowlevel.cancel_shielded_checkpoint()  # noqa: ASYNC105 - the caller awaits it

        def abort(self) -> None:
            aborted.append(self)

    ws = YieldingWebSocket()
    sock = Socket(ws, wire.ConversimpleServer(), 1)  # type: ignore[arg-type]
    first = conv.open_call("echo", {"text": "a"}, None)
    sending = conv.deliver_soon(sock, first)
    assert sending is not None
    router.drop_after_next_request("c-drop")  # the peer has the first request: arm for the next
    await sending
    assert aborted == []
    second = conv.open_call("echo", {"text": "b"}, None)
    sending = conv.deliver_soon(sock, second)
    assert sending is not None
    await sending
    assert aborted == [ws]


PREFIX = '[1,null,"customer:c",'
"""What every push on the push tests' channel starts with."""
READY_C1 = f'{PREFIX}"conversation_ready",{{"conversation_id":"c1"}}]'


async def test_a_push_cancelled_on_the_way_still_sends_its_frame_whole() -> None:
    # Found by a simulation's Ctrl-C: a conversation cancelled while announcing itself
    # cut the frame, and the transport then dropped the control socket every other
    # conversation shared ("control connection lost (closed)" on the agent's side).
    agent_end, server_end = memory_websocket_pair()
    sock = Socket(server_end, wire.ConversimpleServer(), 1, prefix=PREFIX)  # type: ignore[arg-type]
    with trio.CancelScope() as scope:
        scope.cancel()
        await sock.push("conversation_ready", '{"conversation_id":"c1"}')
    assert scope.cancelled_caught  # the sender is cancelled, after the frame went
    with trio.fail_after(1):
        frame = await agent_end.receive_text()
    assert frame == READY_C1
    assert await sock.push("conversation_ready", '{"conversation_id":"c2"}')  # the socket lives on


async def test_a_push_queued_behind_another_frame_leaves_with_it_even_if_its_sender_is_cancelled(
    nursery: trio.Nursery,
) -> None:
    # A push that finds another task writing to the socket queues its frame behind that
    # task's: the writer carries it, so its sender just waits (no task of its own, which
    # every conversation's end paid on a busy control socket), and cancelled returns at once.
    accepted: list[Any] = []

    async def hold(ws: ServerWebSocket) -> None:
        # A small send buffer, and an agent that reads nothing before the check: 1 MiB fills both.
        ws._pipe._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[attr-defined]
        accepted.append(ws)
        await trio.sleep_forever()

    port = await nursery.start(partial(serve, hold, "127.0.0.1", 0))
    agent = await connect(f"ws://127.0.0.1:{port}/ws", implementation="sansio", max_frame_bytes=2 << 20)
    await wait_until(lambda: bool(accepted), 10, "the accepted socket")
    sock = Socket(accepted[0], wire.ConversimpleServer(), 1, prefix=PREFIX)
    big = "x" * (1 << 20)
    first: list[bool] = []

    async def push_big() -> None:
        first.append(await sock.push("conversation_ready", f'"{big}"'))

    nursery.start_soon(push_big)
    await wait_until(lambda: sock.ws.writer_busy, 10, "the big frame to fill the socket")
    with trio.fail_after(PUSH_GRACE / 2), trio.CancelScope() as scope:
        scope.cancel()
        await sock.push("conversation_lifecycle", '{"conversation_id":"c1"}')
    assert scope.cancelled_caught
    assert sock.ws.writer_busy and first == []  # it did not wait for the frames before it
    assert await agent.receive_text() == f'{PREFIX}"conversation_ready","{big}"]'
    assert await agent.receive_text() == f'{PREFIX}"conversation_lifecycle",{{"conversation_id":"c1"}}]'
    await wait_until(lambda: first == [True], 10, "the big push to finish")
    assert sock.ws.close_code is None  # the socket lives on
    await agent.aclose()


def slow_peer() -> tuple[Any, Socket]:
    """A control socket whose agent takes a frame only when it reads (no buffer)."""
    agent_end, server_end = memory_websocket_pair(buffer=0)
    return agent_end, Socket(server_end, wire.ConversimpleServer(), 1, prefix=PREFIX)  # type: ignore[arg-type]


async def read_after(agent_end: Any, delay: float, into: list[str]) -> None:
    """The agent reads one frame ``delay`` seconds from now."""
    await trio.sleep(delay)
    into.append(await agent_end.receive_text())


async def test_a_push_waits_for_a_busy_peer_however_long_it_takes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found by a 10,000-conversation benchmark round: an announcement that the busy
    # agent had not read within PUSH_GRACE gave the control socket up, uncancelled, and
    # every later conversation was announced on a conversation's socket instead.
    agent_end, sock = slow_peer()
    read: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_after, agent_end, 10 * PUSH_GRACE, read)
        assert await sock.push("conversation_ready", '{"conversation_id":"c1"}')
    assert trio.current_time() == pytest.approx(10 * PUSH_GRACE)
    assert read == [READY_C1]
    assert sock.ws.close_code is None  # the socket lives on


async def test_a_cancelled_push_goes_whole_if_the_peer_reads_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent_end, sock = slow_peer()
    read: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_after, agent_end, 1 + PUSH_GRACE / 2, read)
        with trio.move_on_after(1) as scope:
            await sock.push("conversation_ready", '{"conversation_id":"c1"}')
    assert scope.cancelled_caught  # the sender learns of its cancellation once the frame went
    assert trio.current_time() == pytest.approx(1 + PUSH_GRACE / 2)
    assert read == [READY_C1]
    assert sock.ws.close_code is None


async def test_a_cancelled_push_gives_the_socket_up_after_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _agent, sock = slow_peer()  # whose agent never reads
    with trio.move_on_after(1):
        pushed = await sock.push("conversation_ready", '{"conversation_id":"c1"}')
    assert not pushed
    assert trio.current_time() == pytest.approx(1 + PUSH_GRACE)
    assert sock.ws.close_code == 1006  # given up: what reached the agent is unknown
    assert not await sock.push("conversation_ready", '{"conversation_id":"c2"}')
