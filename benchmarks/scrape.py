"""How long a /metrics scrape takes in a process hosting many conversations.

Fills a private registry as a process with ``--conversations`` conversations
would (every collector, realistic bounded label sets, histograms observed, the
process collectors on), then times ``--scrapes`` scrapes:

* in process, through the real ASGI app (encoding cost, no sockets), in the
  Prometheus text format and in OpenMetrics;
* in process, rendered on the event loop without the app's worker thread, to
  show what the thread saves the loop ("loop stall");
* over HTTP, through hypercorn on 127.0.0.1:0 with httpx, plain and gzipped
  (Prometheus itself asks for gzip). The client runs in the same process, so
  these times include parsing the response.

Wall times swing with the host's load (printed); CPU ms per scrape does not.

Series count does not depend on the number of conversations (labels are
bounded), so neither should the time. Prints machine facts, a table, and as its
LAST line one JSON object::

    {"conversations": 10000, "series": ..., "scrape_ms_p50": ..., "scrape_ms_p99": ...}

where the scrape figures are the in-process text-format ones. Run::

    .venv/bin/python benchmarks/scrape.py [--conversations 10000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from importlib.metadata import version
from typing import Any

import httpx
import trio
import trio.lowlevel
from prometheus_client import CollectorRegistry, generate_latest

from orchestrator.http import MetricsApp, make_app, serve_http
from orchestrator.metrics import CONVERSATION_STATES, Metrics

AGENTS = ("support", "sales", "billing", "returns", "onboarding")
TOOLS = tuple(f"tool_{n:02d}" for n in range(40))
TOOL_OUTCOMES = ("ok", "error", "timeout", "invalid_arguments", "unknown_tool", "cached")
TOOL_WEIGHTS = (88, 4, 2, 2, 1, 3)
END_OUTCOMES = ("completed", "failed", "cancelled", "idle")
RESTART_REASONS = ("crash", "link", "manual")
REJECT_REASONS = ("capacity", "memory", "draining", "breaker", "duplicate", "unknown_agent")
EVENTS_IN = (
    "conversation_ready",
    "conversation_lifecycle",
    "tool_call_request",
    "config_update",
    "analytics_update",
    "hook_event",
    "connection_warning",
    "error_notification",
    "phx_reply",
    "unknown",
)
EVENTS_OUT = ("register_conversation_tools", "tool_call_response", "tool_call_error", "heartbeat")
LINK_REASONS = ("closed", "heartbeat_timeout", "connect_error", "server_error")
HANDSHAKE_REASONS = ("auth", "timeout", "http_status", "join_refused")
PROTOCOL_REASONS = ("bad_json", "frame_too_large", "frame_too_deep", "bad_shape", "unknown_topic")
IGNORED_REASONS = ("unknown_agent", "duplicate", "foreign_conversation")
OVERFLOW_POLICIES = ("block", "drop_oldest", "reject")


class Provider:
    """A ready process with a status like the supervisor's."""

    def __init__(self, conversations: int) -> None:
        self.conversations = conversations

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

    def status(self) -> Mapping[str, Any]:
        return {"conversations": {"active": self.conversations}, "draining": False}


def populate(metrics: Metrics, conversations: int, *, seed: int = 7) -> None:
    """Drive every collector as ``conversations`` live and past conversations would."""
    rng = random.Random(seed)
    for n in range(conversations):
        agent = AGENTS[n % len(AGENTS)]
        metrics.conversations_started.labels(agent).inc()
        metrics.conversations.labels(rng.choice(CONVERSATION_STATES), agent).inc()
        metrics.conversations_ended.labels(agent, rng.choice(END_OUTCOMES)).inc()
        if rng.random() < 0.05:
            metrics.restarts.labels(agent, rng.choice(RESTART_REASONS)).inc()
            metrics.reconnects.labels(rng.choice(LINK_REASONS)).inc()
        for _ in range(rng.randint(5, 30)):
            metrics.messages_in.labels(rng.choice(EVENTS_IN)).inc()
            metrics.messages_out.labels(rng.choice(EVENTS_OUT)).inc()
            metrics.mailbox_depth.observe(min(int(rng.expovariate(0.5)), 2000))
        for _ in range(rng.randint(2, 12)):
            tool = rng.choice(TOOLS)
            outcome = rng.choices(TOOL_OUTCOMES, TOOL_WEIGHTS)[0]
            metrics.tool_calls.labels(tool, outcome).inc()
            metrics.tool_duration.labels(tool).observe(rng.lognormvariate(-4, 1.5))
        metrics.loop_lag.observe(rng.expovariate(5000))
    # Every label value appears at least once, as it would over a long-lived process.
    for tool in TOOLS:
        for outcome in TOOL_OUTCOMES:
            metrics.tool_calls.labels(tool, outcome).inc()
    for reason in REJECT_REASONS:
        metrics.admissions_rejected.labels(reason).inc()
    for reason in LINK_REASONS:
        metrics.reconnects.labels(reason).inc()
    for reason in HANDSHAKE_REASONS:
        metrics.handshake_failures.labels(reason).inc()
    for reason in PROTOCOL_REASONS:
        metrics.protocol_errors.labels(reason).inc()
    for reason in IGNORED_REASONS:
        metrics.events_ignored.labels(reason).inc()
    for policy in OVERFLOW_POLICIES:
        metrics.mailbox_overflows.labels(policy).inc()
    for tool in TOOLS[:3]:
        metrics.blocking_tools.labels(tool).inc()
    metrics.breaker_open.set(0)
    metrics.draining.set(0)


