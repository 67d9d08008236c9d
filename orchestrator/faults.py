"""A TCP fault proxy on trio, for fault tests and ``benchmarks/`` chaos runs.

:class:`FaultProxy` listens on loopback and forwards byte streams both ways to one
upstream (the sandbox platform), so WebSocket frames pass through untouched. A test
switches its mode at any time; a mode applies to new connections and, where noted,
to the ones already open::

    pass_()           forward normally (the default)
    delay(s)          each chunk, each direction, arrives s seconds (trio time) late
    blackhole()       connections stay open, every byte both ways is dropped
    cut_after(n, d)   forward exactly n bytes in direction d, then reset the connection
    reset()           reset every open connection now (one-shot; the mode is kept)
    refuse()          accept each new connection and reset it at once, until restart()
    down_for(s)       refuse and reset for s seconds, then restart and pass

"Downstream" is upstream → client, "upstream" is client → upstream. A reset closes
with ``SO_LINGER`` 0: the peer sees a TCP RST, as on a network failure. A refused
connection is accepted and reset, not left to the kernel, so each attempt is counted and
time-stamped (:meth:`FaultProxy.statistics`) to check how reconnects spread out while the
platform is down. Both ends must be loopback.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections import Counter
from functools import partial

import attrs
import trio

from orchestrator.errors import ConfigError
from orchestrator.transport import is_loopback

__all__ = ["DIRECTIONS", "FaultProxy", "FaultStatistics"]

DIRECTIONS = ("downstream", "upstream", "both")  # what FaultProxy.cut_after accepts

_CHUNK = 65536
_QUEUE = 8  # chunks read ahead per direction: bounds a delayed link's buffer to 512 KiB
_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen
class FaultStatistics:
    """A snapshot of the proxy's counters.

    ``mode`` is ``pass``, ``delay``, ``blackhole`` or ``cut_after``, plus ``+refuse``
    while refusing. ``accepted`` counts proxied connections, ``refused`` the ones reset
    on arrival, ``active`` the proxied ones open now, ``aborted`` those the proxy reset
    (:meth:`~FaultProxy.reset`, a cut, a broken end). Bytes are counted as forwarded.
    ``accept_times`` holds the ``trio.current_time()`` of every arrival, refused included.
    """

    mode: str
    accepted: int
    active: int
    refused: int
    aborted: int
    bytes_upstream: int  # client -> upstream
    bytes_downstream: int  # upstream -> client
    accept_times: tuple[float, ...]


@attrs.frozen
class _Mode:
    name: str = "pass"
    delay: float = 0.0
    cut_bytes: int | None = None
    cut_directions: frozenset[str] = frozenset()


def _reset_socket(sock: trio.socket.SocketType) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0); idempotent."""
    if sock.fileno() != -1:
        with contextlib.suppress(OSError):  # never connected or already gone: a plain close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@attrs.define(eq=False)
class _Link:
    """One proxied connection: the client's stream, the upstream one (none when blackholed)."""

    client: trio.SocketStream
    upstream: trio.SocketStream | None = None
    budget: int | None = None  # bytes left before a cut; shared by the cut's directions
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)  # cancelled once aborted


