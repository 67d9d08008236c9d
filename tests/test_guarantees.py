"""The fault kit shared by the guarantee tests, and the tests of guarantee 8 (safe defaults).

README's "Guarantees" section lists eight promises; each ``tests/test_guarantee_<n>_*.py``
proves one of them over real sockets (and, where the promise is about the process, a
real ``orchestrator run`` subprocess). This module holds what they share:

* :func:`stack`: the bundled sandbox, optionally a :class:`~orchestrator.faults.FaultProxy`
  in front of it, a :class:`ConversimplePlatform` and a :class:`Supervisor`, in this process;
* :class:`MiniPlatform`: a scriptable Conversimple platform whose state outlives a
  restart of its listener (a real server restart on the same port), and which can push
  any text at a conversation's socket (bad frames, floods);
* :func:`child`: ``orchestrator run`` as a subprocess, its output captured;
* the agents the tests serve (also loaded by path in the subprocesses).

Real time throughout (a subprocess cannot share trio's mock clock); every wait is
bounded, everything stays on 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import attrs
import httpx
import psutil
import pytest
import trio
from prometheus_client import CollectorRegistry

from orchestrator.agent import Agent, tool
from orchestrator.config import PlatformSettings
from orchestrator.connection import LinkPolicy
from orchestrator.errors import LinkError, PermanentLinkError, ProtocolError, UnsafeURLError
from orchestrator.faults import FaultProxy
from orchestrator.metrics import Metrics
from orchestrator.platforms.conversimple import ConversimplePlatform
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from orchestrator.sandbox.settings import SandboxSettings
from orchestrator.supervision import SupervisorSettings
from orchestrator.supervisor import Supervisor
from orchestrator.transport import ServerWebSocket, serve
from tests.helpers import free_port, sample, wait_until

ROOT = Path(__file__).resolve().parent.parent
KIT = "tests/test_guarantees.py"
"""How a subprocess names this module in an AGENT spec (``tests/test_guarantees.py:Steady``)."""
CUSTOMER = "cust-g"
API_KEY = "guarantee-key-0000"


# ---------------------------------------------------------------- agents


class Steady(Agent):
    """A well-behaved agent: one async and one sync tool, both instant."""

    agent_id = "steady"

    @tool("Answer at once")
    async def ping(self, text: str) -> dict[str, str]:
        return {"text": text}

    @tool("Answer at once from a worker thread")
    def ping_sync(self, text: str) -> dict[str, str]:
        return {"text": text}


RELEASE = threading.Event()
"""Set by a test's teardown: lets every thread blocked in :meth:`Misbehaving.block` go."""


class Misbehaving(Agent):
    """Tools that raise, hang past their timeout, or block their worker thread."""

    agent_id = "misbehaving"

    @tool("Always raises")
    async def fail(self) -> None:
        raise RuntimeError("this tool always fails")

    @tool("Never returns (until its timeout cancels it)")
    async def hang(self) -> None:
        await trio.sleep_forever()

    @tool("Blocks its worker thread until the test ends")
    def block(self) -> str:
        RELEASE.wait(60)
        return "released"


class Counting(Agent):
    """Counts how often each tool body started and completed, keyed by its ``text`` argument."""

    agent_id = "counting"
    started: dict[str, int] = {}
    runs: dict[str, int] = {}
    hold = 0.0
    """Seconds :meth:`slow` takes (set by the test)."""

    @classmethod
    def reset(cls, hold: float) -> None:
        cls.started, cls.runs, cls.hold = {}, {}, hold

    @tool("Run once per text, counted")
    async def slow(self, text: str) -> dict[str, str]:
        Counting.started[text] = Counting.started.get(text, 0) + 1
        await trio.sleep(Counting.hold)
        Counting.runs[text] = Counting.runs.get(text, 0) + 1
        return {"text": text}


