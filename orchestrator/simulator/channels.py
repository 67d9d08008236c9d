"""How a hybrid simulation reaches a real agent: channels and sessions.

A :class:`Channel` makes one :class:`Session` per conversation. A session is a
long-lived task (``run``, started with ``nursery.start``; :func:`open_session`
does that for you) that carries customer messages to the agent (``send``) and
agent messages back to every subscriber (``subscribe`` returns a trio receive
channel; subscribe before sending so nothing is missed). ``get_conversation``
is the session's own view of the transcript.

:class:`AgentChannel` runs an agent in process: one fresh agent per session,
customer messages handled one at a time in arrival order (a message sent while
the agent is still answering waits its turn — overlap), each answer published
when complete with the tool calls behind it. A networked channel (the sandbox)
fits the same shape: ``run`` connects, ``send`` writes a frame, a reader task
publishes what arrives.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import trio

from .agents import AgentFactory, ask_agent, make_agent, record_tool_calls, tool_names
from .models import SIMULATION_EPOCH, Conversation, Message, ParticipantRole, ToolCall


class Session(abc.ABC):
    """One conversation with the agent, as seen from the customer's side."""

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._messages: list[Message] = []
        # Each subscriber's buffer is bounded by the conversation's length, which the
        # runner caps with max_messages; a slow reader must never stall the agent.
        self._subscribers: list[trio.MemorySendChannel[Message]] = []

    @property
    def session_id(self) -> str:
        """This session's id."""
        return self._session_id

    def get_conversation(self) -> Conversation:
        """Every message sent and received in this session so far."""
        return Conversation(tuple(self._messages))

    def subscribe(self) -> trio.MemoryReceiveChannel[Message]:
        """A new receive channel of the agent's messages from now on.

        It closes (iteration ends) when the session stops; close it to unsubscribe.
        """
        send, receive = trio.open_memory_channel[Message](math.inf)
        self._subscribers.append(send)
        return receive

    @abc.abstractmethod
    async def send(self, message: Message) -> None:
        """Deliver a customer message. Returns once accepted, not when answered.

        If cancelled, the message may or may not have been delivered.
        """

    @abc.abstractmethod
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the session open; ``started()`` once ``send`` may be called.

        Runs until cancelled (the normal way to close it) or the agent side ends.
        Raises :class:`~.errors.ParticipantError` or a
        :class:`~orchestrator.errors.LinkError` if the agent side fails.
        """

    def _publish(self, message: Message) -> None:
        """Record an agent message and hand it to every live subscriber."""
        self._messages.append(message)
        for send in list(self._subscribers):
            try:
                send.send_nowait(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    def _close_subscribers(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()


class Channel(abc.ABC):
    """A way to reach an agent; makes one session per conversation."""

    @abc.abstractmethod
    def create_session(self) -> Session:
        """A new, not yet running session (see :func:`open_session`)."""


@asynccontextmanager
async def open_session(channel: Channel) -> AsyncIterator[Session]:
    """A running session of ``channel``, stopped when the block exits."""
    session = channel.create_session()
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        yield session
        nursery.cancel_scope.cancel()


class AgentChannel(Channel):
    """Reaches an agent in process: ``agent_factory()`` makes one agent per session.

    Agent messages are stamped ``base_timestamp`` plus trio time since the session
    started. ``tools`` names the methods whose calls are recorded (default: the
    class's ``__tools__``).
    """

    def __init__(
        self,
        agent_factory: AgentFactory,
        *,
        base_timestamp: datetime | None = None,
        tools: tuple[str, ...] | None = None,
    ) -> None:
        self.agent_factory = agent_factory
        self.base_timestamp = base_timestamp or SIMULATION_EPOCH
        self.tools = tools
        self._ids = itertools.count(1)

    def create_session(self) -> AgentSession:
        return AgentSession(f"agent-session-{next(self._ids)}", self)


class AgentSession(Session):
    """A session with an in-process agent (made by :class:`AgentChannel`)."""

    def __init__(self, session_id: str, channel: AgentChannel) -> None:
        super().__init__(session_id)
        self._channel = channel
        self._inbox_send, self._inbox = trio.open_memory_channel[Message](math.inf)
        self._started_at: float | None = None

    async def send(self, message: Message) -> None:
        self._messages.append(message)
        await self._inbox_send.send(message)

    def _now(self) -> datetime:
        assert self._started_at is not None
        return self._channel.base_timestamp + timedelta(seconds=trio.current_time() - self._started_at)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        channel = self._channel
        agent = make_agent(channel.agent_factory)
        calls: list[ToolCall] = []
        names = tool_names(agent) if channel.tools is None else {n: n for n in channel.tools}
        record_tool_calls(agent, calls, names)
        self._started_at = trio.current_time()
        task_status.started()
        try:
            async for message in self._inbox:
                reply = await ask_agent(agent, message.content)
                made, calls[:] = tuple(calls), []
                if reply is not None or made:
                    self._publish(Message(reply or "", self._now(), ParticipantRole.AGENT, made))
        finally:
            self._close_subscribers()