@attrs.define(eq=False)
class FaultProxy:
    """Forwards TCP between clients on ``listen_host:listen_port`` and one upstream.

    Construct, then ``port = await nursery.start(proxy.run)``; switch modes with the
    synchronous methods from any task of the same trio run.
    """

    upstream_host: str
    upstream_port: int
    listen_host: str = attrs.field(default="127.0.0.1", kw_only=True)
    listen_port: int = attrs.field(default=0, kw_only=True)
    _bound_port: int | None = attrs.field(default=None, init=False)
    _mode: _Mode = attrs.field(factory=_Mode, init=False)
    _refusing: bool = attrs.field(default=False, init=False)
    _links: set[_Link] = attrs.field(factory=set, init=False)
    _counts: Counter[str] = attrs.field(factory=Counter, init=False)  # arrivals, aborts, bytes
    _accept_times: list[float] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        for host in (self.upstream_host, self.listen_host):
            if not is_loopback(host):
                raise ConfigError(f"the fault proxy stays on loopback; {host!r} is not")

    @property
    def port(self) -> int:
        """The bound listening port; RuntimeError before :meth:`run` has started."""
        if self._bound_port is None:
            raise RuntimeError("the fault proxy is not running")
        return self._bound_port

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until cancelled; ``task_status.started(port)`` once listening.
        Cancellation closes the listener and every connection (both ends) promptly."""
        listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_host)
        self._bound_port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                serve = partial(trio.serve_listeners, self._serve, listeners, handler_nursery=nursery)
                await nursery.start(serve)
                task_status.started(self._bound_port)
        finally:
            self._bound_port = None

    def pass_(self) -> None:
        """Forward normally (``pass`` is a keyword); ends a delay, blackhole or cut."""
        self._set_mode(_Mode())

    def delay(self, seconds: float) -> None:
        """Hold each chunk ``seconds`` (trio time) before forwarding it, both directions.

        Applies to chunks read from now on, open connections too; pipelined, so order
        and throughput are kept.
        """
        if not seconds >= 0:
            raise ValueError(f"delay must be >= 0 seconds, not {seconds!r}")
        self._set_mode(_Mode("delay", delay=seconds))

    def blackhole(self) -> None:
        """Drop every byte (and end-of-stream) both ways, at once, queued bytes included.

        Connections stay open. New ones are accepted but never reach upstream, so they
        stay dead after :meth:`pass_`; bytes dropped meanwhile are gone."""
        self._set_mode(_Mode("blackhole"))

    def cut_after(self, n_bytes: int, direction: str = "downstream") -> None:
        """Forward exactly ``n_bytes`` more in ``direction``, then reset the connection.

        Every open connection gets a budget of ``n_bytes`` from now, each new one from
        its start; with ``"both"`` the two directions share it. The reset goes out as
        soon as the budget is spent (``n_bytes=0``: when the first byte arrives)."""
        if n_bytes < 0 or direction not in DIRECTIONS:
            raise ValueError(f"cut_after needs n_bytes >= 0 and a direction in {DIRECTIONS}")
        chosen = frozenset(("upstream", "downstream")) if direction == "both" else frozenset((direction,))
        self._set_mode(_Mode("cut_after", cut_bytes=n_bytes, cut_directions=chosen))

    def reset(self) -> None:
        """Reset every open connection now (RST both ends); keep accepting, keep the mode."""
        for link in list(self._links):
            self._abort(link)

    def refuse(self) -> None:
        """Reset each new connection on arrival until :meth:`restart`; open ones are untouched."""
        self._refusing = True

    def restart(self) -> None:
        """Take connections again, on the same port (the listener never closed)."""
        self._refusing = False

    async def down_for(self, seconds: float) -> None:
        """Refuse and reset, wait ``seconds``, restart and pass; cancelled, the outage ends early."""
        self.refuse()
        self.reset()
        try:
            await trio.sleep(seconds)
        finally:
            self.restart()
            self.pass_()

    def statistics(self) -> FaultStatistics:
        """A frozen snapshot of the counters."""
        return FaultStatistics(
            mode=self._mode.name + ("+refuse" if self._refusing else ""),
            accepted=self._counts["accepted"],
            active=len(self._links),
            refused=self._counts["refused"],
            aborted=self._counts["aborted"],
            bytes_upstream=self._counts["upstream"],
            bytes_downstream=self._counts["downstream"],
            accept_times=tuple(self._accept_times),
        )

    def _set_mode(self, mode: _Mode) -> None:
        self._mode = mode
        for link in self._links:
            link.budget = mode.cut_bytes

    def _abort(self, link: _Link) -> None:
        """Reset both ends of ``link`` now and stop its tasks."""
        if not link.scope.cancel_called:
            self._counts["aborted"] += 1
        for stream in (link.client, link.upstream):
            if stream is not None:
                _reset_socket(stream.socket)
        link.scope.cancel()

    async def _serve(self, client: trio.SocketStream) -> None:
        self._accept_times.append(trio.current_time())
        if self._refusing:
            self._counts["refused"] += 1
            _reset_socket(client.socket)
            return
        link = _Link(client, budget=self._mode.cut_bytes)
        self._counts["accepted"] += 1
        self._links.add(link)
        try:
            with link.scope:
                if self._mode.name != "blackhole":
                    try:
                        link.upstream = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
                    except OSError:
                        self._abort(link)  # upstream down: the client sees a reset
                        return
                async with trio.open_nursery() as nursery:  # per direction: reader -> queue -> writer
                    for direction, src, dst in (
                        ("upstream", client, link.upstream),
                        ("downstream", link.upstream, client),
                    ):
                        if src is not None:
                            send, receive = trio.open_memory_channel[tuple[float, bytes]](_QUEUE)
                            nursery.start_soon(self._read, link, src, send)
                            nursery.start_soon(self._write, link, direction, dst, receive)
        finally:
            self._links.discard(link)
            for stream in (client, link.upstream):
                if stream is not None:
                    stream.socket.close()  # FIN after a clean end; already closed after a reset

    async def _read(
        self, link: _Link, src: trio.SocketStream, chunks: trio.MemorySendChannel[tuple[float, bytes]]
    ) -> None:
        """Stamp each chunk with its due time (now + delay); drop it in a blackhole."""
        async with chunks:
            while True:
                try:
                    data = await src.receive_some(_CHUNK)
                    mode = self._mode
                    if mode.name == "blackhole":
                        if not data:
                            await trio.sleep_forever()  # the end-of-stream is dropped too
                        continue
                    await chunks.send((trio.current_time() + mode.delay, data))
                except _LINK_ERRORS:
                    self._abort(link)  # one end broke: the other sees a reset too
                    return
                if not data:
                    return

    async def _write(
        self,
        link: _Link,
        direction: str,
        dst: trio.SocketStream | None,
        chunks: trio.MemoryReceiveChannel[tuple[float, bytes]],
    ) -> None:
        """Send each chunk when due, within the cut's budget; then the end-of-stream."""
        async with chunks:
            async for due, data in chunks:
                await trio.sleep_until(due)
                mode = self._mode
                if dst is None or mode.name == "blackhole":
                    continue
                try:
                    if not data:
                        await dst.send_eof()  # half-close; the link ends when both sides have
                        return
                    budget = link.budget if direction in mode.cut_directions else None
                    if budget is not None:
                        data = data[:budget]
                        link.budget = budget - len(data)
                    self._counts[direction] += len(data)  # counted as handed over, before the wait
                    await dst.send_all(data)
                except _LINK_ERRORS:
                    self._abort(link)
                    return
                if link.budget == 0 and direction in mode.cut_directions:
                    self._abort(link)  # the cut: exactly the budget went through
                    return