class Napper(Agent):
    """A tool that takes as long as asked (for drain tests)."""

    agent_id = "napper"

    @tool("Sleep, then answer")
    async def nap(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"


class Stalled(Agent):
    """A tool that never finishes: its conversation stops consuming."""

    agent_id = "stalled"

    @tool("Wait forever")
    async def wait(self, note: str) -> str:
        await trio.sleep_forever()
        return note


# ---------------------------------------------------------------- small helpers


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def tool_turns(*turns: tuple[str, Mapping[str, Any]], agent_id: str, repeat: int = 1) -> dict[str, Any]:
    """One scenario conversation entry with scripted tool turns."""
    return {
        "agent_id": agent_id,
        "repeat": repeat,
        "turn": [{"tool": name, "arguments": dict(arguments)} for name, arguments in turns],
    }


def scenario(*conversations: Mapping[str, Any], rate: float = 0.0) -> Any:
    return parse_scenario({"rate": rate, "conversation": [dict(c) for c in conversations]})


# ---------------------------------------------------------------- in-process stack


@attrs.frozen
class Stack:
    server: SandboxServer
    proxy: FaultProxy | None
    supervisor: Supervisor
    platform: ConversimplePlatform
    metrics: Metrics


@asynccontextmanager
async def stack(
    agents: Sequence[type[Agent]],
    *,
    sandbox: SandboxSettings | None = None,
    policy: LinkPolicy | None = None,
    settings: SupervisorSettings | None = None,
    via_proxy: bool = False,
    thread_limiter: trio.CapacityLimiter | None = None,
    handshake_limit: int = 200,
    api_key: str = API_KEY,
) -> AsyncIterator[Stack]:
    """Sandbox (+ proxy) + platform + supervisor over real loopback sockets, torn down on exit."""
    server = SandboxServer(sandbox or SandboxSettings())
    metrics = Metrics(CollectorRegistry())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        proxy = None
        url = server.conversimple_url
        if via_proxy:
            proxy = FaultProxy("127.0.0.1", server.port)
            port = await nursery.start(proxy.run)
            url = url.replace(f":{server.port}/", f":{port}/")
        platform = ConversimplePlatform(
            url, api_key, CUSTOMER, policy or LinkPolicy(), handshake_limit=handshake_limit, metrics=metrics
        )
        supervisor = Supervisor(
            agents,
            platform.connect,
            settings=settings or SupervisorSettings(),
            metrics=metrics,
            thread_limiter=thread_limiter,
        )
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        try:
            yield Stack(server, proxy, supervisor, platform, metrics)
        finally:
            RELEASE.set()
            nursery.cancel_scope.cancel()
    RELEASE.clear()


# ---------------------------------------------------------------- a platform that can restart


@attrs.define(eq=False)
class MiniSocket:
    ws: ServerWebSocket
    session: wire.ConversimpleServer
    joined: bool = False
    conversations: set[str] = attrs.Factory(set)


@attrs.define(eq=False)
class MiniPlatform:
    """A Conversimple platform on 127.0.0.1 whose state lives outside its listener.

    ``await nursery.start(mini.run)`` serves; :meth:`restart` closes the listener and
    every socket (as a crashed server would), waits, and listens again on the same port.
    Conversations are announced on the earliest joined socket, like the sandbox. Every
    ``tool_call_response`` / ``tool_call_error`` payload lands in :attr:`answers`.
    """

    max_frame_bytes: int = 4 << 20
    port: int = 0
    answers: list[dict[str, Any]] = attrs.Factory(list)
    registrations: dict[str, int] = attrs.Factory(dict)
    sockets: dict[str, MiniSocket] = attrs.Factory(dict)
    """The socket each conversation registered on last."""
    _joined: list[MiniSocket] = attrs.Factory(list)
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/customer_sdk/websocket"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(port)`` once listening."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._listen()
            task_status.started(self.port)
            await trio.sleep_forever()  # keeps the nursery open while the listener restarts

    async def _listen(self) -> None:
        assert self._nursery is not None
        self._scope = trio.CancelScope()
        self.port = await self._nursery.start(self._serve, self._scope)

    async def _serve(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]) -> None:
        with scope:
            await serve(
                self._handle,
                "127.0.0.1",
                self.port,
                subprotocols=[wire.SUBPROTOCOL],
                max_frame_bytes=self.max_frame_bytes,
                task_status=task_status,
            )

    async def restart(self, down_for: float) -> None:
        """Close the listener and every socket now (a crash), wait ``down_for`` s, listen again."""
        assert self._scope is not None
        self._scope.cancel()
        self._joined.clear()
        self.sockets.clear()
        await trio.sleep(down_for)
        await self._listen()

    async def _handle(self, ws: ServerWebSocket) -> None:
        sock = MiniSocket(ws, wire.ConversimpleServer(max_bytes=self.max_frame_bytes))
        try:
            while True:
                frame = sock.session.receive(await ws.receive_text())
                message = frame.message
                if isinstance(message, wire.PhxJoin | wire.Heartbeat):
                    if isinstance(message, wire.PhxJoin):
                        sock.joined = True
                        self._joined.append(sock)
                    await ws.send_text(sock.session.reply(frame))
                elif isinstance(message, wire.RegisterConversationTools):
                    cid = message.conversation_id
                    self.registrations[cid] = self.registrations.get(cid, 0) + 1
                    self.sockets[cid] = sock
                    sock.conversations.add(cid)
                    await ws.send_text(sock.session.reply(frame))
                elif isinstance(message, wire.ToolCallResponse | wire.ToolCallError):
                    self.answers.append(codec.unstructure_tagged(message, wire.ClientMessage)[1])
        except (LinkError, ProtocolError):
            pass
        finally:
            if sock in self._joined:
                self._joined.remove(sock)
            for cid in sock.conversations:
                if self.sockets.get(cid) is sock:
                    del self.sockets[cid]

    def control(self) -> MiniSocket | None:
        return self._joined[0] if self._joined else None

    async def announce(self, conversation_id: str, agent_id: str) -> None:
        """``conversation_ready`` on the control socket (waits for one)."""
        await wait_until(lambda: self.control() is not None, 20, "a control socket")
        sock = self.control()
        assert sock is not None
        await sock.ws.send_text(sock.session.push(wire.ConversationReady(conversation_id, agent_id)))

    async def wait_registered(self, conversation_id: str, times: int = 1, within: float = 20) -> MiniSocket:
        await wait_until(
            lambda: self.registrations.get(conversation_id, 0) >= times and conversation_id in self.sockets,
            within,
            f"{conversation_id} registered {times} time(s)",
        )
        return self.sockets[conversation_id]

    def request(
        self,
        conversation_id: str,
        call_id: str,
        tool_name: str,
        arguments: Mapping[str, Any],
        timeout: float = 30.0,
    ) -> str:
        """The text of a ``tool_call_request`` on the conversation's socket."""
        sock = self.sockets[conversation_id]
        message = wire.ToolCallRequest(call_id, tool_name, dict(arguments), timeout, conversation_id)
        return sock.session.push(message)

    async def send_text(self, conversation_id: str, text: str) -> None:
        await self.sockets[conversation_id].ws.send_text(text)

    async def call(
        self, conversation_id: str, call_id: str, tool_name: str, arguments: Mapping[str, Any]
    ) -> None:
        await self.send_text(conversation_id, self.request(conversation_id, call_id, tool_name, arguments))

    def answer(self, call_id: str) -> list[dict[str, Any]]:
        return [a for a in self.answers if a.get("call_id") == call_id]

    async def wait_answer(self, call_id: str, count: int = 1, within: float = 20) -> dict[str, Any]:
        await wait_until(lambda: len(self.answer(call_id)) >= count, within, f"answer to {call_id}")
        return self.answer(call_id)[-1]


