"""Answering a customer's message with the agent's ``on_message``.

``on_message(self, message)`` may return a string (one complete reply), be an
async generator or return an async iterator of chunks (streamed, then completed
with the assembled text), or be a plain function (run in a worker thread). If it
raises, the task gets an error reply; the actor is not disturbed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from . import events as ev
from .agent import Agent

log = logging.getLogger("orchestrator.replies")

Send = Callable[[ev.OutboundEvent], Awaitable[None]]


async def answer_message(agent: Agent, message: ev.CustomerMessage, send: Send) -> None:
    """Produce the reply to one message and send it: chunks then complete, or an error."""
    handler = getattr(agent, "on_message", None)
    if handler is None:
        await send(ev.ReplyFailure(message.task_id, "this agent does not answer messages"))
        return
    chunks: list[str] = []
    try:
        produced = await _invoke(handler, message.content)
        if isinstance(produced, str):
            chunks.append(produced)
        elif produced is None:
            pass
        elif hasattr(produced, "__aiter__"):
            async for chunk in _iterate(produced):
                text = str(chunk)
                chunks.append(text)
                await send(ev.ReplyChunk(message.task_id, text))
        else:
            raise TypeError(
                f"on_message returned {type(produced).__name__}; expected str or async iterator of str"
            )
    except Exception as exc:  # the handler's failure is this task's error reply
        log.info("on_message raised %s: %s", type(exc).__name__, exc)
        await send(ev.ReplyFailure(message.task_id, f"{type(exc).__name__}: {exc}"))
        return
    await send(ev.ReplyComplete(message.task_id, "".join(chunks)))


async def _invoke(handler: Callable[[str], Any], content: str) -> Any:
    if inspect.isasyncgenfunction(handler):
        return handler(content)
    if inspect.iscoroutinefunction(handler):
        return await handler(content)
    return await trio.to_thread.run_sync(handler, content)


async def _iterate(produced: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for item in produced:
            yield item
    finally:
        aclose = getattr(produced, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
