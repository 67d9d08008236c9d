"""One Conversimple conversation in the sandbox: announced, registered, driven, ended.

:class:`ConversimpleConversation` announces itself once to the earliest-joined
socket, waits for a registration, lets its simulated customer make tool calls
(each an :class:`OpenCall` until answered or lost), redelivers what a dropped
socket left unanswered, and sends ``conversation_ended``. The socket side (frames,
joins, answers) is :mod:`.conversimple`'s router, which it reaches through a few
methods.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import attr
import outcome
import trio
from mypy_extensions import mypyc_attr
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from orchestrator.errors import LinkError
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.transport import ServerWebSocket

from .customers import Step, ToolCustomer
from .recorder import CallRecord, ConversationLog
from .scenarios import ConversationPlan

__all__ = ["PUSH_GRACE", "ConversimpleConversation", "OpenCall", "Socket"]

PUSH_GRACE = 5.0
"""Seconds a frame on a shared socket gets to go whole once its sender is cancelled."""


@attr.s(auto_attribs=True, eq=False, slots=True)
class Socket:
    """One accepted agent socket; ``customer_id`` once joined."""

    ws: ServerWebSocket
    session: wire.ConversimpleServer
    serial: int
    customer_id: str | None = None
    alive: bool = True
    prefix: str = ""
    """The encoded ``[join_ref, null, topic,`` every push on this channel starts with."""
    conversations: set[str] = attr.Factory(set)

    async def push(self, event: str, body: str) -> bool:
        """Send ``[join_ref, null, topic, event, body]``; False if the link is gone.

        Many conversations share the socket, so cancelling one must not cut its frame
        (which would cut the socket: what reached the peer would be unknown). A frame
        queued behind another task's writing goes with it: its sender just waits, and
        cancelled stops waiting. A frame this push must write itself is finished out of
        the sender's cancellation, however long a busy peer takes to read it; once the
        sender is cancelled it gets ``PUSH_GRACE`` seconds more, then the socket is
        given up.
        """
        ws = self.ws
        try:
            behind = ws.writer_busy  # (nothing runs between here and the frame's queueing)
            sending = ws.send_text_soon(f'{self.prefix}"{event}",{body}]', yielding=False)
            if sending is not None:
                if behind:
                    await sending  # its checkpoint included
                    return True
                if not await _whole(sending):
                    ws.abort()
                    return False
        except LinkError:
            return False
        await trio.lowlevel.checkpoint_if_cancelled()
        return True


async def _whole(sending: Awaitable[None]) -> bool:
    """Await ``sending`` in a task of its own, shielded from the caller's cancellation,
    which starts a ``PUSH_GRACE`` deadline for it instead; False if that ran out (the
    frame was cut). Raises the LinkError the sending raised; cancelled, the caller is
    cancelled once the sending is over."""
    shield = trio.CancelScope(shield=True)
    done = trio.Event()
    failed: list[LinkError] = []

    async def finish() -> None:
        try:
            with shield:
                await sending
        except LinkError as exc:
            failed.append(exc)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        try:
            await done.wait()
        except trio.Cancelled:  # not raised here, in the nursery: after it, on its own
            shield.deadline = trio.current_time() + PUSH_GRACE
    if failed:
        raise failed[0]
    if shield.cancelled_caught:
        return False
    await trio.lowlevel.checkpoint_if_cancelled()
    return True


@attr.s(auto_attribs=True, eq=False, slots=True)
class OpenCall:
    """A call not answered yet, with its encoded request for (re)delivery."""

    record: CallRecord
    body: str
    deadline: float
    """Trio time after which the call is lost."""
    sent_to: Socket | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's and the benchmark's
@attr.s(auto_attribs=True, eq=False, slots=True)
class ConversimpleConversation:
    """One conversation: where it was announced, its socket, its tools, its open calls."""

    router: Any
    """Its :class:`.ConversimpleRouter` (typed Any: that module imports this one, and a
    compiled attrs class needs its fields' types at run time)."""
    log: ConversationLog
    plan: ConversationPlan
    customer_id: str | None = None
    control: Socket | None = None
    """The socket it was announced on."""
    socket: Socket | None = None
    """The socket that registered its tools last (None while that one is down)."""
    tools: list[dict[str, Any]] = attr.Factory(list)
    registered: trio.Event = attr.Factory(trio.Event)
    changed: trio.Event = attr.Factory(trio.Event)
    """Replaced and set at every registration."""
    pending: dict[str, OpenCall] = attr.Factory(dict)
    done: bool = False
    """Its customer has finished: it is ending."""
    end_told: bool = False
    """``conversation_ended`` is on its way: a registration from here on is refused."""
    calls: int = 0
    # While the customer waits for an answer in converse(): its task, its customer and
    # the call it waits for; and a call the answer's task opened, for it to send.
    _waiter: Task | None = attr.ib(default=None, init=False)
    _customer: ToolCustomer | None = attr.ib(default=None, init=False)
    _awaited: CallRecord | None = attr.ib(default=None, init=False)
    _next: OpenCall | None = attr.ib(default=None, init=False)
    _pieces: tuple[str, str] | None = attr.ib(default=None, init=False)
    """A request's JSON before its call number and after its arguments (see open_call)."""
    _clock: trio.abc.Clock | None = attr.ib(default=None, init=False)
    """The run's clock, read directly (trio.current_time() is three calls deep)."""

    async def run(self, rng: random.Random) -> None:
        """Announce, wait for registration, play the customer, end. Sets ``log.outcome``."""
        router, log = self.router, self.log
        timeout = router.settings.register_timeout
        while self.control is None:
            sock = await router.wait_control(self.plan.customer_id)
            self.control, self.customer_id = sock, sock.customer_id
            if not await self.push(sock, "conversation_ready", agent_id=self.plan.agent_id):
                self.control = None
        router.recorder.counters["announced"] += 1
        with trio.move_on_after(timeout):
            await self.registered.wait()
        if not self.registered.is_set():
            log.failures.append(f"no agent registered tools within {timeout:g} s")
            log.outcome = "unregistered"
        else:
            await self.converse(ToolCustomer(self, self.plan, rng, router.pool))
            lost = any(c.status == "lost" for c in log.calls)
            log.outcome = "lost" if lost else "failed" if log.failures else "completed"
        await self.end()

    async def end(self) -> None:
        """Send ``conversation_ended`` to its socket (waiting a while for one) and the announcing one.

        A conversation whose socket dropped waits for the agent to register again
        (the router accepts that registration until the end is told), so the end
        reaches the socket that serves it.
        """
        self.done = True
        settings = self.router.settings
        if self.registered.is_set() and self._unserved():  # (a scope costs: only when needed)
            with trio.move_on_after(settings.register_timeout):
                # (Not ``while self.socket is None`` inside ``if self.socket is None``:
                # compiled, the loop would trust mypy that it is still None.)
                while self._unserved():
                    await self.changed.wait()
        targets = [s for s in (self.socket, self.control) if s is not None and s.alive]
        if not settings.notify_control_on_end and self.socket is not None:
            targets = targets[:1]
        self.end_told = True
        for sock in dict.fromkeys(targets):
            await self.push(sock, "conversation_lifecycle", event="conversation_ended")

    def _unserved(self) -> bool:
        return self.socket is None

    async def push(self, sock: Socket, name: str, **fields: Any) -> bool:
        payload = {"conversation_id": self.log.conversation_id, **fields}
        self.router.recorder.record(self.log.conversation_id, "out", name, payload)
        return await sock.push(name, codec.encode_frame(payload))

    async def call(
        self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None = None
    ) -> CallRecord:
        """Send one tool call and wait for its answer, or for the router to declare it lost."""
        await self.before_call()
        call = self.open_call(tool_name, arguments, encoded)
        if self.socket is not None:
            await self.deliver(self.socket, call)
        record = call.record
        await record.done.wait()  # set by the answer, or by the router's reaper
        self.after_call(record)
        return record

    # Hooks for subclasses (the load generator's gate and its call table).

    async def before_call(self) -> None:
        """Wait, if need be, before the customer's next call goes out (nothing here)."""

    def can_call_now(self) -> bool:
        """Whether :meth:`before_call` would return at once, doing nothing: then an
        answer's task may send the next call (see :meth:`converse`)."""
        return True

    def after_call(self, record: CallRecord) -> None:
        """The customer's call has its answer, or was lost (nothing here)."""

    # The customer.

    async def converse(self, customer: ToolCustomer) -> None:
        """Play the customer's calls (as :func:`.run_tool_customer` does), each after the
        answer to the one before.

        The task that matches an answer (the socket's) takes the customer's next step
        itself, where nothing needs to wait first (:meth:`can_call_now`): it checks the
        answer, opens the next call and sends it, while this task sleeps on, so a call
        costs one task step, not two. A lost call, a customer that is done, or one that
        must wait first, wakes this task to go on. Cancelled (with its conversation),
        it stops waiting; its open call stays unanswered in the log.
        """
        step = customer.next_call()
        while step is not None:
            await self.before_call()
            call = self.open_call(*step)
            if self.socket is not None:
                await self.deliver(self.socket, call)
            step = await self._next_step(customer, call.record)

    async def _next_step(self, customer: ToolCustomer, record: CallRecord) -> Step | None:
        """Wait for ``record``'s answer: the step after it (taken here, or by whoever went on)."""
        if record.status != "pending":  # answered while it was being sent
            await trio.lowlevel.checkpoint()
            return self._take_step(customer, record)
        self._waiter, self._customer, self._awaited = current_task(), customer, record
        step: Step | None = await wait_task_rescheduled(self._abort_wait)
        return step

    def _abort_wait(self, _: object) -> Abort:
        self._waiter = self._customer = self._awaited = None
        return Abort.SUCCEEDED

    def _take_step(self, customer: ToolCustomer, record: CallRecord) -> Step | None:
        self.after_call(record)
        customer.check(record)
        return customer.next_call()

    def answered(self, record: CallRecord, *, go_on: bool = False) -> bool:
        """``record`` has its answer, or was lost: wake whoever waits for it.

        If the customer's task waits for it in :meth:`converse`, the customer's step
        (:meth:`after_call`, its check, its next call) is taken here, in the caller's
        task, and its outcome handed to the customer's task; with ``go_on`` (the caller
        can send) the next call may be opened here instead: True if so, and
        :meth:`send_next` sends it.
        """
        record.wake()
        waiter = self._waiter
        if waiter is None or record is not self._awaited:
            return False
        customer = self._customer
        assert customer is not None
        try:
            step = self._take_step(customer, record)
            if go_on and step is not None and self.can_call_now():
                call = self._next = self.open_call(*step)
                self._awaited = call.record
                return True
        except Exception as exc:  # the customer's own failure: raised in its task, not this one
            self._waiter = self._customer = self._awaited = None
            reschedule(waiter, outcome.Error(exc))
            return False
        self._waiter = self._customer = self._awaited = None
        reschedule(waiter, outcome.Value(step))
        return False

    def send_next(self) -> Awaitable[None] | None:
        """Send the call :meth:`answered` opened (when the conversation has a socket), at
        once if the socket takes it (see :meth:`deliver_soon`): else what to await."""
        call, self._next = self._next, None
        sock = self.socket
        if call is not None and sock is not None:
            # The socket's task reads its socket next, which yields: no yield every few.
            return self.deliver_soon(sock, call, yielding=False)
        return None

    def open_call(self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None) -> OpenCall:
        """A new call, recorded and open (:attr:`pending`), its request encoded for delivery."""
        router = self.router
        self.calls = number = self.calls + 1
        cid = self.log.conversation_id
        call_id = f"{cid}-c{number}"
        record = CallRecord(call_id, cid, tool_name, arguments, time.perf_counter())
        # The frame body is assembled from JSON pieces encoded once: per-call work stays small.
        # (The call id's JSON is the conversation id's with the suffix before its closing quote.)
        pieces = self._pieces
        if pieces is None:
            encoded_cid = router.encoded(cid)
            pieces = self._pieces = (
                f'{{"call_id":{encoded_cid[:-1]}-c',
                f',"timeout_seconds":{router.encoded_timeout},"conversation_id":{encoded_cid}}}',
            )
        body = (
            f'{pieces[0]}{number}","tool_name":{router.encoded(tool_name)},'
            f'"arguments":{codec.encode_frame(arguments) if encoded is None else encoded}{pieces[1]}'
        )
        clock = self._clock
        if clock is None:
            clock = self._clock = trio.lowlevel.current_clock()
        call = OpenCall(record, body, clock.current_time() + router.settings.call_timeout)
        self.log.calls.append(record)
        self.pending[call_id] = call
        recorder = router.recorder
        recorder.counters["calls_sent"] += 1
        if recorder.messages:
            recorder.record(cid, "out", "tool_call_request", codec.decode_frame(body))
        return call

    async def deliver(self, sock: Socket, call: OpenCall) -> None:
        sending = self.deliver_soon(sock, call)
        if sending is not None:
            await sending

    def deliver_soon(self, sock: Socket, call: OpenCall, *, yielding: bool = True) -> Awaitable[None] | None:
        """Send ``call`` on ``sock``: None once it has left (the socket took it at once, no
        checkpoint: the caller waits next), else what to await to send it (or, every few
        calls if ``yielding``, to let other tasks run)."""
        call.sent_to = sock
        call.record.deliveries += 1
        # Whether a fault armed for "the next request" is this one is decided as it is sent:
        # once the frame has left, the peer may arm one for the next while this task still
        # waits its turn to run on (the drop then cut the link after the wrong request).
        drop = self.router.take_drop(self)
        # (Socket.push without its coroutines: every call comes here)
        sending = sock.ws.send_text_soon(f'{sock.prefix}"tool_call_request",{call.body}]', yielding=yielding)
        if sending is None:
            if drop:
                self.router.abort(sock)
            return None
        return self._delivering(sock, sending, drop)

    async def _delivering(self, sock: Socket, sending: Awaitable[None], drop: bool) -> None:
        try:
            await sending
        except LinkError:
            return
        if drop:
            self.router.abort(sock)

    async def redeliver(self, sock: Socket, delay: float) -> None:
        """After ``delay``, send ``sock`` the calls whose socket dropped before answering."""
        await trio.sleep(delay)
        for call in list(self.pending.values()):
            stale = call.sent_to is None or not call.sent_to.alive
            if stale and self.socket is sock and sock.alive and call.record.status == "pending":
                await self.deliver(sock, call)

    def lose_overdue(self, now: float) -> None:
        """Mark calls past their deadline lost (the router's reaper calls this)."""
        for call_id, call in list(self.pending.items()):
            if call.deadline <= now:
                del self.pending[call_id]
                call.record.status = "lost"
                self.answered(call.record)
