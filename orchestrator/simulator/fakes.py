"""Fakes for testing simulations offline (public: use them in your own tests).

* :class:`FakeChatServer` — an OpenAI-compatible ``/chat/completions`` endpoint
  as an ASGI app with canned answers; :func:`serve_fake_chat` runs it on
  127.0.0.1 with hypercorn's trio worker and returns its base URL. It records
  every request body, can demand an API key and can fail the next requests
  with given HTTP statuses (to exercise retries).
* :class:`FunctionLLMClient` — an in-memory :class:`~.llm.LLMClient` whose
  answers come from a function.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .llm import Completion, CompletionRequest, LLMClient

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


@attrs.define(eq=False)
class FakeChatServer:
    """Answers chat completions with ``respond(request_body)``, after ``delay`` seconds.

    ``respond`` returns the reply text, or a whole assistant message (with ``tool_calls``).
    """

    respond: Callable[[Mapping[str, Any]], str | Mapping[str, Any]]
    api_key: str | None = None
    fail_next: list[int] = attrs.field(factory=list)
    delay: float = 0.0
    requests: list[dict[str, Any]] = attrs.field(factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.delay:
            await trio.sleep(self.delay)
        status, document = self._answer(scope, body)
        payload = json.dumps(document).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _answer(self, scope: Scope, body: bytes) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return 404, {"error": {"message": "not found"}}
        headers = dict(scope["headers"])
        if self.api_key is not None:
            given = headers.get(b"authorization", b"").decode()
            if given != f"Bearer {self.api_key}":
                # Real providers echo (part of) a wrong key; clients must not repeat it.
                return 401, {"error": {"message": f"Incorrect API key provided: {given[7:]}"}}
        if self.fail_next:
            return self.fail_next.pop(0), {"error": {"message": "try again"}}
        request = json.loads(body)
        self.requests.append(request)
        answer = self.respond(request)
        message = {"role": "assistant", "content": answer} if isinstance(answer, str) else dict(answer)
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return 200, {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "choices": [choice]}


async def serve_fake_chat(server: FakeChatServer, nursery: trio.Nursery) -> str:
    """Serve ``server`` on 127.0.0.1 (a free port) in ``nursery``; return the base URL.

    Cancel the nursery to stop it.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    app: Any = server  # an ASGI 3 app; hypercorn's TypedDict scopes are narrower than Mapping
    binds = await nursery.start(functools.partial(serve, app, config))
    return f"{binds[0]}/v1"


class FunctionLLMClient(LLMClient):
    """An in-memory client: ``respond(request)`` gives each completion's text."""

    def __init__(self, respond: Callable[[CompletionRequest], str], identity: str = "fake#model") -> None:
        self.respond = respond
        self.requests: list[CompletionRequest] = []
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    async def complete(self, request: CompletionRequest) -> Completion:
        await trio.lowlevel.checkpoint()
        self.requests.append(request)
        return Completion(self.respond(request))
