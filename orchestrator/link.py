"""The resilient WebSocket link: reconnects, rejoins, heartbeats, and sends kept safe.

:class:`ResilientConnection` is the :class:`~orchestrator.connection.Connection`
(and :class:`~orchestrator.connection.PullConnection`) every WebSocket platform uses,
driven by the protocol's :class:`~orchestrator.connection.LinkSession`.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
from collections.abc import Awaitable, Coroutine
from typing import Any

import attr
import trio

from . import transport
from .backoff import Backoff
from .connection import Deliver, Dial, LinkPolicy, LinkSession, Received
from .errors import (
    ConversationOverError,
    HandshakeError,
    LinkClosedError,
    LinkError,
    LinkTimeout,
    PermanentLinkError,
    ProtocolError,
    RetriesExhaustedError,
)
from .events import ConversationEnded, InboundEvent, LinkDown, LinkUp, OutboundEvent
from .linkwatch import Watch, link_watch
from .metrics import Metrics
from .protocols import codec
from .transport import WebSocket

log = logging.getLogger("orchestrator.link")

_JITTER = random.Random()  # backoff jitter for links not given their own generator


@attr.s(auto_attribs=True, eq=False, slots=True)
class ResilientConnection:
    """A :class:`Connection` over a WebSocket that reconnects, rejoins and keeps sends safe.

    * Reconnects with exponential backoff and full jitter (the first retry is
      jittered too), within ``max_attempts`` and ``total_retry_duration``.
    * Handshakes (TCP, TLS, upgrade, join) hold a slot of the shared
      ``handshakes`` limiter, so thousands of reconnecting links do not stampede.
    * A heartbeat every ``heartbeat_interval``; nothing heard for two intervals
      means a dead link: close it and reconnect. Both are timed by the process's
      :mod:`~orchestrator.linkwatch`, not per frame.
    * Permanent errors (auth, suspension, HTTP 400/401/403, certificates) open
      the breaker: no retry, ``run`` raises PermanentLinkError.
    * ``send`` waits through a reconnect and resends what a drop interrupted.

    Read either way: ``run(deliver)`` reads in its own task and pushes each
    event; ``maintain()`` leaves the reading to whoever calls ``receive()``
    (a :class:`PullConnection`, as actors use it).
    """

    session: LinkSession
    policy: LinkPolicy
    handshakes: trio.CapacityLimiter
    metrics: Metrics | None = None
    ssl_context: ssl.SSLContext | None = None
    # One generator for every link: a Random holds 2.5 KB of state, per link that adds up.
    rng: random.Random = attr.ib(factory=lambda: _JITTER)
    dial: Dial | None = None
    _ws: WebSocket | None = attr.ib(init=False, default=None)
    _up: trio.Event = attr.ib(init=False, factory=trio.Event)
    _failed: LinkError | None = attr.ib(init=False, default=None)
    _heard: float = attr.ib(init=False, default=0.0)
    _next_beat: float = attr.ib(init=False, default=math.inf)
    _dead: WebSocket | None = attr.ib(init=False, default=None)  # declared dead by the watch
    # The platform ended the conversation (under maintain(): receive() handed out its end).
    _over: bool = attr.ib(init=False, default=False)
    # Under maintain(): events not yet taken by receive(), the link receive() may read,
    # maintain's task parked until that link ends and how it ended (None: the
    # conversation ended), and a reader's wake-up while there is nothing to read.
    _inbox: list[InboundEvent] | None = attr.ib(init=False, default=None)
    _readable: WebSocket | None = attr.ib(init=False, default=None)
    _holder: trio.lowlevel.Task | None = attr.ib(init=False, default=None)
    _loss: LinkError | None = attr.ib(init=False, default=None)
    _news: trio.Event | None = attr.ib(init=False, default=None)
    _woken: bool = attr.ib(init=False, default=False)
    # A reader is in the socket now; a send saw the link end while none was, so what
    # arrived before the end is still to be read.
    _in_socket: bool = attr.ib(init=False, default=False)
    _drain: bool = attr.ib(init=False, default=False)
    # The run's clock, read directly: trio.current_time() is three calls deep, once a frame.
    _clock: trio.abc.Clock = attr.ib(init=False)

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self._hold(deliver, task_status)

    def maintain(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> Coroutine[Any, Any, None]:
        # Not a coroutine of its own: one frame less for every idle conversation to hold.
        self._inbox = []
        return self._hold(self._queue, task_status)

    async def _hold(self, deliver: Deliver, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff(self.policy.backoff(), self.rng)
        first_failure: float | None = None
        connected_once = False
        try:
            while True:
                try:
                    ws = await self._open(deliver)
                except PermanentLinkError as exc:
                    self._count(self.metrics and self.metrics.handshake_failures, "permanent")
                    if self.policy.circuit_breaker:
                        raise
                    reason = "permanent"
                    log.warning("handshake failed permanently, breaker disabled: %s", exc)
                except LinkError as exc:
                    reason = _reason(exc)
                    self._count(self.metrics and self.metrics.handshake_failures, reason)
                    log.info("connecting failed (%s): %s", reason, exc)
                else:
                    backoff.reset()
                    first_failure = None
                    await deliver(LinkUp(reconnect=connected_once))
                    if not connected_once:
                        connected_once = True
                        task_status.started()
                    self._set_up(ws)
                    ended = False
                    dead = False
                    try:
                        ended = await self._pump(ws, deliver)
                    except LinkError as exc:
                        reason = _reason(exc)
                        dead = isinstance(exc, LinkTimeout)
                        log.info("link lost (%s): %s", reason, exc)
                    finally:
                        self._set_down()
                        if dead:  # nobody is there to answer a close handshake: drop it now
                            ws.abort()
                        else:
                            await ws.aclose()
                    if ended:
                        self._over = True
                        self._up.set()  # wake senders waiting for a link that will not come
                        return
                    await deliver(LinkDown(reason))
                now = trio.current_time()
                first_failure = now if first_failure is None else first_failure
                self._check_retry_limits(backoff.attempt, now - first_failure)
                self._count(self.metrics and self.metrics.reconnects, reason)
                await trio.sleep(backoff.next_delay())
        except LinkError as exc:
            self._fail(exc)
            raise
        finally:
            self._set_down()

    def _check_retry_limits(self, attempts: int, elapsed: float) -> None:
        policy = self.policy
        if policy.max_attempts is not None and attempts >= policy.max_attempts:
            raise RetriesExhaustedError(f"gave up after {attempts} reconnection attempts")
        if policy.total_retry_duration is not None and elapsed >= policy.total_retry_duration:
            raise RetriesExhaustedError(f"gave up after retrying for {elapsed:.0f} s")

    async def _open(self, deliver: Deliver) -> WebSocket:
        dial = self.dial or transport.connect
        async with self.handshakes:
            ws = await dial(
                self.session.url(),
                subprotocols=self.session.subprotocols,
                max_frame_bytes=self.policy.max_frame_bytes,
                ssl_context=self.ssl_context,
                connect_timeout=self.policy.connect_timeout,
                allow_insecure=self.policy.allow_insecure,
            )
            try:
                with trio.fail_after(self.policy.join_timeout):
                    for frame in self.session.open():
                        await ws.send_text(frame)
                    while True:
                        received = self.session.receive(await ws.receive_text())
                        if received.rejected is not None:
                            raise received.rejected
                        await self._dispatch(ws, received, deliver)
                        if received.joined:
                            for frame in self.session.after_join():
                                await ws.send_text(frame)
                            self._heard = trio.current_time()
                            return ws
            except trio.TooSlowError:
                await ws.aclose()
                raise LinkTimeout(f"no join reply within {self.policy.join_timeout:g} s") from None
            except BaseException:
                await ws.aclose()
                raise

    async def _pump(self, ws: WebSocket, deliver: Deliver) -> bool:
        """Read frames until the conversation ends (True) or the link fails (raises).

        Heartbeats and the dead-link check (nothing heard for two intervals) are
        the process's :class:`~orchestrator.linkwatch.LinkWatch`'s job: this loop
        only notes when it last heard the peer, so a frame costs no timer.
        """
        interval = self.policy.heartbeat_interval
        watch: Watch | None = None
        if interval > 0:
            self._next_beat = trio.current_time() + interval
            watch = link_watch().watch(self, min(self._next_beat, self._heard + 2 * interval), ws)
        try:
            if self._inbox is None:
                return await self._read_frames(ws, deliver)
            # maintain(): receive() reads; this task waits for it to see the link end.
            self._readable_now(ws)
            self._holder = trio.lowlevel.current_task()
            try:
                await trio.lowlevel.wait_task_rescheduled(self._abort_hold)
            finally:
                self._readable = self._holder = None
            if self._drain and await self._drain_link(ws):
                return True
            if self._loss is not None:
                raise self._loss
            return True
        finally:
            if watch is not None:
                watch.cancel()

    def _readable_now(self, ws: WebSocket) -> None:
        """``ws`` is up for :meth:`receive` to read, with no loss yet. A method of its own:
        compiled, a caller that set ``_loss = None`` itself would read it as None for good
        (mypyc trusts mypy's narrowing, which no wait undoes)."""
        self._readable, self._loss, self._clock = ws, None, trio.lowlevel.current_clock()
        self._heard = math.inf  # nobody listens until a reader comes
        self._tell_reader()  # the link is up: a reader waiting for it reads now

    def _abort_hold(self, _: object) -> trio.lowlevel.Abort:
        self._holder = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _lose(self, ws: WebSocket, loss: LinkError | None, *, drain: bool = False) -> None:
        """The reader (or a failed send) saw ``ws`` end: ``maintain`` takes it from here,
        after reading what is left in it if ``drain`` (nobody was reading)."""
        if self._readable is ws:
            self._readable, self._loss, self._drain = None, loss, drain
            self._over = self._over or loss is None
            holder, self._holder = self._holder, None
            if holder is not None:
                trio.lowlevel.reschedule(holder)

    async def receive(self) -> InboundEvent | None:
        inbox = self._inbox
        assert inbox is not None, "receive() reads a connection held by maintain()"
        while True:
            if inbox:
                self._heard = math.inf  # time the actor spends on it is not silence from the peer
                return inbox.pop(0)
            if self._woken:
                self._woken = False
                self._heard = math.inf
                return None
            ws = self._readable
            if ws is None:  # down, or ending: wait for news
                self._news = trio.Event()
                await self._news.wait()
                continue
            if self._heard == math.inf:  # listening again after the actor had the last event
                self._heard = self._clock.current_time()
            # (No try/finally for _in_socket: mypyc compiles no ``continue`` inside one.)
            self._in_socket = True
            try:
                text = await ws.receive_text()
            except ProtocolError as exc:  # oversized: the transport closed the link
                inbox.append(codec.violation(exc))
                self._lose(ws, LinkClosedError(f"link closed after a protocol error: {exc}"))
                self._in_socket = False
                continue
            except LinkError as exc:
                self._lose(ws, self._dead_link() if self._dead is ws else exc)
                self._in_socket = False
                continue
            except BaseException:
                self._in_socket = False
                self._heard = math.inf  # cancelled: nobody listens until a reader comes back
                raise
            self._in_socket = False
            events, replies, _, _, ignored, closed = self.session.receive(text)
            if closed:
                self._lose(ws, LinkClosedError("the platform closed the channel"))
                continue
            if len(events) == 1 and not replies and ignored is None:
                event: InboundEvent = events[0]
                if type(event) is not ConversationEnded:
                    self._heard = math.inf  # the everyday frame: one event, straight to the actor
                    return event
            inbox.extend(events)  # before any wait: a cancelled reader loses nothing
            # With events the actor has the floor (as when it takes one, above).
            self._heard = math.inf if events else trio.current_time()
            if ConversationEnded in map(type, events):
                self._lose(ws, None)
            if ignored is not None:
                self._count(self.metrics and self.metrics.events_ignored, ignored)
            try:
                for reply in replies:
                    await ws.send_text(reply)
            except LinkError as exc:
                self._lose(ws, exc)
            except BaseException:
                self._heard = math.inf
                raise

    async def _drain_link(self, ws: WebSocket) -> bool:
        """A send found ``ws`` ended while nobody was reading: keep what arrived before the
        end (a last call, the conversation's end) for ``receive``. True if it held the end."""
        self._drain = False
        inbox = self._inbox
        assert inbox is not None
        ended = False
        with trio.move_on_after(self.policy.join_timeout):
            while not ended:
                try:
                    received = self.session.receive(await ws.receive_text())
                except (LinkError, ProtocolError):
                    break
                inbox.extend(received.events)
                ended = any(type(event) is ConversationEnded for event in received.events)
        if inbox:
            self._tell_reader()
        return ended

    @property
    def ended(self) -> bool:
        return self._over

    def wake(self) -> None:
        self._woken = True
        if self._tell_reader():
            return
        ws = self._ws
        frame = None if ws is None else self.session.heartbeat()
        if frame is not None:  # a reader in the socket wakes on the reply
            link_watch().spawn(_send_beat, ws, frame)

    async def _queue(self, event: InboundEvent) -> None:
        """``maintain``'s deliver: events it makes itself wait in the inbox for ``receive``."""
        assert self._inbox is not None
        self._inbox.append(event)
        self._tell_reader()
        await trio.lowlevel.checkpoint()

    def _tell_reader(self) -> bool:
        """Wake a reader waiting for news (not one in the socket); True if there was one."""
        news, self._news = self._news, None
        if news is None:
            return False
        news.set()
        return True

    async def _read_frames(self, ws: WebSocket, deliver: Deliver) -> bool:
        while True:
            try:
                text = await ws.receive_text()
            except ProtocolError as exc:  # oversized: the transport closed the link
                await deliver(codec.violation(exc))
                raise LinkClosedError(f"link closed after a protocol error: {exc}") from exc
            except LinkError:
                if self._dead is ws:
                    raise self._dead_link() from None
                raise
            received = self.session.receive(text)
            if received.closed:
                raise LinkClosedError("the platform closed the channel")
            # Time spent waiting on the actor (backpressure) is not silence from the peer.
            self._heard = math.inf
            try:
                if await self._dispatch(ws, received, deliver):
                    return True
            finally:
                self._heard = trio.current_time()

    def _dead_link(self) -> LinkTimeout:
        return LinkTimeout(f"nothing heard for {2 * self.policy.heartbeat_interval:g} s: dead link")

    def check_link(self, now: float, token: object) -> float | None:
        """For the link watch: send a heartbeat or declare the link dead when due."""
        ws = self._ws
        if ws is None or ws is not token or self._dead is ws:
            return None  # down or replaced: each new link registers itself
        interval = self.policy.heartbeat_interval
        dead_at = self._heard + 2 * interval
        if now >= dead_at:
            self._dead = ws
            self._lose(ws, self._dead_link())  # maintain() learns it even with no reader
            ws.abort()  # the reader fails at once and reports a dead link
            return None
        if now >= self._next_beat:
            self._next_beat = now + interval
            frame = self.session.heartbeat()
            if frame is not None:
                link_watch().spawn(_send_beat, ws, frame)
        return min(self._next_beat, dead_at)

    async def _dispatch(self, ws: WebSocket, received: Received, deliver: Deliver) -> bool:
        for reply in received.replies:
            await ws.send_text(reply)
        if received.ignored is not None:
            self._count(self.metrics and self.metrics.events_ignored, received.ignored)
        ended = False
        for event in received.events:
            await deliver(event)
            ended = ended or isinstance(event, ConversationEnded)
        return ended

    async def send(self, event: OutboundEvent) -> None:
        await self._send(self.session.encode(event), None, None)

    def send_soon(self, event: OutboundEvent, *, yielding: bool = True) -> Awaitable[None] | None:
        """:meth:`send`, done at once when the link is up and its socket takes the frame:
        None once it has left, else what to await (which sends it again on the next link
        after a drop, as :meth:`send` does). Unlike :meth:`send` it is no checkpoint: for
        a caller that waits for the link next (the actor, after a reply). Not ``yielding``:
        not even every few frames (see ``WebSocket.send_text_soon``)."""
        frame = self.session.encode(event)
        ws = self._ws
        if ws is None:
            return self._send(frame, None, None)
        sending = ws.send_text_soon(frame, yielding=yielding)
        return None if sending is None else self._send(frame, ws, sending)

    async def _send(self, frame: str, ws: WebSocket | None, sending: Awaitable[None] | None) -> None:
        while True:
            if sending is None:
                ws = self._ws
                if ws is None:
                    if self._failed is not None:
                        raise self._failed
                    if self._over:
                        raise ConversationOverError("the platform ended the conversation")
                    await self._up.wait()
                    continue
                sending = ws.send_text(frame)
            try:
                await sending
                return
            except LinkClosedError:
                sending = None
                assert ws is not None
                if self._ws is ws:
                    # A reader in the socket reads what arrived first, then reports the end.
                    # With none (a busy actor), maintain() learns it here and reads that.
                    if not self._in_socket:
                        dead = self._dead is ws
                        lost = self._dead_link() if dead else LinkClosedError("link lost while sending")
                        self._lose(ws, lost, drain=not dead)
                    self._set_down()

    def _set_up(self, ws: WebSocket) -> None:
        self._ws = ws
        self._up.set()

    def _set_down(self) -> None:
        self._ws = None
        if self._up.is_set():
            self._up = trio.Event()

    def _fail(self, exc: LinkError) -> None:
        self._failed = exc
        self._up.set()  # wake senders so they see the failure
        self._tell_reader()

    @staticmethod
    def _count(counter: Any, reason: str) -> None:
        if counter:
            counter.labels(reason).inc()


async def _send_beat(ws: WebSocket, frame: str) -> None:
    """One heartbeat, sent from the link watch; a failure is the reader's to notice."""
    try:
        await ws.send_text(frame)
    except Exception as exc:
        log.debug("heartbeat not sent: %s", exc)


def _reason(exc: LinkError) -> str:
    """A bounded metric label for a link failure."""
    if isinstance(exc, LinkTimeout):
        return "timeout"
    if isinstance(exc, HandshakeError):
        return "handshake"
    if isinstance(exc, LinkClosedError):
        return "closed"
    return "error"
