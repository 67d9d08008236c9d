"""transport/readiness.py: link sockets' readers woken in the order their bytes came."""

from __future__ import annotations

import gc
import random
import socket
import struct
import threading
import warnings
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from orchestrator.transport import pipe as pipe_module
from orchestrator.transport import readiness as readiness_module
from orchestrator.transport.pipe import FdPipe
from orchestrator.transport.readiness import CHUNK, readiness
from tests.helpers import wait_until


def pair() -> tuple[FdPipe, socket.socket]:
    """A pipe over one end of a socket pair, and the other end (blocking) to write with."""
    left, right = socket.socketpair()
    left.setblocking(False)
    return FdPipe(trio.socket.from_stdlib_socket(left)), right


def tcp_pair() -> tuple[FdPipe, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        right = socket.create_connection(listener.getsockname())
        left, _ = listener.accept()
    left.setblocking(False)
    return FdPipe(trio.socket.from_stdlib_socket(left)), right


def kept(
    pairs: list[tuple[FdPipe, socket.socket]], made: tuple[FdPipe, socket.socket]
) -> tuple[FdPipe, socket.socket]:
    """``made``, closed by the ``pairs`` fixture at the test's end."""
    pairs.append(made)
    return made


@pytest.fixture
async def pairs() -> AsyncIterator[list[tuple[FdPipe, socket.socket]]]:
    made: list[tuple[FdPipe, socket.socket]] = []
    yield made
    for pipe, peer in made:  # in the run: closing a trio socket needs one
        pipe.close()
        peer.close()


async def test_readers_are_woken_in_the_order_their_sockets_became_readable(
    pairs: list[tuple[FdPipe, socket.socket]],
) -> None:
    """trio runs a batch of ready tasks forwards or backwards at random, and all the
    sockets that turned readable in one pass of its loop wake in one batch: half the
    time the first to get bytes was served last (at 10,000 conversations the p99 was
    twice the mean). Readers are woken CHUNK at a time in the kernel's order instead,
    so a reader is never served more than a chunk away from its turn."""
    n = 4 * CHUNK
    pairs.extend(pair() for _ in range(n))
    rng = random.Random(7)

    async def read(i: int, served: list[int]) -> None:
        assert await pairs[i][0].receive_some() == b"x"
        served.append(i)

    for _ in range(8):  # each round is a fresh toss of trio's coin
        served: list[int] = []
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(read, i, served)
            await trio.testing.wait_all_tasks_blocked()
            written = rng.sample(range(n), n)
            for i in written:  # no checkpoint in between: all readable in one pass
                pairs[i][1].send(b"x")
        turn = {i: position for position, i in enumerate(written)}
        assert max(abs(position - turn[i]) for position, i in enumerate(served)) < CHUNK


async def test_a_reader_cancelled_while_waiting_leaves_nothing_behind(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    pipe, peer = kept(pairs, pair())
    peer.send(b"first")
    assert await pipe.receive_some() == b"first"  # all read: the next read waits first
    with trio.move_on_after(1):
        await pipe.receive_some()
    peer.send(b"late")  # reported while nobody waits: the next wait must not miss it
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(5):
        assert await pipe.receive_some() == b"late"


async def test_the_end_reported_with_the_last_bytes_is_still_seen(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    """The kernel reports bytes and the peer's close that follows them as one event
    when both came before it was read. The reader takes the bytes; its next
    wait must return at once, or it waits for a report that never comes."""
    pipe, peer = kept(pairs, tcp_pair())

    async def reader() -> list[bytes]:
        return [await pipe.receive_some(), await pipe.receive_some()]

    result: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            with trio.fail_after(5):
                result.extend(await reader())

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        peer.send(b"last words")
        peer.close()
        await trio.sleep(0.001)  # the bytes, then the end, before the reader runs
    assert result[0] == b"last words"
    assert result[1] == b""


async def test_reports_taken_while_nobody_waits_keep_the_end(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    """Found in review: bytes reported while nobody waited, then more bytes and the
    peer's close reported before the reader came back. One read takes all the bytes;
    the end must still be seen, though it was reported only once."""
    pipe, peer = kept(pairs, tcp_pair())
    peer.send(b"first")
    assert await pipe.receive_some() == b"first"  # all read: the next read waits first
    with trio.move_on_after(1):
        await pipe.receive_some()  # watched now, and nobody waits after this
    peer.send(b"a")
    await trio.sleep(1)  # reported: nobody waits
    peer.send(b"b")
    peer.close()
    await trio.sleep(1)  # reported again, with the end
    with trio.fail_after(5):
        assert await pipe.receive_some() == b"ab"
        assert await pipe.receive_some() == b""


async def test_a_wait_cancelled_as_it_returns_keeps_its_report(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    """Found in review: a wait that would return at once (bytes were reported while
    nobody waited) but is cancelled at its checkpoint must leave the report for the
    next wait, or those bytes are never read."""
    pipe, peer = kept(pairs, pair())
    peer.send(b"first")
    assert await pipe.receive_some() == b"first"
    with trio.move_on_after(1):
        await pipe.receive_some()
    peer.send(b"late")
    await trio.testing.wait_all_tasks_blocked()  # reported while nobody waits
    with trio.CancelScope() as scope:
        scope.cancel()
        await pipe.receive_some()
    assert scope.cancelled_caught
    with trio.fail_after(5):
        assert await pipe.receive_some() == b"late"


async def test_a_reset_fails_the_pipe(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    pipe, peer = kept(pairs, tcp_pair())
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await pipe.receive_some()


async def exchange(pipe: FdPipe, peer: socket.socket) -> None:
    """One message read at once, then one the pipe has to wait for (in its set)."""
    peer.send(b"one")
    assert await pipe.receive_some() == b"one"  # read at once; the next waits first

    async def send_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        peer.send(b"two")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_soon)
        with trio.fail_after(5):
            assert await pipe.receive_some() == b"two"


async def test_closing_wakes_the_reader_and_the_number_starts_afresh(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    pipe, peer = pair()
    fd = pipe._fd

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        pipe.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
            await pipe.receive_some()
    peer.close()
    pairs.append(pair())  # the lowest free descriptor: the one just closed
    assert pairs[0][0]._fd == fd
    await exchange(*pairs[0])


async def test_a_socket_dropped_without_closing_leaves_its_number_usable(
    autojump_clock: trio.abc.Clock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    """A link dropped without being closed is closed by the garbage collector, behind
    the set's back: another socket given its number must still be watched."""

    pipe, peer = pair()
    fd = pipe._fd
    await exchange(pipe, peer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del pipe
        gc.collect()
    peer.close()
    pairs.append(pair())
    assert pairs[0][0]._fd == fd
    await exchange(*pairs[0])


async def test_two_readers_on_one_socket_is_an_error(pairs: list[tuple[FdPipe, socket.socket]]) -> None:
    pipe, _ = kept(pairs, pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await pipe.receive_some()
        nursery.cancel_scope.cancel()


async def test_without_epoll_pipes_wait_with_trio(
    monkeypatch: pytest.MonkeyPatch, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    monkeypatch.setattr(readiness_module, "_HAS_EPOLL", False)
    assert readiness() is None
    pipe, peer = kept(pairs, pair())
    assert pipe._waits is None

    async def send_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        peer.send(b"hi")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_soon)
        assert await pipe.receive_some() == b"hi"


def test_a_reader_still_waiting_as_the_run_ends_is_not_stranded() -> None:
    """Found in review: a reader in a system task that still waits once the run ends
    (its serving task is gone by then) must go on waiting with trio, not forever."""
    got: list[bytes] = []

    async def main() -> None:
        pipe, peer = pair()

        async def reader() -> None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                got.append(await pipe.receive_some())
            pipe.close()
            peer.close()

        async def sender() -> None:
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(1)  # the run is ending: the serving task is gone
                    peer.send(b"late")

        trio.lowlevel.spawn_system_task(reader)
        trio.lowlevel.spawn_system_task(sender)
        await trio.testing.wait_all_tasks_blocked()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == [b"late"]


# Lingering: a client done with its link waits for the server's FIN in the set's task.


def closed_by_us(peer: socket.socket) -> bool:
    """Whether the pipe's end of the connection is closed: the peer reads its FIN
    (whatever else was still coming is dropped first)."""
    peer.setblocking(False)
    try:
        while peer.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize("watched", [True, False], ids=["after reads", "never read"])
async def test_a_lingering_socket_is_drained_and_closed_at_the_peers_end(
    pairs: list[tuple[FdPipe, socket.socket]], watched: bool
) -> None:
    pipe, peer = kept(pairs, tcp_pair())
    if watched:
        peer.send(b"before")
        assert await pipe.receive_some() == b"before"
    peer.send(b"still coming" * 10_000)  # more than one read
    assert pipe.linger(3.0)
    with pytest.raises(trio.ClosedResourceError):
        await pipe.receive_some()  # the pipe is done: only the set reads it now
    await trio.sleep(0.05)
    assert not closed_by_us(peer)  # no FIN from the peer yet: the socket stays open
    peer.sendall(b"late" * 50_000)
    peer.shutdown(socket.SHUT_WR)
    await wait_until(lambda: closed_by_us(peer), 5, "the socket to be closed", every=0.001)
    assert not readiness_module.readiness()._lingering  # type: ignore[union-attr]


async def test_an_end_reported_before_the_linger_closes_the_socket_at_once(
    mock_clock: trio.testing.MockClock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    mock_clock.autojump_threshold = 0.1
    pipe, peer = kept(pairs, tcp_pair())
    with trio.move_on_after(1):
        await pipe.receive_some()  # watched now, and nobody waits after this
    waits = readiness_module.readiness()
    assert waits is not None
    peer.shutdown(socket.SHUT_WR)
    await wait_until(lambda: pipe._fd in waits._ended, 5, "the end to be reported")  # while nobody waited
    assert pipe.linger(3.0)
    assert closed_by_us(peer)  # no wait: the end was known already


async def test_a_lingering_socket_whose_peer_never_closes_is_closed_after_the_timeout(
    mock_clock: trio.testing.MockClock, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    mock_clock.autojump_threshold = 0.1
    pipe, peer = kept(pairs, tcp_pair())
    start = trio.current_time()
    assert pipe.linger(3.0)
    await trio.sleep(2.9)
    peer.send(b"ignored")
    await trio.sleep(0.05)
    assert not closed_by_us(peer)
    await trio.sleep(0.1)
    assert closed_by_us(peer)
    assert trio.current_time() - start < 3.1


async def test_a_lingering_socket_reset_by_the_peer_is_closed(
    pairs: list[tuple[FdPipe, socket.socket]],
) -> None:
    pipe, peer = kept(pairs, tcp_pair())
    assert pipe.linger(3.0)
    waits = readiness_module.readiness()
    assert waits is not None and waits._lingering
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset
    await wait_until(lambda: not waits._lingering, 5, "the reset socket to be closed", every=0.001)
    assert pipe._sock.fileno() == -1


def test_the_run_ending_closes_lingering_sockets() -> None:
    peers: list[socket.socket] = []

    async def main() -> None:
        pipe, peer = tcp_pair()
        peers.append(peer)
        peer.send(b"the server's Close")  # unread bytes would make the close a reset
        assert pipe.linger(3.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        trio.run(main)
        gc.collect()
    (peer,) = peers
    peer.settimeout(5)
    assert peer.recv(100) == b""  # a FIN, not a reset
    peer.close()


async def test_a_peer_that_keeps_sending_after_the_close_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, pairs: list[tuple[FdPipe, socket.socket]]
) -> None:
    # Found in review: the reads of a lingering socket run in the readiness set's task,
    # which every link waits on; a peer streaming faster than they read froze the run.
    monkeypatch.setattr(pipe_module, "DRAIN_READS", 2)
    pipe, peer = kept(pairs, tcp_pair())
    peer.setblocking(False)
    sent = 0
    for _ in range(1000):  # fill both buffers
        try:
            sent += peer.send(b"x" * 65536)
        except BlockingIOError:
            break
    assert sent > 3 * 65536
    assert pipe.linger(3.0)
    await wait_until(lambda: pipe._sock.fileno() == -1, 5, "the socket to be cut off", every=0.001)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):  # closed over unread bytes: a reset
        for _ in range(1000):
            peer.send(b"x" * 65536)
            await trio.sleep(0.001)


def test_the_read_buffer_the_masks_and_the_write_counts_are_per_thread() -> None:
    """Two trio runs in two threads read into buffers of their own (a read releases the
    GIL: one shared buffer would mix their bytes), and draw masks and count writes
    apart. Compiled as native classes, these ``threading.local``s would be shared."""
    from orchestrator.transport import frames as frames_module

    my_view, my_count = pipe_module._READ.view, pipe_module.WRITES.count
    theirs: list[object] = []

    def look() -> None:
        theirs.extend([pipe_module._READ.view, pipe_module.WRITES.count])
        frames_module.text_frame(b"x", masked=True)  # draws from this thread's pool
        theirs.append(frames_module._MASKS.at)

    pipe_module.WRITES.count = 7
    try:
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
    finally:
        pipe_module.WRITES.count = my_count
    assert theirs[0] is not my_view
    assert theirs[1] == 0  # not this thread's 7
    assert theirs[2] == 4
