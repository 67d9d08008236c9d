"""The resilient connection over in-memory WebSockets, on trio's mock clock."""

from __future__ import annotations

import bisect
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from orchestrator import events as ev
from orchestrator.actor import ActorExit, ActorSettings, ConversationActor
from orchestrator.agent import Agent, tool
from orchestrator.connection import LinkPolicy
from orchestrator.errors import (
    ConversationOverError,
    HandshakeError,
    PermanentLinkError,
    RetriesExhaustedError,
)
from orchestrator.link import ResilientConnection
from orchestrator.linkwatch import link_watch
from orchestrator.metrics import Metrics
from orchestrator.platforms.conversimple import ChannelSession
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.store import ConversationRecord
from orchestrator.testing import MemoryWebSocket, memory_websocket_pair
from orchestrator.tools import ToolSettings

from .helpers import Exits


@attrs.define(eq=False)
class FakeChannel:
    """The platform end of one memory link, speaking Conversimple."""

    ws: MemoryWebSocket
    join_status: str = "ok"
    join_reason: str = "unauthorized"
    answer_heartbeats: bool = True
    refuse_registration: str | None = None
    """The reason a ``register_conversation_tools`` is refused with; None accepts it."""
    server: wire.ConversimpleServer = attrs.field(factory=wire.ConversimpleServer)
    pushes: list[Any] = attrs.field(factory=list)

    async def serve(self) -> None:
        try:
            while True:
                frame = self.server.receive(await self.ws.receive_text())
                self.pushes.append(frame.message)
                if isinstance(frame.message, wire.PhxJoin):
                    response = {} if self.join_status == "ok" else {"reason": self.join_reason}
                    await self.ws.send_text(self.server.reply(frame, self.join_status, response))
                elif isinstance(frame.message, wire.Heartbeat) and self.answer_heartbeats:
                    await self.ws.send_text(self.server.reply(frame))
                elif isinstance(frame.message, wire.RegisterConversationTools):
                    reason = self.refuse_registration
                    refused = reason is not None
                    response = {"reason": reason} if refused else {}
                    await self.ws.send_text(self.server.reply(frame, "error" if refused else "ok", response))
        except Exception:
            return

    async def push(self, message: Any) -> None:
        await self.ws.send_text(self.server.push(message))


