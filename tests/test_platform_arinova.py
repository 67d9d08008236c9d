"""The Arinova platform: one bot socket, many conversations, through the real Supervisor."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from orchestrator.actor import ActorSettings
from orchestrator.agent import Agent, tool
from orchestrator.config import PlatformSettings, Settings
from orchestrator.connection import LinkPolicy
from orchestrator.errors import ConfigError, LinkError, PermanentLinkError, UnsafeURLError
from orchestrator.logs import configure_logging
from orchestrator.metrics import Metrics
from orchestrator.platforms.arinova import (
    INTERRUPTED,
    OVERLOADED,
    REFUSED,
    STOPPED,
    UNANSWERED,
    ArinovaPlatform,
)
from orchestrator.protocols import arinova as wire
from orchestrator.sandbox import ConversationPlan, MessageTurn, SandboxServer, Scenario
from orchestrator.service import Running, run_service
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryWebSocket, memory_websocket_pair
from orchestrator.transport import ServerWebSocket, serve

TOKEN = "canary-bot-token-7f3a"
Final = wire.AgentComplete | wire.AgentError


class Streamer(Agent):
    """Streams the message back word by word, ``delay`` seconds per word."""

    agent_id = "streamer"
    delay: ClassVar[float] = 1.0
    gate: ClassVar[trio.Event | None] = None  # "wait" blocks on it
    pause: ClassVar[trio.Event | None] = None  # "cut" blocks on it after the first word

    async def on_message(self, message: str) -> AsyncIterator[str]:
        if message == "crash":
            raise RuntimeError("boom")
        if message.startswith("wait") and Streamer.gate is not None:
            await Streamer.gate.wait()
        for index, word in enumerate(message.split()):
            await trio.sleep(self.delay)
            yield word if index == 0 else " " + word
            if index == 0 and message.startswith("cut") and Streamer.pause is not None:
                await Streamer.pause.wait()


@attrs.define(eq=False)
class FakeSocket:
    """The server end of one memory socket, speaking Arinova."""

    ws: MemoryWebSocket
    hub: FakeArinova
    server: wire.ArinovaServer = attrs.field(factory=wire.ArinovaServer)
    frames: list[Any] = attrs.field(factory=list)

    async def serve(self) -> None:
        try:
            while True:
                message = self.server.receive(await self.ws.receive_text())
                self.frames.append(message)
                self.hub.notify()
                if isinstance(message, wire.AgentAuth):
                    error = self.hub.auth_error
                    ok = error is None
                    await self.ws.send_text(
                        self.server.auth_ok("bot") if ok else self.server.auth_error(error)
                    )
                elif isinstance(message, wire.Ping) and self.hub.answer_pings:
                    await self.ws.send_text(self.server.pong())
        except LinkError:
            return

    async def task(self, task_id: str, conversation_id: str, content: str) -> None:
        await self.ws.send_text(self.server.task(task_id, conversation_id, content))


@attrs.define(eq=False)
class FakeArinova:
    """A ``dial`` function and the fake server behind every socket it opens."""

    nursery: trio.Nursery
    auth_error: str | None = None
    answer_pings: bool = True
    sockets: list[FakeSocket] = attrs.field(factory=list)
    urls: list[str] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def dial(self, url: str, **options: Any) -> MemoryWebSocket:
        self.urls.append(url)
        client, server = memory_websocket_pair()
        socket = FakeSocket(server, self)
        self.sockets.append(socket)
        self.nursery.start_soon(socket.serve)
        await trio.lowlevel.checkpoint()
        return client

    @property
    def current(self) -> FakeSocket:
        return self.sockets[-1]

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def frames(self, task_id: str) -> list[Any]:
        return [f for s in self.sockets for f in s.frames if getattr(f, "task_id", None) == task_id]

    async def final(self, task_id: str) -> Final:
        while True:
            for frame in self.frames(task_id):
                if isinstance(frame, Final):
                    return frame
            await self.changed.wait()

    async def reply(self, task_id: str, conversation_id: str, content: str) -> Final:
        await self.current.task(task_id, conversation_id, content)
        return await self.final(task_id)


@asynccontextmanager
async def arinova(
    *, actor: ActorSettings | None = None, policy: LinkPolicy | None = None, queue_size: int = 8
) -> AsyncIterator[tuple[FakeArinova, ArinovaPlatform, Supervisor, Metrics]]:
    async with trio.open_nursery() as nursery:
        fake = FakeArinova(nursery)
        platform = ArinovaPlatform("ws://127.0.0.1:1", TOKEN, policy=policy or LinkPolicy(),
                                   queue_size=queue_size, dial=fake.dial)  # fmt: skip
        metrics = Metrics(CollectorRegistry())
        settings = SupervisorSettings(actor=actor or ActorSettings())
        supervisor = Supervisor([Streamer], platform.connect, settings=settings, metrics=metrics)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        yield fake, platform, supervisor, metrics
        nursery.cancel_scope.cancel()


def chunks(fake: FakeArinova, task_id: str) -> list[str]:
    return [f.chunk for f in fake.frames(task_id) if isinstance(f, wire.AgentChunk)]


async def test_tasks_of_three_conversations_stream_in_order(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova() as (fake, platform, supervisor, _):
        assert fake.urls == ["ws://127.0.0.1:1/ws/agent"]
        assert fake.current.frames[0] == wire.AgentAuth(TOKEN)
        for n in range(3):
            await fake.current.task(f"t{n}", f"c{n}", f"hello from conversation {n}")
        await fake.current.task("t3", "c0", "and again")
        for n in range(3):
            assert await fake.final(f"t{n}") == wire.AgentComplete(f"t{n}", f"hello from conversation {n}")
            assert chunks(fake, f"t{n}") == ["hello", " from", " conversation", f" {n}"]
        assert len(supervisor) == 3
        assert platform.statistics().conversations == 3
        record = supervisor.store.get("c0")
        assert record is not None and record.metadata == {"platform": "arinova"}
        assert await fake.final("t3") == wire.AgentComplete("t3", "and again")
        # one conversation answers in order: every frame of t0 precedes every frame of t3
        mine = [f.task_id for f in fake.current.frames if getattr(f, "task_id", None) in ("t0", "t3")]
        assert mine == ["t0"] * 5 + ["t3"] * 3
        # conversations ran concurrently: 4 words at 1 s each, not 3 x 4 s
        assert trio.current_time() < 8


async def test_auth_error_is_one_attempt_and_no_actors(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeArinova(nursery, auth_error="invalid bot token")
        platform = ArinovaPlatform("ws://127.0.0.1:1", TOKEN, dial=fake.dial)
        supervisor = Supervisor([Streamer], platform.connect)
        await nursery.start(supervisor.run)
        with pytest.raises(PermanentLinkError, match="invalid bot token") as failure:
            await platform.run(supervisor)
        await trio.sleep(600)
        assert len(fake.urls) == 1
        assert len(supervisor) == 0
        assert TOKEN not in str(failure.value)
        nursery.cancel_scope.cancel()


async def test_crash_in_on_message_is_an_error_reply(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova() as (fake, _, supervisor, _):
        assert await fake.reply("t1", "c1", "crash") == wire.AgentError("t1", "RuntimeError: boom")
        assert await fake.reply("t2", "c1", "still here") == wire.AgentComplete("t2", "still here")
        assert supervisor.statistics().restarts_total == 0


async def test_drop_mid_reply_reports_the_cut_task(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova() as (fake, _, _, metrics):
        first = fake.current
        await first.task("t1", "c1", "one two three four")
        while not chunks(fake, "t1"):
            await fake.changed.wait()
        await first.ws.aclose()  # the server drops the socket after the first chunk
        assert await fake.final("t1") == wire.AgentError("t1", INTERRUPTED)
        second = fake.current
        assert second is not first and second.frames[0] == wire.AgentAuth(TOKEN)
        await trio.sleep(10)  # the actor's reply has long finished: its frames were dropped
        assert [type(f) for f in fake.frames("t1")] == [wire.AgentChunk, wire.AgentError]
        assert await fake.reply("t2", "c1", "after the drop") == wire.AgentComplete("t2", "after the drop")
        assert metrics.registry.get_sample_value("orchestrator_reconnects_total", {"reason": "closed"}) == 1


async def test_reply_not_yet_begun_survives_a_drop(autojump_clock: trio.testing.MockClock) -> None:
    Streamer.gate = trio.Event()
    try:
        async with arinova() as (fake, _, _, _):
            await fake.current.task("t1", "c1", "wait for it")
            await trio.testing.wait_all_tasks_blocked()
            await fake.current.ws.aclose()
            while len(fake.sockets) < 2 or len(fake.current.frames) < 1:
                await fake.changed.wait()
            Streamer.gate.set()
            assert await fake.final("t1") == wire.AgentComplete("t1", "wait for it")
    finally:
        Streamer.gate = None


async def test_ping_keepalive_and_dead_link_detection(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova(policy=LinkPolicy(heartbeat_interval=30)) as (fake, platform, _, _):
        await trio.sleep(100)  # pings are answered: the socket stays up
        assert len(fake.sockets) == 1
        assert sum(isinstance(f, wire.Ping) for f in fake.current.frames) == 3
        fake.current.ws.blackhole()
        cut = trio.current_time()
        while len(fake.sockets) < 2:
            await fake.changed.wait()
        assert trio.current_time() - cut <= 2 * 30 + LinkPolicy().backoff_initial
        fake.answer_pings = False  # only pongs (or any frame) keep it alive
        await trio.sleep(2 * 30 + LinkPolicy().backoff_initial)
        assert len(fake.sockets) == 3
        assert platform.statistics().link_up


async def test_full_mailbox_pauses_the_socket_and_loses_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Streamer.gate = trio.Event()
    try:
        actor = ActorSettings(mailbox_capacity=1)
        async with arinova(actor=actor, queue_size=2) as (fake, platform, supervisor, _):
            for n in range(8):
                await fake.current.task(f"t{n}", "c1", f"wait {n}")
            await fake.current.task("other", "c2", "meanwhile")
            await trio.testing.wait_all_tasks_blocked()
            # t0 in on_message, t1 in the mailbox, t2 on its way in, t3 and t4 queued: the reader waits
            assert platform.statistics().queued == 2
            assert "c2" not in supervisor  # behind c1's tasks in the socket
            Streamer.gate.set()
            for n in range(8):
                assert await fake.final(f"t{n}") == wire.AgentComplete(f"t{n}", f"wait {n}")
            assert await fake.final("other") == wire.AgentComplete("other", "meanwhile")
            done = [f.task_id for f in fake.current.frames if isinstance(f, wire.AgentComplete)]
            assert [t for t in done if t != "other"] == [f"t{n}" for n in range(8)]
    finally:
        Streamer.gate = None


async def test_a_long_stall_keeps_the_link_and_answers_every_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Streamer.gate = trio.Event()
    try:
        actor = ActorSettings(mailbox_capacity=1)
        async with arinova(actor=actor, queue_size=2, policy=LinkPolicy(heartbeat_interval=30)) as (
            fake, platform, _, _,
        ):  # fmt: skip
            for n in range(12):
                await fake.current.task(f"t{n}", "c1", f"wait {n}")
            await trio.sleep(600)  # heartbeats go on while the reader waits; the queue stays bounded
            assert len(fake.sockets) == 1
            assert platform.statistics().queued <= 4
            Streamer.gate.set()
            finals = [await fake.final(f"t{n}") for n in range(12)]
            assert {type(f) for f in finals} == {wire.AgentComplete, wire.AgentError}
            assert all(f.error == OVERLOADED for f in finals if isinstance(f, wire.AgentError))
    finally:
        Streamer.gate = None


async def test_refused_admission_is_an_error_reply(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeArinova(nursery)
        platform = ArinovaPlatform("ws://127.0.0.1:1", TOKEN, dial=fake.dial)
        settings = SupervisorSettings(max_conversations=1)
        supervisor = Supervisor([ToolStreamer], platform.connect, settings=settings)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        assert await fake.reply("t1", "c1", "first") == wire.AgentComplete("t1", "first")
        assert await fake.reply("t2", "c2", "second") == wire.AgentError("t2", REFUSED)
        assert supervisor.statistics().rejected_total == {"capacity": 1}
        assert supervisor.statistics().restarts_total == 0  # its tools were not sent: Arinova has none
        nursery.cancel_scope.cancel()


class ToolStreamer(Streamer):
    agent_id = "tool-streamer"

    @tool("Look something up")
    async def lookup(self, key: str) -> str:
        return key


class CrashOnceOnStart(Streamer):
    agent_id = "crash-once"
    crashes: ClassVar[int] = 0

    async def on_conversation_started(self, conversation: Any) -> None:
        if CrashOnceOnStart.crashes == 0:
            CrashOnceOnStart.crashes += 1
            raise RuntimeError("flaky start")


async def test_a_restarted_actor_gets_the_unanswered_tasks(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeArinova(nursery)
        platform = ArinovaPlatform("ws://127.0.0.1:1", TOKEN, dial=fake.dial)
        supervisor = Supervisor([CrashOnceOnStart], platform.connect)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        await fake.current.task("t1", "c1", "first")
        await fake.current.task("t2", "c1", "second")
        assert await fake.final("t1") == wire.AgentComplete("t1", "first")
        assert await fake.final("t2") == wire.AgentComplete("t2", "second")
        assert supervisor.statistics().restarts_total == 1
        nursery.cancel_scope.cancel()


async def test_a_stopped_conversation_answers_what_it_leaves(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova() as (fake, platform, supervisor, _):
        await fake.current.task("t1", "c1", "one two three four")
        await fake.current.task("t2", "c1", "queued behind")
        while not chunks(fake, "t1"):
            await fake.changed.wait()
        supervisor.stop("c1")  # an operator's stop: the conversation ends for good
        assert await fake.final("t1") == wire.AgentError("t1", STOPPED)
        assert await fake.final("t2") == wire.AgentError("t2", UNANSWERED)
        await trio.sleep(10)
        assert [type(f) for f in fake.frames("t1")] == [wire.AgentChunk, wire.AgentError]
        assert platform.statistics().conversations == 0


async def test_an_actor_that_outlives_its_platform_reports_nothing_into_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a simulation's Ctrl-C: the platform stopped first, then the actor of a
    # reply in progress, whose error report went to the platform's closed nursery and
    # raised "Nursery is closed to new arrivals" out of the supervisor.
    Streamer.pause = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            fake = FakeArinova(nursery)
            platform = ArinovaPlatform("ws://127.0.0.1:1", TOKEN, dial=fake.dial)
            supervisor = Supervisor([Streamer], platform.connect, metrics=Metrics(CollectorRegistry()))
            await nursery.start(supervisor.run)
            async with trio.open_nursery() as platform_side:
                await platform_side.start(platform.run, supervisor)
                await fake.current.task("t1", "c1", "cut after the first word")
                while not chunks(fake, "t1"):
                    await fake.changed.wait()
                platform_side.cancel_scope.cancel()
            assert "c1" in supervisor  # its reply still streaming
            supervisor.stop("c1")
            await supervisor.wait_ended("c1")
            assert [type(f) for f in fake.frames("t1")] == [wire.AgentChunk]  # no link left to report on
            assert "Nursery is closed" not in caplog.text
            nursery.cancel_scope.cancel()
    finally:
        Streamer.pause = None


async def test_idle_conversation_ends_and_comes_back(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova(actor=ActorSettings(idle_timeout=60)) as (fake, platform, supervisor, _):
        assert await fake.reply("t1", "c1", "hi") == wire.AgentComplete("t1", "hi")
        await trio.sleep(61)
        assert "c1" not in supervisor
        assert supervisor.statistics().ended_total["idle"] == 1
        assert platform.statistics().conversations == 0
        assert await fake.reply("t2", "c1", "back") == wire.AgentComplete("t2", "back")
        assert "c1" in supervisor


async def test_unknown_frames_are_counted_not_fatal(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova() as (fake, _, _, metrics):
        await fake.current.ws.send_text('{"type": "typing", "conversationId": "c1"}')
        await fake.current.ws.send_text("{not json")
        assert await fake.reply("t1", "c1", "fine") == wire.AgentComplete("t1", "fine")
        sample = metrics.registry.get_sample_value
        assert sample("orchestrator_events_ignored_total", {"reason": "unknown_event"}) == 1
        assert sample("orchestrator_protocol_errors_total", {"reason": "bad_frame"}) == 1


async def test_token_never_in_logs_or_reprs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with arinova() as (fake, platform, _, _):
        await fake.reply("t1", "c1", "hello")
        await fake.current.ws.aclose()
        while len(fake.sockets) < 2 or not platform.statistics().link_up:
            await fake.changed.wait()
        await fake.reply("t2", "c1", "again")
        assert TOKEN not in repr(platform)
    assert "authenticated with Arinova" in caplog.text
    assert TOKEN not in caplog.text


def test_from_settings_validates() -> None:
    with pytest.raises(ConfigError, match="bot token is required"):
        ArinovaPlatform.from_settings(PlatformSettings(kind="arinova", url="wss://arinova.example"))
    with pytest.raises(ConfigError, match="URL is required"):
        ArinovaPlatform.from_settings(PlatformSettings(kind="arinova", bot_token=TOKEN))
    with pytest.raises(UnsafeURLError):
        ArinovaPlatform.from_settings(
            PlatformSettings(kind="arinova", url="ws://arinova.example", bot_token=TOKEN)
        )
    platform = ArinovaPlatform.from_settings(
        PlatformSettings(kind="arinova", url="wss://arinova.example/ws/agent", bot_token=TOKEN)
    )
    assert platform.url == "wss://arinova.example"
    assert TOKEN not in repr(platform)


# ---------------------------------------------------------------- real loopback sockets


class FastStreamer(Streamer):
    agent_id = "fast-streamer"
    delay = 0.0


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The orchestrator's own log handler at DEBUG (wire frames included), restored afterwards."""
    logger = logging.getLogger("orchestrator")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


