"""State that outlives an actor: owned by the supervisor, kept across restarts.

A restarted actor gets a fresh Agent instance but the same
:class:`ConversationRecord`: its id, agent id, history and the cache of completed
tool results, so a redelivered ``call_id`` is answered and not run again.
The store is in memory now; :class:`ConversationStore` is the seam for a
persistent one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import attrs

from .events import ToolFailure, ToolResult

CallOutcome = ToolResult | ToolFailure


@attrs.define(eq=False, slots=True)
class ResultCache:
    """Completed tool replies by ``call_id``, oldest evicted past ``maxsize``.

    A result is kept as its value and its tool's name in two dicts, not as its
    :class:`~orchestrator.events.ToolResult`: every completed call stays here for the
    life of its conversation, and a ``ToolResult`` is an object each young garbage
    collection must walk (with 1,000 conversations of 50 calls it was six in ten of
    the objects one collection walked), while a value of plain JSON scalars is not
    tracked at all. A failure is rare and kept as it is. Both dicts keep insertion
    order, so the oldest call is first in each.
    """

    maxsize: int = 256
    # Allocated lazily: most idle conversations never complete a call.
    _values: dict[str, Any] | None = attrs.field(init=False, default=None)
    _tools: dict[str, str] | None = attrs.field(init=False, default=None)

    def get(self, call_id: str) -> CallOutcome | None:
        """The stored reply for ``call_id``, if any."""
        values = self._values
        if values is None or call_id not in values:
            return None
        value = values[call_id]
        if type(value) is ToolFailure:
            return value
        assert self._tools is not None
        return ToolResult(call_id, self._tools[call_id], value)

    def put(self, reply: CallOutcome) -> None:
        """Remember a completed reply; evicts the oldest past ``maxsize``."""
        values, tools = self._values, self._tools
        if values is None or tools is None:
            values, tools = self._values, self._tools = {}, {}
        call_id = reply.call_id
        values[call_id] = reply.result if type(reply) is ToolResult else reply
        tools[call_id] = reply.tool_name
        if len(values) > self.maxsize:
            oldest = next(iter(values))
            del values[oldest], tools[oldest]

    def __len__(self) -> int:
        return 0 if self._values is None else len(self._values)

    def __contains__(self, call_id: object) -> bool:
        return self._values is not None and call_id in self._values


class HistoryEntry(NamedTuple):
    """One thing that happened in a conversation (trio time, kind, data)."""

    at: float
    kind: str
    data: Mapping[str, Any]


@attrs.define(eq=False, slots=True)
class ConversationRecord:
    """What the supervisor keeps for one conversation across actor restarts.

    Hooks receive it; treat it as read-only from agent code.
    """

    conversation_id: str
    agent_id: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    results: ResultCache = attrs.field(factory=ResultCache)
    history_limit: int = 1000
    restarts: int = 0
    # Flat (at, kind, data, at, kind, data, ...), trimmed back to the limit once it holds a
    # quarter more: an entry leaves no object the garbage collector must walk (a float, a
    # str and a dict of plain values are never tracked; a tuple per entry was), and the
    # trimming is amortised instead of a shift of the whole list per entry.
    _history: list[Any] | None = attrs.field(init=False, default=None)

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """The most recent ``history_limit`` entries, oldest first."""
        flat = self._history
        if not flat:
            return ()
        start = max(0, len(flat) - 3 * self.history_limit)
        return tuple(HistoryEntry(*flat[i : i + 3]) for i in range(start, len(flat), 3))

    def record(self, at: float, kind: str, data: Mapping[str, Any]) -> None:
        """Append to the history; the oldest entries past the limit are dropped."""
        flat = self._history
        if flat is None:
            flat = self._history = []
        flat += (at, kind, data)
        limit = self.history_limit
        if len(flat) > 3 * (limit + (limit + 3) // 4):
            del flat[: len(flat) - 3 * limit]


class ConversationStore(Protocol):
    """Where conversation records live; in memory today, persistent later."""

    def get(self, conversation_id: str) -> ConversationRecord | None: ...

    def add(self, record: ConversationRecord) -> None: ...

    def remove(self, conversation_id: str) -> None: ...

    def __iter__(self) -> Iterator[ConversationRecord]: ...

    def __len__(self) -> int: ...


@attrs.define(eq=False)
class MemoryStore:
    """The in-process :class:`ConversationStore`."""

    _records: dict[str, ConversationRecord] = attrs.field(factory=dict)

    def get(self, conversation_id: str) -> ConversationRecord | None:
        return self._records.get(conversation_id)

    def add(self, record: ConversationRecord) -> None:
        self._records[record.conversation_id] = record

    def remove(self, conversation_id: str) -> None:
        self._records.pop(conversation_id, None)

    def __iter__(self) -> Iterator[ConversationRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