def count_series(metrics: Metrics) -> int:
    return sum(1 for family in metrics.registry.collect() for _ in family.samples)


async def asgi_get(app: MetricsApp, accept: str = "") -> int:
    """One in-process GET /metrics; returns the body size."""
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        nonlocal size
        size += len(message.get("body", b""))

    headers = [(b"accept", accept.encode())] if accept else []
    await app({"type": "http", "method": "GET", "path": "/metrics", "headers": headers}, receive, send)
    return size


Timing = tuple[list[float], int, float, list[float]]


async def timed(scrapes: int, scrape: Callable[[], Awaitable[int]]) -> Timing:
    """Wall milliseconds per scrape (after two warm-up scrapes), the last body size, the
    longest the event loop was stalled meanwhile (a 1 ms ticker's worst lateness), and
    CPU milliseconds per scrape (all threads; steadier than wall time on a busy host)."""
    for _ in range(2):
        await scrape()
    times = []
    cpu = []
    size = 0
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while True:
            deadline = trio.current_time() + 0.001
            await trio.sleep_until(deadline)
            worst = max(worst, trio.current_time() - deadline)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for _ in range(scrapes):
            began, began_cpu = time.perf_counter(), time.process_time()
            size = await scrape()
            times.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
        nursery.cancel_scope.cancel()
    return times, size, worst * 1000, cpu


async def inline_render(metrics: Metrics) -> int:
    """What a scrape would cost the loop if rendered on it, for comparison."""
    await trio.lowlevel.checkpoint()
    return len(generate_latest(metrics.registry))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "trio": version("trio"),
        "hypercorn": version("hypercorn"),
        "prometheus_client": version("prometheus-client"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


async def main(conversations: int, scrapes: int) -> dict[str, Any]:
    metrics = Metrics(CollectorRegistry(), process=True)
    began = time.perf_counter()
    populate(metrics, conversations)
    fill_s = time.perf_counter() - began
    app = make_app(metrics, Provider(conversations), version="bench")
    series = count_series(metrics)
    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    results: dict[str, Timing] = {}
    results["asgi text"] = await timed(scrapes, partial(asgi_get, app))
    results["asgi openmetrics"] = await timed(scrapes, partial(asgi_get, app, openmetrics))
    results["inline, no thread"] = await timed(scrapes, partial(inline_render, metrics))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, app, port=0))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:

            async def http_get(encoding: str) -> int:
                response = await client.get("/metrics", headers={"accept-encoding": encoding})
                response.raise_for_status()
                return len(response.content)  # decoded size

            results["http text"] = await timed(scrapes, partial(http_get, "identity"))
            results["http text gzip"] = await timed(scrapes, partial(http_get, "gzip"))
        nursery.cancel_scope.cancel()

    facts = machine()
    print("machine:", ", ".join(f"{key}={value}" for key, value in facts.items()))
    print(f"registry: {conversations} conversations filled in {fill_s:.1f} s, {series} series")
    print(f"{scrapes} scrapes per mode (after 2 warm-up)")
    print(
        f"{'mode':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} {'bytes':>9}"
        f" {'loop stall max ms':>18} {'cpu ms p50':>10}"
    )
    for mode, (times, size, stall, cpu) in results.items():
        print(
            f"{mode:<18} {statistics.median(times):>8.2f} {percentile(times, 0.99):>8.2f}"
            f" {max(times):>8.2f} {statistics.fmean(times):>8.2f} {size:>9} {stall:>18.2f}"
            f" {statistics.median(cpu):>10.2f}"
        )
    text_times = results["asgi text"][0]
    http_times = results["http text gzip"][0]
    return {
        "conversations": conversations,
        "series": series,
        "scrape_ms_p50": round(statistics.median(text_times), 3),
        "scrape_ms_p99": round(percentile(text_times, 0.99), 3),
        "http_gzip_ms_p50": round(statistics.median(http_times), 3),
        "http_gzip_ms_p99": round(percentile(http_times, 0.99), 3),
        "scrape_cpu_ms_p50": round(statistics.median(results["asgi text"][3]), 3),
        "loop_stall_ms_max": round(results["asgi text"][2], 3),
        "inline_loop_stall_ms_max": round(results["inline, no thread"][2], 3),
        "scrapes": scrapes,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    summary = trio.run(main, args.conversations, args.scrapes)
    sys.stdout.flush()
    print(json.dumps(summary))
