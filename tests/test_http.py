"""The operations endpoint, over a real hypercorn on 127.0.0.1:0."""

from __future__ import annotations

import gzip
import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.errors import ConfigError
from orchestrator.http import MetricsApp, make_app, serve_http
from orchestrator.metrics import Metrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class FakeProvider:
    """Readiness and status under the test's control."""

    def __init__(self) -> None:
        self.ready = True
        self.reason = "ok"
        self.calls = 0

    def readiness(self) -> tuple[bool, str]:
        self.calls += 1
        return self.ready, self.reason

    def status(self) -> Mapping[str, Any]:
        return {"conversations": {"running": {"echo": 2}}, "draining": not self.ready}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def app(metrics: Metrics, provider: FakeProvider) -> MetricsApp:
    return make_app(metrics, provider, version="1.2.3")


@pytest.fixture
async def client(nursery: trio.Nursery, app: MetricsApp) -> AsyncIterator[httpx.AsyncClient]:
    port = await nursery.start(partial(serve_http, app, port=0))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        yield client


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"
    assert response.headers["content-type"].startswith("text/plain")


async def test_readyz_follows_the_provider(
    client: httpx.AsyncClient, provider: FakeProvider, registry: CollectorRegistry
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reason": "ok"}
    assert registry.get_sample_value("orchestrator_ready") == 1

    provider.ready, provider.reason = False, "breaker_open"
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": "breaker_open"}
    assert registry.get_sample_value("orchestrator_ready") == 0


async def test_metrics_scrape_shows_a_counter_from_the_registry(
    client: httpx.AsyncClient, metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.tool_calls.labels(tool="lookup_order", outcome="ok").inc(3)
    labels = {"tool": "lookup_order", "outcome": "ok"}
    assert registry.get_sample_value("orchestrator_tool_calls_total", labels) == 3

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    key = ("orchestrator_tool_calls_total", tuple(sorted(labels.items())))
    assert samples[key] == 3
    assert samples[("orchestrator_build_info", (("version", "1.2.3"),))] == 1


async def test_metrics_negotiates_openmetrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"accept": OPENMETRICS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_metrics_are_gzipped_when_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert "orchestrator_breaker_open" in response.text  # httpx decoded it

    async with client.stream("GET", "/metrics", headers={"accept-encoding": "identity"}) as raw:
        assert "content-encoding" not in raw.headers
        body = await raw.aread()
    assert not body.startswith(gzip.compress(b"")[:2])


async def test_metrics_refresh_the_ready_gauge(
    client: httpx.AsyncClient, provider: FakeProvider, registry: CollectorRegistry
) -> None:
    provider.ready, provider.reason = False, "draining"
    response = await client.get("/metrics")
    assert "orchestrator_ready 0.0" in response.text
    assert registry.get_sample_value("orchestrator_ready") == 0


async def test_status_adds_uptime_and_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/status")
    assert response.status_code == 200
    body = response.json()
    assert body["conversations"] == {"running": {"echo": 2}}
    assert body["draining"] is False
    assert body["version"] == "1.2.3"
    assert body["uptime_seconds"] >= 0


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/extra", "/favicon.ico"])
async def test_unknown_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/readyz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/healthz")
    assert response.status_code == 200
    assert response.headers["content-length"] == "3"
    assert response.content == b""


async def test_access_log_is_quiet_by_default(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator.http")
    await client.get("/healthz")
    await trio.testing.wait_all_tasks_blocked()
    assert not [r for r in caplog.records if r.name == "orchestrator.http.access"]


async def test_access_log_when_asked(
    nursery: trio.Nursery, app: MetricsApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.http")
    port = await nursery.start(partial(serve_http, app, port=0, access_log=True))
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.get(f"http://127.0.0.1:{port}/healthz")
    await trio.testing.wait_all_tasks_blocked()  # hypercorn logs after the body is sent
    access = [r for r in caplog.records if r.name == "orchestrator.http.access"]
    assert any('"GET /healthz 1.1" 200' in record.getMessage() for record in access)


async def test_cancellation_stops_the_server(app: MetricsApp) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_http, app, port=0))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()
            nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_port_in_use_is_a_config_error(app: MetricsApp) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    taken = listeners[0].socket.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot serve HTTP on 127.0.0.1:{taken}"):
            await serve_http(app, port=taken)
    finally:
        await listeners[0].aclose()


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 70000), ("127.0.0.1", -1), ("", 0)])
async def test_bad_addresses_are_config_errors(app: MetricsApp, host: str, port: int) -> None:
    with pytest.raises(ConfigError):
        await serve_http(app, host=host, port=port)


def test_serves_loopback_unless_told_otherwise() -> None:
    assert inspect.signature(serve_http).parameters["host"].default == "127.0.0.1"


async def test_uptime_runs_on_trio_time(
    autojump_clock: trio.testing.MockClock, metrics: Metrics, provider: FakeProvider
) -> None:
    app = make_app(metrics, provider, version="9")
    await trio.sleep(42)
    status, body = await _asgi_get(app, "/status")
    assert status == 200
    assert b'"uptime_seconds":42.0' in body


async def _asgi_get(app: MetricsApp, path: str) -> tuple[int, bytes]:
    """One in-process ASGI request: no socket, for tests on a mock clock."""
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await app(scope, receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])
