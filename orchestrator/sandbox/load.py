"""The load generator: N conversations, K calls (or messages) each, at an arrival rate.

Latency is request sent → answer received on ``time.perf_counter`` (wall time is what
a benchmark measures); throughput is answers over the time from the first request
to the last answer. :func:`run_load` drives a running :class:`~.server.SandboxServer`
and returns a :class:`LoadReport`, which prints as a table and as one JSON line.
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

__all__ = ["LoadReport", "Percentiles", "build_report", "percentiles", "progress_line", "run_load"]


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
class LoadReport:
    """What a run did. ``passed``: every conversation completed, nothing lost."""

    conversations: int
    outcomes: Mapping[str, int]
    elapsed: float
    calls: int = 0
    calls_ok: int = 0
    calls_error: int = 0
    calls_lost: int = 0
    duplicates: int = 0
    calls_per_second: float = 0.0
    latency_ms: Percentiles = Percentiles()
    replies: int = 0
    replies_ok: int = 0
    replies_error: int = 0
    replies_lost: int = 0
    chunks: int = 0
    chunks_per_second: float = 0.0
    first_chunk_ms: Percentiles = Percentiles()
    reply_ms: Percentiles = Percentiles()
    unknown_events: int = 0
    violations: int = 0

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
                ("calls/s", f"{self.calls_per_second:,.0f}"),
                ("latency ms", _pct(self.latency_ms)),
            ]  # fmt: skip
        if self.replies:
            rows += [
                ("messages", f"{self.replies}  ok {self.replies_ok}, error {self.replies_error}, "
                             f"lost {self.replies_lost}"),
                ("chunks", f"{self.chunks}  ({self.chunks_per_second:,.0f}/s)"),
                ("first chunk ms", _pct(self.first_chunk_ms)),
                ("reply ms", _pct(self.reply_ms)),
            ]  # fmt: skip
        if self.unknown_events or self.violations:
            rows.append(("protocol", f"unknown events {self.unknown_events}, violations {self.violations}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _pct(p: Percentiles) -> str:
    return f"p50 {p.p50:.2f}  p90 {p.p90:.2f}  p99 {p.p99:.2f}  max {p.max:.2f}"


def build_report(recorder: Recorder, conversation_ids: Iterable[str] | None = None) -> LoadReport:
    """Summarize the given conversations (default: all) from their call and reply records."""
    logs: list[ConversationLog] = (
        list(recorder.conversations.values())
        if conversation_ids is None
        else [recorder.conversations[c] for c in conversation_ids]
    )
    outcomes: dict[str, int] = {}
    calls = [c for log in logs for c in log.calls]
    replies = [r for log in logs for r in log.replies]
    for log in logs:
        outcomes[log.outcome or "running"] = outcomes.get(log.outcome or "running", 0) + 1
    latencies = [c.latency for c in calls if c.latency is not None]
    reply_times = [r.latency for r in replies if r.latency is not None]
    starts = [c.sent_at for c in calls] + [r.sent_at for r in replies]
    ends = [c.sent_at + c.latency for c in calls if c.latency is not None]
    ends += [r.sent_at + r.latency for r in replies if r.latency is not None]
    elapsed = max(ends) - min(starts) if ends else 0.0
    chunks = sum(len(r.chunks) for r in replies)

    def rate(count: int) -> float:
        return count / elapsed if elapsed > 0 else 0.0

    return LoadReport(
        conversations=len(logs),
        outcomes=outcomes,
        elapsed=elapsed,
        calls=len(calls),
        calls_ok=sum(c.status == "ok" for c in calls),
        calls_error=sum(c.status == "error" for c in calls),
        calls_lost=sum(c.status == "lost" for c in calls),
        duplicates=sum(max(0, c.answers - 1) for c in calls),
        calls_per_second=rate(len(latencies)),
        latency_ms=percentiles(latencies),
        replies=len(replies),
        replies_ok=sum(r.status == "ok" for r in replies),
        replies_error=sum(r.status == "error" for r in replies),
        replies_lost=sum(r.status == "lost" for r in replies),
        chunks=chunks,
        chunks_per_second=rate(chunks),
        first_chunk_ms=percentiles([r.first_chunk for r in replies if r.first_chunk is not None]),
        reply_ms=percentiles(reply_times),
        unknown_events=recorder.unknown_events,
        violations=recorder.violations,
    )


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
    ids = server.add_conversations(scenario)
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_report_progress, server.recorder, len(ids), progress, interval)
        await server.wait_done(ids)
        nursery.cancel_scope.cancel()
    return build_report(server.recorder, ids)


async def _report_progress(
    recorder: Recorder, total: int, emit: Callable[[str], Any], interval: float
) -> None:
    since, before = time.perf_counter(), 0
    while True:
        await trio.sleep(interval)
        emit(progress_line(recorder, total, since, before))
        since = time.perf_counter()
        before = recorder.counters["calls_answered"] + recorder.counters["replies_answered"]
