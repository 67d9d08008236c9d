"""The WebSocket boundary, over real sockets on 127.0.0.1 against the real ``serve``."""

from __future__ import annotations

import base64
import contextlib
import errno
import gc
import hashlib
import importlib
import importlib.util
import shutil
import ssl
import subprocess
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from orchestrator.errors import (
    ConfigError,
    FrameTooLargeError,
    HandshakeError,
    LinkClosedError,
    LinkTimeout,
    PermanentLinkError,
    UnsafeURLError,
)
from orchestrator.transport import (
    CLOSE_TIMEOUT,
    DEFAULT_IMPLEMENTATION,
    IMPLEMENTATIONS,
    ServerWebSocket,
    connect,
    handshake,
    is_loopback,
    parse_target,
    serve,
)
from orchestrator.transport import server as server_module
from orchestrator.transport.interface import close_arguments
from orchestrator.transport.server import ACCEPT_RETRY_S, accept_loop

TOKEN = "s3cret-t0ken-value"

both = pytest.mark.parametrize("impl", IMPLEMENTATIONS)


async def start_server(nursery: trio.Nursery, handler: Any, **options: Any) -> int:
    port: int = await nursery.start(partial(serve, handler, "127.0.0.1", 0, **options))
    return port


def url(port: int, path: str = "/ws", scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{port}{path}?customer_id=c1&auth_token={TOKEN}"


async def echo(ws: ServerWebSocket) -> None:
    while True:
        await ws.send_text(await ws.receive_text())


def assert_no_token(exc: BaseException) -> None:
    assert TOKEN not in str(exc)
    assert TOKEN not in repr(exc)
    assert TOKEN not in "".join(traceback.format_exception(exc))


# Round trips


@both
async def test_connect_echo_round_trip(nursery: trio.Nursery, impl: str) -> None:
    port = await start_server(nursery, echo)
    ws = await connect(url(port), implementation=impl)
    try:
        for text in ["hello", "", "ünïcödé ✓", "x" * 70_000]:
            await ws.send_text(text)
            assert await ws.receive_text() == text
        assert TOKEN not in repr(ws)
    finally:
        await ws.aclose()


@both
async def test_connect_large_messages_survive_backpressure(nursery: trio.Nursery, impl: str) -> None:
    big = 1 << 23
    port = await start_server(nursery, echo, max_frame_bytes=big)
    ws = await connect(url(port), max_frame_bytes=big, implementation=impl)
    text = "0123456789abcdef" * (big // 32)  # 4 MiB: more than the socket buffers hold
    await ws.send_text(text)
    assert await ws.receive_text() == text
    await ws.aclose()


@both
async def test_connect_concurrent_senders_never_interleave(nursery: trio.Nursery, impl: str) -> None:
    port = await start_server(nursery, echo)
    ws = await connect(url(port), implementation=impl)
    sent = {f"{sender}:{n}:" + "y" * 3000 for sender in range(10) for n in range(20)}
    received: set[str] = set()

    async def send_all(sender: int) -> None:
        for n in range(20):
            await ws.send_text(f"{sender}:{n}:" + "y" * 3000)

    async with trio.open_nursery() as senders:
        for sender in range(10):
            senders.start_soon(send_all, sender)
        while len(received) < len(sent):
            received.add(await ws.receive_text())
    assert received == sent
    await ws.aclose()


async def test_sansio_frames_sent_at_once_share_system_calls(nursery: trio.Nursery) -> None:
    """Senders that find the socket busy hand their frame to the writer already at it:
    every frame arrives whole and in each sender's order, in fewer writes than frames."""
    port = await start_server(nursery, echo)
    ws = await connect(url(port), implementation="sansio")

    class CountingPipe:
        def __init__(self, pipe: Any) -> None:
            self.pipe, self.writes = pipe, 0

        async def send_all(self, data: bytes) -> None:
            self.writes += 1
            await self.pipe.send_all(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.pipe, name)

    counting = CountingPipe(ws._pipe)  # type: ignore[attr-defined]
    ws._pipe = counting  # type: ignore[attr-defined]
    received: list[str] = []

    async def sender(who: int) -> None:
        for n in range(5):
            await ws.send_text(f"{who}:{n}")

    async with trio.open_nursery() as senders:
        for who in range(40):
            senders.start_soon(sender, who)
        while len(received) < 200:
            received.append(await ws.receive_text())
    for who in range(40):
        assert [m for m in received if m.startswith(f"{who}:")] == [f"{who}:{n}" for n in range(5)]
    # Without sharing, 200 writes. How many frames share one varies with who runs when
    # (40 to 100 writes over runs): the reader takes the echoes it has read together
    # without a scheduler pass each, so the senders' turns fall differently every time.
    assert counting.writes < 150, counting.writes
    await ws.aclose()


@both
async def test_receive_cancelled_leaves_link_usable(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, impl: str
) -> None:
    port = await start_server(nursery, echo)
    ws = await connect(url(port), implementation=impl)
    with trio.move_on_after(30) as scope:
        await ws.receive_text()  # nothing comes
    assert scope.cancelled_caught
    await ws.send_text("still here")
    assert await ws.receive_text() == "still here"
    await ws.aclose()


@both
async def test_serve_exposes_path_query_and_headers(nursery: trio.Nursery, impl: str) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerWebSocket) -> None:
        seen.update(path=ws.path, query=dict(ws.query), host=ws.headers["host"])
        await ws.send_text("ok")

    port = await start_server(nursery, handler)
    ws = await connect(url(port, "/ws/agent"), implementation=impl)
    assert await ws.receive_text() == "ok"
    await ws.aclose()
    assert seen == {
        "path": "/ws/agent",
        "query": {"customer_id": "c1", "auth_token": TOKEN},
        "host": f"127.0.0.1:{port}",
    }


@both
async def test_connect_negotiates_subprotocol(nursery: trio.Nursery, impl: str) -> None:
    port = await start_server(nursery, echo, subprotocols=["phoenix-websocket"])
    ws = await connect(url(port), subprotocols=["v2", "phoenix-websocket"], implementation=impl)
    assert ws.subprotocol == "phoenix-websocket"
    await ws.aclose()
    plain = await connect(url(port), implementation=impl)  # the server does not insist
    assert plain.subprotocol is None
    await plain.aclose()
    single = await connect(url(port), subprotocols="phoenix-websocket", implementation=impl)
    assert single.subprotocol == "phoenix-websocket"  # a bare string is one subprotocol
    await single.aclose()


async def test_sansio_link_keeps_no_handshake_response(nursery: trio.Nursery) -> None:
    """An open link holds no HTTP response: its headers are 2 KB per idle conversation."""
    port = await start_server(nursery, echo, subprotocols=["phoenix-websocket"])
    ws = await connect(url(port), subprotocols=["phoenix-websocket"], implementation="sansio")
    seen: set[int] = set()
    frontier: list[Any] = [ws]
    for _ in range(8):  # everything reachable from the link, eight references deep
        found = []
        for obj in frontier:
            for ref in gc.get_referents(obj):
                if id(ref) not in seen and not isinstance(ref, type | ModuleType):
                    seen.add(id(ref))
                    found.append(ref)
        assert not any(isinstance(obj, Response) for obj in found)
        frontier = found
    assert ws.subprotocol == "phoenix-websocket"
    await ws.send_text("still works")
    assert await ws.receive_text() == "still works"
    await ws.aclose()


@pytest.fixture
def protocol_objects(monkeypatch: pytest.MonkeyPatch) -> Iterator[weakref.WeakSet[Any]]:
    """Every websockets protocol object the sans-IO client and server make, while alive;
    the garbage collector is off meanwhile, so only reference counting frees them."""
    alive: weakref.WeakSet[Any] = weakref.WeakSet()

    class Client(handshake.ClientProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            alive.add(self)

    class Server(server_module._ServerProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            alive.add(self)

    monkeypatch.setattr(handshake, "ClientProtocol", Client)
    monkeypatch.setattr(server_module, "_ServerProtocol", Server)
    gc.disable()
    try:
        yield alive
    finally:
        gc.enable()


@pytest.mark.parametrize("ending", ["client closes", "client aborts", "server closes", "server aborts"])
async def test_sansio_finished_links_are_freed_without_the_garbage_collector(
    nursery: trio.Nursery, protocol_objects: weakref.WeakSet[Any], ending: str
) -> None:
    """A finished link must not wait for a full collection, which a busy process runs
    rarely: every finished link did (a websockets protocol object and its parser
    generator hold each other), and a 5-minute soak's RSS crept up 17 %. Each protocol
    object made (the client's handshake one, the one it is swapped for, the server's)
    must be gone once the link is."""
    alive = protocol_objects
    finished = trio.Event()

    async def handler(ws: ServerWebSocket) -> None:
        try:
            await ws.send_text(await ws.receive_text())
            if ending == "server aborts":
                ws.abort()
            elif ending == "server closes":
                await ws.aclose()
            await ws.receive_text()
        except LinkClosedError:
            pass
        finally:
            finished.set()

    port = await start_server(nursery, handler, subprotocols=["phoenix-websocket"])
    ws = await connect(url(port), subprotocols=["phoenix-websocket"], implementation="sansio")
    assert ws.subprotocol == "phoenix-websocket"
    assert len(alive) == 2  # the client's handshake object is gone already
    await ws.send_text("hello")
    assert await ws.receive_text() == "hello"
    if ending == "client aborts":
        ws.abort()
    elif ending == "client closes":
        await ws.aclose()
    else:
        with pytest.raises(LinkClosedError):
            await ws.receive_text()
    await finished.wait()
    await trio.testing.wait_all_tasks_blocked()
    del ws
    assert len(alive) == 0


@pytest.mark.parametrize("status", [403, 503])
async def test_sansio_refused_handshakes_are_freed_without_the_garbage_collector(
    nursery: trio.Nursery, protocol_objects: weakref.WeakSet[Any], status: int
) -> None:
    """A refused handshake leaves nothing behind either: the refusal's error (kept as
    the cause of the one raised) holds the client's protocol object in its traceback."""
    port = await start_server(nursery, echo, reject=reject_with(status))
    for _ in range(3):
        try:
            await connect(url(port), implementation="sansio")
        except HandshakeError as exc:
            assert str(status) in str(exc)
        else:
            pytest.fail("the handshake was not refused")
    await trio.testing.wait_all_tasks_blocked()
    assert len(protocol_objects) == 0


@pytest.mark.parametrize("split", [0, 4, 5])
async def test_sansio_first_frame_split_across_the_handshake_survives(
    nursery: trio.Nursery, split: int
) -> None:
    """Bytes of a first frame that arrive with the 101 response are never lost, whatever
    they end with (here CRLFCRLF, like the end of the response)."""
    payload = b'{\r\n\r\n"a": 1}'
    frame = bytes([0x81, len(payload)]) + payload

    async def handshake_then_frame(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await stream.send_all(response + frame[: 2 + split])
        await trio.sleep(0.1)
        await stream.send_all(frame[2 + split :])
        await trio.sleep(1)

    listeners = await nursery.start(trio.serve_tcp, handshake_then_frame, 0)
    port = listeners[0].socket.getsockname()[1]
    ws = await connect(f"ws://127.0.0.1:{port}/", implementation="sansio")
    assert await ws.receive_text() == payload.decode()
    ws.abort()


# Closing


@both
async def test_receive_after_peer_close_raises_link_closed(nursery: trio.Nursery, impl: str) -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.send_text("last words")
        await ws.aclose(4001, "bye")

    port = await start_server(nursery, handler)
    ws = await connect(url(port), implementation=impl)
    assert await ws.receive_text() == "last words"  # delivered before the close
    with pytest.raises(LinkClosedError) as caught:
        await ws.receive_text()
    assert ws.close_code == 4001
    assert_no_token(caught.value)
    with pytest.raises(LinkClosedError):
        await ws.send_text("anyone?")
    await ws.aclose()


@both
async def test_receive_when_server_dies_raises_link_closed(nursery: trio.Nursery, impl: str) -> None:
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[int]) -> None:
        with server_scope:
            await serve(echo, "127.0.0.1", 0, task_status=task_status)

    port = await nursery.start(run_server)
    ws = await connect(url(port), implementation=impl)
    server_scope.cancel()  # the server drops its sockets without a close frame
    with pytest.raises(LinkClosedError):
        await ws.receive_text()
    assert ws.close_code == 1006
    await ws.aclose()


async def test_accept_waits_out_descriptor_exhaustion_and_keeps_serving(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    real = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = real.socket.getsockname()[1]
    failures = [OSError(errno.EMFILE, "Too many open files"), OSError(errno.ENOBUFS, "No buffer space")]

    class OutOfDescriptorsTwice:
        async def accept(self) -> trio.SocketStream:
            if failures:
                await trio.lowlevel.checkpoint()
                raise failures.pop(0)
            return await real.accept()

        async def __aenter__(self) -> OutOfDescriptorsTwice:
            return self

        async def __aexit__(self, *exc: object) -> None:
            await real.aclose()

    served = trio.Event()

    async def serve_one(stream: trio.SocketStream) -> None:
        await stream.aclose()
        served.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, OutOfDescriptorsTwice(), nursery, serve_one)  # type: ignore[arg-type]
        start = trio.current_time()
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await served.wait()
        assert trio.current_time() - start >= 2 * ACCEPT_RETRY_S  # waited before each retry
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert caplog.text.count("retrying in 0.1 s") == 2


async def test_accept_fails_loudly_on_anything_but_exhaustion() -> None:
    class Broken:
        async def accept(self) -> trio.SocketStream:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EBADF, "Bad file descriptor")

        async def __aenter__(self) -> Broken:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

    async def never(stream: trio.SocketStream) -> None:
        raise AssertionError("nothing was accepted")

    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await accept_loop(Broken(), nursery, never)  # type: ignore[arg-type]
    assert caught.group_contains(OSError, match="Bad file descriptor")


@both
async def test_abort_drops_without_close_frame_both_ways(nursery: trio.Nursery, impl: str) -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerWebSocket) -> None:
        if ws.path == "/server-aborts":
            ws.abort()
            ws.abort()  # idempotent
            return
        try:
            await ws.receive_text()
        except LinkClosedError:
            codes.append(ws.close_code)

    port = await start_server(nursery, handler)
    ws = await connect(url(port, "/server-aborts"), implementation=impl)
    with pytest.raises(LinkClosedError):
        await ws.receive_text()
    assert ws.close_code == 1006
    await ws.aclose()

    ws = await connect(url(port, "/client-aborts"), implementation=impl)
    ws.abort()
    with pytest.raises(LinkClosedError):
        await ws.send_text("gone")
    await ws.aclose()  # still fine after an abort
    await trio.testing.wait_all_tasks_blocked()
    assert codes == [1006]


@both
async def test_aclose_is_idempotent_and_reports_to_server(nursery: trio.Nursery, impl: str) -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerWebSocket) -> None:
        try:
            await ws.receive_text()
        except LinkClosedError:
            codes.append(ws.close_code)

    port = await start_server(nursery, handler)
    ws = await connect(url(port), implementation=impl)
    await ws.aclose(4002, "done")
    await ws.aclose()
    assert ws.close_code == 4002
    await trio.testing.wait_all_tasks_blocked()
    assert codes == [4002]


