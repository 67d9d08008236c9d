"""The fault proxy over real sockets on 127.0.0.1, in front of a small trio echo server."""

from __future__ import annotations

from functools import partial

import attrs
import pytest
import trio
import trio.testing

from orchestrator.errors import ConfigError, HandshakeError, LinkClosedError
from orchestrator.faults import FaultProxy
from orchestrator.transport import IMPLEMENTATIONS, ServerWebSocket, connect, serve


@attrs.define(eq=False)
class Upstream:
    """An echo server that also counts what each connection received."""

    port: int = 0
    received: list[int] = attrs.Factory(list)
    connections: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        index = len(self.received)
        self.received.append(0)
        self.connections += 1
        try:
            while data := await stream.receive_some(65536):
                self.received[index] += len(data)
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def start_upstream(nursery: trio.Nursery) -> Upstream:
    upstream = Upstream()
    listeners = await nursery.start(partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1"))
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream


async def start(nursery: trio.Nursery) -> tuple[Upstream, FaultProxy, int]:
    upstream = await start_upstream(nursery)
    proxy = FaultProxy("127.0.0.1", upstream.port)
    port: int = await nursery.start(proxy.run)
    return upstream, proxy, port


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def round_trip(port: int, payload: bytes = b"hello") -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(payload)
        return await receive_exactly(stream, len(payload))


async def drain(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """Everything the stream delivers until it ends; True if it ended with a reset."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        return data, True
    return data, False


async def test_faults_pass_through_echo(nursery: trio.Nursery) -> None:
    upstream, proxy, port = await start(nursery)
    assert proxy.port == port
    assert await round_trip(port, b"x" * 200_000) == b"x" * 200_000
    stats = proxy.statistics()
    assert (stats.mode, stats.accepted, stats.refused, stats.aborted) == ("pass", 1, 0, 0)
    assert stats.bytes_upstream == stats.bytes_downstream == 200_000
    assert upstream.received == [200_000]


async def test_faults_half_close_passes_through(nursery: trio.Nursery) -> None:
    _, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"bye")
        await stream.send_eof()
        assert await drain(stream) == (b"bye", False)
    await trio.testing.wait_all_tasks_blocked()
    assert proxy.statistics().active == 0


async def test_faults_delay_adds_latency_each_way(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        proxy.delay(1.5)  # applies to the open connection too
        start_time = trio.current_time()
        await stream.send_all(b"ping")
        assert await receive_exactly(stream, 4) == b"ping"
        assert trio.current_time() - start_time >= 3.0
        proxy.pass_()
        start_time = trio.current_time()
        await stream.send_all(b"pong")
        assert await receive_exactly(stream, 4) == b"pong"
        assert trio.current_time() - start_time < 1.5
    with pytest.raises(ValueError):
        proxy.delay(-1)


async def test_faults_delay_is_pipelined(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, proxy, port = await start(nursery)
    proxy.delay(1.0)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        start_time = trio.current_time()
        for _ in range(5):
            await stream.send_all(b"abc")
            await trio.sleep(0.1)
        assert await receive_exactly(stream, 15) == b"abc" * 5
        # Each chunk takes 2 s there and back; serialised per chunk, five would take 10 s.
        assert trio.current_time() - start_time < 3.0


async def test_faults_blackhole_drops_then_pass_works_for_new_connections(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    upstream, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as old:
        assert await round_trip(port) == b"hello"
        proxy.blackhole()
        await old.send_all(b"lost")
        async with await trio.open_tcp_stream("127.0.0.1", port) as new:  # accepted, goes nowhere
            await new.send_all(b"lost too")
            with trio.move_on_after(30) as timeout:
                await old.receive_some(100)
            assert timeout.cancelled_caught
            with trio.move_on_after(30) as timeout:
                await new.receive_some(100)
            assert timeout.cancelled_caught
        assert proxy.statistics().mode == "blackhole"
        assert upstream.connections == 2  # the blackholed connection never reached upstream
        proxy.pass_()
        assert await round_trip(port, b"back") == b"back"
    assert upstream.received[:2] == [0, 5]  # "hello" only: the blackholed bytes never arrived


async def test_faults_reset_breaks_open_connections_and_keeps_accepting(nursery: trio.Nursery) -> None:
    _, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"one")
        assert await receive_exactly(stream, 3) == b"one"
        proxy.reset()
        assert await drain(stream) == (b"", True)
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(10):  # the first send may still be buffered before the RST is seen
                await stream.send_all(b"more")
    assert await round_trip(port) == b"hello"
    stats = proxy.statistics()
    assert (stats.accepted, stats.aborted, stats.mode) == (2, 1, "pass")


@pytest.mark.parametrize("n", [0, 1, 1000, 70_000])
async def test_faults_cut_after_delivers_exactly_n_bytes_downstream(nursery: trio.Nursery, n: int) -> None:
    _, proxy, port = await start(nursery)
    proxy.cut_after(n)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"z" * 100_000)
        data, was_reset = await drain(stream)
    assert (len(data), was_reset) == (n, True)
    assert proxy.statistics().bytes_downstream == n


async def test_faults_cut_after_upstream_and_both(nursery: trio.Nursery) -> None:
    upstream, proxy, port = await start(nursery)
    proxy.cut_after(123, "upstream")
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"u" * 10_000)
        _, was_reset = await drain(stream)
    assert was_reset
    await trio.testing.wait_all_tasks_blocked()
    assert upstream.received == [123]

    proxy.cut_after(10, "both")  # shared budget: 6 bytes up, then 4 back
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"abcdef")
        data, was_reset = await drain(stream)
    assert (data, was_reset) == (b"abcd", True)
    with pytest.raises(ValueError):
        proxy.cut_after(5, "sideways")


async def test_faults_cut_after_applies_to_open_connections(nursery: trio.Nursery) -> None:
    _, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"before")
        assert await receive_exactly(stream, 6) == b"before"
        proxy.cut_after(3)
        await stream.send_all(b"after")
        assert await drain(stream) == (b"aft", True)


async def test_faults_refuse_then_restart_on_the_same_port(nursery: trio.Nursery) -> None:
    upstream, proxy, port = await start(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as survivor:
        proxy.refuse()
        assert proxy.statistics().mode == "pass+refuse"
        with pytest.raises(trio.BrokenResourceError):
            await round_trip(port)
        assert upstream.connections == 1  # a refused connection never reaches upstream
        await survivor.send_all(b"still")  # refuse leaves open connections alone
        assert await receive_exactly(survivor, 5) == b"still"
        proxy.restart()
        assert proxy.port == port
        assert await round_trip(port) == b"hello"
    stats = proxy.statistics()
    assert (stats.accepted, stats.refused, len(stats.accept_times)) == (2, 1, 3)


async def test_faults_upstream_down_resets_the_client(nursery: trio.Nursery) -> None:
    with trio.socket.socket() as probe:  # a port with nothing listening
        await probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    proxy = FaultProxy("127.0.0.1", dead_port)
    port = await nursery.start(proxy.run)
    with pytest.raises(trio.BrokenResourceError):
        await round_trip(port)
    assert proxy.statistics().aborted == 1


async def test_faults_down_for_refuses_resets_then_passes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, proxy, port = await start(nursery)
    proxy.delay(0.5)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream, trio.open_nursery() as outage:
        outage.start_soon(proxy.down_for, 20)
        await trio.testing.wait_all_tasks_blocked()
        assert await drain(stream) == (b"", True)
        for _ in range(3):
            await trio.sleep(5)
            with pytest.raises(trio.BrokenResourceError):
                await round_trip(port)
    assert trio.current_time() >= 20
    assert await round_trip(port) == b"hello"
    stats = proxy.statistics()
    assert (stats.mode, stats.accepted, stats.refused, stats.aborted) == ("pass", 2, 3, 1)
    assert list(stats.accept_times) == sorted(stats.accept_times)
    assert [round(t) for t in stats.accept_times[1:4]] == [5, 10, 15]


async def test_faults_statistics_count_connections_and_bytes(nursery: trio.Nursery) -> None:
    _, proxy, port = await start(nursery)
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    for stream in streams:
        await stream.send_all(b"12345")
        assert await receive_exactly(stream, 5) == b"12345"
    stats = proxy.statistics()
    assert (stats.accepted, stats.active, stats.bytes_upstream, stats.bytes_downstream) == (5, 5, 25, 25)
    assert len(stats.accept_times) == 5
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.accepted = 0  # type: ignore[misc]
    for stream in streams:
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert proxy.statistics().active == 0


async def test_faults_cancellation_closes_everything(nursery: trio.Nursery) -> None:
    upstream = await start_upstream(nursery)
    proxy = FaultProxy("127.0.0.1", upstream.port)
    async with trio.open_nursery() as proxy_nursery:
        port = await proxy_nursery.start(proxy.run)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"x")
        assert await receive_exactly(stream, 1) == b"x"
        proxy.delay(60)
        await stream.send_all(b"queued")  # a chunk waiting in the proxy when it stops
        await trio.testing.wait_all_tasks_blocked()
        proxy_nursery.cancel_scope.cancel()
    async with stream:
        assert await drain(stream) == (b"", False)
    with pytest.raises(RuntimeError):
        _ = proxy.port
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


def test_faults_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ConfigError):
        FaultProxy("10.1.2.3", 80)
    with pytest.raises(ConfigError):
        FaultProxy("127.0.0.1", 80, listen_host="0.0.0.0")
    FaultProxy("localhost", 80, listen_host="::1")


# Through the project's WebSocket transport


async def ws_echo(ws: ServerWebSocket) -> None:
    while True:
        await ws.send_text(await ws.receive_text())


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_faults_reset_is_link_closed_and_refuse_is_handshake_error(
    nursery: trio.Nursery, impl: str
) -> None:
    server_port = await nursery.start(partial(serve, ws_echo, "127.0.0.1", 0))
    proxy = FaultProxy("127.0.0.1", server_port)
    port = await nursery.start(proxy.run)
    url = f"ws://127.0.0.1:{port}/ws?auth_token=secret"
    ws = await connect(url, implementation=impl)
    try:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
        proxy.reset()
        with pytest.raises(LinkClosedError):
            await ws.receive_text()
    finally:
        await ws.aclose()
    proxy.refuse()
    with pytest.raises(HandshakeError) as caught:
        await connect(url, implementation=impl, connect_timeout=5)
    assert "secret" not in str(caught.value)
    proxy.restart()
    ws = await connect(url, implementation=impl)
    try:
        await ws.send_text("again")
        assert await ws.receive_text() == "again"
    finally:
        await ws.aclose()
