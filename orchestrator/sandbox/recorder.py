"""Transcripts: every message the sandbox sends or receives, and each call's and reply's fate.

The routers keep one :class:`CallRecord` per tool call (Conversimple) and one
:class:`ReplyRecord` per customer message (Arinova); both carry the latency the
load report is built from (``time.perf_counter``: wall time is right for a
benchmark). With ``messages=True`` the :class:`Recorder` also keeps every frame
as an :class:`Entry`, per conversation; the load generator turns that off.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

__all__ = ["CallRecord", "ConversationLog", "Entry", "Recorder", "ReplyRecord"]

Status = Literal["pending", "ok", "error", "lost"]
OTHER_LIMIT = 10_000


@attrs.frozen
class Entry:
    """One frame: ``direction`` is ``in`` (from the agent) or ``out`` (to it); ``at`` is trio time."""

    at: float
    direction: Literal["in", "out"]
    event: str
    payload: Any


@attrs.define(eq=False, slots=True)
class CallRecord:
    """One tool call: sent once, maybe redelivered, answered once (more answers are duplicates)."""

    call_id: str
    conversation_id: str
    tool_name: str
    arguments: Mapping[str, Any]
    sent_at: float
    status: Status = "pending"
    result: Any = None
    error: str | None = None
    latency: float | None = None
    deliveries: int = 0
    answers: int = 0
    failure: str | None = None
    """Why the answer broke the turn's expectation."""
    _done: trio.Event | None = attrs.field(default=None, init=False, repr=False)

    @property
    def done(self) -> trio.Event:
        """Set once the call is answered or lost (made on first use: most calls are
        awaited another way, see :meth:`.ConversimpleConversation.converse`)."""
        done = self._done
        if done is None:
            done = self._done = trio.Event()
            if self.status != "pending":
                done.set()
        return done

    def wake(self) -> None:
        """The call was answered or lost (its status says which): set :attr:`done`."""
        if self._done is not None:
            self._done.set()


@attrs.define(eq=False, slots=True)
class ReplyRecord:
    """One customer message (an Arinova task) and the streamed reply to it."""

    task_id: str
    conversation_id: str
    content: str
    sent_at: float
    status: Status = "pending"
    chunks: list[str] = attrs.Factory(list)
    reply: str | None = None
    error: str | None = None
    first_chunk: float | None = None
    latency: float | None = None
    answers: int = 0
    failure: str | None = None
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)


@attrs.define(eq=False)
class ConversationLog:
    """What happened in one conversation. ``outcome`` is set when it ends:
    ``completed``, ``failed`` (an expectation broke), ``lost`` (a call or reply never came)
    or ``unregistered`` (no agent registered tools / no bot was there)."""

    conversation_id: str
    agent_id: str
    platform: str
    outcome: str | None = None
    calls: list[CallRecord] = attrs.Factory(list)
    replies: list[ReplyRecord] = attrs.Factory(list)
    entries: list[Entry] = attrs.Factory(list)
    failures: list[str] = attrs.Factory(list)
    opened_at: float = 0.0
    """Trio time the sandbox opened it: a report counts its run's time from the earliest."""
    ended: trio.Event = attrs.field(factory=trio.Event, repr=False)

    def turns(self) -> list[dict[str, Any]]:
        """The transcript without timing or ids: equal for two runs of one scenario."""
        if self.platform == "arinova":
            return [{"content": r.content, "status": r.status, "reply": r.reply, "error": r.error,
                     "chunks": list(r.chunks)} for r in self.replies]  # fmt: skip
        return [{"tool": c.tool_name, "arguments": dict(c.arguments), "status": c.status,
                 "result": c.result, "error": c.error} for c in self.calls]  # fmt: skip


@attrs.define(eq=False)
class Recorder:
    """All conversations, plus frames that belong to none (joins, heartbeats, unknown events)."""

    messages: bool = True
    conversations: dict[str, ConversationLog] = attrs.Factory(dict)
    other: deque[Entry] = attrs.Factory(lambda: deque(maxlen=OTHER_LIMIT))
    """Frames of no conversation (joins, heartbeats, unknown events): the latest ``OTHER_LIMIT``."""
    unknown_events: int = 0
    violations: int = 0
    duplicates: int = 0
    late_answers: int = 0
    unknown_answers: int = 0
    counters: dict[str, int] = attrs.Factory(
        lambda: dict.fromkeys(
            (
                *("calls_sent", "calls_answered", "replies_sent", "replies_answered", "chunks"),
                *("announced", "registered", "ended"),
            ),
            0,
        )
    )
    """Running totals for live progress: cheap to read at any moment."""

    def open(self, conversation_id: str, agent_id: str, platform: str) -> ConversationLog:
        log = ConversationLog(conversation_id, agent_id, platform, opened_at=trio.current_time())
        self.conversations[conversation_id] = log
        return log

    def record(
        self, conversation_id: str | None, direction: Literal["in", "out"], event: str, payload: Any
    ) -> None:
        """Keep one frame (when recording messages) under its conversation, if it has one."""
        if not self.messages:
            return
        entry = Entry(trio.current_time(), direction, event, payload)
        log = self.conversations.get(conversation_id) if conversation_id is not None else None
        (self.other if log is None else log.entries).append(entry)

    def unknown(self, event: str, payload: Any) -> None:
        self.unknown_events += 1
        self.record(_conversation_of(payload), "in", event, payload)

    def transcript(self, conversation_id: str) -> list[Entry]:
        return list(self.conversations[conversation_id].entries)

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for log in self.conversations.values():
            key = log.outcome or "running"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def write_jsonl(self, path: str | Path) -> None:
        """One JSON object per conversation: its outcome, turns, failures and frames."""
        with Path(path).open("w", encoding="utf-8") as out:
            for log in self.conversations.values():
                row = {
                    "conversation_id": log.conversation_id,
                    "agent_id": log.agent_id,
                    "platform": log.platform,
                    "outcome": log.outcome,
                    "failures": log.failures,
                    "turns": log.turns(),
                    "frames": [attrs.asdict(e) for e in log.entries],
                }
                out.write(json.dumps(row, default=repr) + "\n")


def _conversation_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        cid = payload.get("conversation_id", payload.get("conversationId"))
        return cid if isinstance(cid, str) else None
    return None
