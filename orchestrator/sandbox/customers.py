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

from .recorder import CallRecord, ConversationLog, ReplyRecord
from .scenarios import UNSET, ConversationPlan, MessageTurn, ToolTurn
from .synthetic import ArgumentPool, synthetic_message

__all__ = ["ChatConversation", "ToolConversation", "matches", "run_chat_customer", "run_tool_customer"]


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
    log = conversation.log
    known: object = None
    names: list[str] = []
    schemas: dict[str, Mapping[str, Any]] = {}
    variants: dict[str, list[tuple[Mapping[str, Any], str]]] = {}
    picked = 0
    for index, turn in enumerate([*plan.turns, *[_SYNTHETIC] * plan.synthetic]):
        if conversation.tools is not known:  # (re-)registered: refresh the catalogue
            known = conversation.tools
            schemas = {str(spec.get("name")): _parameters(spec) for spec in conversation.tools}
            names, variants = list(schemas), {}
        name = turn.tool
        if name is None:
            if not names:
                log.failures.append(f"turn {index}: no registered tool to call")
                break
            name = names[picked % len(names)]
            picked += 1
        arguments, encoded = turn.arguments, None
        if arguments is None:
            options = variants.get(name)
            if options is None:
                options = variants[name] = pool.variants(schemas.get(name, {"type": "object"}))
            arguments, encoded = options[rng.randrange(len(options))]
        record = await conversation.call(name, arguments, encoded)
        failure = _check_call(turn, record)
        if failure is not None:
            record.failure = failure
            log.failures.append(f"turn {index} ({name}): {failure}")


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
