"""Public fakes for testing agents and the runtime without a network.

:class:`MemoryPlatform` is a :data:`~orchestrator.supervisor.ConnectionFactory`
whose connections run over trio memory channels. A test drives each
conversation through its :class:`MemoryPeer`: request tool calls, read replies,
end the conversation, drop and restore the link, or fail it for good::

    platform = MemoryPlatform()
    sup = await nursery.start(Supervisor([MyAgent], platform.connect).run)
    sup.start_conversation_nowait("c1", "my-agent")
    peer = platform.peer("c1")
    reply = await peer.call_tool("call-1", "lookup", {"customer_id": "42"})

A peer waiting for what its actor sends (:meth:`MemoryPeer.receive`,
:meth:`MemoryPeer.call_tool`) never waits on a conversation that is over: once
the conversation ends with nothing left to read, the wait raises
:class:`~orchestrator.errors.ConversationFailedError` naming what happened (the
restarts, the supervisor's verdict, the last error it logged), or
:class:`~orchestrator.errors.ConversationOverError` if the platform ended it.

Under trio's ``autojump_clock`` a sync tool is a trap: while its worker thread
runs, every task looks blocked, so the mock clock jumps to the tool's timeout.
Test sync tools with the real clock, or make the tool async for the test.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs
import trio

from . import events as ev
from .connection import Deliver
from .errors import (
    ConversationFailedError,
    ConversationOverError,
    LinkClosedError,
    LinkError,
    describe_error,
)
from .store import ConversationRecord


@attrs.define(eq=False)
class MemoryPeer:
    """The platform's side of one conversation. Survives actor restarts."""

    conversation_id: str
    buffer: int = 16
    connects: int = 0
    link_up: bool = False
    fail_next_connect: LinkError | None = None
    sent: list[ev.OutboundEvent] = attrs.field(factory=list)
    # None is a wake-up (MemoryConnection.wake), never an event.
    _to_actor: trio.MemorySendChannel[ev.InboundEvent | LinkError | None] = attrs.field(init=False)
    _from_platform: trio.MemoryReceiveChannel[ev.InboundEvent | LinkError | None] = attrs.field(init=False)
    _to_test: trio.MemorySendChannel[ev.OutboundEvent] = attrs.field(init=False)
    _from_actor: trio.MemoryReceiveChannel[ev.OutboundEvent] = attrs.field(init=False)
    _up: trio.Event = attrs.field(init=False, factory=trio.Event)
    _connected: trio.Event = attrs.field(init=False, factory=trio.Event)
    # What the platform saw of the conversation's end (see MemoryPlatform.connect).
    _record: ConversationRecord | None = attrs.field(init=False, default=None, repr=False)
    _over: bool = attrs.field(init=False, default=False, repr=False)
    _ended_by_platform: bool = attrs.field(init=False, default=False, repr=False)
    _verdict: str | None = attrs.field(init=False, default=None, repr=False)
    _last_error: str | None = attrs.field(init=False, default=None, repr=False)
    _waits: set[trio.CancelScope] = attrs.field(init=False, factory=set, repr=False)
    _taken: set[str] = attrs.field(init=False, factory=set, repr=False)
    """The call ids of requests an actor took off the link (see call_tool)."""

    def __attrs_post_init__(self) -> None:
        self._to_actor, self._from_platform = trio.open_memory_channel(self.buffer)
        self._to_test, self._from_actor = trio.open_memory_channel(math.inf)

    # -------------------------------------------------- driving the actor

    async def send(self, event: ev.InboundEvent) -> None:
        """Deliver an inbound event; waits while the actor's buffer is full."""
        await self._to_actor.send(event)
        self._ended_by_platform |= isinstance(event, ev.ConversationEnded)

    def send_nowait(self, event: ev.InboundEvent) -> None:
        """Deliver without waiting; raises trio.WouldBlock when the buffer is full."""
        self._to_actor.send_nowait(event)
        self._ended_by_platform |= isinstance(event, ev.ConversationEnded)

    async def request_tool(
        self,
        call_id: str,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        """Ask for a tool call (does not wait for the reply)."""
        await self.send(ev.ToolCallRequest(call_id, tool_name, dict(arguments or {}), timeout_seconds))

    async def call_tool(
        self,
        call_id: str,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> ev.ToolResult | ev.ToolFailure:
        """Ask for a tool call and return its reply (skipping other outbound events).

        As a platform does, the request is delivered again to each new actor that
        connects (a restart) while the reply is awaited; a completed call is answered
        from the conversation's result cache, not run twice. Raises
        ConversationFailedError if the conversation ends without a reply (an agent
        whose hook raises goes over its restart budget, say), and
        ConversationOverError if the platform ended it first.
        """
        request = ev.ToolCallRequest(call_id, tool_name, dict(arguments or {}), timeout_seconds)
        self._taken.discard(call_id)
        await self.send(request)
        connects = self.connects
        while True:
            out = await self._receive(f"a reply to call {call_id!r}", connects)
            if out is None:  # a new actor, and no reply from the old one
                connects = self.connects
                if call_id in self._taken:  # the old one took the request: it may have lost it
                    self._taken.discard(call_id)
                    await self.send(request)  # (one still queued goes to the new actor as it is)
            elif isinstance(out, ev.ToolResult | ev.ToolFailure) and out.call_id == call_id:
                return out

    async def receive(self) -> ev.OutboundEvent:
        """The next event the actor sent.

        Once the conversation is over and everything it sent has been read, raises
        ConversationFailedError (it ended without the platform ending it) or
        ConversationOverError (the platform ended it) instead of waiting for ever.
        """
        out = await self._receive("another event")
        assert out is not None
        return out

    async def _receive(self, awaited: str, since: int | None = None) -> ev.OutboundEvent | None:
        """The next event; with ``since`` (a count of connects), None once a newer actor
        has connected and nothing is left to read."""
        while not self._over:
            if since is not None and self.connects != since:
                try:
                    out: ev.OutboundEvent | None = self._from_actor.receive_nowait()
                except trio.WouldBlock:
                    out = None
                await trio.lowlevel.checkpoint()
                return out
            # Cancelled (only) by a new actor's connect or the conversation's end.
            with trio.CancelScope() as wait:
                self._waits.add(wait)
                try:
                    return await self._from_actor.receive()
                finally:
                    self._waits.discard(wait)
        try:  # what the actor sent before it ended is still read first
            out = self._from_actor.receive_nowait()
        except trio.WouldBlock:
            raise self._end_error(awaited) from None
        await trio.lowlevel.checkpoint()
        return out

    def _end_error(self, awaited: str) -> ConversationFailedError | ConversationOverError:
        where = f"conversation {self.conversation_id!r}"
        if self._ended_by_platform:
            return ConversationOverError(
                f"{where} is over (the platform ended it): {awaited} will never come"
            )
        restarts = self._record.restarts if self._record is not None else 0
        verdict = self._verdict or "its supervisor ended it (failed, idle or stopped)"
        text = f"{where} ended before {awaited} came, after {restarts} restart(s): {verdict}"
        if self._last_error is not None:
            text += f"; last error: {self._last_error}"
        return ConversationFailedError(text)

    def receive_nowait(self) -> ev.OutboundEvent:
        """The next event the actor sent; raises trio.WouldBlock if none."""
        return self._from_actor.receive_nowait()

    async def end(self, reason: str = "ended") -> None:
        """End the conversation as the platform does."""
        await self.send(ev.ConversationEnded(reason))

    # -------------------------------------------------- link faults

    def drop_link(self) -> None:
        """Take the link down: the actor's sends wait until :meth:`restore_link`."""
        self.link_up = False
        self._up = trio.Event()

    async def restore_link(self) -> None:
        """Bring the link back; the actor sees LinkUp(reconnect=True)."""
        await self._to_actor.send(ev.LinkUp(reconnect=True))
        self.link_up = True
        self._up.set()

    async def fail_link(self, error: LinkError) -> None:
        """Make the running connection raise ``error`` (a permanent failure)."""
        await self._to_actor.send(error)

    async def wait_connected(self) -> None:
        """Wait until an actor has connected at least once."""
        await self._connected.wait()

    # -------------------------------------------------- used by MemoryPlatform's watch

    def _hosted(self, record: ConversationRecord) -> None:
        """An actor of this conversation is connecting; a new conversation under this id
        (the old one over) starts with a clean slate."""
        if self._over:
            self._over = self._ended_by_platform = False
            self._verdict = self._last_error = None
        self._record = record

    def _ended(self) -> None:
        """The task that hosted the conversation is gone: wake every wait for the actor."""
        self._over = True
        self._wake()

    def _wake(self) -> None:
        for wait in self._waits:
            wait.cancel()

    # -------------------------------------------------- used by MemoryConnection

    async def _open(self) -> ev.LinkUp:
        self.connects += 1
        if self.connects > 1:
            self._wake()  # a call_tool waiting for a reply delivers its request again
        failure, self.fail_next_connect = self.fail_next_connect, None
        if failure is not None:
            await trio.lowlevel.checkpoint()
            raise failure
        self.link_up = True
        self._up.set()
        self._connected.set()
        return ev.LinkUp(reconnect=self.connects > 1)

    async def _serve(self, deliver: Deliver, task_status: trio.TaskStatus[None]) -> None:
        await deliver(await self._open())
        task_status.started()
        while True:
            event = await self._from_platform.receive()
            if event is None:  # a wake-up for a pulled connection: nothing to deliver
                continue
            if isinstance(event, ev.ToolCallRequest):
                self._taken.add(event.call_id)
            if isinstance(event, LinkError):
                raise event
            await deliver(event)
            if isinstance(event, ev.ConversationEnded):
                return

    async def _accept(self, event: ev.OutboundEvent) -> None:
        while not self.link_up:
            await self._up.wait()
        self.sent.append(event)
        await self._to_test.send(event)


@attrs.define(eq=False, slots=True)
class MemoryConnection:
    """A :class:`~orchestrator.connection.PullConnection` bound to a :class:`MemoryPeer`.

    An actor reads it with ``receive`` (as it reads a WebSocket connection);
    ``run(deliver)`` pushes instead, for code that wants a plain Connection.
    """

    peer: MemoryPeer
    _first: ev.LinkUp | None = attrs.field(init=False, default=None)
    _woken: bool = attrs.field(init=False, default=False)
    _done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _failure: LinkError | None = attrs.field(init=False, default=None)

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.peer._serve(deliver, task_status)

    async def maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._first = await self.peer._open()
        task_status.started()
        await self._done.wait()
        if self._failure is not None:
            raise self._failure

    async def receive(self) -> ev.InboundEvent | None:
        first, self._first = self._first, None
        if first is not None:
            await trio.lowlevel.checkpoint()
            return first
        if self._woken or self._done.is_set():
            self._woken = False
            if self._done.is_set():
                await trio.sleep_forever()  # the link is over: maintain() returns or raises
            await trio.lowlevel.checkpoint()
            return None
        event = await self.peer._from_platform.receive()
        if isinstance(event, LinkError):
            self._failure = event
            self._done.set()
            await trio.sleep_forever()
        if event is None:
            self._woken = False
        elif isinstance(event, ev.ToolCallRequest):
            self.peer._taken.add(event.call_id)
        elif isinstance(event, ev.ConversationEnded):
            self._done.set()
        return event

    @property
    def ended(self) -> bool:
        return self._done.is_set() and self._failure is None

    def wake(self) -> None:
        self._woken = True
        with contextlib.suppress(trio.WouldBlock):  # full: the reader is not waiting
            self.peer._to_actor.send_nowait(None)

    async def send(self, event: ev.OutboundEvent) -> None:
        await self.peer._accept(event)


@attrs.define(eq=False)
class MemoryPlatform:
    """A connection factory over memory channels, one :class:`MemoryPeer` per conversation."""

    buffer: int = 16
    peers: dict[str, MemoryPeer] = attrs.field(factory=dict)
    supervisor: Any = None
    _watch: _HostWatch = attrs.field(init=False, factory=lambda: _HostWatch(), repr=False)

    def connect(self, record: ConversationRecord) -> MemoryConnection:
        """The ConnectionFactory: a new connection to this conversation's peer.

        Called in a trio task, that task is taken as the conversation's host (a
        :class:`~orchestrator.supervisor.Supervisor` connects each actor of a
        conversation from the one task that supervises it, admission to end): when
        it exits, the conversation is over and the peer's waits end.
        """
        peer = self.peer(record.conversation_id)
        self._watch.host(peer, record)
        return MemoryConnection(peer)

    async def run(
        self, supervisor: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The :class:`~orchestrator.dispatcher.Platform` loop: conversations are started by the test."""
        self.supervisor = supervisor
        task_status.started()
        await trio.sleep_forever()

    def peer(self, conversation_id: str) -> MemoryPeer:
        """The platform side of a conversation (created on first use)."""
        peer = self.peers.get(conversation_id)
        if peer is None:
            peer = self.peers[conversation_id] = MemoryPeer(conversation_id, self.buffer)
        return peer


class _HostWatch(trio.abc.Instrument):
    """Tells each :class:`MemoryPeer` when its conversation is over, and why.

    A trio instrument sees the host task exit (the supervisor keeps one task per
    conversation); a log handler on ``orchestrator.supervisor`` keeps, per peer,
    what the supervisor logged in that task: the last crash and its verdict.
    Both are installed while some conversation is hosted, and removed after.
    """

    def __init__(self) -> None:
        self.hosts: dict[trio.lowlevel.Task, MemoryPeer] = {}
        self.notes = _SupervisorNotes(self.hosts)

    def host(self, peer: MemoryPeer, record: ConversationRecord) -> None:
        try:
            task = trio.lowlevel.current_task()
        except RuntimeError:  # outside trio: nothing to watch
            return
        peer._hosted(record)
        self.hosts[task] = peer
        trio.lowlevel.add_instrument(self)  # both do nothing if already in place
        logging.getLogger("orchestrator.supervisor").addHandler(self.notes)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        peer = self.hosts.pop(task, None)
        if peer is None:
            return
        peer._ended()
        if not self.hosts:
            logging.getLogger("orchestrator.supervisor").removeHandler(self.notes)
            trio.lowlevel.remove_instrument(self)


class _SupervisorNotes(logging.Handler):
    """Keeps what the supervisor logs about a hosted conversation, on its peer."""

    def __init__(self, hosts: Mapping[trio.lowlevel.Task, MemoryPeer]) -> None:
        super().__init__(logging.WARNING)
        self.hosts = hosts

    def emit(self, record: logging.LogRecord) -> None:
        try:
            peer = self.hosts.get(trio.lowlevel.current_task())
        except RuntimeError:  # logged outside trio
            return
        if peer is None:
            return
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            peer._last_error = describe_error(error)
        else:
            peer._verdict = record.getMessage()


@attrs.define(eq=False)
class MemoryWebSocket:
    """One end of an in-memory WebSocket pair (see :func:`memory_websocket_pair`).

    Implements :class:`orchestrator.transport.WebSocket`, so connection logic can be
    tested on trio's mock clock with no sockets. ``blackhole()`` makes the link
    silently swallow everything in both directions, like a dead network path.
    """

    _outgoing: trio.MemorySendChannel[str]
    _incoming: trio.MemoryReceiveChannel[str]
    subprotocol: str | None = None
    peer: MemoryWebSocket | None = None
    close_code: int | None = None
    blackholed: bool = False
    sent: list[str] = attrs.field(factory=list)
    writer_busy = False  # every send is its own

    def send_text_soon(self, text: str, *, yielding: bool = True) -> Awaitable[None]:
        return self.send_text(text)

    async def send_text(self, text: str) -> None:
        if self.close_code is not None:
            raise LinkClosedError("link closed")
        self.sent.append(text)
        if self.blackholed:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._outgoing.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close_code = 1006
            raise LinkClosedError("link dropped") from None

    async def receive_text(self) -> str:
        while True:
            try:
                text = await self._incoming.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.close_code = self.close_code or 1006
                raise LinkClosedError("link closed") from None
            if not self.blackholed:
                return text

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
        await self._outgoing.aclose()
        await self._incoming.aclose()
        if self.peer is not None and self.peer.close_code is None:
            self.peer.close_code = code
            await self.peer._outgoing.aclose()

    def abort(self) -> None:
        """Drop the link at once, no close handshake (the peer sees it closed)."""
        if self.close_code is None:
            self.close_code = 1006
        self._outgoing.close()
        self._incoming.close()
        if self.peer is not None and self.peer.close_code is None:
            self.peer.close_code = 1006
            self.peer._outgoing.close()

    def blackhole(self) -> None:
        """From now on nothing gets through in either direction, and nothing says so."""
        self.blackholed = True
        if self.peer is not None:
            self.peer.blackholed = True


def memory_websocket_pair(buffer: int = 64) -> tuple[MemoryWebSocket, MemoryWebSocket]:
    """A connected (client, server) pair of :class:`MemoryWebSocket`."""
    a_send, b_recv = trio.open_memory_channel[str](buffer)
    b_send, a_recv = trio.open_memory_channel[str](buffer)
    client = MemoryWebSocket(a_send, a_recv)
    server = MemoryWebSocket(b_send, b_recv)
    client.peer, server.peer = server, client
    return client, server


@attrs.define(eq=False, slots=True)
class NullConnection:
    """A connection that is up at once, never delivers, and discards sends.

    For measuring the runtime alone (benchmarks) and for agents under test that
    only need their hooks to run.
    """

    sent: int = 0

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def send(self, event: ev.OutboundEvent) -> None:
        self.sent += 1
        await trio.lowlevel.checkpoint()


__all__ = [
    "MemoryConnection",
    "MemoryPeer",
    "MemoryPlatform",
    "MemoryWebSocket",
    "NullConnection",
    "memory_websocket_pair",
]
