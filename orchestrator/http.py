"""The operations endpoint: an ASGI app served by hypercorn's trio worker.

Four read-only routes, for Prometheus and for the orchestrator of the process
(Kubernetes, systemd, a load balancer):

=============  ==============================================================
``/metrics``   the registry in Prometheus text format, or OpenMetrics when the
               ``Accept`` header asks for it; gzip when accepted
``/healthz``   200 ``ok`` while the process (and its event loop) is alive
``/readyz``    200 or 503 with ``{"ready": ..., "reason": ...}``
``/status``    JSON from the :class:`StatusProvider`, plus uptime and version
=============  ==============================================================

Other paths are 404, other methods 405. The app never blocks the event loop:
every route answers from in-memory state, and ``/metrics`` is rendered in a
worker thread. Its cost depends on the number of series, which labels keep
bounded, never on the number of conversations.

:func:`serve_http` runs the app in the caller's nursery, on loopback unless a
host is passed explicitly.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from functools import partial
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from orchestrator.errors import ConfigError
from orchestrator.metrics import Metrics

__all__ = ["READINESS_REASONS", "MetricsApp", "StatusProvider", "make_app", "serve_http"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

#: Readiness reasons a provider may give; anything but ``ok`` means 503.
READINESS_REASONS = ("ok", "draining", "breaker_open", "admission_stopped", "platform_not_reached")

_ALLOWED_METHODS = ("GET", "HEAD")
_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"
#: Below this size a gzip round trip costs more than the bytes it saves.
_GZIP_MIN_BYTES = 1024

log = logging.getLogger(__name__)


class StatusProvider(Protocol):
    """What the app asks the supervisor; both calls are synchronous and cheap."""

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``; reason is one of :data:`READINESS_REASONS`."""
        ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-ready summary of the process: conversations, restarts, breaker, draining."""
        ...


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes, *extra: tuple[bytes, bytes]):
        self.status = status
        self.body = body
        self.headers = [(b"content-type", content_type), *extra]


def _json(status: int, value: Mapping[str, Any]) -> _Response:
    body = json.dumps(value, separators=(",", ":")).encode() + b"\n"
    return _Response(status, body, _JSON, (b"cache-control", b"no-store"))


class MetricsApp:
    """The ASGI application; build it with :func:`make_app`.

    Uptime counts from the moment the app was made inside a trio run, or, if it
    was made outside one, from the server's lifespan startup.
    """

    def __init__(self, metrics: Metrics, provider: StatusProvider, *, version: str) -> None:
        self._metrics = metrics
        self._provider = provider
        self._version = version
        self._started_at: float | None = None
        with contextlib.suppress(RuntimeError):  # outside trio.run: start at lifespan startup
            self._started_at = trio.current_time()
        metrics.build_info.labels(version=version).set(1)
        # One render at a time: concurrent scrapes queue instead of piling up threads.
        self._render_limiter = trio.CapacityLimiter(1)
        self._routes: dict[str, Callable[[Headers], Awaitable[_Response]]] = {
            "/metrics": self._get_metrics,
            "/healthz": self._get_healthz,
            "/readyz": self._get_readyz,
            "/status": self._get_status,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})

    def uptime(self) -> float:
        """Seconds since start, on trio's clock (so a mock clock moves it)."""
        if self._started_at is None:
            self._started_at = trio.current_time()
        return trio.current_time() - self._started_at

    async def _handle(self, method: str, path: str, headers: Headers) -> _Response:
        """Answer one request from memory; only /metrics leaves the event loop."""
        route = self._routes.get(path)
        if route is None:
            return _Response(404, b"not found\n", _TEXT)
        if method not in _ALLOWED_METHODS:
            return _Response(405, b"method not allowed\n", _TEXT, (b"allow", b"GET, HEAD"))
        return await route(headers)

    async def _http(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        response = await self._handle(method, scope["path"], scope.get("headers", ()))
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._started_at is None:
                    self._started_at = trio.current_time()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _readiness(self) -> tuple[bool, str]:
        ready, reason = self._provider.readiness()
        self._metrics.ready.set(1 if ready else 0)
        return ready, reason

    async def _get_metrics(self, headers: Headers) -> _Response:
        self._readiness()
        encoder, content_type = choose_encoder(_header(headers, b"accept"))
        compress = gzip_accepted(_header(headers, b"accept-encoding"))
        # Rendering costs tens of milliseconds at a few thousand series: done on
        # the loop it would stall every conversation once per scrape. Collectors
        # are thread-safe; an abandoned render finishes harmlessly in its thread.
        body, gzipped = await trio.to_thread.run_sync(
            _render,
            encoder,
            self._metrics.registry,
            compress,
            limiter=self._render_limiter,
            abandon_on_cancel=True,
        )
        extra: list[tuple[bytes, bytes]] = [(b"vary", b"accept, accept-encoding")]
        if gzipped:
            extra.append((b"content-encoding", b"gzip"))
        return _Response(200, body, content_type.encode(), *extra)

    async def _get_healthz(self, headers: Headers) -> _Response:
        return _Response(200, b"ok\n", _TEXT)

    async def _get_readyz(self, headers: Headers) -> _Response:
        ready, reason = self._readiness()
        return _json(200 if ready else 503, {"ready": ready, "reason": reason})

    async def _get_status(self, headers: Headers) -> _Response:
        status = dict(self._provider.status())
        status["uptime_seconds"] = round(self.uptime(), 3)
        status["version"] = self._version
        return _json(200, status)


def _render(
    encoder: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry, compress: bool
) -> tuple[bytes, bool]:
    """Encode the registry (in a worker thread); gzip it when asked and worth it."""
    body = encoder(registry)
    if compress and len(body) >= _GZIP_MIN_BYTES:
        return gzip.compress(body, compresslevel=6), True
    return body, False


def _header(headers: Headers, name: bytes) -> str:
    """The first value of a request header, decoded; ``""`` when absent."""
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def make_app(metrics: Metrics, provider: StatusProvider, *, version: str) -> MetricsApp:
    """The ASGI app serving ``metrics.registry`` and the provider's health and status.

    Also sets ``orchestrator_build_info{version=...}`` to 1, and keeps
    ``orchestrator_ready`` in step with the provider on every scrape and probe.
    """
    return MetricsApp(metrics, provider, version=version)


def _bind(host: str, port: int) -> str:
    if not 0 <= port <= 65535:
        raise ConfigError(f"HTTP port must be 0-65535, got {port}")
    if not host:
        raise ConfigError("HTTP host must not be empty (use 127.0.0.1, or 0.0.0.0 for all)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    app: MetricsApp,
    *,
    host: str = "127.0.0.1",
    port: int = 9464,
    access_log: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until cancelled.

    Listens on loopback unless ``host`` says otherwise (``0.0.0.0`` or ``::`` for
    every interface). ``task_status.started`` receives the bound port, which is
    the real one when ``port`` is 0. Requests are not logged unless
    ``access_log`` is set (logger ``orchestrator.http.access``); hypercorn's own
    messages go to ``orchestrator.http``.

    Cancellation closes the listener and in-flight connections at once: every
    route answers from memory, so there is nothing worth a graceful wait.

    Raises :class:`ConfigError` when the address cannot be bound (in use, not
    local, no permission).
    """
    config = Config()
    config.bind = [_bind(host, port)]
    config.accesslog = logging.getLogger("orchestrator.http.access") if access_log else None
    config.errorlog = logging.getLogger("orchestrator.http")
    config.include_server_header = False
    listening = False
    try:
        async with trio.open_nursery() as nursery:
            # The app reads scopes as plain mappings; hypercorn types them as TypedDicts.
            framework = cast(ASGIFramework, app)
            binds: list[str] = await nursery.start(partial(serve, framework, config, mode="asgi"))
            listening = True
            bound = urlsplit(binds[0]).port
            assert bound is not None, binds
            log.info("serving /metrics, /healthz, /readyz, /status on %s", binds[0])
            task_status.started(bound)
    except* OSError as group:
        if listening:
            raise
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise ConfigError(f"cannot serve HTTP on {config.bind[0]}: {first}") from first
