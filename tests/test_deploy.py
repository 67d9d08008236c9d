"""deploy/: the scrape, the alert rules and the dashboard against metrics.py and promtool.

promtool comes from Debian's ``prometheus`` package (``/usr/bin/promtool``). The
tests that need it skip locally when it is missing and fail in CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.agent import Agent
from orchestrator.agent import tool as tool_decorator
from orchestrator.errors import ToolError
from orchestrator.http import make_app
from orchestrator.metrics import CONVERSATION_STATES, Metrics
from orchestrator.supervisor import Supervisor
from orchestrator.testing import MemoryPlatform

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = DEPLOY / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus.yml"

AGENTS = ("support", "sales", "billing")
TOOLS = tuple(f"tool_{n:02d}" for n in range(40))
TOOL_OUTCOMES = ("ok", "error", "timeout", "invalid_arguments", "unknown_tool", "cached")
END_OUTCOMES = ("completed", "failed", "cancelled", "idle")
EVENTS = ("tool_call_request", "conversation_lifecycle", "config_update", "heartbeat")
#: Labels PromQL may group by besides the metrics' own: target labels and buckets.
EXTRA_LABELS = {"job", "instance", "le"}
#: Synthesised by Prometheus itself for every target.
PROMETHEUS_SERIES = {"up"}

Series = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: apt-get install -y prometheus (Debian) puts it in /usr/bin"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, input=stdin.decode() if stdin else None, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def populate(metrics: Metrics, conversations: int) -> None:
    """Drive every collector as ``conversations`` conversations would, labels and all."""
    for n in range(conversations):
        agent = AGENTS[n % len(AGENTS)]
        metrics.conversations_started.labels(agent).inc()
        metrics.conversations.labels(CONVERSATION_STATES[n % 4], agent).inc()
        metrics.conversations_ended.labels(agent, END_OUTCOMES[n % 4]).inc()
        metrics.restarts.labels(agent, ("crash", "link", "manual")[n % 3]).inc()
        metrics.admissions_rejected.labels(("capacity", "memory", "draining")[n % 3]).inc()
        metrics.mailbox_overflows.labels(("drop_oldest", "reject")[n % 2]).inc()
        metrics.reconnects.labels(("closed", "heartbeat_timeout")[n % 2]).inc()
        metrics.handshake_failures.labels(("auth", "timeout")[n % 2]).inc()
        metrics.protocol_errors.labels("bad_json").inc()
        metrics.events_ignored.labels("duplicate").inc()
        for depth in range(n % 20):
            metrics.mailbox_depth.observe(depth)
        for event in EVENTS:
            metrics.messages_in.labels(event).inc()
            metrics.messages_out.labels(event).inc()
        for t, tool in enumerate(TOOLS):  # every tool, every outcome by 6 conversations
            metrics.tool_calls.labels(tool, TOOL_OUTCOMES[(n + t) % len(TOOL_OUTCOMES)]).inc()
            metrics.tool_duration.labels(tool).observe(0.001 * ((n + t) % 500))
        metrics.blocking_tools.labels(TOOLS[n % len(TOOLS)]).inc()
        metrics.loop_lag.observe(0.0001 * (n % 50))
    metrics.breaker_open.set(0)
    metrics.draining.set(0)
    metrics.ready.set(1)
    metrics.build_info.labels(version="0.1.0").set(1)


def _scrape(conversations: int) -> bytes:
    metrics = Metrics(CollectorRegistry())
    populate(metrics, conversations)
    return generate_latest(metrics.registry)


def _series(text: bytes) -> set[Series]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_scrape_of_1000_conversations_passes_promtool_check_metrics(promtool: str) -> None:
    _run(promtool, "check", "metrics", stdin=_scrape(1000))


def test_series_do_not_grow_with_conversations() -> None:
    small, large = _series(_scrape(100)), _series(_scrape(1000))
    assert len(small) == len(large)
    assert small == large
    assert len({labels for name, labels in large if name.endswith("tool_calls_total")}) == 240


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(ALERTS))
    assert "SUCCESS" in result.stdout


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = _run(promtool, "test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_is_valid(promtool: str) -> None:
    _run(promtool, "check", "config", str(PROMETHEUS))


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each dashboard query, Grafana variables filled in, as a recording rule for promtool."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": _as_promql(expr)}
        for n, expr in enumerate(_dashboard_exprs())
    ]
    rules_file = tmp_path / "dashboard_rules.yml"  # JSON is YAML
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(promtool, "check", "rules", str(rules_file))


def test_every_metric_referenced_by_deploy_exists() -> None:
    known = _sample_names() | PROMETHEUS_SERIES
    texts = {"alerts.yml": ALERTS.read_text(), DASHBOARD.name: DASHBOARD.read_text()}
    for name, text in texts.items():
        referenced = set(re.findall(r"\b(?:orchestrator|process|python)_[a-z0-9_]+\b", text))
        assert referenced, name
        assert referenced <= known, f"{name} uses unknown metrics {sorted(referenced - known)}"


def test_every_label_grouped_on_exists() -> None:
    known = _label_names() | EXTRA_LABELS
    for path in (ALERTS, DASHBOARD):
        for clause in re.findall(r"\bby \(([^)]*)\)", path.read_text()):
            labels = {label.strip() for label in clause.split(",")}
            assert labels <= known, f"{path.name}: by ({clause}) uses unknown labels"


def test_alerts_cover_the_required_conditions() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))
    assert alerts >= {
        "OrchestratorDown",
        "OrchestratorNotReady",
        "OrchestratorBreakerOpen",
        "OrchestratorHighToolErrorRatio",
        "OrchestratorRestartStorm",
        "OrchestratorLoopLagHigh",
        "OrchestratorAdmissionsRejected",
        "OrchestratorReconnectStorm",
    }
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == alerts


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in (
        "state",
        "outcome",
        "restarts",
        "rejected",
        "error ratio",
        "p99",
        "mailbox",
        "reconnects",
        "handshake",
        "breaker",
        "loop lag",
        "memory",
        "cpu",
    ):
        assert topic in titles, topic


# ---------------------------------------------------------------- helpers


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    assert exprs
    return exprs


def _as_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")


def _sample_names() -> set[str]:
    """Every sample name the runtime's registry can expose, process collectors included."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    registry = CollectorRegistry()
    Metrics(registry, process=True)
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))
    }