async def test_end_to_end_over_loopback_sockets(debug_log: io.StringIO) -> None:
    tasks = {f"t{n}": (f"c{n % 3}", f"message number {n} here") for n in range(6)}
    finals: dict[str, Final] = {}
    streamed: dict[str, list[str]] = {}
    done = trio.Event()

    async def handler(ws: ServerWebSocket) -> None:
        server = wire.ArinovaServer()
        assert server.receive(await ws.receive_text()) == wire.AgentAuth(TOKEN)
        await ws.send_text(server.auth_ok("bot"))
        for task_id, (cid, content) in tasks.items():
            await ws.send_text(server.task(task_id, cid, content))
        while len(finals) < len(tasks):
            message = server.receive(await ws.receive_text())
            if isinstance(message, wire.AgentChunk):
                streamed.setdefault(message.task_id, []).append(message.chunk)
            elif isinstance(message, Final):
                finals[message.task_id] = message
        done.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, handler, "127.0.0.1", 0)
            platform = ArinovaPlatform(f"ws://127.0.0.1:{port}", TOKEN)
            supervisor = Supervisor([FastStreamer], platform.connect, metrics=Metrics(CollectorRegistry()))
            await nursery.start(supervisor.run)
            await nursery.start(platform.run, supervisor)
            await done.wait()
            assert len(supervisor) == 3
            nursery.cancel_scope.cancel()
    for task_id, (_, content) in tasks.items():
        assert finals[task_id] == wire.AgentComplete(task_id, content)
        assert "".join(streamed[task_id]) == content and len(streamed[task_id]) == 4
    written = debug_log.getvalue()
    assert "agent_auth" in written and TOKEN not in written  # the wire log's frames are masked