@attrs.define(eq=False)
class FakeDialer:
    """A ``dial`` function: each attempt is recorded and answered by ``outcome(attempt)``."""

    nursery: trio.Nursery
    outcome: Callable[[int], BaseException | None] = lambda attempt: None
    make_channel: Callable[[MemoryWebSocket], FakeChannel] = FakeChannel
    attempts: list[float] = attrs.field(factory=list)
    channels: list[FakeChannel] = attrs.field(factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    handshake_time: float = 0.0

    async def __call__(self, url: str, **kwargs: Any) -> MemoryWebSocket:
        self.attempts.append(trio.current_time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.sleep(self.handshake_time)
            failure = self.outcome(len(self.attempts))
            if failure is not None:
                raise failure
            client, server = memory_websocket_pair()
            channel = self.make_channel(server)
            self.channels.append(channel)
            self.nursery.start_soon(channel.serve)
            return client
        finally:
            self.in_flight -= 1


def make_connection(
    dial: FakeDialer,
    *,
    policy: LinkPolicy | None = None,
    metrics: Metrics | None = None,
    limiter: trio.CapacityLimiter | None = None,
    seed: int = 1,
) -> ResilientConnection:
    client = wire.ConversimpleClient("cust", "conv-1")
    session = ChannelSession("ws://127.0.0.1:1/socket/websocket", "canary-key", client)
    return ResilientConnection(
        session,
        policy or LinkPolicy(heartbeat_interval=30),
        limiter or trio.CapacityLimiter(10),
        metrics,
        rng=random.Random(seed),
        dial=dial,
    )


class Inbox:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.changed = trio.Event()

    async def deliver(self, event: Any) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = trio.Event()
        await trio.lowlevel.checkpoint()

    async def wait_for(self, kind: type[Any], count: int = 1) -> None:
        while sum(isinstance(e, kind) for e in self.events) < count:
            await self.changed.wait()


Deliver = Callable[[Any], Awaitable[None]]

#: The two ways to read a link: ``run`` pushes to ``deliver``; ``maintain`` leaves the
#: reading to a task calling ``receive`` (as an actor does).
MODES = pytest.mark.parametrize("mode", ["push", "pull"])


async def start_link(nursery: trio.Nursery, conn: ResilientConnection, deliver: Deliver, mode: str) -> None:
    """Hold ``conn`` up and hand its events to ``deliver``; returns once LinkUp is delivered."""
    if mode == "push":
        await nursery.start(conn.run, deliver)
        return
    await nursery.start(conn.maintain)

    async def read(*, task_status: trio.TaskStatus[None]) -> None:
        while True:
            event = await conn.receive()
            if event is None:
                continue
            await deliver(event)
            if isinstance(event, ev.LinkUp) and not event.reconnect:
                task_status.started()
            if isinstance(event, ev.ConversationEnded):
                return

    await nursery.start(read)


@MODES
async def test_joins_delivers_events_and_sends(autojump_clock: trio.testing.MockClock, mode: str) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial)
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        assert inbox.events == [ev.LinkUp(reconnect=False)]
        channel = dial.channels[0]
        await channel.push(wire.ToolCallRequest("c1", "echo", {"text": "hi"}, 5.0, "conv-1"))
        await inbox.wait_for(ev.ToolCallRequest)
        assert inbox.events[-1] == ev.ToolCallRequest("c1", "echo", {"text": "hi"}, 5.0)
        await conn.send(ev.ToolResult("c1", "echo", {"text": "hi"}))
        await trio.testing.wait_all_tasks_blocked()
        assert wire.ToolCallResponse("c1", "conv-1", {"text": "hi"}, "echo") in channel.pushes
        await channel.push(wire.ConversationLifecycle("conversation_ended", "conv-1"))
    assert isinstance(inbox.events[-1], ev.ConversationEnded)


async def test_event_for_another_conversation_is_ignored_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics(CollectorRegistry())
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, metrics=metrics)
        inbox = Inbox()
        await nursery.start(conn.run, inbox.deliver)
        await dial.channels[0].push(wire.ToolCallRequest("x", "echo", {}, None, "someone-else"))
        await trio.testing.wait_all_tasks_blocked()
        assert not any(isinstance(e, ev.ToolCallRequest) for e in inbox.events)
        assert (
            metrics.registry.get_sample_value(
                "orchestrator_events_ignored_total", {"reason": "foreign_conversation"}
            )
            == 1
        )
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reason", ["unauthorized", "forbidden", "customer_suspended"])
async def test_permanent_join_rejection_opens_the_breaker_after_one_attempt(
    autojump_clock: trio.testing.MockClock, reason: str
) -> None:
    metrics = Metrics(CollectorRegistry())
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, make_channel=lambda ws: FakeChannel(ws, "error", reason))
        conn = make_connection(dial, metrics=metrics)
        with pytest.raises(PermanentLinkError, match=reason):
            await conn.run(Inbox().deliver)
        await trio.sleep(600)
        assert len(dial.attempts) == 1
        assert (
            metrics.registry.get_sample_value(
                "orchestrator_handshake_failures_total", {"reason": "permanent"}
            )
            == 1
        )
        with pytest.raises(PermanentLinkError):
            await conn.send(ev.ToolResult("1", "t", 1))


async def test_http_401_on_handshake_is_permanent_and_never_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, outcome=lambda n: PermanentLinkError("handshake refused: HTTP 401"))
        with pytest.raises(PermanentLinkError, match="401"):
            await make_connection(dial).run(Inbox().deliver)
        assert len(dial.attempts) == 1


async def test_breaker_off_retries_permanent_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, outcome=lambda n: PermanentLinkError("401") if n < 4 else None)
        conn = make_connection(dial, policy=LinkPolicy(circuit_breaker=False))
        await nursery.start(conn.run, Inbox().deliver)
        assert len(dial.attempts) == 4
        nursery.cancel_scope.cancel()


