"""Simulating through the bundled sandbox: a real agent reached over a real wire protocol.

The agent under test connects to a running :class:`~orchestrator.sandbox.SandboxServer`
— the orchestrator itself (:func:`serve_over_sandbox` starts both in process, over
loopback), or the real Conversimple and Arinova SDKs in their own processes — and
the simulator plays the platform's customers:

* **Arinova** (agents that answer messages): :class:`SandboxChannel` makes one
  :class:`SandboxSession` per conversation; each customer message ``send`` becomes a
  ``task`` to the bot (sent at once: a message sent while the agent is still
  answering overlaps, as on the real platform), and each completed reply is
  published as an agent message, in the order they complete. Arinova's wire carries
  no tool calls, so those messages have none. An ``agent_error`` reply or a reply
  lost past the sandbox's ``reply_timeout`` fails the session
  (:class:`~.errors.ParticipantError`: the run ends with reason ``error``).
* **Conversimple** (tool-only agents): :meth:`SandboxChannel.open_tools` announces
  a conversation, waits for the agent to register its tools, and yields
  :class:`SandboxTools`, the drivers' :class:`~.drivers.Tools` over
  ``tool_call_request`` frames, so :class:`~.drivers.ScriptedToolAgent` and
  :class:`~.drivers.LLMToolAgent` drive a remote agent unchanged; every call lands
  on the agent message it produced. :class:`SandboxBatch` runs scenarios with a
  simulated platform LLM (``[scenario.agent]`` with tool steps, or ``kind = "llm"``)
  this way and every other scenario as a hybrid run through the channel.

Conversations opened here are recorded by the sandbox like its own (its recorder,
transcripts and report), under ids ``sim-<n>``; each ends when its session or tools
block does (Conversimple: ``conversation_ended`` is sent, shielded, within
``END_GRACE`` seconds).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry

from ..actor import ActorSettings
from ..agent import Agent
from ..dispatcher import CompositePlatform, Platform
from ..events import ConversationEnded
from ..metrics import Metrics
from ..platforms.arinova import ArinovaPlatform
from ..platforms.conversimple import ConversimplePlatform
from ..sandbox.arinova import ArinovaConversation
from ..sandbox.conversation import ConversimpleConversation
from ..sandbox.scenarios import ConversationPlan
from ..sandbox.server import SandboxServer
from ..sandbox.settings import SandboxSettings
from ..supervision import SupervisorSettings
from ..supervisor import Supervisor
from .batch import Batch
from .builder import build_evaluator, build_participant
from .channels import Channel, Session
from .drivers import LLMToolAgent, ScriptedToolAgent, Tools
from .errors import ParticipantError, ScenarioError
from .llm import LLMClient
from .models import (
    SIMULATION_EPOCH,
    Conversation,
    ConversationResult,
    EndReason,
    Message,
    ParticipantRole,
    ToolCall,
)
from .participants import Participant, ScriptedParticipant
from .runners import FullSimulationRunner, ProgressCallback
from .specs import Scenario

END_GRACE = 5.0
"""Seconds a closing Conversimple conversation gets to send ``conversation_ended``."""
SANDBOX_API_KEY = "simulator-key"
SANDBOX_CUSTOMER = "simulator"
SANDBOX_BOT_TOKEN = "simulator-bot"
_ids = itertools.count(1)


class SandboxChannel(Channel):
    """Reaches the agent ``agent_id`` connected to the running sandbox ``server``.

    ``agent_id`` names the Conversimple agent (sent in ``conversation_ready``) and
    the Arinova bot (else the earliest-connected bot answers). ``customer_id``
    announces Conversimple conversations only to that customer's sockets.
    ``description`` is what :class:`SandboxTools` tells an LLM driver about the
    agent. Agent messages are stamped ``base_timestamp`` plus trio time since their
    session started. Arinova never says a conversation ended, so an agent hosts each
    one until it idles out; ``end_session(session_id)``, if given, is called as each
    :class:`SandboxSession` ends, for a host that can end it at once (the in-process
    orchestrator of :func:`serve_over_sandbox` does).
    """

    def __init__(
        self,
        server: SandboxServer,
        agent_id: str,
        *,
        customer_id: str | None = None,
        description: str = "",
        base_timestamp: datetime | None = None,
        end_session: Callable[[str], object] | None = None,
    ) -> None:
        self.server = server
        self.end_session = end_session
        self.agent_id = agent_id
        self.customer_id = customer_id
        self.description = description
        self.base_timestamp = base_timestamp or SIMULATION_EPOCH

    def conversation_id(self) -> str:
        """A conversation id the sandbox has not seen."""
        while True:
            cid = f"sim-{next(_ids):05d}"
            if cid not in self.server.recorder.conversations:
                return cid

    def create_session(self) -> SandboxSession:
        return SandboxSession(self.conversation_id(), self)

    @asynccontextmanager
    async def open_tools(self) -> AsyncIterator[SandboxTools]:
        """A Conversimple conversation with the agent, once it registered its tools.

        Raises ParticipantError if no agent registered within the sandbox's
        ``register_timeout``. Leaving the block ends the conversation.
        """
        server, cid = self.server, self.conversation_id()
        plan = ConversationPlan(self.agent_id, "conversimple", customer_id=self.customer_id)
        log = server.recorder.open(cid, self.agent_id, "conversimple")
        conversation = _ToolConversation(server.conversimple, log, plan)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.conversimple.run_conversation, conversation, random.Random(0))
            try:
                await conversation.ready.wait()
                if conversation.registered.is_set():
                    yield SandboxTools(conversation, self.agent_id, self.description)
            finally:
                conversation.closing.set()
        if not conversation.registered.is_set():  # raised here, not wrapped in the nursery's group
            raise ParticipantError(f"{cid}: {log.failures[-1] if log.failures else 'not registered'}")


class SandboxSession(Session):
    """One Arinova conversation through the sandbox (made by :class:`SandboxChannel`)."""

    def __init__(self, session_id: str, channel: SandboxChannel) -> None:
        super().__init__(session_id)
        self._channel = channel
        self._nursery: trio.Nursery | None = None
        self._conversation: ArinovaConversation | None = None
        self._started_at = 0.0
        self._failure: ParticipantError | None = None

    async def send(self, message: Message) -> None:
        """Send ``message`` as a task to the bot; returns at once (the reply is published).

        Raises ParticipantError once the session has ended (its failure, if it failed).
        """
        if self._conversation is None:
            raise RuntimeError("start the session (open_session) before sending")
        if self._nursery is None:  # it has ended
            await trio.lowlevel.checkpoint()  # a sender cancelled with the session stops here
            raise self._failure or ParticipantError(f"session {self.session_id} has ended")
        self._messages.append(message)
        self._nursery.start_soon(self._ask, self._conversation, message.content)
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        channel = self._channel
        server, router = channel.server, channel.server.arinova
        plan = ConversationPlan(channel.agent_id, "arinova")
        log = server.recorder.open(self.session_id, channel.agent_id, "arinova")
        self._conversation = ArinovaConversation(router, log, plan)
        router.conversations[self.session_id] = self._conversation  # how replies find their task
        self._started_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:  # the nursery takes no new task from here (another task may be sending)
                    self._nursery = None
        finally:
            self._close_subscribers()
            log.outcome = "lost" if any(r.status == "lost" for r in log.replies) else "completed"
            server.recorder.counters["ended"] += 1
            log.ended.set()
            if channel.end_session is not None:
                channel.end_session(self.session_id)
        # Only a failed reply stops the nursery without cancelling us; raised here, not in a group.
        assert self._failure is not None
        raise self._failure

    async def _ask(self, conversation: ArinovaConversation, content: str) -> None:
        record = await conversation.ask(content)
        if record.status != "ok":
            if record.status == "error":
                failure = f"the agent answered with an error: {record.error}"
            else:
                timeout = self._channel.server.settings.reply_timeout
                failure = f"no reply to {content[:60]!r} within {timeout:g} s"
            if self._failure is None and self._nursery is not None:
                self._failure = ParticipantError(failure)
                self._nursery.cancel_scope.cancel()
            return
        if record.reply:  # an empty reply is silence
            at = self._channel.base_timestamp + timedelta(seconds=trio.current_time() - self._started_at)
            self._publish(Message(record.reply, at, ParticipantRole.AGENT))


@attrs.define(eq=False)
class _ToolConversation(ConversimpleConversation):
    """A sandbox conversation whose calls come from a driver, not a plan, until ``closing``.

    ``run`` announces it and waits for a registration (as the sandbox's own
    conversations do), sets ``ready``, then waits for ``closing`` and ends it.
    """

    ready: trio.Event = attrs.Factory(trio.Event)
    closing: trio.Event = attrs.Factory(trio.Event)

    async def run(self, rng: random.Random) -> None:
        router, log = self.router, self.log
        timeout = router.settings.register_timeout
        try:
            with trio.move_on_after(timeout):
                while self.control is None:
                    sock = await router.wait_control(self.plan.customer_id)
                    self.control, self.customer_id = sock, sock.customer_id
                    if not await self.push(sock, "conversation_ready", agent_id=self.plan.agent_id):
                        self.control = None
                await self.registered.wait()
            if not self.registered.is_set():
                log.failures.append(f"no agent {self.plan.agent_id!r} registered tools within {timeout:g} s")
                log.outcome = "unregistered"
                return
            self.ready.set()
            await self.closing.wait()
        finally:
            if log.outcome is None:
                log.outcome = "lost" if any(c.status == "lost" for c in log.calls) else "completed"
            self.ready.set()
            with trio.move_on_after(END_GRACE, shield=True):
                await self.end()


class SandboxTools:
    """The :class:`~.drivers.Tools` of an agent registered in a sandbox conversation.

    Made by :meth:`SandboxChannel.open_tools`. ``schemas()`` are the tools the
    agent registered last; ``call`` sends a ``tool_call_request`` and waits for
    the answer: a tool error is a recorded failure, a call lost past the
    sandbox's ``call_timeout`` raises ParticipantError.
    """

    def __init__(self, conversation: ConversimpleConversation, name: str, description: str = "") -> None:
        self._conversation = conversation
        self.name = name
        self.description = description

    @property
    def conversation_id(self) -> str:
        """The sandbox conversation these calls belong to."""
        return self._conversation.log.conversation_id

    def schemas(self) -> list[dict[str, Any]]:
        """``{name, description, parameters}`` of every registered tool."""
        return [dict(spec) for spec in self._conversation.tools]

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> ToolCall:
        """Call ``tool`` over the wire.

        Cancellation abandons the call (the agent may still answer it; the sandbox records that).
        """
        if self._conversation.done:
            raise ParticipantError(f"conversation {self.conversation_id} has ended")
        args = dict(arguments)
        record = await self._conversation.call(tool, args)
        if record.status == "ok":
            return ToolCall(tool, args, record.result)
        if record.status == "error":
            return ToolCall(tool, args, None, record.error or "the tool failed")
        timeout = self._conversation.router.settings.call_timeout
        raise ParticipantError(f"tool call {tool} got no answer within {timeout:g} s")


def drives_tools(scenario: Scenario) -> bool:
    """Whether ``scenario`` simulates the platform's LLM calling the agent's tools."""
    spec = scenario.agent
    return spec is not None and (spec.kind == "llm" or scenario.needs_agent)


def build_tool_runner(
    scenario: Scenario,
    sample: int,
    tools: Tools,
    *,
    llm: LLMClient | None = None,
    progress_callback: ProgressCallback | None = None,
) -> FullSimulationRunner:
    """A full run of ``scenario`` whose agent side drives ``tools`` (see :func:`drives_tools`)."""
    spec = scenario.agent
    if spec is None or not drives_tools(scenario):
        raise ScenarioError(f"scenario {scenario.name!r} does not drive the agent's tools")
    customer = build_participant(scenario.customer, ParticipantRole.CUSTOMER, scenario.intent, sample, llm)
    initial = scenario.initial_message
    if initial is None and isinstance(customer, ScriptedParticipant) and customer.turns:
        initial, customer.turns = customer.turns[0], customer.turns[1:]
    agent: Participant
    if spec.kind == "llm":
        if llm is None:
            raise ScenarioError(f"scenario {scenario.name!r}: an llm agent needs an LLM client")
        instructions = spec.instructions or None
        agent = LLMToolAgent(
            llm, tools, instructions=instructions, temperature=spec.temperature, variant=sample
        )
    else:
        agent = ScriptedToolAgent(tools, spec.turns_for(sample))
    return FullSimulationRunner(
        customer,
        agent,
        initial,
        scenario.intent,
        scenario.outcomes,
        scenario.max_messages,
        progress_callback=progress_callback,
        evaluator=build_evaluator(scenario, llm),
        termination=scenario.termination,
    )


@attrs.define(eq=False)
class SandboxBatch(Batch):
    """A :class:`~.batch.Batch` whose ``channel`` is a :class:`SandboxChannel`.

    Scenarios that drive the agent's tools run over a Conversimple conversation
    (:meth:`SandboxChannel.open_tools`); the rest run as the batch runs them (hybrid
    runs through the channel's Arinova sessions).
    """

    async def simulate(self, scenario: Scenario, sample: int) -> ConversationResult:
        channel = self.channel
        if not isinstance(channel, SandboxChannel) or not drives_tools(scenario):
            return await super().simulate(scenario, sample)
        try:
            async with channel.open_tools() as tools:
                return await build_tool_runner(scenario, sample, tools, llm=self.llm).run()
        except ParticipantError as exc:
            return ConversationResult(Conversation(()), 0.0, EndReason.ERROR, str(exc))


@asynccontextmanager
async def serve_over_sandbox(
    agent: type[Agent],
    *,
    settings: SandboxSettings | None = None,
    idle_timeout: float = 120.0,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[SandboxChannel]:
    """A sandbox, and the orchestrator serving ``agent`` to it on both platforms, in process.

    The sandbox listens on loopback (``settings``, default port 0; its ``bot_tokens`` are
    replaced by the orchestrator's bot, and ``api_keys``, if any, must accept
    ``SANDBOX_API_KEY``); the orchestrator
    joins it over Conversimple and connects an Arinova bot, under one supervisor
    (metrics on ``registry``, default a private one). Arinova never ends a
    conversation: each one's actor ends when its :class:`SandboxSession` does, or
    after ``idle_timeout`` seconds without a message, so a long batch never fills
    the supervisor with finished conversations.
    Yields the channel once both links are up; leaving the block stops both.
    """
    server = SandboxServer(settings, bot_tokens={SANDBOX_BOT_TOKEN: agent.agent_id})
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    # The orchestrator stops before the sandbox (Ctrl-C included): its links never see
    # the platform go away, which every conversation would log as a link failed for good.
    async with trio.open_nursery() as platform_side:
        await platform_side.start(server.run)
        try:
            async with _orchestrator_serving(server, agent, idle_timeout, metrics) as channel:
                yield channel
        finally:
            platform_side.cancel_scope.cancel()


@asynccontextmanager
async def _orchestrator_serving(
    server: SandboxServer, agent: type[Agent], idle_timeout: float, metrics: Metrics
) -> AsyncIterator[SandboxChannel]:
    async with trio.open_nursery() as nursery:
        platforms: dict[str, Platform] = {
            "conversimple": ConversimplePlatform(
                server.conversimple_url, SANDBOX_API_KEY, SANDBOX_CUSTOMER, metrics=metrics
            ),
            "arinova": ArinovaPlatform(
                server.arinova_url, SANDBOX_BOT_TOKEN, agent_id=agent.agent_id, metrics=metrics
            ),
        }
        platform = CompositePlatform(platforms)
        supervisor_settings = SupervisorSettings(actor=ActorSettings(idle_timeout=idle_timeout))
        supervisor = Supervisor([agent], platform.connect, settings=supervisor_settings, metrics=metrics)
        await nursery.start(supervisor.run)
        await nursery.start(platform.run, supervisor)
        description = (agent.__doc__ or "").strip().split("\n\n")[0]

        def end_session(conversation_id: str) -> None:
            supervisor.notify(conversation_id, ConversationEnded("the simulation is over"))

        yield SandboxChannel(
            server,
            agent.agent_id,
            customer_id=SANDBOX_CUSTOMER,
            description=description,
            end_session=end_session,
        )
        nursery.cancel_scope.cancel()
