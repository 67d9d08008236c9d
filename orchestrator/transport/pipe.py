"""The byte pipe under a sans-IO WebSocket: a lean path for plain TCP, trio's streams otherwise.

A WebSocket message costs one write and (usually) one read, so the layers
between the frame codec and the system call show up in the calls/s.
:class:`FdPipe` talks to the socket's file descriptor directly with
``os.read``/``os.write``, with the same checkpoint and error semantics as
``trio.SocketStream`` and none of its per-call context managers. Its reads wait
in :mod:`.readiness` (sockets served in the order they became readable), its
writes with trio's low-level waits. TLS (and non-POSIX systems) go through
:class:`StreamPipe`, a thin veneer over a trio stream.

Both raise ``trio.BrokenResourceError`` when the connection fails and
``trio.ClosedResourceError`` once :meth:`close` was called, even when another
task was blocked on the socket at the time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

import attr
import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .perthread import ReadBuffer, Unyielded
from .readiness import Readiness, readiness

__all__ = [
    "DRAIN_READS",
    "RECEIVE_SIZE",
    "WRITES",
    "FdPipe",
    "Heard",
    "Pipe",
    "StreamPipe",
    "Unyielded",
    "pipe_for",
    "set_reset_on_close",
    "yield_sometimes",
]

RECEIVE_SIZE = 65536
"""Bytes asked of the kernel per read."""

YIELD_EVERY = 16
"""A write the socket takes at once yields to the scheduler only every this many times."""

DRAIN_READS = 16
"""Reads a lingering socket gets per report (1 MiB): a peer that sends more after the
Close is cut off (the reads run in the readiness set's task, which every link waits on)."""

Heard = Callable[[bytes], bool]
"""What a lingering socket hands the bytes it still reads to (``b""`` at its end); True
once it wants no more."""


# Every read lands in one buffer per thread and leaves as a bytes object of its own
# size. Reading into a fresh 64 KiB allocation and shrinking it, once per message,
# fragmented the C heap: RSS crept up over hours of traffic.
_READ = ReadBuffer(RECEIVE_SIZE)


WRITES = Unyielded()
"""Writes the socket took at once (see :meth:`FdPipe.send_all`)."""


async def yield_sometimes(steps: Unyielded) -> None:
    """A schedule point every :data:`YIELD_EVERY`-th step counted in ``steps`` and no
    other: for a step that finished at once (a write the socket took, a message already
    read), where a scheduler pass per message cost more than the message. The caller
    checks for cancellation itself; a task that does nothing else still lets others run.
    Each kind of step keeps its own count: a writer holding a link's write turn yields
    on its own rhythm, which is when other senders queue their frames behind it."""
    if yield_due(steps):
        await cancel_shielded_checkpoint()


def yield_due(steps: Unyielded) -> bool:
    """Count a step that finished at once in ``steps``: True on every :data:`YIELD_EVERY`-th,
    when the caller should yield (see :func:`yield_sometimes`)."""
    steps.count += 1
    if steps.count >= YIELD_EVERY:
        steps.count = 0
        return True
    return False


class Pipe(Protocol):
    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``. It raises Cancelled if cancelled on entry; it may not
        yield when the socket takes all at once. Cancellation may leave it partly written."""
        ...

    async def receive_some(self) -> bytes | bytearray:
        """Wait for bytes; ``b""`` at end of stream. A checkpoint."""
        ...

    async def send_eof(self) -> None:
        """Half-close (TCP) or close (TLS, which cannot half-close)."""
        ...

    def close(self) -> None:
        """Close the socket now; idempotent, wakes blocked tasks with ClosedResourceError."""
        ...

    def abort(self) -> None:
        """Close the socket now with a TCP reset (RST) instead of a FIN."""
        ...

    def linger(self, timeout: float, heard: Heard | None = None, *, shut: bool = False) -> bool:
        """Done with the socket, but wait for the peer to close TCP first (at most
        ``timeout`` seconds) without a task: what still comes goes to ``heard`` (until it
        has had enough), then is dropped. With ``shut`` this side's end of TCP goes first
        (a half-close). The pipe is closed from then on. False if that cannot be done
        here (the caller waits), or the half-close failed (the caller drops the socket)."""
        ...

    @property
    def lingers(self) -> bool:
        """Whether :meth:`linger` would take the socket now."""
        ...

    def send_now(self, data: bytes) -> int:
        """Write what the socket takes at once, without a checkpoint; how much it took.
        Raises as :meth:`send_all` does."""
        ...


def set_reset_on_close(sock: trio.socket.SocketType) -> None:
    """Make closing ``sock`` send a TCP reset (SO_LINGER 0), as a network failure would."""
    with contextlib.suppress(OSError):  # already closed or never connected
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def pipe_for(stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> Pipe:
    """The fastest pipe for ``stream``, which it takes over."""
    if isinstance(stream, trio.SocketStream) and os.name == "posix":
        return FdPipe(stream.socket)
    return StreamPipe(stream)


@attr.s(auto_attribs=True, eq=False, slots=True)
class FdPipe:
    """Plain TCP on a non-blocking POSIX socket, by file descriptor."""

    _sock: trio.socket.SocketType
    _fd: int = attr.ib(init=False)
    _waits: Readiness | None = attr.ib(init=False, factory=readiness)
    """Where reads wait (in the order sockets became readable; see .readiness)."""
    _watched: bool = False  # in _waits' set
    _trio_waited: bool = False  # trio's own epoll set has had it: close it through trio
    _closed: bool = False
    _drained: bool = False  # the last read returned less than asked: nothing was left
    _heard: Heard | None = None  # lingering: who wants what still comes

    def __attrs_post_init__(self) -> None:
        self._fd = self._sock.fileno()

    def _readable(self) -> Awaitable[None]:
        """The wait for bytes, in the run's readiness set (trio's own once that is gone).
        Not a coroutine of its own: one frame less for every waiting link to hold."""
        waits = self._waits
        if waits is None or waits.closed:
            self._trio_waited = True
            return trio.lowlevel.wait_readable(self._fd)  # noqa: ASYNC105 - the caller awaits it
        if not self._watched:
            waits.watch(self._fd)
            self._watched = True
        return waits.wait_readable(self._fd)

    # Invariant: every os.read/os.write is preceded, with no checkpoint in between,
    # by a check of _closed, so a descriptor number reused after close is never touched.

    async def send_all(self, data: bytes) -> None:
        # Cancellation is checked on every call, but a write the socket takes at once
        # yields only sometimes (see yield_sometimes): a task that sends goes back to
        # waiting on its socket anyway.
        await checkpoint_if_cancelled()
        sent = self._write(data)
        if sent == len(data):
            await yield_sometimes(WRITES)
            return
        rest = memoryview(data)[sent:]
        self._trio_waited = True
        while rest:
            await trio.lowlevel.wait_writable(self._fd)
            took = self._write(rest)  # not inside the slice: mypyc evaluates a slice's
            rest = rest[took:]  # bounds twice when it cannot tell the sliced type

    def _write(self, data: bytes | memoryview) -> int:
        if self._closed:
            raise trio.ClosedResourceError("the pipe was closed")
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc

    async def receive_some(self) -> bytes:
        if self._drained:
            # The last read took all there was: on a request/reply link nothing more
            # has come yet, so wait before reading instead of paying for a read that
            # fails (a system call and an exception per message).
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("the pipe was closed")
            await self._readable()
            data = self._read()
        else:
            await checkpoint_if_cancelled()
            data = self._read()
            if data is not None:
                await cancel_shielded_checkpoint()
        while data is None:
            await self._readable()
            data = self._read()
        self._drained = len(data) < RECEIVE_SIZE
        return data

    def _read(self) -> bytes | None:
        if self._closed:
            raise trio.ClosedResourceError("the pipe was closed")
        try:
            read = _READ
            size = os.readv(self._fd, read.into)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
        return read.view[:size].tobytes()

    async def send_eof(self) -> None:
        await checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("the pipe was closed")
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket shutdown failed: {exc}") from exc
        await cancel_shielded_checkpoint()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.release()

    @property
    def lingers(self) -> bool:
        waits = self._waits
        return not (self._closed or waits is None or waits.closed)

    def send_now(self, data: bytes) -> int:
        return self._write(data)

    def linger(self, timeout: float, heard: Heard | None = None, *, shut: bool = False) -> bool:
        waits = self._waits
        if self._closed or waits is None or waits.closed:
            return False
        if shut:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                return False
        self._heard = heard
        self._closed = True  # from here on the socket is the readiness set's
        if not self._watched:
            waits.watch(self._fd)
            self._watched = True
        waits.linger(self._fd, self, timeout)
        return True

    def drain(self, ended: bool) -> bool:
        """Lingering (see :meth:`linger`): read what came, for ``heard`` or for nothing;
        close at the peer's end, or after :data:`DRAIN_READS` full reads."""
        fd = self._fd
        read = _READ
        for _ in range(DRAIN_READS):
            try:
                size = os.readv(fd, read.into)
            except BlockingIOError:
                return False
            heard = self._heard
            if heard is not None and size and heard(read.view[:size].tobytes()):
                self._heard = None
            if not size:
                break
            if size < RECEIVE_SIZE and not ended:
                return False  # all read: the peer's end, when it comes, is reported anew
        self.release()
        return True

    def release(self) -> None:
        """Close the descriptor: :meth:`close`'s work, and the readiness set's once a
        lingering socket is done. Once only."""
        heard, self._heard = self._heard, None
        if heard is not None:
            heard(b"")
        waits = self._waits
        if waits is not None and self._watched:
            self._watched = False
            waits.forget(self._fd)  # wakes a reader, which then finds it closed
        if self._trio_waited:
            self._sock.close()  # trio wakes its waiters and drops it from its set
        else:
            os.close(self._sock.detach())  # trio never knew it: nothing to tell trio

    def abort(self) -> None:
        if not self._closed:
            set_reset_on_close(self._sock)
        self.close()


@attr.s(auto_attribs=True, eq=False, slots=True)
class StreamPipe:
    """A trio stream (TLS, or TCP where file descriptors cannot be used directly)."""

    _stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def receive_some(self) -> bytes | bytearray:
        return await self._stream.receive_some(RECEIVE_SIZE)

    async def send_eof(self) -> None:
        stream = self._stream
        if isinstance(stream, trio.SocketStream):
            await stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()
            self.close()

    def close(self) -> None:
        self._socket().close()

    def linger(self, timeout: float, heard: Heard | None = None, *, shut: bool = False) -> bool:
        return False  # no readiness set here: the caller waits for the peer

    lingers = False

    def send_now(self, data: bytes) -> int:
        return 0  # a stream only writes with a checkpoint

    def abort(self) -> None:
        sock = self._socket()
        if sock.fileno() != -1:
            set_reset_on_close(sock)
        sock.close()

    def _socket(self) -> trio.socket.SocketType:
        stream = self._stream
        tcp = stream if isinstance(stream, trio.SocketStream) else stream.transport_stream
        return tcp.socket