@both
async def test_aclose_is_bounded_when_peer_never_answers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, impl: str
) -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await trio.sleep_forever()  # never reads, so never answers the close frame

    port = await start_server(nursery, handler)
    ws = await connect(url(port), implementation=impl)
    start = trio.current_time()
    with trio.CancelScope() as scope:
        scope.cancel()  # a cancelled caller still gets a bounded, shielded close
        await ws.aclose()
    assert trio.current_time() - start <= CLOSE_TIMEOUT + 0.5


async def test_sansio_client_leaves_the_time_wait_to_the_server(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    # Whoever closes TCP first holds the TIME_WAIT: the server must (RFC 6455, 7.1.1),
    # or every conversation's end ties up one of the orchestrator's ephemeral ports.
    # The server here answers the Close at once and sends its FIN a second later. The
    # client waits for it in the background: aclose() returns once its Close is out.
    mock_clock.autojump_threshold = 0.5  # jump only when every task waits, for real
    server = ScriptedServer([], fin_after=1.0)
    await nursery.start(server.run)
    ws = await connect(url(server.port), implementation="sansio")
    start = trio.current_time()
    await ws.aclose()
    assert trio.current_time() == start
    assert ws.close_code == 1000
    with trio.fail_after(CLOSE_TIMEOUT):
        await server.finished.wait()
    assert server.close_code == 1000
    assert server.fin_at is not None and server.client_eof_at is not None
    assert server.client_eof_at >= server.fin_at == start + 1.0  # it waited for the FIN


@pytest.mark.parametrize("closing", ["client", "server"])
async def test_sansio_client_waits_for_the_fin_no_longer_than_the_close_timeout(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock, closing: str
) -> None:
    # A server that answers the Close but never closes TCP: the client lets the socket
    # go CLOSE_TIMEOUT after its own Close, whoever began the closing.
    mock_clock.autojump_threshold = 0.5
    frames = [Frame(Opcode.CLOSE, Close(1001, "bye").serialize())] if closing == "server" else []
    server = ScriptedServer(frames, fin_after=None)
    await nursery.start(server.run)
    ws = await connect(url(server.port), implementation="sansio")
    start = trio.current_time()
    if closing == "client":
        await ws.aclose()
    else:
        with pytest.raises(LinkClosedError):
            await ws.receive_text()
        assert ws.close_code == 1001
    with trio.fail_after(CLOSE_TIMEOUT + 1):
        await server.finished.wait()
    assert server.fin_at is None and server.client_eof_at is not None
    assert start + CLOSE_TIMEOUT <= server.client_eof_at < start + CLOSE_TIMEOUT + 0.5


async def test_the_server_closes_tcp_as_soon_as_it_answers_a_clients_close(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    # The server closes TCP first (RFC 6455, 7.1.1), and at once: the task serving the
    # link ends as soon as the answer is out, while the client has not closed its end
    # (a client that never does costs the server nothing; the kernel sees it through).
    mock_clock.autojump_threshold = 0.5  # jump only when every task waits, for real
    ended = trio.Event()
    seen: list[tuple[float, int | None]] = []

    async def handler(ws: ServerWebSocket) -> None:
        with pytest.raises(LinkClosedError, match="4001"):
            await ws.receive_text()
        seen.append((trio.current_time(), ws.close_code))
        ended.set()

    port = await start_server(nursery, handler)
    client = ClientProtocol(parse_uri(url(port)))
    client.send_request(client.connect())
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"".join(client.data_to_send()))
        while not client.events_received():
            client.receive_data(await stream.receive_some())
        assert client.state is State.OPEN
        start = trio.current_time()
        client.send_close(4001, "bye")
        await stream.send_all(b"".join(client.data_to_send()))
        while data := await stream.receive_some():  # the answer, then the server's end
            client.receive_data(data)
        client.receive_eof()
        with trio.fail_after(CLOSE_TIMEOUT * 2):
            await ended.wait()
        assert seen == [(start, 4001)]
        assert client.close_rcvd is not None and client.close_rcvd.code == 4001
        assert client.state is State.CLOSED


async def test_bytes_a_client_sends_after_its_close_never_reset_the_link(nursery: trio.Nursery) -> None:
    # Found in review: closing the socket at once turned anything the client sent after its
    # Close (a pong, say) into a TCP reset, which threw away what the server had sent and
    # the client had not read yet. The server half-closes instead and reads until the
    # client's end, in the background.
    ended = trio.Event()
    backlog = "x" * 12_000  # more than the client's receive buffer: the rest waits in the server's

    async def handler(ws: ServerWebSocket) -> None:
        await ws.send_text(backlog)
        with pytest.raises(LinkClosedError):
            await ws.receive_text()
        ended.set()

    port = await start_server(nursery, handler)
    client = ClientProtocol(parse_uri(url(port)), max_size=None)
    client.send_request(client.connect())
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(b"".join(client.data_to_send()))
        while not client.events_received():
            client.receive_data(await stream.receive_some(1))  # the response alone, not the backlog
        client.send_close(1000)
        await stream.send_all(b"".join(client.data_to_send()))
        with trio.fail_after(5):
            await ended.wait()  # the server answered, without the backlog read
            await stream.send_all(Frame(Opcode.PONG, b"late").serialize(mask=True))
            await trio.sleep(0.05)  # the pong reaches the server's socket
            while data := await stream.receive_some():
                client.receive_data(data)
        client.receive_eof()
    messages = [e.data for e in client.events_received() if isinstance(e, Frame) and e.opcode is Opcode.TEXT]
    assert messages == [backlog.encode()]
    assert client.close_rcvd is not None and client.close_rcvd.code == 1000


# Frame limits


@both
async def test_receive_oversized_message_raises_and_closes_1009(nursery: trio.Nursery, impl: str) -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerWebSocket) -> None:
        await ws.send_text("x" * 5000)
        try:
            await ws.receive_text()
        except LinkClosedError:
            codes.append(ws.close_code)

    port = await start_server(nursery, handler)
    ws = await connect(url(port), max_frame_bytes=1000, implementation=impl)
    with pytest.raises(FrameTooLargeError) as caught:
        await ws.receive_text()
    assert_no_token(caught.value)
    await ws.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert codes == [1009]


