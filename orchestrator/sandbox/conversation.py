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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from orchestrator.errors import LinkError
from orchestrator.protocols import codec
from orchestrator.protocols import conversimple as wire
from orchestrator.transport import ServerWebSocket

from .customers import run_tool_customer
from .recorder import CallRecord, ConversationLog
from .scenarios import ConversationPlan

if TYPE_CHECKING:
    from .conversimple import ConversimpleRouter

__all__ = ["ConversimpleConversation", "OpenCall", "Socket"]


@attrs.define(eq=False, slots=True)
class Socket:
    """One accepted agent socket; ``customer_id`` once joined."""

    ws: ServerWebSocket
    session: wire.ConversimpleServer
    serial: int
    customer_id: str | None = None
    alive: bool = True
    prefix: str = ""
    """The encoded ``[join_ref, null, topic,`` every push on this channel starts with."""
    conversations: set[str] = attrs.Factory(set)

    async def push(self, event: str, body: str) -> bool:
        """Send ``[join_ref, null, topic, event, body]``; False if the link is gone."""
        try:
            await self.ws.send_text(f'{self.prefix}"{event}",{body}]')
        except LinkError:
            return False
        return True


@attrs.define(eq=False, slots=True)
class OpenCall:
    """A call not answered yet, with its encoded request for (re)delivery."""

    record: CallRecord
    body: str
    deadline: float
    """Trio time after which the call is lost."""
    sent_to: Socket | None = None


@attrs.define(eq=False)
class ConversimpleConversation:
    """One conversation: where it was announced, its socket, its tools, its open calls."""

    router: ConversimpleRouter
    log: ConversationLog
    plan: ConversationPlan
    customer_id: str | None = None
    control: Socket | None = None
    """The socket it was announced on."""
    socket: Socket | None = None
    """The socket that registered its tools last (None while that one is down)."""
    tools: list[dict[str, Any]] = attrs.Factory(list)
    registered: trio.Event = attrs.Factory(trio.Event)
    changed: trio.Event = attrs.Factory(trio.Event)
    """Replaced and set at every registration."""
    pending: dict[str, OpenCall] = attrs.Factory(dict)
    done: bool = False
    """Its customer has finished: it is ending."""
    end_told: bool = False
    """``conversation_ended`` is on its way: a registration from here on is refused."""
    calls: int = 0

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
            await run_tool_customer(self, self.plan, rng, router.pool)
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
        if self.registered.is_set() and self.socket is None:
            with trio.move_on_after(settings.register_timeout):
                while self.socket is None:
                    await self.changed.wait()
        targets = [s for s in (self.socket, self.control) if s is not None and s.alive]
        if not settings.notify_control_on_end and self.socket is not None:
            targets = targets[:1]
        self.end_told = True
        for sock in dict.fromkeys(targets):
            await self.push(sock, "conversation_lifecycle", event="conversation_ended")

    async def push(self, sock: Socket, name: str, **fields: Any) -> bool:
        payload = {"conversation_id": self.log.conversation_id, **fields}
        self.router.recorder.record(self.log.conversation_id, "out", name, payload)
        return await sock.push(name, codec.encode_frame(payload))

    async def call(
        self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None = None
    ) -> CallRecord:
        """Send one tool call and wait for its answer, or for the router to declare it lost."""
        router = self.router
        self.calls += 1
        cid = self.log.conversation_id
        call_id = f"{cid}-c{self.calls}"
        record = CallRecord(call_id, cid, tool_name, arguments, time.perf_counter())
        # The frame body is assembled from JSON pieces encoded once: per-call work stays small.
        # (The call id's JSON is the conversation id's with the suffix before its closing quote.)
        encoded_cid = router.encoded(cid)
        body = (
            f'{{"call_id":{encoded_cid[:-1]}-c{self.calls}","tool_name":{router.encoded(tool_name)},'
            f'"arguments":{codec.encode_frame(arguments) if encoded is None else encoded},'
            f'"timeout_seconds":{router.encoded_timeout},"conversation_id":{encoded_cid}}}'
        )
        call = OpenCall(record, body, trio.current_time() + router.settings.call_timeout)
        self.log.calls.append(record)
        self.pending[call_id] = call
        router.recorder.counters["calls_sent"] += 1
        if router.recorder.messages:
            router.recorder.record(cid, "out", "tool_call_request", codec.decode_frame(body))
        if self.socket is not None:
            await self.deliver(self.socket, call)
        await record.done.wait()  # set by the answer, or by the router's reaper
        return record

    async def deliver(self, sock: Socket, call: OpenCall) -> None:
        call.sent_to = sock
        call.record.deliveries += 1
        if await sock.push("tool_call_request", call.body):
            self.router.after_request(self, sock)

    async def redeliver(self, sock: Socket, delay: float) -> None:
        """After ``delay``, send ``sock`` the calls whose socket dropped before answering."""
        await trio.sleep(delay)
        for call in list(self.pending.values()):
            stale = call.sent_to is None or not call.sent_to.alive
            if stale and self.socket is sock and sock.alive and not call.record.done.is_set():
                await self.deliver(sock, call)

    def lose_overdue(self, now: float) -> None:
        """Mark calls past their deadline lost (the router's reaper calls this)."""
        for call_id, call in list(self.pending.items()):
            if call.deadline <= now:
                del self.pending[call_id]
                call.record.status = "lost"
                call.record.done.set()
