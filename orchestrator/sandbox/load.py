"""The load generator: N conversations, K calls (or messages) each, at an arrival rate.

Latency is request sent → answer received on ``time.perf_counter`` (wall time is what
a benchmark measures); throughput is answers over the calls' window, from the first
request to the last answer (no rate from fewer than two); ``elapsed`` is the whole
run in trio time, waits for registration included. :func:`run_load` drives a running
:class:`~.server.SandboxServer` and returns a :class:`LoadReport`, which prints as a
table and as one JSON line, with the first few reasons why conversations did not complete.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .recorder import ConversationLog, Recorder
from .scenarios import Scenario

if TYPE_CHECKING:
    from .server import SandboxServer

__all__ = [
    "Failures",
    "LoadReport",
    "Percentiles",
    "build_report",
    "percentiles",
    "progress_line",
    "run_load",
]

REASONS_SHOWN = 3
"""Reasons a report keeps per outcome; the transcripts (``--record``) keep every one."""
REASON_CHARS = 240
"""A reason longer than this (a large result quoted back) is cut short."""


@attrs.frozen
class Percentiles:
    """Milliseconds; all zero when there were no samples."""

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0


def percentiles(seconds: Sequence[float]) -> Percentiles:
    """Nearest-rank percentiles of durations in seconds, reported in milliseconds."""
    if not seconds:
        return Percentiles()
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000.0

    return Percentiles(rank(0.50), rank(0.90), rank(0.99), ordered[-1] * 1000.0)


@attrs.frozen
class Failures:
    """Why the conversations of one outcome did not complete: the first reasons, and how
    many more there were."""

    reasons: tuple[str, ...] = ()
    more: int = 0


@attrs.frozen
class LoadReport:
    """What a run did. ``passed``: every conversation completed, nothing lost.

    ``elapsed`` is the run's duration in seconds; the rates are over the window from the
    first request to the last answer (``calls_window``), None from fewer than two.
    """

    conversations: int
    outcomes: Mapping[str, int]
    elapsed: float
    calls: int = 0
    calls_ok: int = 0
    calls_error: int = 0
    calls_lost: int = 0
    duplicates: int = 0
    calls_per_second: float | None = None
    calls_window: float = 0.0
    latency_ms: Percentiles = Percentiles()
    replies: int = 0
    replies_ok: int = 0
    replies_error: int = 0
    replies_lost: int = 0
    chunks: int = 0
    chunks_per_second: float | None = None
    first_chunk_ms: Percentiles = Percentiles()
    reply_ms: Percentiles = Percentiles()
    unknown_events: int = 0
    violations: int = 0
    failures: Mapping[str, Failures] = attrs.field(factory=dict)
    """Per outcome other than ``completed``: why (see :data:`REASONS_SHOWN`)."""

    @property
    def passed(self) -> bool:
        finished = self.outcomes.get("completed", 0)
        return finished == self.conversations and self.calls_lost == 0 and self.replies_lost == 0

    def to_json(self) -> str:
        return json.dumps({**attrs.asdict(self), "passed": self.passed}, separators=(",", ":"))

    def table(self) -> str:
        rows: list[tuple[str, str]] = [
            (
                "conversations",
                f"{self.conversations}  " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            ),
            ("elapsed", f"{self.elapsed:.3f} s"),
        ]
        if self.calls:
            rows += [
                ("tool calls", f"{self.calls}  ok {self.calls_ok}, error {self.calls_error}, "
                               f"lost {self.calls_lost}, duplicate {self.duplicates}"),
                ("calls/s", _rate(self.calls_per_second, f"  over {self.calls_window:.3f} s")),
                ("latency ms", _pct(self.latency_ms)),
            ]  # fmt: skip
        if self.replies:
            rows += [
                ("messages", f"{self.replies}  ok {self.replies_ok}, error {self.replies_error}, "
                             f"lost {self.replies_lost}"),
                ("chunks", f"{self.chunks}  ({_rate(self.chunks_per_second)}/s)"),
                ("first chunk ms", _pct(self.first_chunk_ms)),
                ("reply ms", _pct(self.reply_ms)),
            ]  # fmt: skip
        if self.unknown_events or self.violations:
            rows.append(("protocol", f"unknown events {self.unknown_events}, violations {self.violations}"))
        for outcome, why in sorted(self.failures.items()):
            rows += [(outcome if i == 0 else "", reason) for i, reason in enumerate(why.reasons)]
            if why.more:
                rows.append(("", f"... and {why.more} more"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _pct(p: Percentiles) -> str:
    return f"p50 {p.p50:.2f}  p90 {p.p90:.2f}  p99 {p.p99:.2f}  max {p.max:.2f}"


def _rate(per_second: float | None, window: str = "") -> str:
    return "-" if per_second is None else f"{per_second:,.0f}{window}"


def build_report(
    recorder: Recorder, conversation_ids: Iterable[str] | None = None, *, elapsed: float | None = None
) -> LoadReport:
    """Summarize the given conversations (default: all) from their call and reply records.

    ``elapsed``: the run's duration; by default, the trio time since the first of these
    conversations was opened (for a run cut short, its duration so far).
    """
    logs: list[ConversationLog] = (
        list(recorder.conversations.values())
        if conversation_ids is None
        else [recorder.conversations[c] for c in conversation_ids]
    )
    if elapsed is None:
        elapsed = trio.current_time() - min(log.opened_at for log in logs) if logs else 0.0
    outcomes: dict[str, int] = {}
    calls = [c for log in logs for c in log.calls]
    replies = [r for log in logs for r in log.replies]
    for log in logs:
        outcomes[log.outcome or "running"] = outcomes.get(log.outcome or "running", 0) + 1
    latencies = [c.latency for c in calls if c.latency is not None]
    reply_times = [r.latency for r in replies if r.latency is not None]
    calls_window = _window([(c.sent_at, c.latency) for c in calls])
    replies_window = _window([(r.sent_at, r.latency) for r in replies])
    chunks = sum(len(r.chunks) for r in replies)

    return LoadReport(
        conversations=len(logs),
        outcomes=outcomes,
        elapsed=elapsed,
        calls=len(calls),
        calls_ok=sum(c.status == "ok" for c in calls),
        calls_error=sum(c.status == "error" for c in calls),
        calls_lost=sum(c.status == "lost" for c in calls),
        duplicates=sum(max(0, c.answers - 1) for c in calls),
        calls_per_second=_per_second(len(latencies), calls_window),
        calls_window=calls_window,
        latency_ms=percentiles(latencies),
        replies=len(replies),
        replies_ok=sum(r.status == "ok" for r in replies),
        replies_error=sum(r.status == "error" for r in replies),
        replies_lost=sum(r.status == "lost" for r in replies),
        chunks=chunks,
        chunks_per_second=_per_second(chunks, replies_window),
        first_chunk_ms=percentiles([r.first_chunk for r in replies if r.first_chunk is not None]),
        reply_ms=percentiles(reply_times),
        unknown_events=recorder.unknown_events,
        violations=recorder.violations,
        failures=_failures(logs),
    )


def _window(sent: Sequence[tuple[float, float | None]]) -> float:
    """Seconds from the first request to the last answer; 0 with no answer."""
    ends = [at + latency for at, latency in sent if latency is not None]
    return max(ends) - min(at for at, _ in sent) if ends else 0.0


def _per_second(count: int, window: float) -> float | None:
    """A rate needs two events at least: one answer over its own latency is no throughput."""
    return count / window if count >= 2 and window > 0 else None


def _failures(logs: Iterable[ConversationLog]) -> dict[str, Failures]:
    reasons: dict[str, list[str]] = {}
    for log in logs:
        if log.outcome is not None and log.outcome != "completed":
            reasons.setdefault(log.outcome, []).extend(
                _cut(f"{log.conversation_id}: {reason}") for reason in _reasons(log)
            )
    return {
        outcome: Failures(tuple(found[:REASONS_SHOWN]), max(0, len(found) - REASONS_SHOWN))
        for outcome, found in reasons.items()
    }


def _reasons(log: ConversationLog) -> list[str]:
    """Why one conversation did not complete: its failures, or else what it lost."""
    if log.outcome == "unregistered":
        # The sandbox cannot tell an agent with no tools from one serving another agent_id.
        hint = f" for agent_id {log.agent_id!r} (is an agent serving that agent_id, with a tool?)"
        return [f + hint for f in log.failures] or [f"nobody registered tools{hint}"]
    lost = [f"call {c.call_id} ({c.tool_name}): no answer (lost)" for c in log.calls if c.status == "lost"]
    lost += [f"message {r.task_id}: no reply (lost)" for r in log.replies if r.status == "lost"]
    return log.failures or lost


def _cut(reason: str) -> str:
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


def progress_line(recorder: Recorder, total: int, since: float, answered_before: int = 0) -> str:
    """One line of live progress; ``since`` and ``answered_before`` give the rate since the last line."""
    c = recorder.counters
    now = time.perf_counter()
    answered = c["calls_answered"] + c["replies_answered"]
    per_second = (answered - answered_before) / (now - since) if now > since else 0.0
    # Announced but not registered: no agent serving that agent_id has taken them (yet).
    registered = f"registered {c['registered']}/{c['announced']}  " if c["announced"] else ""
    return (
        f"conversations {c['ended']}/{total}  {registered}calls {c['calls_answered']}/{c['calls_sent']}  "
        f"messages {c['replies_answered']}/{c['replies_sent']}  chunks {c['chunks']}  "
        f"{per_second:,.0f} answers/s"
    )


async def run_load(
    server: SandboxServer,
    scenario: Scenario,
    *,
    progress: Callable[[str], Any] | None = None,
    interval: float = 1.0,
) -> LoadReport:
    """Open the scenario's conversations on ``server`` (running), wait for all to end, report.

    ``progress`` gets a line every ``interval`` seconds. Cancellation stops waiting;
    the conversations go on until the server stops.
    """
    started = trio.current_time()
    ids = server.add_conversations(scenario)
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_report_progress, server.recorder, len(ids), progress, interval)
        await server.wait_done(ids)
        nursery.cancel_scope.cancel()
    return build_report(server.recorder, ids, elapsed=trio.current_time() - started)


async def _report_progress(
    recorder: Recorder, total: int, emit: Callable[[str], Any], interval: float
) -> None:
    since, before = time.perf_counter(), 0
    while True:
        await trio.sleep(interval)
        emit(progress_line(recorder, total, since, before))
        since = time.perf_counter()
        before = recorder.counters["calls_answered"] + recorder.counters["replies_answered"]
