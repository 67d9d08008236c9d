"""Simulated customers: turn a conversation plan into tool calls or messages, and check answers.

With no scripted turns a customer calls the agent's registered tools in turn with
synthetic arguments (:mod:`.synthetic`). Expectations: ``expect_result`` matches
objects as subsets (recursively), arrays item by item, scalars by value and JSON
type; ``expect_error`` / ``expect_reply`` are substrings.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attr

from .recorder import CallRecord, ConversationLog, ReplyRecord
from .scenarios import UNSET, ConversationPlan, MessageTurn, ToolTurn
from .synthetic import ArgumentPool, synthetic_message

__all__ = [
    "ChatConversation",
    "Step",
    "ToolConversation",
    "ToolCustomer",
    "matches",
    "run_chat_customer",
    "run_tool_customer",
]


class ToolConversation(Protocol):
    """A Conversimple conversation as its customer sees it."""

    @property
    def log(self) -> ConversationLog: ...

    @property
    def tools(self) -> Sequence[Mapping[str, Any]]:
        """The tools last registered: ``{name, description, parameters}`` each."""
        ...

    async def call(
        self, tool_name: str, arguments: Mapping[str, Any], encoded: str | None = None
    ) -> CallRecord:
        """Send a tool call and wait for its answer (or for it to be lost).

        ``encoded``: the arguments' JSON, when the caller has it already.
        """
        ...


class ChatConversation(Protocol):
    """An Arinova conversation as its customer sees it."""

    @property
    def log(self) -> ConversationLog: ...

    async def ask(self, content: str) -> ReplyRecord:
        """Send a message and wait for the streamed reply to complete (or be lost)."""
        ...


_SYNTHETIC = ToolTurn()


async def run_tool_customer(
    conversation: ToolConversation, plan: ConversationPlan, rng: random.Random, pool: ArgumentPool
) -> None:
    """Play the plan's turns, then its synthetic calls; record failures on the log."""
    customer = ToolCustomer(conversation, plan, rng, pool)
    step = customer.next_call()
    while step is not None:
        customer.check(await conversation.call(*step))
        step = customer.next_call()


Step = tuple[str, Mapping[str, Any], str | None]
"""A call to make: tool name, arguments and their JSON (None when not at hand)."""


@attr.s(auto_attribs=True, eq=False, slots=True)
class ToolCustomer:
    """The customer of :func:`run_tool_customer`, one step at a time: :meth:`next_call`
    says what to call, :meth:`check` judges its answer.

    Both are synchronous, so whichever task has the answer can take the next step
    (see :meth:`.ConversimpleConversation.converse`).
    """

    conversation: ToolConversation
    plan: ConversationPlan
    rng: random.Random
    pool: ArgumentPool
    index: int = 0
    """The turn :meth:`next_call` plays next."""
    _turn: ToolTurn = _SYNTHETIC
    _name: str = ""
    _known: Any = None  # (not ``object``: mypyc cannot build an attrs class with one)
    _names: list[str] = attr.Factory(list)
    _schemas: dict[str, Mapping[str, Any]] = attr.Factory(dict)
    _variants: dict[str, list[tuple[Mapping[str, Any], str]]] = attr.Factory(dict)
    _picked: int = 0

    def next_call(self) -> Step | None:
        """The next turn's call, or None once there is none (or no tool to call: a failure)."""
        plan, index = self.plan, self.index
        turns = plan.turns
        if index >= len(turns) + plan.synthetic:
            return None
        turn = turns[index] if index < len(turns) else _SYNTHETIC
        conversation = self.conversation
        if conversation.tools is not self._known:  # (re-)registered: refresh the catalogue
            self._known = conversation.tools
            self._schemas = {str(spec.get("name")): _parameters(spec) for spec in conversation.tools}
            self._names, self._variants = list(self._schemas), {}
        name = turn.tool
        if name is None:
            names = self._names
            if not names:
                conversation.log.failures.append(f"turn {index}: no registered tool to call")
                self.index = len(turns) + plan.synthetic  # the customer gives up
                return None
            name = names[self._picked % len(names)]
            self._picked += 1
        arguments, encoded = turn.arguments, None
        if arguments is None:
            options = self._variants.get(name)
            if options is None:
                schema = self._schemas.get(name, {"type": "object"})
                options = self._variants[name] = self.pool.variants(schema)
            arguments, encoded = options[int(self.rng.random() * len(options))]  # randrange: 4 calls deep
        self.index, self._turn, self._name = index + 1, turn, name
        return name, arguments, encoded

    def check(self, record: CallRecord) -> None:
        """Judge the answer to the last call :meth:`next_call` gave; a failure goes on the log."""
        turn = self._turn
        if turn is _SYNTHETIC and record.status != "lost":
            return  # expects nothing but an answer
        failure = _check_call(turn, record)
        if failure is not None:
            record.failure = failure
            self.conversation.log.failures.append(f"turn {self.index - 1} ({self._name}): {failure}")


def _parameters(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    schema = spec.get("parameters")
    return schema if isinstance(schema, Mapping) else {"type": "object"}


async def run_chat_customer(
    conversation: ChatConversation, plan: ConversationPlan, rng: random.Random
) -> None:
    """Send the plan's messages in order, each after the previous reply completed."""
    log = conversation.log
    turns = [
        *plan.messages,
        *(MessageTurn(synthetic_message(rng, plan.words)) for _ in range(plan.synthetic)),
    ]
    for index, turn in enumerate(turns):
        record = await conversation.ask(turn.content)
        failure = _check_reply(turn, record)
        if failure is not None:
            record.failure = failure
            log.failures.append(f"message {index}: {failure}")


def _check_call(turn: ToolTurn, record: CallRecord) -> str | None:
    if record.status == "lost":
        return "no answer (lost)"
    if turn.expect_error is not None:
        if record.status != "error":
            return f"expected an error containing {turn.expect_error!r}, got result {_short(record.result)}"
        if turn.expect_error not in (record.error or ""):
            return f"expected an error containing {turn.expect_error!r}, got {record.error!r}"
    if turn.expect_result is not UNSET:
        if record.status != "ok":
            return f"expected result {_short(turn.expect_result)}, got error {record.error!r}"
        if not matches(turn.expect_result, record.result):
            return f"expected result {_short(turn.expect_result)}, got {_short(record.result)}"
    return None


def _check_reply(turn: MessageTurn, record: ReplyRecord) -> str | None:
    if record.status == "lost":
        return "no reply (lost)"
    if record.chunks and record.reply is not None and "".join(record.chunks) != record.reply:
        return "the chunks do not add up to the completed reply"
    if turn.expect_error is not None and turn.expect_error not in (record.error or ""):
        return f"expected an error containing {turn.expect_error!r}, got {record.status} {record.error!r}"
    if turn.expect_reply is not None and turn.expect_reply not in (record.reply or ""):
        return f"expected a reply containing {turn.expect_reply!r}, got {record.reply or record.error!r}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def matches(expected: Any, actual: Any) -> bool:
    """``actual`` has everything ``expected`` has: objects as subsets, arrays item by item."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float):
        return isinstance(actual, int | float) and expected == actual
    return bool(expected == actual)
