"""Waiting for a link's socket to be readable, served in the order the bytes came.

trio runs each batch of ready tasks forwards or backwards at random (on purpose,
so that no program comes to rely on an order), and every task whose socket turned
readable during one pass of its run loop lands in the same batch. With 10,000 busy
conversations a batch held thousands of tasks and took seconds to run: half the
time the request that came first was answered last. Latency swung in a sawtooth
from a sixth of its mean to twice it, and the p99 was nearly twice the mean.

:class:`Readiness` keeps the sockets of every :class:`~.pipe.FdPipe` in one
trio run in an edge-triggered epoll set of its own, served by one system task. It
takes ready sockets from the kernel in the order they became ready, at most
:data:`CHUNK` at a time, wakes their readers, and lets them run before it takes
the next ones: trio's random order then only ever reorders neighbours. A socket
stays in the set from its first wait to its close, so a wait costs no system call
(trio re-arms the socket in its own epoll set on every wait).

A client that has sent its Close waits for the server to close TCP (the side
that closes first holds the TIME_WAIT, and that must be the server). That wait
moves here too (:meth:`Readiness.linger`): the socket stays in the set, what
still comes is read and dropped in this set's task, and it is closed at the
peer's end or after a timeout. No task wakes for it, and the link's task is done
once its Close is written.

Linux only; elsewhere :func:`readiness` is None and pipes wait with
``trio.lowlevel.wait_readable``.
"""

from __future__ import annotations

import contextlib
import select
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import Final, NoReturn, Protocol

import trio
from trio.lowlevel import Abort, RunVar, Task, current_task, reschedule, wait_task_rescheduled

__all__ = ["CHUNK", "Lingering", "Readiness", "readiness"]

CHUNK: Final = 64
"""Readers woken per pass of the scheduler, at most."""

_HAS_EPOLL = hasattr(select, "epoll")  # not Final: a test turns it off
_EDGE: Final[int] = sum(getattr(select, name, 0) for name in ("EPOLLIN", "EPOLLRDHUP", "EPOLLET"))
_END: Final[int] = sum(getattr(select, name, 0) for name in ("EPOLLRDHUP", "EPOLLHUP", "EPOLLERR"))
"""The peer's FIN or reset: reported once, maybe together with the bytes before it."""

_CURRENT: RunVar[Readiness] = RunVar("orchestrator.transport.readiness")


class Lingering(Protocol):
    """A socket handed to :meth:`Readiness.linger` by its owner."""

    def drain(self, ended: bool) -> bool:
        """Read and drop what has come (all of it, up to the peer's end, if ``ended``);
        close the socket, and return True, once the peer's end is read."""
        ...

    def release(self) -> None:
        """Close the socket now."""
        ...


class _Entry:
    """A lingering socket: its owner (None once it is closed) and when its wait ends."""

    __slots__ = ("deadline", "owner")

    def __init__(self, deadline: float, owner: Lingering) -> None:
        self.deadline = deadline
        self.owner: Lingering | None = owner


async def _raise(exc: BaseException) -> NoReturn:
    raise exc


def _abort(readers: dict[int, Task], fd: int, _: object) -> Abort:
    del readers[fd]
    return Abort.SUCCEEDED


def readiness() -> Readiness | None:
    """This trio run's :class:`Readiness`, started on first use; None where there is no epoll."""
    if not _HAS_EPOLL:
        return None
    try:
        return _CURRENT.get()
    except LookupError:
        waits = Readiness()
        trio.lowlevel.spawn_system_task(waits.serve, name="orchestrator.transport.readiness")
        _CURRENT.set(waits)  # only once something serves it
        return waits


