"""The OpenAI-compatible chat-completions client (httpx, under trio through anyio).

``POST {base_url}/chat/completions``; the key goes in the ``Authorization``
header and nowhere else (error bodies that echo it are redacted). Requests are
rate-limited per provider (one client, hence one :class:`~.llm.RateLimiter`, per
provider: share it, or pass a shared ``limiter``), retried with full-jitter
backoff on 408/409/429/5xx and transport errors, and timed out on trio's clock
(:class:`~.errors.LLMTimeout`). Offered ``tools`` use the ``tools`` /
``tool_calls`` function-calling fields.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio

from ..backoff import BackoffPolicy
from .errors import LLMError, LLMTimeout
from .llm import ChatMessage, Completion, CompletionRequest, LLMClient, LLMSettings, LLMToolCall, RateLimiter

_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def _message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class OpenAIClient(LLMClient):
    """An OpenAI-compatible chat-completions client. Use as ``async with``, or ``aclose()``.

    ``limiter`` shares a provider's rate limit between clients (default: one from
    ``requests_per_minute``); ``backoff`` spaces retries.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        limiter: RateLimiter | None = None,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        self.settings = settings
        rpm = settings.requests_per_minute
        self._limiter = limiter or (RateLimiter(rpm / 60.0) if rpm else None)
        self._http: httpx.AsyncClient | None = None
        self._backoff = backoff or BackoffPolicy(base=0.5, cap=8.0)
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
            "messages": [_message(m) for m in request.messages],
            "temperature": request.temperature,
        }
        if request.tools:
            payload["tools"] = [{"type": "function", "function": dict(tool)} for tool in request.tools]
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
            message = response.json()["choices"][0]["message"]
            content = message.get("content") or ""
            calls = [
                LLMToolCall(
                    str(call["id"]), str(call["function"]["name"]), str(call["function"]["arguments"])
                )
                for call in message.get("tool_calls") or ()
            ]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"{where}: response is not a chat completion") from exc
        if not isinstance(content, str):
            raise LLMError(f"{where}: completion content is not text")
        return Completion(content, calls)
