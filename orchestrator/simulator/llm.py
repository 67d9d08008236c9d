"""A small LLM client interface and its OpenAI-compatible HTTP implementation.

Participants and the judge only see :class:`LLMClient`: ``await complete(request)``
returns a :class:`Completion`. Implementations:

* :class:`~.openai_client.OpenAIClient` — ``POST {base_url}/chat/completions``
  with httpx, rate-limited per provider by a :class:`RateLimiter`.
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
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpx
import trio

from .errors import LLMError


def _tuple(items: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
    return tuple(items)


@attrs.frozen
class LLMToolCall:
    """A function call the model asks for; ``arguments`` is the model's JSON text."""

    id: str
    name: str
    arguments: str


def _schemas(items: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(items)


def _calls(items: Iterable[LLMToolCall]) -> tuple[LLMToolCall, ...]:
    return tuple(items)


@attrs.frozen
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user``, ``assistant`` or ``tool``.

    An ``assistant`` turn may carry the ``tool_calls`` it made; a ``tool`` turn
    answers the call ``tool_call_id`` with ``content``.
    """

    role: str
    content: str
    tool_calls: tuple[LLMToolCall, ...] = attrs.field(default=(), converter=_calls)
    tool_call_id: str | None = None


@attrs.frozen
class CompletionRequest:
    """What to complete. ``variant`` salts the cache key and the seed; it is not sent.

    ``tools`` are function schemas (``{name, description, parameters}``) the model may call.
    """

    messages: tuple[ChatMessage, ...] = attrs.field(converter=_tuple)
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    json_mode: bool = False
    variant: int = 0
    tools: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_schemas)


@attrs.frozen
class Completion:
    """The assistant's reply: text, and the tool calls it asks for (if tools were offered)."""

    content: str
    tool_calls: tuple[LLMToolCall, ...] = attrs.field(default=(), converter=_calls)


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
        if request.tools:
            raise LLMError(f"{self._identity}: tool calling is not supported through this adapter")
        messages = [(m.role, m.content) for m in request.messages]
        try:
            result = await trio.to_thread.run_sync(self._runnable.invoke, messages)
        except Exception as exc:  # the runnable's own errors, translated at this boundary
            raise LLMError(f"{self._identity}: {type(exc).__name__}: {exc}") from exc
        content = getattr(result, "content", result)
        if not isinstance(content, str):
            raise LLMError(f"{self._identity}: runnable returned {type(content).__name__}, not text")
        return Completion(content)
