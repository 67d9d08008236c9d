"""A small LLM client interface and its OpenAI-compatible HTTP implementation.

Participants and the judge only see :class:`LLMClient`: ``await complete(request)``
returns a :class:`Completion`. Implementations:

* :class:`OpenAIClient` — ``POST {base_url}/chat/completions`` with httpx (under
  trio through anyio). Rate-limited per provider (one client, and so one
  :class:`RateLimiter`, per provider: share it), retried with full-jitter
  backoff on 429/5xx/transport errors, timed out with trio's clock.
* :class:`~.cache.CachedLLMClient` — a disk cache in front of any client.
* :class:`LangChainClient` — wraps a LangChain runnable; ``invoke`` runs in a
  worker thread so asyncio never enters the trio loop.

Settings come from :class:`LLMSettings` (``from_env``: ``ORCHESTRATOR_LLM_BASE_URL``,
``ORCHESTRATOR_LLM_MODEL``, ``ORCHESTRATOR_LLM_API_KEY``, falling back to
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``). The API key goes in one header and
nowhere else: not in reprs, errors, cache files or reports.

Seeds: the request's seed (else the settings') is sent offset by the request's
``variant`` (the sample number), so the k samples of a scenario differ.
"""

from __future__ import annotations

import abc
import os
import random
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpx
import trio

from ..backoff import BackoffPolicy
from .errors import LLMError, LLMTimeout

_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def _tuple(items: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
    return tuple(items)


@attrs.frozen
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@attrs.frozen
class CompletionRequest:
    """What to complete. ``variant`` salts the cache key and the seed; it is not sent."""

    messages: tuple[ChatMessage, ...] = attrs.field(converter=_tuple)
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    json_mode: bool = False
    variant: int = 0


@attrs.frozen
class Completion:
    """The assistant's reply text."""

    content: str


class LLMClient(abc.ABC):
    """Completes chat requests. ``identity`` names provider and model (never the key)."""

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Provider and model, e.g. ``https://api.openai.com/v1#gpt-4o-mini``."""

    @abc.abstractmethod
    async def complete(self, request: CompletionRequest) -> Completion:
        """The completion; raises :class:`LLMError` / :class:`LLMTimeout`. Cancellable."""


@attrs.frozen
class LLMSettings:
    """Where and how to reach an OpenAI-compatible provider."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str | None = attrs.field(default=None, repr=False)
    timeout_seconds: float = 60.0
    requests_per_minute: float | None = None
    max_retries: int = 2
    seed: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LLMSettings:
        """Settings from the environment; keyword ``overrides`` win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "base_url": env.get("ORCHESTRATOR_LLM_BASE_URL") or env.get("OPENAI_BASE_URL"),
            "model": env.get("ORCHESTRATOR_LLM_MODEL"),
            "api_key": env.get("ORCHESTRATOR_LLM_API_KEY") or env.get("OPENAI_API_KEY"),
        }
        values.update(overrides)
        return cls(**{key: value for key, value in values.items() if value is not None})

    @property
    def endpoint(self) -> str:
        """``base_url`` without credentials, query or trailing slash: safe to show."""
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL:
            return "<invalid url>"
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}{url.path.rstrip('/')}"


@attrs.define(eq=False)
class RateLimiter:
    """A token bucket on trio's clock: ``rate`` requests per second, bursts of ``burst``.

    Waiters are served in order (a lock is held across the wait).
    """

    rate: float
    burst: int = 1
    _tokens: float = attrs.field(init=False, default=0.0)
    _updated: float | None = attrs.field(init=False, default=None)
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    async def acquire(self) -> None:
        """Wait for a token. Cancellation leaves the bucket as it was."""
        async with self._lock:
            now = trio.current_time()
            if self._updated is None:
                self._tokens, self._updated = float(self.burst), now
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                await trio.sleep((1 - self._tokens) / self.rate)
                self._tokens, self._updated = 1.0, trio.current_time()
            self._tokens -= 1


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class OpenAIClient(LLMClient):
    """An OpenAI-compatible chat-completions client. Use as ``async with``, or ``aclose()``."""

    def __init__(self, settings: LLMSettings, *, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        rpm = settings.requests_per_minute
        self._limiter = limiter or (RateLimiter(rpm / 60.0) if rpm else None)
        self._http: httpx.AsyncClient | None = None
        self._backoff = BackoffPolicy(base=0.5, cap=8.0)
        self._rng = random.Random()

    @property
    def identity(self) -> str:
        return f"{self.settings.endpoint}#{self.settings.model}"

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _payload(self, request: CompletionRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        seed = request.seed if request.seed is not None else self.settings.seed
        if seed is not None:
            payload["seed"] = seed + request.variant
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.json_mode:
            payload["response_format"] = {"type": "json_object"}
        return payload

    async def complete(self, request: CompletionRequest) -> Completion:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=None)
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        url = f"{self.settings.base_url.rstrip('/')}/chat/completions"
        payload = self._payload(request)
        attempt = 0
        while True:
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                response = await self._post(url, payload, headers)
            except LLMError:
                if attempt >= self.settings.max_retries:
                    raise
            else:
                if response.status_code not in _RETRY_STATUSES or attempt >= self.settings.max_retries:
                    return self._parse(response)
            await trio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def _post(self, url: str, payload: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        assert self._http is not None
        where = self.settings.endpoint
        try:
            with trio.fail_after(self.settings.timeout_seconds):
                return await self._http.post(url, json=payload, headers=headers)
        except trio.TooSlowError as exc:
            raise LLMTimeout(f"{where}: no answer within {self.settings.timeout_seconds:g} s") from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"{where}: {type(exc).__name__}: {exc}") from exc

    def _parse(self, response: httpx.Response) -> Completion:
        where, key = self.settings.endpoint, self.settings.api_key
        if response.status_code >= 400:
            body = _redact(response.text[:300], key)
            raise LLMError(f"{where} answered HTTP {response.status_code}: {body}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{where}: response is not a chat completion") from exc
        if not isinstance(content, str):
            raise LLMError(f"{where}: completion content is not text")
        return Completion(content)


class LangChainClient(LLMClient):
    """Adapts a LangChain runnable (anything with ``.invoke(messages)``).

    Messages are passed as ``(role, content)`` tuples; the result may be a string
    or a message object with ``.content``. ``invoke`` runs in a worker thread.
    """

    def __init__(self, runnable: Any, *, identity: str = "langchain") -> None:
        self._runnable = runnable
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    async def complete(self, request: CompletionRequest) -> Completion:
        messages = [(m.role, m.content) for m in request.messages]
        try:
            result = await trio.to_thread.run_sync(self._runnable.invoke, messages)
        except Exception as exc:  # the runnable's own errors, translated at this boundary
            raise LLMError(f"{self._identity}: {type(exc).__name__}: {exc}") from exc
        content = getattr(result, "content", result)
        if not isinstance(content, str):
            raise LLMError(f"{self._identity}: runnable returned {type(content).__name__}, not text")
        return Completion(content)