async def test_against_the_sandbox() -> None:
    turns = (
        MessageTurn("one two three", expect_reply="one two three"),
        MessageTurn("crash", expect_error="boom"),
    )
    scenario = Scenario(
        "t", tuple(ConversationPlan("fast-streamer", "arinova", messages=turns) for _ in range(3))
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sandbox = SandboxServer()
            await nursery.start(sandbox.run)
            platform = ArinovaPlatform(sandbox.arinova_url, TOKEN, policy=LinkPolicy(backoff_initial=0.05))
            supervisor = Supervisor([FastStreamer], platform.connect, metrics=Metrics(CollectorRegistry()))
            await nursery.start(supervisor.run)
            await nursery.start(platform.run, supervisor)
            ids = sandbox.add_conversations(scenario)
            await sandbox.wait_done(ids)
            sandbox.drop_bot_after_next_chunk()
            # Whole replies leave faster than the sandbox reads them: the stream holds
            # after its first chunk until the socket is gone, so the drop is mid-reply.
            Streamer.pause = pause = trio.Event()

            async def release_after_drop() -> None:
                while sandbox.arinova.drops_pending:  # noqa: ASYNC110 - a counter, no event to wait on
                    await trio.sleep(0.005)
                pause.set()

            nursery.start_soon(release_after_drop)
            (cut,) = sandbox.add_conversations(
                Scenario(
                    "cut",
                    (
                        ConversationPlan(
                            "fast-streamer",
                            "arinova",
                            messages=(
                                MessageTurn("cut short", expect_error=INTERRUPTED),
                                MessageTurn("then fine"),
                            ),
                        ),
                    ),
                )
            )
            await sandbox.wait_done([cut])
            Streamer.pause = None
            nursery.cancel_scope.cancel()
    assert [sandbox.conversation(c).outcome for c in ids] == ["completed"] * 3
    log = sandbox.conversation(cut)
    assert log.outcome == "completed", log.failures
    assert [r.status for r in log.replies] == ["error", "ok"]


# ---------------------------------------------------------------- draining (service + sandbox)


@asynccontextmanager
async def arinova_service(drain_timeout: float) -> AsyncIterator[tuple[SandboxServer, Supervisor]]:
    """The whole service (no HTTP) with the Arinova platform, against the real sandbox."""
    overrides = {"http": {"enabled": False}, "supervisor": {"drain_timeout": drain_timeout}}
    settings = Settings.load(env={}, overrides=overrides)
    async with trio.open_nursery() as nursery:
        sandbox = SandboxServer()
        await nursery.start(sandbox.run)
        platform = ArinovaPlatform(sandbox.arinova_url, TOKEN)
        running: Running = await nursery.start(
            functools.partial(
                run_service,
                settings,
                [Streamer],
                platform,
                registry=CollectorRegistry(),
                handle_signals=False,
            )
        )
        yield sandbox, running.supervisor
        nursery.cancel_scope.cancel()


async def timed_drain(supervisor: Supervisor) -> tuple[bool, float]:
    """``supervisor.drain()``'s verdict, and how long it took on the trio clock."""
    began = trio.current_time()
    clean = await supervisor.drain()
    return clean, trio.current_time() - began


def chat(*messages: str) -> Scenario:
    return Scenario(
        "drain", tuple(ConversationPlan("streamer", "arinova", messages=(MessageTurn(m),)) for m in messages)
    )


async def test_drain_with_nothing_in_flight_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova_service(drain_timeout=30) as (sandbox, supervisor):
        ids = sandbox.add_conversations(chat("one two", "three four"))
        await sandbox.wait_done(ids)
        assert len(supervisor) == 2  # Arinova never ends a conversation: both are still hosted
        clean, took = await timed_drain(supervisor)
        assert took < 1.0, took  # not the 30 s deadline
        assert clean  # every conversation ended on its own
        assert len(supervisor) == 0
        assert supervisor.statistics().ended_total["completed"] == 2
    assert [sandbox.conversation(c).outcome for c in ids] == ["completed"] * 2
    assert [r.status for c in ids for r in sandbox.conversation(c).replies] == ["ok"] * 2


async def test_drain_waits_for_a_reply_in_flight_then_returns(autojump_clock: trio.testing.MockClock) -> None:
    async with arinova_service(drain_timeout=30) as (sandbox, supervisor):
        quiet, busy = sandbox.add_conversations(chat("done", "one two three four five"))
        await sandbox.wait_done([quiet])
        replies = sandbox.conversation(busy).replies
        while not (replies and replies[0].chunks):  # noqa: ASYNC110 - the sandbox's log has no event per chunk
            await trio.sleep(0.1)
        clean, took = await timed_drain(supervisor)
        # The four words left take 4 s (1 s each): the drain waited for them, no longer.
        assert 3.0 <= took < 5.0, took
        assert clean
        assert len(supervisor) == 0
        await sandbox.wait_done([busy])
    (reply,) = sandbox.conversation(busy).replies
    assert (reply.status, reply.reply) == ("ok", "one two three four five")
    assert [sandbox.conversation(c).outcome for c in (quiet, busy)] == ["completed"] * 2


async def test_drain_answers_the_queued_tasks_first_and_refuses_later_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Streamer.gate = trio.Event()
    try:
        async with arinova() as (fake, _, supervisor, _):
            await fake.current.task("t1", "c1", "wait for it")
            await fake.current.task("t2", "c1", "queued behind")
            await trio.testing.wait_all_tasks_blocked()
            result: list[tuple[bool, float]] = []

            async def drain() -> None:
                result.append(await timed_drain(supervisor))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await trio.testing.wait_all_tasks_blocked()
                assert "c1" in supervisor  # its tasks are not answered yet
                Streamer.gate.set()
            ((clean, took),) = result
            assert clean and took < 10, took  # 3 + 2 words at 1 s each, not the 30 s deadline
            assert await fake.final("t1") == wire.AgentComplete("t1", "wait for it")
            assert await fake.final("t2") == wire.AgentComplete("t2", "queued behind")
            assert supervisor.statistics().ended_total["completed"] == 1
            assert await fake.reply("t3", "c1", "too late") == wire.AgentError("t3", REFUSED)
    finally:
        Streamer.gate = None
