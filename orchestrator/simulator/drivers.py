"""Driving a tool-only agent as the platform's LLM would, in process.

Many agents (Conversimple style) have only ``@tool`` methods: the platform's
LLM talks to the customer and calls the tools. To simulate them without the
platform, a *driver* plays that LLM's part against the real agent instance:

* :class:`ScriptedToolAgent` — deterministic steps: call these tools with these
  arguments, then say this template filled from the results (no LLM needed,
  so business rules can be tested in CI);
* :class:`LLMToolAgent` — an LLM with the agent's tool schemas, via function
  calling, looping until it answers in text.

:class:`ToolBox` runs the calls through the runtime's own
:class:`~orchestrator.tools.ToolExecutor` (schema validation, structuring,
worker threads for sync tools, timeouts, error replies) and records each one.
"""

from __future__ import annotations

import itertools
import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from ..agent import Agent
from ..events import ToolCallRequest, ToolResult
from ..store import ConversationRecord
from ..tools import ToolExecutor
from .errors import ParticipantError
from .llm import ChatMessage, CompletionRequest, LLMClient, LLMToolCall
from .models import Conversation, Message, ParticipantRole, ToolCall
from .participants import Participant


@attrs.frozen
class PlannedCall:
    """A tool call a scripted step makes."""

    tool: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AgentStep:
    """Call ``calls`` in order, then say ``say`` (or ``on_error`` if any call failed).

    Templates are ``str.format`` strings over the results by tool name —
    ``{check_order_status[status]}`` — plus ``{error}``, the first failure's message.
    A failed call's result is ``{"error": message}``. A failure that neither
    ``on_error`` nor an ``{error}`` field in ``say`` scripts ends the simulation in
    error: the step was written for a call that succeeds.
    """

    calls: tuple[PlannedCall, ...]
    say: str
    on_error: str | None = None


class Tools(Protocol):
    """What a driver needs from the agent side: its tool schemas and a way to call them.

    :class:`ToolBox` calls an in-process agent; a networked implementation (the
    sandbox sending ``tool_call_request`` frames) fits the same shape.
    """

    name: str
    description: str

    def schemas(self) -> list[dict[str, Any]]: ...

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> ToolCall: ...


class ToolBox:
    """Calls the tools of one agent instance and records every call."""

    def __init__(self, agent: Agent) -> None:
        if not isinstance(agent, Agent):
            raise ParticipantError(f"{type(agent).__name__} is not an orchestrator Agent with @tool methods")
        self.agent = agent
        self.name = type(agent).agent_id
        self.description = (type(agent).__doc__ or "").strip().split("\n\n")[0]
        record = ConversationRecord("simulation", type(agent).agent_id)
        self._executor = ToolExecutor(agent, record, trio.CapacityLimiter(4))
        self._ids = itertools.count(1)

    def schemas(self) -> list[dict[str, Any]]:
        """The ``{name, description, parameters}`` of every tool, as the platform registers them."""
        return [definition.schema() for definition in type(self.agent).__tools__.values()]

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> ToolCall:
        """Run one call; a tool error is a recorded failure, not an exception.

        Cancellation cancels the tool (and raises ParticipantError if it had not finished).
        """
        request = ToolCallRequest(f"sim-{next(self._ids)}", tool, dict(arguments))
        outcome = await self._executor.execute(request)
        if outcome is None:  # only when the call was cancelled
            raise ParticipantError(f"tool call {tool} did not complete")
        if isinstance(outcome, ToolResult):
            return ToolCall(tool, arguments, outcome.result)
        return ToolCall(tool, arguments, None, outcome.message)


