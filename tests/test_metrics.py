"""The collectors: names, units, bounded labels, private registries."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Metric

from orchestrator.metrics import OUTCOMES, RESTART_REASONS, UNKNOWN, Metrics

#: Labels that would make series grow with traffic, or leak credentials.
FORBIDDEN_LABELS = {"conversation_id", "conversation", "customer_id", "customer", "token", "url", "call_id"}

#: The final list of metric families, as documented in the README.
EXPECTED = {
    "orchestrator_actor_restarts": ("counter", {"agent", "reason"}),
    "orchestrator_admissions_rejected": ("counter", {"reason"}),
    "orchestrator_blocking_tool_detections": ("counter", {"tool"}),
    "orchestrator_breaker_open": ("gauge", set()),
    "orchestrator_build_info": ("gauge", {"version"}),
    "orchestrator_conversations": ("gauge", {"state", "agent"}),
    "orchestrator_conversations_ended": ("counter", {"agent", "outcome"}),
    "orchestrator_conversations_started": ("counter", {"agent"}),
    "orchestrator_draining": ("gauge", set()),
    "orchestrator_event_loop_lag_seconds": ("histogram", set()),
    "orchestrator_events_ignored": ("counter", {"reason"}),
    "orchestrator_handshake_failures": ("counter", {"reason"}),
    "orchestrator_mailbox_depth": ("histogram", set()),
    "orchestrator_mailbox_overflows": ("counter", {"policy"}),
    "orchestrator_messages_received": ("counter", {"event"}),
    "orchestrator_messages_sent": ("counter", {"event"}),
    "orchestrator_messages_unsent": ("counter", {"event"}),
    "orchestrator_platform_refusals": ("counter", {"reason"}),
    "orchestrator_protocol_errors": ("counter", {"reason"}),
    "orchestrator_ready": ("gauge", set()),
    "orchestrator_reconnects": ("counter", {"reason"}),
    "orchestrator_tool_calls": ("counter", {"tool", "outcome"}),
    "orchestrator_tool_duration_seconds": ("histogram", {"tool"}),
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def _families(registry: CollectorRegistry) -> dict[str, Metric]:
    return {family.name: family for family in registry.collect()}


def _label_names(metrics: Metrics) -> dict[str, set[str]]:
    """Label names per family, read from the collectors (no children needed)."""
    names: dict[str, set[str]] = {}
    for value in (getattr(metrics, name) for name in dir(metrics) if not name.startswith("__")):
        labelnames = getattr(value, "_labelnames", None)
        name = getattr(value, "_name", None)
        if labelnames is not None and name is not None:
            names[name] = set(labelnames)
    return names


def test_the_metric_families_are_the_documented_ones(metrics: Metrics, registry: CollectorRegistry) -> None:
    families = _families(registry)
    assert {name: family.type for name, family in families.items()} == {
        name: kind for name, (kind, _) in EXPECTED.items()
    }
    labels = _label_names(metrics)
    for name, (_, expected_labels) in EXPECTED.items():
        assert labels[name] == expected_labels, name


def test_names_follow_prometheus_practice(registry: CollectorRegistry) -> None:
    Metrics(registry)
    for family in registry.collect():
        assert re.fullmatch(r"orchestrator_[a-z0-9_]+", family.name), family.name
        assert family.documentation, family.name
        if family.type == "histogram" and "depth" not in family.name:
            assert family.name.endswith("_seconds"), family.name  # base unit


def test_no_label_can_identify_a_conversation_or_carry_a_secret(metrics: Metrics) -> None:
    for name, labels in _label_names(metrics).items():
        assert not labels & FORBIDDEN_LABELS, name


def test_each_metrics_object_owns_its_registry() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.tool_calls.labels("lookup", "ok").inc()
    labels = {"tool": "lookup", "outcome": "ok"}
    assert first.registry.get_sample_value("orchestrator_tool_calls_total", labels) == 1
    assert second.registry.get_sample_value("orchestrator_tool_calls_total", labels) is None


def test_collectors_record_what_they_are_given(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.conversations.labels("running", "support").set(3)
    metrics.conversations_ended.labels("support", "completed").inc()
    metrics.tool_duration.labels("lookup").observe(0.2)
    metrics.loop_lag.observe(0.3)
    metrics.mailbox_depth.observe(5)
    assert (
        registry.get_sample_value("orchestrator_conversations", {"state": "running", "agent": "support"}) == 3
    )
    assert (
        registry.get_sample_value(
            "orchestrator_conversations_ended_total", {"agent": "support", "outcome": "completed"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "orchestrator_tool_duration_seconds_bucket", {"tool": "lookup", "le": "0.25"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "orchestrator_tool_duration_seconds_bucket", {"tool": "lookup", "le": "0.1"}
        )
        == 0
    )
    assert registry.get_sample_value("orchestrator_event_loop_lag_seconds_bucket", {"le": "0.25"}) == 0
    assert registry.get_sample_value("orchestrator_event_loop_lag_seconds_bucket", {"le": "0.5"}) == 1
    assert registry.get_sample_value("orchestrator_mailbox_depth_bucket", {"le": "8.0"}) == 1


def test_process_collectors_are_opt_in() -> None:
    without = Metrics(CollectorRegistry())
    with_process = Metrics(CollectorRegistry(), process=True)
    assert not any(name.startswith("process_") for name in _families(without.registry))
    assert with_process.registry.get_sample_value("process_resident_memory_bytes")
    assert with_process.registry.get_sample_value("process_cpu_seconds_total") is not None


def test_unknown_tool_names_share_one_label(metrics: Metrics) -> None:
    assert metrics.tool_label("lookup", known=True) == "lookup"
    assert metrics.tool_label("whatever-the-network-sent", known=False) == UNKNOWN


def _listed(help_text: str) -> list[str]:
    """The label values a HELP text lists in its parentheses."""
    match = re.search(r"\(([a-z_, ]+)\)\.$", help_text)
    assert match, help_text
    return match.group(1).split(", ")


def test_help_lists_exactly_the_outcomes_and_restart_reasons_the_supervisor_counts(
    registry: CollectorRegistry,
) -> None:
    # Found by an operator: the restarts' HELP said (crash, link, manual) where the code
    # and the README say crash, idle, manual; the ends' HELP left out stopped.
    Metrics(registry)
    families = _families(registry)
    assert _listed(families["orchestrator_conversations_ended"].documentation) == list(OUTCOMES)
    assert _listed(families["orchestrator_actor_restarts"].documentation) == list(RESTART_REASONS)
    assert set(OUTCOMES) == {"completed", "idle", "stopped", "failed", "cancelled"}
    assert set(RESTART_REASONS) == {"crash", "idle", "manual"}
