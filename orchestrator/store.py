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
    """Completed tool replies by ``call_id``, oldest evicted past ``maxsize``."""

    maxsize: int = 256
    # A plain dict keeps insertion order and is cheaper to fill than an OrderedDict.
    _entries: dict[str, CallOutcome] | None = attrs.field(init=False, default=None)

    def get(self, call_id: str) -> CallOutcome | None:
        """The stored reply for ``call_id``, if any."""
        if self._entries is None:
            return None
        return self._entries.get(call_id)

    def put(self, reply: CallOutcome) -> None:
        """Remember a completed reply; evicts the oldest past ``maxsize``."""
        if self._entries is None:
            # Allocated lazily: most idle conversations never complete a call.
            self._entries = {}
        entries = self._entries
        entries[reply.call_id] = reply
        if len(entries) > self.maxsize:
            del entries[next(iter(entries))]

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    def __contains__(self, call_id: object) -> bool:
        return self._entries is not None and call_id in self._entries


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
