"""Prometheus collectors for the whole runtime.

One :class:`Metrics` object per supervisor, bound to a ``CollectorRegistry``
(tests pass a private one). Names follow Prometheus practice: ``orchestrator_``
prefix, base units, ``_total`` counters. Labels are bounded: agent ids and tool
names come from agent classes; anything from the network that is not known is
counted under the fixed label :data:`UNKNOWN`. Never a conversation id, customer
id, URL or token as a label.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from . import events as ev
from .collectors import CounterChild, FastCounter, FastHistogram, HistogramChild

UNKNOWN = "unknown"

#: Seconds; tool calls range from microseconds (cached) to the max timeout.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
#: Seconds; a healthy loop lags well under a millisecond.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Events waiting in a mailbox, observed at every enqueue.
DEPTH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONVERSATION_STATES = ("starting", "running", "restarting", "stopping")
#: How a conversation ends (the ``outcome`` label; the supervisor counts nothing else):
#: the platform ended it (or no longer knows it), it idled out, an operator stopped it,
#: it failed (over its restart budget, a permanent link error), or a drain cancelled it.
OUTCOMES = ("completed", "idle", "stopped", "failed", "cancelled")
#: Why an actor restarts (the ``reason`` label): it crashed, a ``permanent`` agent's
#: conversation idled out, or an operator asked (``Supervisor.restart``).
RESTART_REASONS = ("crash", "idle", "manual")


#: The ``event`` label of the message counters, by event class.
EVENT_LABELS: dict[type[Any], str] = {
    ev.LinkUp: "link_up",
    ev.LinkDown: "link_down",
    ev.ConversationStarted: "conversation_started",
    ev.ConversationEnded: "conversation_ended",
    ev.ToolCallRequest: "tool_call_request",
    ev.CustomerMessage: "customer_message",
    ev.ConfigUpdate: "config_update",
    ev.PlatformNotice: "platform_notice",
    ev.PlatformError: "platform_error",
    ev.UnknownEvent: "unknown",
    ev.ProtocolViolation: "protocol_violation",
    ev.RegisterTools: "register_tools",
    ev.ToolResult: "tool_result",
    ev.ToolFailure: "tool_failure",
    ev.ReplyChunk: "reply_chunk",
    ev.ReplyComplete: "reply_complete",
    ev.ReplyFailure: "reply_failure",
}


class Metrics:
    """Every collector the runtime updates, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        reg = REGISTRY if registry is None else registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._received: dict[type[Any], CounterChild] = {}
        self._sent: dict[type[Any], CounterChild] = {}
        self._tool_series: dict[tuple[str, str], tuple[CounterChild, HistogramChild]] = {}
        self.registry = reg
        if process and reg is not REGISTRY:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
        self.conversations = Gauge(
            "orchestrator_conversations",
            "Conversations hosted now, by state and agent.",
            ["state", "agent"],
            registry=reg,
        )
        self.conversations_started = Counter(
            "orchestrator_conversations_started_total",
            "Conversations admitted and started, by agent.",
            ["agent"],
            registry=reg,
        )
        self.conversations_ended = Counter(
            "orchestrator_conversations_ended_total",
            f"Conversations ended, by agent and outcome ({', '.join(OUTCOMES)}).",
            ["agent", "outcome"],
            registry=reg,
        )
        self.restarts = Counter(
            "orchestrator_actor_restarts_total",
            f"Actor restarts, by agent and reason ({', '.join(RESTART_REASONS)}).",
            ["agent", "reason"],
            registry=reg,
        )
        self.admissions_rejected = Counter(
            "orchestrator_admissions_rejected_total",
            "Conversations refused admission, by reason.",
            ["reason"],
            registry=reg,
        )
        self.mailbox_depth = FastHistogram(
            "orchestrator_mailbox_depth",
            "Events already waiting in a mailbox when one more is enqueued.",
            buckets=DEPTH_BUCKETS,
            registry=reg,
        )
        self._depth: HistogramChild = self.mailbox_depth.labels()
        self.mailbox_overflows = Counter(
            "orchestrator_mailbox_overflows_total",
            "Events dropped or refused by a full mailbox, by policy.",
            ["policy"],
            registry=reg,
        )
        self.messages_in = FastCounter(
            "orchestrator_messages_received_total",
            "Platform messages received, by event type.",
            ["event"],
            registry=reg,
        )
        self.messages_out = FastCounter(
            "orchestrator_messages_sent_total",
            "Messages sent to the platform, by event type.",
            ["event"],
            registry=reg,
        )
        self.messages_unsent = Counter(
            "orchestrator_messages_unsent_total",
            "Messages not sent because the platform had ended the conversation, by event type.",
            ["event"],
            registry=reg,
        )
        self.tool_calls = FastCounter(
            "orchestrator_tool_calls_total",
            "Tool calls, by tool and outcome"
            " (ok, error, timeout, invalid_arguments, unknown_tool, cached, joined).",
            ["tool", "outcome"],
            registry=reg,
        )
        self.tool_duration = FastHistogram(
            "orchestrator_tool_duration_seconds",
            "Time from a tool call's start to its result, by tool.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.reconnects = Counter(
            "orchestrator_reconnects_total",
            "Reconnection attempts after a dropped link, by reason.",
            ["reason"],
            registry=reg,
        )
        self.handshake_failures = Counter(
            "orchestrator_handshake_failures_total",
            "Failed WebSocket or join handshakes, by reason.",
            ["reason"],
            registry=reg,
        )
        self.protocol_errors = Counter(
            "orchestrator_protocol_errors_total",
            "Frames or events rejected as protocol errors, by reason.",
            ["reason"],
            registry=reg,
        )
        self.platform_refusals = Counter(
            "orchestrator_platform_refusals_total",
            "Pushes for a conversation the platform refused, by reason: conversation_ended, or"
            " unknown_conversation (it lost the conversation, e.g. in a restart), each of which ends"
            " the conversation as completed; other.",
            ["reason"],
            registry=reg,
        )
        self.events_ignored = Counter(
            "orchestrator_events_ignored_total",
            "Platform events not acted on (unknown agent, duplicate, foreign conversation).",
            ["reason"],
            registry=reg,
        )
        self.breaker_open = Gauge(
            "orchestrator_breaker_open",
            "1 while the process-wide restart breaker is open and admission is stopped.",
            registry=reg,
        )
        self.draining = Gauge(
            "orchestrator_draining",
            "1 while the process is draining after a shutdown signal.",
            registry=reg,
        )
        self.loop_lag = Histogram(
            "orchestrator_event_loop_lag_seconds",
            "How late the event loop ran a periodic tick: time the loop was blocked.",
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.ready = Gauge(
            "orchestrator_ready",
            "1 while /readyz answers 200; refreshed by the HTTP app on every scrape and probe.",
            registry=reg,
        )
        self.build_info = Gauge(
            "orchestrator_build_info",
            "Always 1; the version label says which orchestrator release is running.",
            ["version"],
            registry=reg,
        )
        self.blocking_tools = Counter(
            "orchestrator_blocking_tool_detections_total",
            "Async tools caught blocking the event loop, by tool.",
            ["tool"],
            registry=reg,
        )

    def received(self, event: object, depth: int) -> None:
        """Count one inbound event, and the mailbox depth it found (the per-event hot path)."""
        child = self._received.get(type(event))
        if child is None:
            label = EVENT_LABELS.get(type(event), "unknown")
            child = self._received[type(event)] = self.messages_in.labels(label)
        child.value += 1
        depth_ = self._depth  # HistogramChild.observe written out: once per event
        depth_.counts[bisect_left(depth_.bounds, depth)] += 1
        depth_.total += depth

    def tool_finished(self, tool: str, outcome: str, seconds: float) -> None:
        """Count one tool call that ran, by outcome, and time it."""
        series = self._tool_series.get((tool, outcome))
        if series is None:
            series = (self.tool_calls.labels(tool, outcome), self.tool_duration.labels(tool))
            self._tool_series[(tool, outcome)] = series
        series[0].value += 1
        duration = series[1]  # HistogramChild.observe written out: once per call
        duration.counts[bisect_left(duration.bounds, seconds)] += 1
        duration.total += seconds

    def sent(self, event: object) -> None:
        """Count one outbound event."""
        child = self._sent.get(type(event))
        if child is None:
            child = self._sent[type(event)] = self.messages_out.labels(EVENT_LABELS[type(event)])
        child.value += 1

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the hot paths skip prometheus' lock and lookup."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def tool_label(self, name: str, known: bool) -> str:
        """The label for a tool name: the name if an agent defines it, else :data:`UNKNOWN`."""
        return name if known else UNKNOWN