@MODES
async def test_reconnects_rejoins_and_resends_after_a_drop(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, outcome=lambda n: HandshakeError("refused") if n in (2, 3) else None)
        conn = make_connection(dial)
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        await dial.channels[0].ws.aclose()  # the server drops the link
        await inbox.wait_for(ev.LinkDown)
        sent_while_down = trio.Event()

        async def send_late() -> None:
            await conn.send(ev.ToolResult("c9", "echo", "done"))
            sent_while_down.set()

        nursery.start_soon(send_late)
        await inbox.wait_for(ev.LinkUp, 2)
        await sent_while_down.wait()
        assert inbox.events[-1] == ev.LinkUp(reconnect=True)
        assert len(dial.attempts) == 4
        second = dial.channels[1]
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(second.pushes[0], wire.PhxJoin)
        assert wire.ToolCallResponse("c9", "conv-1", "done", "echo") in second.pushes
        nursery.cancel_scope.cancel()


@MODES
async def test_blackholed_link_is_detected_within_two_heartbeats(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        await trio.sleep(100)  # heartbeats are answered: the link stays up
        assert len(dial.attempts) == 1
        assert sum(isinstance(p, wire.Heartbeat) for p in dial.channels[0].pushes) == 3
        dial.channels[0].ws.blackhole()
        cut = trio.current_time()
        await inbox.wait_for(ev.LinkDown)
        assert trio.current_time() - cut <= 2 * 30
        await inbox.wait_for(ev.LinkUp, 2)
        nursery.cancel_scope.cancel()


@MODES
async def test_reconnected_link_is_watched_once_with_one_heartbeat_per_interval(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        policy = LinkPolicy(heartbeat_interval=30, backoff_initial=0.1, backoff_max=0.2)
        conn = make_connection(dial, policy=policy)
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        for drop in range(5):  # quick reconnects, each well inside one heartbeat interval
            await trio.sleep(1)
            await dial.channels[-1].ws.aclose()
            await inbox.wait_for(ev.LinkUp, drop + 2)
        await trio.sleep(300)
        assert len(link_watch()) == 1  # the old links' entries are gone
        beats = sum(isinstance(p, wire.Heartbeat) for p in dial.channels[-1].pushes)
        assert beats == 10
        nursery.cancel_scope.cancel()


async def test_a_finished_link_is_let_go_by_the_watch_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        async with trio.open_nursery() as link:
            link.start_soon(conn.run, Inbox().deliver)
            await trio.sleep(1)
            assert len(link_watch()) == 1
            link.cancel_scope.cancel()
        assert len(link_watch()) == 0  # long before its next heartbeat was due
        nursery.cancel_scope.cancel()


async def test_retry_limits_give_up(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, outcome=lambda n: HandshakeError("refused"))
        with pytest.raises(RetriesExhaustedError, match="5 reconnection attempts"):
            await make_connection(dial, policy=LinkPolicy(max_attempts=5)).run(Inbox().deliver)
        assert len(dial.attempts) == 6
        dial2 = FakeDialer(nursery, outcome=lambda n: HandshakeError("refused"))
        with pytest.raises(RetriesExhaustedError, match="retrying for"):
            await make_connection(dial2, policy=LinkPolicy(total_retry_duration=60)).run(Inbox().deliver)


N_LINKS = 1000


async def test_thousand_links_after_a_20s_outage_do_not_stampede(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outage = [False]
    attempts: list[float] = []
    limiter = trio.CapacityLimiter(200)

    def outcome(_: int) -> BaseException | None:
        return HandshakeError("connection refused") if outage[0] else None

    async with trio.open_nursery() as nursery:
        dialers = [FakeDialer(nursery, outcome=outcome) for _ in range(N_LINKS)]
        inboxes = [Inbox() for _ in range(N_LINKS)]
        for i, dial in enumerate(dialers):
            await nursery.start(make_connection(dial, limiter=limiter, seed=i).run, inboxes[i].deliver)
        start = trio.current_time()
        outage[0] = True
        for dial in dialers:  # the server goes down: every link drops at once
            await dial.channels[0].ws.aclose()
        await trio.sleep(20)
        outage[0] = False
        for inbox in inboxes:
            await inbox.wait_for(ev.LinkUp, 2)
        for dial in dialers:
            attempts.extend(t - start for t in dial.attempts[1:])
        nursery.cancel_scope.cancel()
    attempts.sort()
    worst = max(bisect.bisect_right(attempts, t + 1.0) - i for i, t in enumerate(attempts))
    assert worst / len(attempts) <= 0.15, (worst, len(attempts))


async def test_handshakes_are_limited(autojump_clock: trio.testing.MockClock) -> None:
    limiter = trio.CapacityLimiter(5)
    async with trio.open_nursery() as nursery:
        dials = [FakeDialer(nursery, handshake_time=1.0) for _ in range(50)]
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, sum(d.in_flight for d in dials))
                await trio.sleep(0.1)

        nursery.start_soon(watch)
        async with trio.open_nursery() as starters:
            for dial in dials:
                starters.start_soon(
                    nursery.start, make_connection(dial, limiter=limiter).run, Inbox().deliver
                )
        assert peak == 5
        nursery.cancel_scope.cancel()


@MODES
async def test_oversized_frame_is_a_protocol_violation_then_reconnect(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(max_frame_bytes=100))
        conn.session.client.max_bytes = 100  # type: ignore[attr-defined]
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        await dial.channels[0].ws.send_text("[" * 10 + "]" * 10 + " " * 200)
        await inbox.wait_for(ev.ProtocolViolation)
        assert inbox.events[-1].reason == "frame_too_large"
        await dial.channels[0].ws.send_text("{not json")
        await inbox.wait_for(ev.ProtocolViolation, 2)
        assert inbox.events[-1].reason == "bad_frame"
        nursery.cancel_scope.cancel()


@MODES
async def test_backpressure_never_loses_events_or_fakes_a_dead_link(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        got: list[Any] = []
        gate = trio.Event()

        async def slow_deliver(event: Any) -> None:
            if isinstance(event, ev.ToolCallRequest):
                await gate.wait()  # the actor's mailbox is full for a long time
            got.append(event)

        await start_link(nursery, conn, slow_deliver, mode)
        for i in range(3):
            await dial.channels[0].push(wire.ToolCallRequest(f"c{i}", "echo", {}, None, "conv-1"))
        await trio.sleep(200)  # far past two heartbeat intervals
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [e.call_id for e in got if isinstance(e, ev.ToolCallRequest)] == ["c0", "c1", "c2"]
        assert len(dial.attempts) == 1  # no reconnect was faked
        nursery.cancel_scope.cancel()


async def test_pulled_link_is_read_only_when_asked(autojump_clock: trio.testing.MockClock) -> None:
    """Under maintain() nothing reads ahead of the reader: a busy actor's frames wait in
    the socket (backpressure), and a silence it causes is not a dead link."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        await nursery.start(conn.maintain)
        assert await conn.receive() == ev.LinkUp(reconnect=False)
        for i in range(3):
            await dial.channels[0].push(wire.ToolCallRequest(f"c{i}", "echo", {}, None, "conv-1"))
        await trio.sleep(200)  # nobody reads, far past two heartbeat intervals
        assert len(dial.attempts) == 1
        assert [(await conn.receive()).call_id for _ in range(3)] == ["c0", "c1", "c2"]  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def test_pulled_link_wakes_a_reader_in_the_socket_within_a_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        await nursery.start(conn.maintain)
        assert await conn.receive() == ev.LinkUp(reconnect=False)
        woke_at: list[float] = []

        async def read() -> None:
            assert await conn.receive() is None
            woke_at.append(trio.current_time())

        nursery.start_soon(read)
        await trio.sleep(5)
        conn.wake()
        asked = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert woke_at == [asked]  # the heartbeat's reply woke it, long before the next beat
        assert sum(isinstance(p, wire.Heartbeat) for p in dial.channels[0].pushes) == 1
        nursery.cancel_scope.cancel()


async def test_pulled_link_lost_while_nobody_reads_is_reconnected_by_a_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A busy actor is not reading; its reply finds the link dropped. The reply waits for
    the reconnect and goes out on the new link: it is never lost."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30, backoff_initial=1))
        await nursery.start(conn.maintain)
        assert await conn.receive() == ev.LinkUp(reconnect=False)
        await dial.channels[0].ws.aclose()
        with trio.fail_after(30):
            await conn.send(ev.ToolResult("c1", "echo", "late"))
        assert len(dial.attempts) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert wire.ToolCallResponse("c1", "conv-1", "late", "echo") in dial.channels[1].pushes
        assert [await conn.receive(), await conn.receive()] == [
            ev.LinkDown("closed"),
            ev.LinkUp(reconnect=True),
        ]
        nursery.cancel_scope.cancel()


@MODES
async def test_a_send_after_the_conversation_ended_fails_at_once(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    """There is no link to wait for once the platform ended the conversation."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial)
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        await dial.channels[0].push(wire.ConversationLifecycle("conversation_ended", "conv-1"))
        await inbox.wait_for(ev.ConversationEnded)
        await trio.testing.wait_all_tasks_blocked()  # the link has closed
        with trio.fail_after(1), pytest.raises(ConversationOverError):
            await conn.send(ev.ToolResult("c1", "echo", "late"))
        assert len(dial.attempts) == 1  # and nothing reconnected


@MODES
@pytest.mark.parametrize("reason", ["conversation_ended", "unknown_conversation", "unmatched topic"])
async def test_a_registration_refused_because_the_conversation_ended_ends_it(
    autojump_clock: trio.testing.MockClock, mode: str, reason: str
) -> None:
    """The platform says so in its reply: nothing is left to wait for. So does a platform
    that does not know the conversation (it restarted and lost it: nothing will come for
    it). Another reason is only a reply (the link stays up)."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery, make_channel=lambda ws: FakeChannel(ws, refuse_registration=reason))
        conn = make_connection(dial)
        inbox = Inbox()
        await start_link(nursery, conn, inbox.deliver, mode)
        await conn.send(ev.RegisterTools(({"name": "echo", "description": "", "parameters": {}},)))
        if reason not in ("conversation_ended", "unknown_conversation"):
            await trio.testing.wait_all_tasks_blocked()
            assert not any(isinstance(e, ev.ConversationEnded) for e in inbox.events)
            await conn.send(ev.ToolResult("c1", "echo", "still up"))
            nursery.cancel_scope.cancel()
            return
        with trio.fail_after(100):  # virtual time: without the end this fails, not hangs
            await inbox.wait_for(ev.ConversationEnded)
        assert inbox.events[-1] == ev.ConversationEnded(f"registration refused: {reason}")
        await trio.testing.wait_all_tasks_blocked()  # the link has closed
        with trio.fail_after(1), pytest.raises(ConversationOverError):
            await conn.send(ev.ToolResult("c1", "echo", "late"))
        assert len(dial.attempts) == 1  # and nothing reconnected


class Slow(Agent):
    agent_id = "slow"

    @tool("takes a while")
    async def slow(self) -> str:
        await trio.sleep(5)
        return "done"


async def test_a_call_still_running_when_the_conversation_ends_does_not_hold_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The customer hung up mid-call: the actor waits for the call, counts its reply as
    unsent (there is nowhere to send it) and completes."""
    metrics = Metrics(CollectorRegistry())
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        actor = ConversationActor(
            ConversationRecord("conv-1", "slow"),
            Slow,
            make_connection(dial),
            trio.CapacityLimiter(4),
            metrics=metrics,
        )
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await trio.testing.wait_all_tasks_blocked()
        channel = dial.channels[0]
        await channel.push(wire.ToolCallRequest("c1", "slow", {}, None, "conv-1"))
        await trio.sleep(1)
        await channel.push(wire.ConversationLifecycle("conversation_ended", "conv-1"))
        assert await exits.wait(30) == [ActorExit.COMPLETED]
        unsent = metrics.registry.get_sample_value(
            "orchestrator_messages_unsent_total", {"event": "tool_result"}
        )
        assert unsent == 1


async def test_pulled_link_cancelled_reader_then_busy_is_not_a_dead_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reader cancelled in the socket (the actor's idle timeout, say) stops the
    dead-link clock as returning an event does: the busy time after it is not silence."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30))
        await nursery.start(conn.maintain)
        assert await conn.receive() == ev.LinkUp(reconnect=False)
        with trio.move_on_after(1):
            await conn.receive()
        await dial.channels[0].push(wire.ToolCallRequest("c1", "echo", {}, None, "conv-1"))
        await trio.sleep(200)  # busy, not reading; every heartbeat is answered
        assert len(dial.attempts) == 1
        assert await conn.receive() == ev.ToolCallRequest("c1", "echo", {}, None)
        nursery.cancel_scope.cancel()


async def test_pulled_link_ended_while_nobody_reads_keeps_what_arrived_before_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The platform sends a last call and the conversation's end, then closes, while the
    actor is busy. A reply finds the link closed: what arrived first is still read, the
    end is seen, and nothing reconnects to a conversation that is over."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        conn = make_connection(dial, policy=LinkPolicy(heartbeat_interval=30, backoff_initial=1))
        await nursery.start(conn.maintain)
        assert await conn.receive() == ev.LinkUp(reconnect=False)
        channel = dial.channels[0]
        await channel.push(wire.ToolCallRequest("c1", "echo", {}, None, "conv-1"))
        await channel.push(wire.ConversationLifecycle("conversation_ended", "conv-1"))
        await channel.ws.aclose()
        with trio.fail_after(30), pytest.raises(ConversationOverError):
            await conn.send(ev.ToolResult("c0", "echo", "late"))
        assert [await conn.receive(), await conn.receive()] == [
            ev.ToolCallRequest("c1", "echo", {}, None),
            ev.ConversationEnded(),
        ]
        assert len(dial.attempts) == 1
        nursery.cancel_scope.cancel()


async def test_an_actor_busy_when_the_platform_ends_and_closes_still_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """All its call slots taken, the actor is not reading when the end arrives and the
    link closes; its next reply finds the link closed. It still sees the end and completes."""
    async with trio.open_nursery() as nursery:
        dial = FakeDialer(nursery)
        actor = ConversationActor(
            ConversationRecord("conv-1", "slow"),
            Slow,
            make_connection(dial, policy=LinkPolicy(heartbeat_interval=30, backoff_initial=1)),
            trio.CapacityLimiter(4),
            ActorSettings(tools=ToolSettings(max_concurrent_calls=1)),
        )
        exits = Exits()
        nursery.start_soon(exits.run, actor)
        await trio.testing.wait_all_tasks_blocked()
        channel = dial.channels[0]
        await channel.push(wire.ToolCallRequest("c1", "slow", {}, None, "conv-1"))
        await channel.push(wire.ToolCallRequest("c2", "slow", {}, None, "conv-1"))  # waits for a slot
        await trio.sleep(1)
        await channel.push(wire.ConversationLifecycle("conversation_ended", "conv-1"))
        await channel.ws.aclose()
        assert await exits.wait(60) == [ActorExit.COMPLETED] and len(dial.attempts) == 1


@pytest.mark.parametrize(
    ("reason", "ends", "label"),
    [
        ("conversation_ended", True, "conversation_ended"),
        ("unknown_conversation", True, "unknown_conversation"),  # the platform lost it
        ("unmatched topic", False, "other"),
    ],
)
def test_a_refused_push_ends_the_conversation_only_for_a_reason_that_means_it(
    reason: str, ends: bool, label: str
) -> None:
    metrics = Metrics(CollectorRegistry())
    refusal = codec.encode_frame(
        ["1", "2", "customer:cust", "phx_reply", {"status": "error", "response": {"reason": reason}}]
    )
    for cid in ("conv-1", None):  # a conversation's socket; the control connection
        client = wire.ConversimpleClient("cust", cid)
        session = ChannelSession("ws://127.0.0.1:1/socket/websocket", "k", client, metrics=metrics)
        events = session.receive(refusal).events
        expected = [ev.ConversationEnded(f"registration refused: {reason}")] if ends and cid else []
        assert list(events) == expected
    counted = metrics.registry.get_sample_value("orchestrator_platform_refusals_total", {"reason": label})
    assert counted == 1  # the control connection pushes only heartbeats: its refusals are not counted