def _label_names() -> set[str]:
    metrics = Metrics(CollectorRegistry())
    populate(metrics, 10)
    return {label for _, labels in _series(generate_latest(metrics.registry)) for label, _ in labels}


def _forty_tool_agent() -> type[Agent]:
    """An agent class with 40 tools, built the way a user would write them."""

    def make(i: int) -> Any:
        async def body(self: Agent, text: str) -> str:
            if i % 7 == 0:
                raise ToolError(f"tool {i} refuses")
            return text

        body.__name__ = f"tool_{i:02d}"
        body.__qualname__ = f"FortyTools.tool_{i:02d}"
        body.__annotations__ = {"text": "str", "return": "str"}
        return tool_decorator(f"Tool number {i}")(body)

    namespace: dict[str, Any] = {f"tool_{i:02d}": make(i) for i in range(40)}
    namespace["agent_id"] = "forty"
    return type("FortyTools", (Agent,), namespace)


async def _live_scrape(conversations: int) -> bytes:
    """A scrape of a real supervisor hosting ``conversations`` actors of a 40-tool agent."""
    forty = _forty_tool_agent()
    platform = MemoryPlatform()
    metrics = Metrics(CollectorRegistry(), process=True)
    supervisor = Supervisor([forty], platform.connect, metrics=metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        for n in range(conversations):
            supervisor.start_conversation_nowait(f"c{n}", "forty")
        await trio.testing.wait_all_tasks_blocked()
        for n in range(0, conversations, 5):
            peer = platform.peer(f"c{n}")
            await peer.call_tool(f"x{n}", f"tool_{n % 40:02d}", {"text": "hi"})
            await peer.call_tool(f"y{n}", "no_such_tool", {})
        app = make_app(metrics, supervisor, version="test")
        body = await _asgi_get(app, "/metrics")
        nursery.cancel_scope.cancel()
    return body


async def _asgi_get(app: Any, path: str) -> bytes:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_live_scrape_of_1000_conversations_and_40_tools_passes_promtool(promtool: str) -> None:
    small, large = await _live_scrape(100), await _live_scrape(1000)
    _run(promtool, "check", "metrics", stdin=large)
    assert b'outcome="error",tool="tool_35"' in large and b'tool="unknown"' in large
    assert b"c999" not in large  # never a conversation id
    assert _series(small) == _series(large)