# ---------------------------------------------------------------- the orchestrator as a subprocess


@attrs.define(eq=False)
class Child:
    """A running ``orchestrator run``; stdout and stderr are read continuously."""

    process: trio.Process
    http_port: int | None
    stdout: bytearray = attrs.Factory(bytearray)
    stderr: bytearray = attrs.Factory(bytearray)

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    async def get(self, path: str, seconds: float = 10.0) -> httpx.Response:
        assert self.http_port is not None
        base = f"http://127.0.0.1:{self.http_port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            return await client.get(path, timeout=seconds)

    async def wait(self, within: float) -> int:
        with trio.fail_after(within):
            return await self.process.wait()


async def _collect(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    try:
        while chunk := await stream.receive_some(65536):
            into += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@asynccontextmanager
async def child(
    *args: str,
    env: Mapping[str, str] | None = None,
    http: bool = True,
    wait_healthy: bool = True,
    command: str = "run",
) -> AsyncIterator[Child]:
    """``python -m orchestrator <command> *args`` from the checkout; killed on exit if still running.

    With ``http`` it gets ``--http-port`` on a free port and, with ``wait_healthy``, the
    block starts once ``/healthz`` answers 200 (or the process exited).
    """
    port = free_port() if http else None
    argv = [sys.executable, "-m", "orchestrator", command, *args]
    if port is not None:
        argv += ["--http-port", str(port)]
    elif command == "run":
        argv += ["--no-http"]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    running = Child(process, port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_collect, process.stdout, running.stdout)
        nursery.start_soon(_collect, process.stderr, running.stderr)
        try:
            if port is not None and wait_healthy:
                await _wait_healthy(running)
            yield running
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(10, shield=True):
                await process.wait()
                await trio.sleep(0.05)  # let the readers take the last bytes
            nursery.cancel_scope.cancel()


async def _wait_healthy(running: Child) -> None:
    with trio.fail_after(30):
        while running.process.returncode is None:
            try:
                if (await running.get("/healthz", seconds=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


# ---------------------------------------------------------------- TLS


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (openssl CLI)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        cwd=directory, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


# ================================================================ guarantee 8: safe defaults


class Strict(Agent):
    """A tool with typed arguments whose body and pre-call hook count every run."""

    agent_id = "strict"
    bodies = 0
    hooks = 0

    async def on_tool_called(self, tool_name: str, arguments: Any) -> None:
        Strict.hooks += 1

    @tool("Typed arguments")
    async def book(self, seats: int, cabin: Literal["economy", "business"] = "economy") -> dict[str, Any]:
        Strict.bodies += 1
        return {"seats": seats, "cabin": cabin}


async def test_guarantee_8_tool_arguments_validated_before_any_tool_code_runs() -> None:
    bad: list[dict[str, Any]] = [
        {},  # missing
        {"seats": "2"},  # a string for an int
        {"seats": True},  # a bool is not an int
        {"seats": 2.5},
        {"seats": 2, "cabin": "steerage"},  # not in the Literal
        {"seats": 2, "meal": "veg"},  # unknown argument
        {"seats": [2]},
    ]
    turns = [("book", args) for args in bad] + [("book", {"seats": 2, "cabin": "business"})]
    Strict.bodies = Strict.hooks = 0
    async with stack([Strict]) as s:
        (cid,) = s.server.add_conversations(scenario(tool_turns(*turns, agent_id="strict")))
        with trio.fail_after(30):
            await s.server.wait_done([cid])
        calls = s.server.conversation(cid).calls
        assert [c.status for c in calls] == ["error"] * len(bad) + ["ok"], [c.error for c in calls]
        for call in calls[:-1]:
            assert call.error is not None and "invalid arguments" in call.error, call.error
        assert calls[-1].result == {"seats": 2, "cabin": "business"}
        # Neither the body nor the pre-call hook ever saw the bad arguments.
        assert (Strict.bodies, Strict.hooks) == (1, 1)
        invalid = sample(s.metrics, "orchestrator_tool_calls_total", tool="book", outcome="invalid_arguments")
        assert invalid == len(bad)


@pytest.mark.slow
async def test_guarantee_8_http_endpoint_binds_loopback_by_default() -> None:
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with child(f"{KIT}:Steady", "--url", server.conversimple_url, "--api-key", API_KEY) as running:
            assert (await running.get("/healthz")).status_code == 200
            listening = [
                c.laddr
                for c in psutil.Process(running.process.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
            assert running.http_port in [addr.port for addr in listening]
            assert {addr.ip for addr in listening if addr.port == running.http_port} <= {"127.0.0.1", "::1"}
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_guarantee_8_wss_with_an_unverifiable_certificate_fails_permanently(
    tmp_path: Path,
) -> None:
    context = self_signed_context(tmp_path)

    async def never(ws: ServerWebSocket) -> None:  # pragma: no cover - TLS fails before this
        raise AssertionError("the TLS handshake must fail first")

    async with trio.open_nursery() as nursery:
        tls_port = await nursery.start(lambda task_status: serve(
            never, "127.0.0.1", 0, ssl_context=context, task_status=task_status
        ))  # fmt: skip
        proxy = FaultProxy("127.0.0.1", tls_port)  # counts the connection attempts
        port = await nursery.start(proxy.run)
        url = f"wss://127.0.0.1:{port}/customer_sdk/websocket"

        # In process: the platform's control link raises PermanentLinkError, never retries.
        platform = ConversimplePlatform(url, API_KEY, CUSTOMER, LinkPolicy(backoff_initial=0.05))
        supervisor = Supervisor([Steady], platform.connect)
        await nursery.start(supervisor.run)
        with trio.fail_after(10), pytest.raises(PermanentLinkError) as caught:
            await platform.run(supervisor)
        assert proxy.statistics().accepted == 1
        assert "certificate" in str(caught.value)
        assert API_KEY not in str(caught.value) + repr(caught.value)

        # From the command line: exit status 3, one line naming the certificate, one attempt.
        before = proxy.statistics().accepted
        async with child(f"{KIT}:Steady", "--url", url, "--api-key", API_KEY, http=False) as running:
            assert await running.wait(20) == 3, running.output
        assert "certificate" in running.output and "verif" in running.output
        assert API_KEY not in running.output
        await trio.sleep(1.0)  # a retry, if there were one, would have come by now
        assert proxy.statistics().accepted - before == 1  # the breaker opened at the first failure
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_guarantee_8_plain_ws_only_to_loopback_unless_allowed() -> None:
    for url in ("ws://10.255.255.1/customer_sdk/websocket", "ws://platform.example/ws?auth_token=tok3n"):
        async with child(f"{KIT}:Steady", "--url", url, "--api-key", API_KEY, http=False) as running:
            assert await running.wait(20) == 2, running.output
        assert "refusing plain ws://" in running.output and "use wss://" in running.output
        assert "tok3n" not in running.output and API_KEY not in running.output
        assert "Traceback" not in running.output
    # Loopback needs no permission; anything else needs allow_insecure, decided before any I/O.
    ConversimplePlatform.from_settings(PlatformSettings(url="ws://127.0.0.1:1/x", api_key="k"))
    ConversimplePlatform.from_settings(PlatformSettings(url="ws://[::1]:1/x", api_key="k"))
    with pytest.raises(UnsafeURLError):
        ConversimplePlatform.from_settings(PlatformSettings(url="ws://10.255.255.1/x", api_key="k"))
    ConversimplePlatform.from_settings(
        PlatformSettings(url="ws://10.255.255.1/x", api_key="k", allow_insecure=True)
    )


def test_guarantee_8_defaults_are_the_safe_ones() -> None:
    from orchestrator.config import Settings

    settings = Settings.load(env={})
    assert settings.http.host == "127.0.0.1"
    assert settings.platform.allow_insecure is False
    assert LinkPolicy().allow_insecure is False
