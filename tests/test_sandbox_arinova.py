"""The sandbox's Arinova side (/ws/agent), driven by a raw bot built from the protocol codec."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from orchestrator import events
from orchestrator.errors import LinkClosedError
from orchestrator.protocols import arinova as ar
from orchestrator.sandbox import ConversationPlan, MessageTurn, SandboxServer, Scenario
from orchestrator.transport import connect
from tests.sandbox_client import RawBot


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[SandboxServer]:
    sandbox = SandboxServer(**getattr(request, "param", {}))
    async with trio.open_nursery() as nursery:
        await nursery.start(sandbox.run)
        yield sandbox
        nursery.cancel_scope.cancel()


def chat(*messages: MessageTurn, agent_id: str = "echo") -> Scenario:
    return Scenario("t", (ConversationPlan(agent_id, "arinova", messages=messages),))


async def test_any_token_is_accepted_when_none_configured(server: SandboxServer) -> None:
    _, reply = await RawBot.open(server.arinova_url, "anything")
    assert reply == ar.AuthOk("sandbox-agent")


@pytest.mark.parametrize("server", [{"bot_tokens": {"t1": "weather"}}], indirect=True)
async def test_bot_tokens(server: SandboxServer) -> None:
    _, ok = await RawBot.open(server.arinova_url, "t1")
    assert ok == ar.AuthOk("weather")
    bot, refused = await RawBot.open(server.arinova_url, "wrong")
    assert refused == ar.AuthError("invalid bot token")
    with pytest.raises(LinkClosedError):
        await bot.ws.receive_text()


async def test_first_frame_must_be_auth(server: SandboxServer) -> None:
    ws = await connect(ar.agent_url(server.arinova_url))
    await ws.send_text(ar.encode_message(ar.Ping()))
    assert ar.decode_message(await ws.receive_text()) == ar.AuthError("expected agent_auth first")


async def test_messages_in_order_chunks_collected(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    (cid,) = server.add_conversations(
        chat(MessageTurn("one two", expect_reply="one two"), MessageTurn("three"))
    )
    first = await bot.task()
    assert (first.conversation_id, first.content) == (cid, "one two")
    await bot.send(events.ReplyChunk(first.task_id, "one "))
    await trio.testing.wait_all_tasks_blocked()
    assert server.conversation(cid).replies[0].chunks == ["one "]
    assert len(server.conversation(cid).replies) == 1  # the next message waits for this reply
    await bot.send(events.ReplyChunk(first.task_id, "two"))
    await bot.send(events.ReplyComplete(first.task_id, "one two"))
    second = await bot.task()
    assert second.content == "three" and second.task_id != first.task_id
    await bot.stream(second, ["th", "ree"])
    await server.wait_done([cid])
    log = server.conversation(cid)
    assert log.outcome == "completed"
    assert [(r.chunks, r.reply, r.status) for r in log.replies] == [
        (["one ", "two"], "one two", "ok"),
        (["th", "ree"], "three", "ok"),
    ]
    assert all(r.first_chunk is not None and r.latency is not None for r in log.replies)
    assert [e.event for e in log.entries].count("task") == 2


async def test_error_replies_and_expectations(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    (cid,) = server.add_conversations(
        chat(MessageTurn("a", expect_error="nope"), MessageTurn("b", expect_reply="bee"), MessageTurn("c"))
    )
    task = await bot.task()
    await bot.send(events.ReplyFailure(task.task_id, "nope, crashed"))
    task = await bot.task()
    await bot.stream(task, ["not b"])
    task = await bot.task()
    await bot.send(events.ReplyChunk(task.task_id, "x"))
    await bot.send(events.ReplyComplete(task.task_id, "y"))  # chunks that do not add up
    await server.wait_done([cid])
    log = server.conversation(cid)
    assert [r.status for r in log.replies] == ["ok" if i else "error" for i in range(3)]
    assert log.outcome == "failed"
    assert len(log.failures) == 2 and "add up" in log.failures[1]


async def test_ping_pong_and_unknown_messages(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    await bot.ws.send_text(bot.client.ping())
    assert ar.decode_message(await bot.ws.receive_text()) == ar.Pong()
    await bot.ws.send_text('{"type":"agent_typing","taskId":"x"}')
    await bot.ws.send_text(bot.client.ping())
    await bot.ws.receive_text()
    assert server.recorder.unknown_events == 1


@pytest.mark.parametrize("server", [{"ping_interval": 30.0}], indirect=True)
async def test_server_pings(autojump_clock: trio.abc.Clock, server: SandboxServer) -> None:
    with trio.fail_after(100):
        bot, _ = await RawBot.open(server.arinova_url)
        assert bot.client.receive(await bot.ws.receive_text()) == [ar.Outgoing(ar.encode_message(ar.Pong()))]


async def test_bad_frame_closes_the_bot_socket(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    await bot.ws.send_text('{"type": 3}')
    with pytest.raises(LinkClosedError):
        await bot.ws.receive_text()
    assert bot.ws.close_code == 1007 and server.recorder.violations == 1
    _, again = await RawBot.open(server.arinova_url)
    assert isinstance(again, ar.AuthOk)


async def test_drop_mid_reply_then_error_after_reconnect(server: SandboxServer) -> None:
    bot, _ = await RawBot.open(server.arinova_url)
    (cid,) = server.add_conversations(chat(MessageTurn("cut short"), MessageTurn("next")))
    task = await bot.task()
    server.drop_bot_after_next_chunk()
    await bot.send(events.ReplyChunk(task.task_id, "cut "))
    with pytest.raises(LinkClosedError):
        await bot.ws.receive_text()
    again, _ = await RawBot.open(server.arinova_url)
    await again.send(events.ReplyFailure(task.task_id, "reply interrupted by a disconnect"))
    following = await again.task()
    assert following.content == "next"
    await again.stream(following, ["next"])
    await server.wait_done([cid])
    log = server.conversation(cid)
    assert [(r.status, r.chunks) for r in log.replies] == [("error", ["cut "]), ("ok", ["next"])]


async def test_tasks_go_to_the_bot_named_like_the_agent(server: SandboxServer) -> None:
    server = SandboxServer(bot_tokens={"a": "alpha", "b": "beta"})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        alpha, _ = await RawBot.open(server.arinova_url, "a")
        beta, _ = await RawBot.open(server.arinova_url, "b")
        (cid,) = server.add_conversations(chat(MessageTurn("hi"), agent_id="beta"))
        task = await beta.task()
        assert task.conversation_id == cid
        await beta.stream(task, ["hi"])
        await server.wait_done([cid])
        nursery.cancel_scope.cancel()
    assert alpha is not beta


@pytest.mark.parametrize("server", [{"reply_timeout": 5.0}], indirect=True)
async def test_unanswered_message_is_lost(autojump_clock: trio.abc.Clock, server: SandboxServer) -> None:
    with trio.fail_after(100):
        bot, _ = await RawBot.open(server.arinova_url)
        (cid,) = server.add_conversations(chat(MessageTurn("hello?")))
        task = await bot.task()
        await server.wait_done([cid])
        assert server.conversation(cid).outcome == "lost"
        await bot.stream(task, ["late"])
        await trio.testing.wait_all_tasks_blocked()
        assert server.recorder.late_answers == 2
        assert server.report([cid]).replies_lost == 1
