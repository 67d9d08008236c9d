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
    """One thing that happened in a conversation (trio time, kind, data).

    A named tuple, not an attrs class: one is made per event on the hot path.
    """

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
    _history: list[HistoryEntry] | None = attrs.field(init=False, default=None)

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """The most recent ``history_limit`` entries, oldest first."""
        return () if self._history is None else tuple(self._history)

    def record(self, at: float, kind: str, data: Mapping[str, Any]) -> None:
        """Append to the history, dropping the oldest entries past the limit."""
        if self._history is None:
            self._history = []
        self._history.append(HistoryEntry(at, kind, data))
        if len(self._history) > self.history_limit:
            del self._history[: len(self._history) - self.history_limit]


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