class ScriptedToolAgent(Participant):
    """Plays ``turns`` in order: plain text, or an :class:`AgentStep` run against ``toolbox``."""

    role = ParticipantRole.AGENT

    def __init__(self, toolbox: Tools, turns: Sequence[str | AgentStep]) -> None:
        self.toolbox = toolbox
        self.turns = tuple(turns)
        self._next = 0

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        if self._next >= len(self.turns):
            return None
        turn = self.turns[self._next]
        self._next += 1
        if isinstance(turn, str):
            return self.make_message(turn, conversation)
        calls = [await self.toolbox.call(planned.tool, planned.arguments) for planned in turn.calls]
        values: dict[str, Any] = {c.name: c.result if c.succeeded else {"error": c.error} for c in calls}
        errors = [c.error for c in calls if c.error]
        values["error"] = errors[0] if errors else ""
        failed = next((c for c in calls if c.error is not None), None)
        if failed is not None and turn.on_error is None and not _names_error(turn.say, failed.name):
            raise ParticipantError(f"agent.turns[{self._next - 1}]: {_failure(failed, self.toolbox)}")
        template = turn.on_error if errors and turn.on_error is not None else turn.say
        try:
            text = template.format_map(values)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            problem = _unfilled(template, values, calls, self.toolbox, turn.on_error is not None)
            raise ParticipantError(
                problem or f"agent step template {template!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return self.make_message(text, conversation, calls)


_PART = re.compile(r"\.([^.\[]+)|\[([^\]]+)\]")


def _unfilled(
    template: str, values: Mapping[str, Any], calls: Sequence[ToolCall], tools: Tools, has_on_error: bool
) -> str | None:
    """Why ``template`` cannot be filled from ``values``, in the scenario's terms, or None.

    Names the first field that fails: a tool the step does not call, a call that
    failed (a tool the agent lacks, named with the tools it has), or a key the result lacks.
    """
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError:
        return None  # a malformed template: str.format's own message says where
    failed = {call.name: call.error for call in calls if call.error is not None}
    for field in fields:
        where = f"agent step template {template!r}: {{{field}}}"
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in values:
            if not root or root.isdigit():
                return f"{where}: fields name a tool's result, as {{tool[key]}}, not a position"
            called = ", ".join(sorted({call.name for call in calls})) or "none"
            return f"{where}: this step calls no tool {root!r} (it calls: {called})"
        if root in failed and field != f"{root}[error]":
            failure = next(call for call in calls if call.name == root)
            if root not in {schema["name"] for schema in tools.schemas()}:
                return _failure(failure, tools)
            hint = "" if has_on_error else "; add on_error to the step to script that case"
            return f"{where}: the call to {root} failed: {failed[root]}{hint}"
        value = values[root]
        for attribute, item in _PART.findall(field[len(root) :]):
            key: str | int = int(item) if item.isdigit() else item  # as str.format reads [0]
            problem = _missing(value, attribute, key)
            if problem is not None:
                return f"{where}: the result of {root} {problem}"
            value = getattr(value, attribute) if attribute else value[key]
    return None


def _names_error(template: str, tool: str) -> bool:
    """Whether ``template`` says what went wrong: ``{error}`` or ``{tool[error]}``."""
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError:
        return False
    return bool(fields & {"error", f"{tool}[error]"})


def _failure(call: ToolCall, tools: Tools) -> str:
    """Why ``call`` failed, in the scenario's terms: a tool the agent lacks, or its error."""
    available = sorted(schema["name"] for schema in tools.schemas())
    if call.name not in available:
        names = ", ".join(available) or "none"
        lacks = f"agent {tools.name!r} has no such tool (its tools: {names})"
        return f"the scenario calls tool {call.name!r}, but {lacks}"
    return (
        f"the call to {call.name} failed: {call.error} "
        "(add on_error to the step, or {error} to its say, to script a failing call)"
    )


def _missing(value: Any, attribute: str, key: str | int) -> str | None:
    """What is wrong with ``value.attribute`` (if given) or ``value[key]``, or None."""
    if attribute:
        return None if hasattr(value, attribute) else f"has no attribute {attribute!r}"
    if isinstance(value, Mapping):
        keys = ", ".join(map(str, value)) or "none"
        return None if key in value else f"has no key {key!r} (its keys: {keys})"
    if isinstance(value, Sequence) and isinstance(key, int):
        return None if key < len(value) else f"has no item {key} (it has {len(value)})"
    return f"has no item [{key}]: it is {json.dumps(value, default=repr)[:80]}"


AGENT_INSTRUCTIONS = """\
You are {name}, a customer-service agent. {description}
Use the tools to look things up and act; never invent data a tool did not return.
When a tool returns an error, explain it to the customer briefly and offer what is possible.
Answer in one to three short sentences."""


class LLMToolAgent(Participant):
    """An LLM that answers the customer, calling the agent's tools (function calling).

    At most ``max_rounds`` rounds of tool calls per message; past that the
    conversation ends with an error. Earlier tool calls are replayed in the history.
    """

    role = ParticipantRole.AGENT

    def __init__(
        self,
        client: LLMClient,
        toolbox: Tools,
        *,
        instructions: str | None = None,
        temperature: float = 0.0,
        variant: int = 0,
        max_rounds: int = 5,
    ) -> None:
        self.client = client
        self.toolbox = toolbox
        self.instructions = instructions or AGENT_INSTRUCTIONS.format(
            name=toolbox.name, description=toolbox.description
        )
        self.temperature = temperature
        self.variant = variant
        self.max_rounds = max_rounds

    def history(self, conversation: Conversation) -> list[ChatMessage]:
        """The system prompt and the conversation, tool calls replayed."""
        messages = [ChatMessage("system", self.instructions)]
        for index, message in enumerate(conversation.messages):
            if message.sender is ParticipantRole.CUSTOMER:
                messages.append(ChatMessage("user", message.content))
                continue
            calls = [
                LLMToolCall(f"h{index}-{n}", call.name, json.dumps(dict(call.arguments), default=repr))
                for n, call in enumerate(message.tool_calls)
            ]
            if calls:
                messages.append(ChatMessage("assistant", "", calls))
                for llm_call, call in zip(calls, message.tool_calls, strict=True):
                    messages.append(ChatMessage("tool", _tool_content(call), tool_call_id=llm_call.id))
            messages.append(ChatMessage("assistant", message.content))
        return messages

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        messages = self.history(conversation)
        made: list[ToolCall] = []
        tools = tuple(self.toolbox.schemas())
        for _ in range(self.max_rounds):
            request = CompletionRequest(
                messages, temperature=self.temperature, variant=self.variant, tools=tools
            )
            completion = await self.client.complete(request)
            if not completion.tool_calls:
                text = completion.content.strip()
                return self.make_message(text, conversation, made) if text or made else None
            messages.append(ChatMessage("assistant", completion.content, completion.tool_calls))
            for llm_call in completion.tool_calls:
                try:
                    arguments = json.loads(llm_call.arguments or "{}")
                except ValueError:
                    arguments = None
                if isinstance(arguments, dict):
                    call = await self.toolbox.call(llm_call.name, arguments)
                else:
                    call = ToolCall(llm_call.name, {}, None, "arguments are not a JSON object")
                made.append(call)
                messages.append(ChatMessage("tool", _tool_content(call), tool_call_id=llm_call.id))
        raise ParticipantError(f"the agent's LLM was still calling tools after {self.max_rounds} rounds")


def _tool_content(call: ToolCall) -> str:
    value = call.result if call.succeeded else {"error": call.error}
    return json.dumps(value, default=repr, ensure_ascii=False)