class Readiness:
    """One trio run's epoll set of link sockets, and the readers waiting on them.

    A socket is watched (:meth:`watch`) before its first wait and forgotten
    (:meth:`forget`) before it is closed. One dropped without being closed is closed
    by the garbage collector, which the kernel's set notices and this does not: so
    whether a socket is watched is its owner's to remember, never this set's.
    """

    __slots__ = ("_ended", "_epoll", "_lingering", "_readers", "_ready", "_reaping", "_until")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Task] = {}
        # Edge-triggered: the kernel reports bytes arriving once. Reported while nobody
        # waited, a socket is kept here so that its next wait returns at once (bytes may
        # have been read since: the reader then finds none and waits again).
        self._ready: set[int] = set()
        # The peer's end (FIN, reset) is reported once too, maybe in one report with the
        # bytes before it: from then on every wait returns at once.
        self._ended: set[int] = set()
        # Sockets waiting for their peer's end (see linger), and their deadlines in the
        # order they were handed over (one timeout for all, so that is deadline order).
        self._lingering: dict[int, _Entry] = {}
        self._until: deque[_Entry] = deque()
        self._reaping = False

    @property
    def closed(self) -> bool:
        """The run is ending: nothing is served here any more."""
        return self._epoll.closed

    def watch(self, fd: int) -> None:
        """Add a socket (bytes already there are reported at once)."""
        self._ready.discard(fd)  # left by an earlier socket with this number
        self._ended.discard(fd)
        try:
            self._epoll.register(fd, _EDGE)
        except FileExistsError:  # this very socket, watched twice
            self._epoll.modify(fd, _EDGE)

    def wait_readable(self, fd: int) -> Awaitable[None]:
        """Wait until the watched ``fd`` may have bytes (or its end) to read. A checkpoint.

        Raises ``trio.BusyResourceError`` if another task is waiting on ``fd``.
        Cancelled, it leaves nothing behind. Woken by :meth:`forget` if the socket
        is closed meanwhile: the caller learns that from its own state. (Not a
        coroutine of its own: a frame less in every waiting reader's stack, and
        resuming a stack touches each of its frames.)
        """
        if fd in self._ready or fd in self._ended:
            return self._take_report(fd)
        readers = self._readers
        if fd in readers:
            return _raise(trio.BusyResourceError("another task is already reading from this socket"))
        readers[fd] = current_task()
        # A partial, not a closure: two objects less per waiting reader for each young
        # collection to walk (see orchestrator.service.GC_THRESHOLD_GEN0).
        return wait_task_rescheduled(partial(_abort, readers, fd))  # noqa: ASYNC105 - the caller awaits it

    async def _take_report(self, fd: int) -> None:
        await trio.lowlevel.checkpoint()  # cancelled here, the report stays
        self._ready.discard(fd)

    def linger(self, fd: int, owner: Lingering, timeout: float) -> None:
        """Take over the watched ``fd``, whose owner has nothing left to read or write
        but must not close it before the peer does: from now on this set's task hands
        what comes to ``owner.drain``, and ``owner.release`` closes it ``timeout``
        seconds from now if the peer's end has not come by then. The owner touches the
        socket no more; the run's end closes it too."""
        entry = _Entry(trio.current_time() + timeout, owner)
        self._lingering[fd] = entry
        ended = fd in self._ended
        if ended or fd in self._ready:  # reported while nobody waited: read it now
            self._ready.discard(fd)
            self._ended.discard(fd)
            _drain(entry, ended)
            if entry.owner is None:  # that was the end: closed
                return
        self._until.append(entry)
        if not self._reaping:
            self._reaping = True
            trio.lowlevel.spawn_system_task(self._reap, name="orchestrator.transport.linger")

    async def _reap(self) -> None:
        """Close the lingering sockets whose peer has not closed in time."""
        until = self._until
        try:
            while until:
                entry = until[0]
                if entry.owner is None:  # closed already
                    until.popleft()
                elif trio.current_time() < entry.deadline:
                    await trio.sleep_until(entry.deadline)
                else:
                    until.popleft()
                    _release(entry.owner)
        finally:
            self._reaping = False

    def forget(self, fd: int) -> None:
        """The watched ``fd`` is about to be closed: drop it, and wake its reader (which
        finds it closed). Never raises."""
        self._ready.discard(fd)
        self._ended.discard(fd)
        entry = self._lingering.pop(fd, None)
        if entry is not None:
            entry.owner = None
        if not self._epoll.closed:  # else the run is over, and this set with it
            with contextlib.suppress(OSError):  # closed behind its owner's back
                self._epoll.unregister(fd)
        reader = self._readers.pop(fd, None)
        if reader is not None:
            reschedule(reader)

    async def serve(self) -> None:
        """Wake readers in the order their sockets became ready, CHUNK per scheduler pass."""
        epoll, readers, ready, ended = self._epoll, self._readers, self._ready, self._ended
        lingering = self._lingering
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                while True:
                    events = epoll.poll(0, CHUNK)
                    for fd, mask in events:
                        reader = readers.pop(fd, None)
                        if reader is not None:
                            reschedule(reader)
                        elif fd in lingering:
                            _drain(lingering[fd], bool(mask & _END))
                            continue
                        if mask & _END:
                            ended.add(fd)  # every wait returns at once from now on
                        elif reader is None:
                            ready.add(fd)
                    if len(events) < CHUNK:
                        break
                    # More are ready. Yield first: the readers just woken run in the
                    # scheduler's next pass, the ones taken after this in the pass after.
                    await trio.lowlevel.cancel_shielded_checkpoint()
        finally:  # the run is ending: readers still waiting wait with trio from now on
            for entry in list(lingering.values()):
                # Read what came first: closing over unread bytes sends a reset.
                _drain(entry, False)
                _release(entry.owner)
            for reader in readers.values():
                reschedule(reader)  # they read, and find bytes or wait again
            readers.clear()
            ready.clear()
            ended.clear()
            trio.lowlevel.notify_closing(epoll.fileno())
            epoll.close()


def _drain(entry: _Entry, ended: bool) -> None:
    owner = entry.owner
    if owner is not None:
        try:
            owner.drain(ended)
        except OSError:  # reset by the peer, say: nothing more will come
            _release(owner)


def _release(owner: Lingering | None) -> None:
    """Close a lingering socket (its owner drops it from the set as it does)."""
    if owner is not None:
        with contextlib.suppress(OSError):
            owner.release()
