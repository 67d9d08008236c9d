"""Heartbeats and dead-link checks for every link in the process: one task and a timer heap.

A link used to read each frame under a cancel scope whose deadline was its next
heartbeat or its dead-link time. At thousands of links that scope cost more CPU
per message than decoding the message, and it stayed allocated while the link
sat idle. Here a link is one entry in a heap instead: the watch sleeps until the
earliest entry is due, asks that link to check itself (send a heartbeat, or
declare itself dead), and files it again for its next due time. A link's reader
does no timekeeping beyond noting when it last heard from the peer.

The watch runs as a trio system task, one per ``trio.run``, started by the first
link that asks for it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

log = logging.getLogger("orchestrator.linkwatch")


class Watched(Protocol):
    def check_link(self, now: float, token: object) -> float | None:
        """Heartbeat or fail the link if due; the next time to check it, or None to forget it.

        ``token`` is what :meth:`LinkWatch.watch` was given: a link that has
        reconnected since answers None for its old registration.
        """
        ...


@attrs.define(eq=False, slots=True)
class Watch:
    """One link's place in the heap. :meth:`cancel` lets the link go at once: a finished
    conversation must not stay in memory until its next heartbeat would have been due."""

    link: Watched | None
    token: object

    def cancel(self) -> None:
        self.link = self.token = None


@attrs.define(eq=False)
class LinkWatch:
    """The timer heap of every watched link in one trio run."""

    _heap: list[tuple[float, int, Watch]] = attrs.field(factory=list)
    _order: itertools.count[int] = attrs.field(factory=itertools.count)
    _nearer: trio.Event = attrs.field(factory=trio.Event)
    _nursery: trio.Nursery | None = None

    def watch(self, link: Watched, at: float, token: object) -> Watch:
        """Check ``link`` at trio time ``at`` (and then whenever it says), passing ``token``;
        cancel the returned :class:`Watch` when the link is done."""
        entry = Watch(link, token)
        heapq.heappush(self._heap, (at, next(self._order), entry))
        if self._heap[0][2] is entry:
            self._nearer.set()
        return entry

    def __len__(self) -> int:
        """Links watched now (cancelled entries not yet due are not counted)."""
        return sum(entry.link is not None for _, _, entry in self._heap)

    def spawn(self, send: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a heartbeat send in the watch's nursery; it must not raise."""
        if self._nursery is None:  # the watch task has not started yet
            trio.lowlevel.spawn_system_task(send, *args)
        else:
            self._nursery.start_soon(send, *args)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            heap = self._heap
            while True:
                self._nearer = trio.Event()
                with trio.move_on_at(heap[0][0] if heap else math.inf):
                    await self._nearer.wait()
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    _, _, entry = heapq.heappop(heap)
                    link = entry.link
                    if link is None:
                        continue  # cancelled
                    try:
                        again = link.check_link(now, entry.token)
                    except Exception:  # a bug in one link must not stop every heartbeat
                        log.exception("link check failed; the link is no longer watched")
                        continue
                    if again is not None:
                        heapq.heappush(heap, (again, next(self._order), entry))


_WATCH: trio.lowlevel.RunVar[LinkWatch] = trio.lowlevel.RunVar("orchestrator_link_watch")


def link_watch() -> LinkWatch:
    """This trio run's watch, started on first use."""
    try:
        return _WATCH.get()
    except LookupError:
        watch = LinkWatch()
        _WATCH.set(watch)
        trio.lowlevel.spawn_system_task(watch.run, name="orchestrator link watch")
        return watch