@both
async def test_serve_closes_1009_on_oversized_client_message(nursery: trio.Nursery, impl: str) -> None:
    port = await start_server(nursery, echo, max_frame_bytes=1000)
    ws = await connect(url(port), implementation=impl)
    await ws.send_text("z" * 5000)
    with pytest.raises(LinkClosedError):
        await ws.receive_text()
    assert ws.close_code == 1009
    await ws.aclose()


# Handshake failures


def reject_with(status: int) -> Callable[[str, Mapping[str, str], Mapping[str, str]], int | None]:
    def reject(path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> int | None:
        return status if query.get("auth_token") == TOKEN else None

    return reject


@both
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_connect_rejected_with_client_error_is_permanent(
    nursery: trio.Nursery, impl: str, status: int
) -> None:
    port = await start_server(nursery, echo, reject=reject_with(status))
    with pytest.raises(PermanentLinkError) as caught:
        await connect(url(port), implementation=impl)
    assert str(status) in str(caught.value)
    assert "auth_token=***" in str(caught.value)
    assert_no_token(caught.value)


@both
@pytest.mark.parametrize("status", [500, 503])
async def test_connect_rejected_with_server_error_is_retryable(
    nursery: trio.Nursery, impl: str, status: int
) -> None:
    port = await start_server(nursery, echo, reject=reject_with(status))
    with pytest.raises(HandshakeError) as caught:
        await connect(url(port), implementation=impl)
    assert not isinstance(caught.value, PermanentLinkError)
    assert str(status) in str(caught.value)
    assert_no_token(caught.value)


@both
async def test_connect_refused_is_handshake_error(impl: str) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(HandshakeError) as caught:
            await connect(url(port), implementation=impl)
    assert not isinstance(caught.value, PermanentLinkError)
    assert_no_token(caught.value)


@both
async def test_connect_timeout_on_silent_listener(autojump_clock: trio.testing.MockClock, impl: str) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes TCP; nobody ever answers the upgrade
        port = sock.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(LinkTimeout) as caught:
            await connect(url(port), connect_timeout=7.0, implementation=impl)
        assert trio.current_time() - start == pytest.approx(7.0)
    assert_no_token(caught.value)


class _Spawns(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


@both
async def test_an_ip_literal_is_dialled_directly_and_a_name_is_resolved(
    nursery: trio.Nursery, impl: str
) -> None:
    port = await start_server(nursery, echo)
    spawns = _Spawns()
    trio.lowlevel.add_instrument(spawns)
    try:
        for target in (url(port), url(port).replace("127.0.0.1", "localhost")):
            spawns.names.clear()
            ws = await connect(target, implementation=impl)
            dialled = [name for name in spawns.names if "open_tcp_stream" in name]
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"
            await ws.aclose()
            # trio's open_tcp_stream races the addresses of a name, a task each; an IP
            # literal has one address and takes one connect, no task.
            assert bool(dialled) == ("localhost" in target)
    finally:
        trio.lowlevel.remove_instrument(spawns)


def test_parse_target_parses_a_url_once() -> None:
    first = parse_target(url(1234))
    assert parse_target(url(1234)) is first and parse_target(url(1235)) is not first


class _NoSockets(trio.abc.SocketFactory):
    def socket(self, family: Any = None, type: Any = None, proto: Any = None) -> Any:
        raise AssertionError("connect() touched the network")


@pytest.mark.parametrize(
    "bad_url",
    [
        f"ws://example.com/ws?auth_token={TOKEN}",
        f"ws://10.0.0.7:4000/ws?auth_token={TOKEN}",
        f"http://127.0.0.1/ws?auth_token={TOKEN}",
        f"wss:///ws?auth_token={TOKEN}",
        f"ws://[::1/ws?auth_token={TOKEN}",
        f"ws://user:{TOKEN}@[::1/ws?auth_token={TOKEN}",
        f"ws://user:{TOKEN}@127.0.0.1:99999/ws",
    ],
)
@both
async def test_connect_refuses_unsafe_url_without_io(impl: str, bad_url: str) -> None:
    previous = trio.socket.set_custom_socket_factory(_NoSockets())
    try:
        with pytest.raises(UnsafeURLError) as caught:
            await connect(bad_url, implementation=impl)
    finally:
        trio.socket.set_custom_socket_factory(previous)
    assert_no_token(caught.value)


# TLS


@attrs.frozen
class Certificates:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a certificate for 127.0.0.1/localhost: trustme if present, else openssl."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client = ssl.create_default_context()
    if importlib.util.find_spec("trustme") is not None:
        trustme = importlib.import_module("trustme")
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
        ca.configure_trust(client)
        return Certificates(server, client)
    if shutil.which("openssl") is None:
        pytest.skip("neither trustme nor the openssl CLI is available")
    directory = tmp_path_factory.mktemp("tls")
    _openssl_certificates(directory)
    server.load_cert_chain(directory / "server.pem", directory / "server.key")
    client.load_verify_locations(directory / "ca.pem")
    return Certificates(server, client)


def _openssl_certificates(directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=orchestrator test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")  # fmt: skip


@both
async def test_wss_untrusted_certificate_is_permanent_at_once(
    nursery: trio.Nursery, impl: str, certificates: Certificates
) -> None:
    port = await start_server(nursery, echo, ssl_context=certificates.server)
    # A long timeout: a PermanentLinkError (not LinkTimeout) means it failed at once.
    with pytest.raises(PermanentLinkError) as caught:
        await connect(url(port, scheme="wss"), connect_timeout=600, implementation=impl)
    assert "certificate" in str(caught.value)
    assert_no_token(caught.value)


@both
async def test_wss_round_trip_with_trusted_ca(
    nursery: trio.Nursery, impl: str, certificates: Certificates
) -> None:
    port = await start_server(nursery, echo, ssl_context=certificates.server)
    ws = await connect(url(port, scheme="wss"), ssl_context=certificates.client, implementation=impl)
    await ws.send_text("over tls")
    assert await ws.receive_text() == "over tls"
    await ws.aclose()


# Interop and the module's own rules


@both
async def test_client_answers_pings_while_receiving(nursery: trio.Nursery, impl: str) -> None:
    """A trio-websocket server pings; the reply must come from inside receive_text."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        conn = await request.accept()
        with trio.fail_after(5):
            await conn.ping(b"are you there")
        await conn.send_message("pong seen")
        await trio.sleep_forever()

    server = await nursery.start(
        partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    )
    ws = await connect(url(server.port), implementation=impl)
    assert await ws.receive_text() == "pong seen"
    await ws.aclose()


@attrs.define
class ScriptedServer:
    """A one-connection server on websockets' ServerProtocol that writes raw frames in one go."""

    frames: list[Frame]
    port: int = 0
    close_code: int | None = None
    fin_after: float | None = 0.0
    """Seconds between answering a Close and closing TCP (sending the FIN); None: never."""
    fin_at: float | None = None
    client_eof_at: float | None = None
    finished: trio.Event = attrs.Factory(trio.Event)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        task_status.started()
        async with listener:
            stream = await listener.accept()
        proto = ServerProtocol()
        while not (events := proto.events_received()):
            proto.receive_data(await stream.receive_some())
        assert isinstance(events[0], Request)
        proto.send_response(proto.accept(events[0]))
        for frame in self.frames:
            proto.send_frame(frame)
        await stream.send_all(b"".join(proto.data_to_send()))
        with contextlib.suppress(trio.BrokenResourceError):  # the client may hang up first
            while proto.state is not State.CLOSED:
                data = await stream.receive_some()
                if data:
                    proto.receive_data(data)
                else:
                    proto.receive_eof()
                    self.client_eof_at = trio.current_time()
                writes = proto.data_to_send()
                if answer := b"".join(writes):
                    await stream.send_all(answer)
                if writes and not writes[-1] and self.fin_after is not None:
                    await trio.sleep(self.fin_after)
                    self.fin_at = trio.current_time()
                    await stream.send_eof()
        self.close_code = proto.close_code
        if self.close_code is None and proto.close_sent is not None:
            self.close_code = proto.close_sent.code
        await stream.aclose()
        self.finished.set()


@both
async def test_receive_assembles_fragments_binary_and_batches(nursery: trio.Nursery, impl: str) -> None:
    server = ScriptedServer(
        [
            Frame(Opcode.TEXT, b"frag", fin=False),
            Frame(Opcode.PING, b"ping in the middle"),
            Frame(Opcode.CONT, b"ment", fin=False),
            Frame(Opcode.CONT, "ed ✓".encode()),
            Frame(Opcode.BINARY, b"binary as text"),
            Frame(Opcode.TEXT, b"third"),
            Frame(Opcode.CLOSE, Close(1001, "going away").serialize()),
        ]
    )
    await nursery.start(server.run)
    ws = await connect(url(server.port), implementation=impl)
    assert [await ws.receive_text() for _ in range(3)] == ["fragmented ✓", "binary as text", "third"]
    with pytest.raises(LinkClosedError):
        await ws.receive_text()
    assert ws.close_code == 1001
    await ws.aclose()


@both
async def test_receive_invalid_utf8_closes_1007(nursery: trio.Nursery, impl: str) -> None:
    server = ScriptedServer([Frame(Opcode.BINARY, b"\xff\xfe not utf-8")])
    await nursery.start(server.run)
    ws = await connect(url(server.port), implementation=impl)
    with pytest.raises(LinkClosedError):
        await ws.receive_text()
    await ws.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.close_code == 1007


async def test_connect_unknown_implementation_is_config_error() -> None:
    with pytest.raises(ConfigError):
        await connect(url(1), implementation="asyncio")


def test_close_arguments_are_always_sendable() -> None:
    assert close_arguments(4000, "ok") == (4000, "ok")
    assert close_arguments(1006, "") == (1011, "")  # reserved: never on the wire
    assert close_arguments(1000, "é" * 100) == (1000, "é" * 61)  # cut to 123 bytes, whole chars


def test_parse_target_errors_quote_the_url_and_name_a_bad_port() -> None:
    with pytest.raises(UnsafeURLError, match=r"^only ws:// and wss:// URLs are allowed, not 'not a url'$"):
        parse_target("not a url")
    with pytest.raises(UnsafeURLError, match=r"^bad port in 'ws://127.0.0.1:99999/x' \(a number"):
        parse_target("ws://127.0.0.1:99999/x")


def test_parse_target_redacts_and_defaults() -> None:
    target = parse_target(f"wss://user:pw@platform.example/socket/websocket?auth_token={TOKEN}")
    assert (target.secure, target.host, target.port) == (True, "platform.example", 443)
    assert target.resource == f"/socket/websocket?auth_token={TOKEN}"
    assert target.redacted == "wss://user:***@platform.example/socket/websocket?auth_token=***"
    assert TOKEN not in repr(target) and "pw" not in repr(target)
    assert target.authorization == "Basic dXNlcjpwdw=="
    assert parse_target("ws://localhost:8080").resource == "/"
    assert parse_target("ws://10.1.2.3/x", allow_insecure=True).host == "10.1.2.3"
    assert [is_loopback(h) for h in ("127.0.0.9", "::1", "LOCALHOST", "a.localhost", "10.0.0.1")] == [
        True, True, True, True, False,
    ]  # fmt: skip
    assert DEFAULT_IMPLEMENTATION in IMPLEMENTATIONS
