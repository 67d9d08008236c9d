"""The simulator's public values, and the one converter that turns them into JSON.

Every class here is a frozen attrs value; field names are public API and are
what transcripts, summaries and caches store. ``converter`` (cattrs, JSON
flavoured: datetimes as ISO 8601, enums by value) round-trips all of them.

Time in a transcript is simulated: runners stamp each message from their own
clock starting at ``SIMULATION_EPOCH`` unless given a ``base_timestamp``, so the
same simulation always yields the same transcript.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from cattrs.preconf.json import make_converter

SIMULATION_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_SLUG = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
T = TypeVar("T")


def _tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


class ParticipantRole(enum.Enum):
    """Who speaks: the agent under test or the (simulated) customer."""

    AGENT = "agent"
    CUSTOMER = "customer"

    @property
    def other(self) -> ParticipantRole:
        """The role on the other side of the conversation."""
        return ParticipantRole.CUSTOMER if self is ParticipantRole.AGENT else ParticipantRole.AGENT


class EndReason(enum.Enum):
    """Why a conversation ended; every result records one."""

    UNSPECIFIED = "unspecified"
    MAX_MESSAGES = "max_messages"
    IDLE_TIMEOUT = "idle_timeout"
    CLOSING_PHRASE = "closing_phrase"
    STOP = "stop"
    TRANSFER = "transfer"
    OUT_OF_SCOPE = "out_of_scope"
    OUTCOME_REACHED = "outcome_reached"
    JUDGE_VERDICT = "judge_verdict"
    CUSTOMER_FINISHED = "customer_finished"
    AGENT_FINISHED = "agent_finished"
    ERROR = "error"


@attrs.frozen
class ToolCall:
    """One tool call the agent made while producing a message."""

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    result: Any = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the call returned a result rather than raising."""
        return self.error is None


@attrs.frozen
class MessageDraft:
    """A message before the runner has stamped it with a time."""

    content: str
    sender: ParticipantRole


@attrs.frozen
class Message:
    """One message of a conversation; ``tool_calls`` are the agent's calls behind it."""

    content: str
    timestamp: datetime
    sender: ParticipantRole
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen
class Intent:
    """What a participant is trying to achieve, in words (fed to LLM participants)."""

    role: ParticipantRole
    description: str


def _check_slug(_instance: object, _attribute: object, value: str) -> None:
    if not _SLUG.match(value):
        raise ValueError(f"outcome name must be a lowercase slug like 'order-cancelled', got {value!r}")


@attrs.frozen
class Outcome:
    """A named way a conversation can end; ``name`` is a lowercase slug."""

    name: str = attrs.field(validator=_check_slug)
    description: str = ""


def _check_unique(_instance: object, _attribute: object, value: tuple[Outcome, ...]) -> None:
    seen: set[str] = set()
    for outcome in value:
        if outcome.name in seen:
            raise ValueError(f"duplicate outcome name {outcome.name!r}")
        seen.add(outcome.name)


@attrs.frozen
class Outcomes:
    """The outcomes a scenario distinguishes; names are unique."""

    outcomes: tuple[Outcome, ...] = attrs.field(default=(), converter=_tuple, validator=_check_unique)

    def get_outcome_by_name(self, name: str) -> Outcome | None:
        """The outcome called ``name``, or None if there is none."""
        for outcome in self.outcomes:
            if outcome.name == name:
                return outcome
        return None

    @property
    def names(self) -> tuple[str, ...]:
        """The outcome names, in declaration order."""
        return tuple(outcome.name for outcome in self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)


@attrs.frozen
class Conversation:
    """The messages so far, oldest first, and the outcome once one is decided."""

    messages: tuple[Message, ...] = attrs.field(converter=_tuple)
    outcome: Outcome | None = None

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """Every tool call the agent made, in order."""
        return tuple(call for message in self.messages for call in message.tool_calls)

    def messages_from(self, role: ParticipantRole) -> tuple[Message, ...]:
        """The messages ``role`` sent."""
        return tuple(message for message in self.messages if message.sender is role)


@attrs.frozen
class Verdict:
    """One criterion's pass or fail, with the reason (a rule's or the judge's words)."""

    criterion: str
    passed: bool
    reason: str = ""


@attrs.frozen
class Evaluation:
    """What an evaluator decided: the outcome and a verdict per criterion."""

    outcome: Outcome | None = None
    verdicts: tuple[Verdict, ...] = attrs.field(default=(), converter=_tuple)

    @property
    def passed(self) -> bool:
        """True when every verdict passed (vacuously true with none)."""
        return all(verdict.passed for verdict in self.verdicts)


@attrs.frozen
class ConversationResult:
    """A finished simulation: the transcript, how long it took and why it ended."""

    conversation: Conversation
    duration_seconds: float
    end_reason: EndReason = EndReason.UNSPECIFIED
    end_detail: str = ""
    evaluation: Evaluation | None = None

    @property
    def passed(self) -> bool:
        """Not ended by an error, and every evaluation verdict passed."""
        if self.end_reason is EndReason.ERROR:
            return False
        return self.evaluation is None or self.evaluation.passed


converter = make_converter()


def to_json(value: object) -> str:
    """``value`` (any class of this package) as one line of compact JSON."""
    return json.dumps(converter.unstructure(value), separators=(",", ":"), ensure_ascii=False)


def from_json(text: str | bytes, cls: type[T]) -> T:
    """Parse JSON made by :func:`to_json` back into ``cls``; raises on a mismatch."""
    return converter.structure(json.loads(text), cls)
