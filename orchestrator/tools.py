"""Running tool calls: validation, timeouts, threads, the result cache.

A call is validated and structured to the tool's annotated types before the body
runs; a violation or an unknown tool is an error *reply*, and so is a body that
raises or overruns its timeout. Nothing a tool does crashes its actor. Sync tools
run in worker threads behind one process-wide limiter; async tools run in the
actor's nursery, each step timed so a tool that blocks the event loop is named.
Completed replies are cached by ``call_id``: a redelivered call is answered from
the cache and a call already in flight is joined, never run twice.

A tool that raises is logged at INFO with its exception (the traceback too when
DEBUG is on), a timeout with the seconds it had, a result JSON cannot carry with
where in it the offending value sits; never with the arguments, which may hold
secrets. A :class:`~orchestrator.errors.ToolError` is a business answer: not logged.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import math
import time
import types
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping
from typing import Any, cast

import attrs
import trio

from . import agent as agent_mod
from .agent import Agent, ToolDef
from .errors import ToolArgumentsError, ToolError
from .events import ToolCallRequest, ToolFailure, ToolResult
from .metrics import UNKNOWN, Metrics
from .store import CallOutcome, ConversationRecord

log = logging.getLogger("orchestrator.tools")

_SCALARS = (str, int, float, bool, type(None))


@attrs.frozen
class ToolSettings:
    """Per-call limits. Timeouts in seconds."""

    default_timeout: float = 30.0
    min_timeout: float = 0.1
    max_timeout: float = 600.0
    max_concurrent_calls: int = 16
    threads_per_conversation: int = 4
    max_stuck_threads_per_tool: int = 8
    result_cache_size: int = 256
    blocking_warn_after: float = 0.1

    def __attrs_post_init__(self) -> None:
        low, default, high = self.min_timeout, self.default_timeout, self.max_timeout
        if not 0 < low <= default <= high:
            # The keys by name: a settings file's error adds where each value came from.
            raise ValueError(
                f"0 < min_timeout ({low!r}) <= default_timeout ({default!r}) <= max_timeout ({high!r}) "
                "does not hold"
            )
        if min(self.max_concurrent_calls, self.result_cache_size, self.threads_per_conversation) < 1:
            raise ValueError(
                "max_concurrent_calls, threads_per_conversation and result_cache_size must be at least 1"
            )


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data (attrs, dataclasses, enums, tuples unstructured).

    Raises TypeError naming the first value that JSON cannot carry.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is not dict and isinstance(value, _SCALARS):
        if isinstance(value, float) and value != value:  # NaN has no JSON form
            raise TypeError("NaN is not valid JSON")
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            of = type(item)  # a string or whole number needs no call (the usual reply)
            out[key] = item if of is str or of is int or of is bool else to_json_value(item)
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if attrs.has(type(value)):
        return {f.name: to_json_value(getattr(value, f.name)) for f in attrs.fields(type(value))}
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None:
        return {name: to_json_value(getattr(value, name)) for name in fields}
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _culprit(value: Any) -> str:
    """Where in a tool's result the value :func:`to_json_value` refuses first sits, as
    ``result["when"]`` or ``result["items"][2].price``. Walked again only once the
    conversion has failed, so a reply that converts pays nothing for it."""
    path = "result"
    descended = True
    while descended:
        descended = False
        for suffix, item in _parts(value):
            if suffix is None:  # a key that is not a string: the mapping itself is at fault
                return path
            try:
                to_json_value(item)
            except TypeError:
                value, path, descended = item, path + suffix, True
                break
    return path


def _parts(value: Any) -> Iterator[tuple[str | None, Any]]:
    """The values inside ``value``, in the order :func:`to_json_value` converts them."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield (f"[{json.dumps(key)}]", item) if isinstance(key, str) else (None, None)
    elif isinstance(value, list | tuple):
        yield from ((f"[{index}]", item) for index, item in enumerate(value))
    elif isinstance(value, enum.Enum):
        yield ".value", value.value
    elif attrs.has(type(value)):
        yield from ((f".{f.name}", getattr(value, f.name)) for f in attrs.fields(type(value)))
    else:
        for name in getattr(type(value), "__dataclass_fields__", None) or ():
            yield f".{name}", getattr(value, name)


@attrs.define(eq=False, slots=True)
class ToolExecutor:
    """Runs the tool calls of one conversation's Agent instance."""

    agent: Agent
    record: ConversationRecord
    thread_limiter: trio.CapacityLimiter
    settings: ToolSettings = attrs.field(factory=ToolSettings)
    metrics: Metrics | None = None
    _inflight: set[str] | None = attrs.field(init=False, default=None)
    _own_threads: trio.CapacityLimiter | None = attrs.field(init=False, default=None)
    _hook_called: bool = attrs.field(init=False, default=False)
    _hook_completed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._hook_called = agent_mod.overrides(self.agent, "on_tool_called")
        self._hook_completed = agent_mod.overrides(self.agent, "on_tool_completed")

    async def _run_in_thread(self, tool: ToolDef, kwargs: dict[str, Any]) -> Any:
        """Run a sync tool in a worker thread under this conversation's thread quota.

        A thread cannot be cancelled: on timeout the call is answered at once and
        the thread abandoned. Its tokens are given back right away, so a tool that
        hangs never holds the worker threads other tools need; the stuck thread is
        counted against its tool instead, and once a tool has
        ``max_stuck_threads_per_tool`` threads stuck, its calls fail fast.
        """
        key = (type(self.agent).__qualname__, tool.name)
        stuck = _STUCK_THREADS.get(key, 0)
        if stuck >= self.settings.max_stuck_threads_per_tool:
            raise ToolError(f"tool {tool.name!r} is unavailable: {stuck} earlier calls are still blocked")
        if self._own_threads is None:
            self._own_threads = trio.CapacityLimiter(self.settings.threads_per_conversation)
        quota = ThreadQuota(self._own_threads, self.thread_limiter, key)
        try:
            return await trio.to_thread.run_sync(
                functools.partial(tool.func, self.agent, **kwargs),
                # trio takes any limiter-like object; its stub says CapacityLimiter.
                limiter=cast(trio.CapacityLimiter, quota),
                abandon_on_cancel=True,
            )
        except trio.Cancelled:
            quota.abandon()
            raise

    @property
    def inflight(self) -> int:
        """Calls running now."""
        return 0 if self._inflight is None else len(self._inflight)

    def timeout_for(self, tool: ToolDef | None, requested: float | None) -> float:
        """The request's timeout capped by the tool's own, else whichever of them is
        given, else the default; clamped to ``[min_timeout, max_timeout]``.

        A platform that always sends ``timeout_seconds`` thus never lengthens a tool
        that declared a shorter one: in process and over the wire, it times out alike.
        """
        s = self.settings
        own = tool.timeout if tool is not None else None
        if requested is not None and requested > 0:
            chosen = requested if own is None or requested < own else own
        else:
            chosen = s.default_timeout if own is None else own
        return min(max(chosen, s.min_timeout), s.max_timeout)

    async def execute(self, request: ToolCallRequest) -> CallOutcome | None:
        """Answer one call: from the cache, or by running it (never twice at once).

        Returns the reply to send, or None when this request must not be answered:
        the same ``call_id`` is already running (its first request answers, once),
        or the call was cancelled before completing (nothing is cached then, so a
        redelivery runs it). Cancellation cancels the tool. A tool that completed is
        cached even if its ``on_tool_completed`` hook then raises or is cancelled:
        the actor ends, and the redelivery is answered from the cache. The call's
        timeout is enforced here; :meth:`execute_inline` leaves that to its caller.
        """
        suspended: list[RunningCall] = []
        with trio.CancelScope() as scope:

            def on_suspend(call: RunningCall) -> None:
                scope.deadline = call.deadline
                suspended.append(call)

            reply = await self.execute_inline(request, on_suspend)
        if scope.cancelled_caught:
            return self.timed_out(suspended[0])
        if not suspended:
            await trio.lowlevel.checkpoint()  # an async call is a checkpoint, even one that never waited
        return reply

    async def execute_inline(
        self, request: ToolCallRequest, on_suspend: Callable[[RunningCall], object]
    ) -> CallOutcome | None:
        """:meth:`execute` without a timeout scope of its own, for a caller that runs
        calls in place.

        A call that completes without waiting (the common case: validation, a pure
        async tool, the cache) costs no cancel scope and no task. The first time the
        call would wait (the tool awaits, a sync tool goes to its thread, a hook
        waits), ``on_suspend(call)`` is called before the wait, and again whenever
        ``call.deadline`` changes (hooks run without one): the caller must enforce
        ``call.deadline`` on a scope it entered before this call, and answer
        :meth:`timed_out` if that scope fires.
        """
        cached = self.record.results.get(request.call_id)
        if cached is not None:
            self._count(cached.tool_name, "cached")
            return cached
        inflight = self._inflight
        if inflight and request.call_id in inflight:
            # A redelivery of a call still running: its first request sends the one
            # reply; answering twice would be a duplicate on the platform.
            self._count(request.tool_name if request.tool_name in self.agent.__tools__ else UNKNOWN, "joined")
            return None
        try:
            reply = await self._run(request, on_suspend)
        finally:
            # Only a call that waited is ever in flight: one that did not was never seen
            # unfinished by anybody.
            if self._inflight:
                self._inflight.discard(request.call_id)
        self.record.results.put(reply)
        return reply

    def timed_out(self, call: RunningCall) -> ToolFailure:
        """The reply for a call whose deadline passed: cached, counted and timed."""
        tool = call.tool.name
        seconds = call.deadline - call.started
        log.info("tool %s timed out after %g s", tool, seconds)
        reply = self._failure(call.request, f"tool {tool!r} timed out after {seconds:g} s")
        self.record.results.put(reply)
        if self.metrics is not None:
            self.metrics.tool_finished(tool, "timeout", trio.current_time() - call.started)
        return reply

    async def _run(
        self, request: ToolCallRequest, on_suspend: Callable[[RunningCall], object]
    ) -> CallOutcome:
        tool = self.agent.__tools__.get(request.tool_name)
        if tool is None:
            self._count(UNKNOWN, "unknown_tool")
            return self._failure(request, f"unknown tool {request.tool_name!r}")
        try:
            kwargs = tool.signature.bind(request.arguments)
        except ToolArgumentsError as exc:
            self._count(tool.name, "invalid_arguments")
            return self._failure(request, f"invalid arguments for tool {tool.name!r}: {exc}")
        settings, metrics = self.settings, self.metrics
        call: RunningCall | None = None  # made only once the call has to wait
        if self._hook_called:  # hooks are not under the tool's timeout
            call = self._waiting(request, tool, trio.current_time(), math.inf)
            hook = agent_mod.call_hook(self.agent, "on_tool_called", tool.name, kwargs)
            await _drive(hook, call, on_suspend, None, settings, metrics)
        outcome = "ok"
        reply: CallOutcome
        # A call that never waits is timed on the performance counter alone (trio's clock
        # costs three calls a reading); one that waits, in trio time from when it began.
        began = time.perf_counter()
        try:
            body = tool.func(self.agent, **kwargs) if tool.is_async else self._run_in_thread(tool, kwargs)
            if call is None:
                # The first step runs right here: most tools finish in it, and then
                # there is nothing to time out and no generator to drive them.
                try:
                    first = body.send(None)
                except StopIteration as stop:
                    first, value = _NOT_STARTED, stop.value
                held = _check_step(began, settings.blocking_warn_after, tool.name, metrics)
                if first is not _NOT_STARTED:  # it waits: keep driving it from where it stopped
                    # Its timeout runs from now, less the first step if that blocked the loop.
                    started = trio.current_time() - (held if held > settings.blocking_warn_after else 0.0)
                    timeout = self.timeout_for(tool, request.timeout_seconds)
                    call = self._waiting(request, tool, started, started + timeout)
                    value = await _drive(body, call, on_suspend, tool.name, settings, metrics, first)
            else:
                call.started = started = trio.current_time()
                call.deadline = started + self.timeout_for(tool, request.timeout_seconds)
                if call.suspended:
                    on_suspend(call)  # the caller keeps it: the deadline now applies
                value = await _drive(body, call, on_suspend, tool.name, settings, metrics)
        except Exception as exc:  # a tool error is an error reply, never a crash
            outcome = "error"
            if not isinstance(exc, ToolError):
                log.info(
                    "tool %s raised %s: %s",
                    tool.name,
                    type(exc).__name__,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            # The exception's message, as conversimple-sdk sends it: the LLM reads it.
            reply = self._failure(request, str(exc) or type(exc).__name__)
        else:
            try:
                reply = ToolResult(request.call_id, tool.name, to_json_value(value))
            except Exception as exc:  # the tool returned; what it returned cannot go out
                outcome = "error"
                reply = self._unserialisable(request, tool.name, value, exc)
        if metrics is not None:
            took = time.perf_counter() - began if call is None else trio.current_time() - call.started
            metrics.tool_finished(tool.name, outcome, took)
        if self._hook_completed and type(reply) is ToolResult:
            if call is None:
                call = self._waiting(request, tool, trio.current_time(), math.inf)
            elif call.suspended:
                call.deadline = math.inf
                on_suspend(call)  # the tool is done: its timeout no longer applies
            hook = agent_mod.call_hook(self.agent, "on_tool_completed", tool.name, reply.result)
            try:
                await _drive(hook, call, on_suspend, None, settings, metrics)
            except BaseException:
                # The body has run: the hook raising (the actor crashes) or being cancelled
                # must not make the redelivered call run it again: the cache answers it.
                self.record.results.put(reply)
                raise
        return reply

    def _waiting(
        self, request: ToolCallRequest, tool: ToolDef, started: float, deadline: float
    ) -> RunningCall:
        """The call is about to wait: it is now in flight, until ``deadline``."""
        if self._inflight is None:
            self._inflight = set()
        self._inflight.add(request.call_id)
        return RunningCall(request, tool, started, deadline)

    def _unserialisable(self, request: ToolCallRequest, tool: str, value: Any, exc: Exception) -> ToolFailure:
        """The reply for a result JSON cannot carry, logged with where the culprit sits."""
        where = "result"
        if isinstance(exc, TypeError):
            # A result that changes as it is read could fail differently: the path is a nicety.
            with contextlib.suppress(Exception):
                where = _culprit(value)
        log.info("tool %s returned a value JSON cannot carry at %s: %s", tool, where, exc)
        return self._failure(request, f"tool {tool!r} returned a value JSON cannot carry at {where}: {exc}")

    def _failure(self, request: ToolCallRequest, message: str) -> ToolFailure:
        return ToolFailure(request.call_id, request.tool_name, message, time.time())

    def _count(self, tool: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.tool_calls, tool, outcome).inc()


@attrs.define(eq=False, slots=True)
class RunningCall:
    """A call that had to wait: what its caller needs to time it out."""

    request: ToolCallRequest
    tool: ToolDef
    started: float
    deadline: float
    suspended: bool = False


_NOT_STARTED: Any = object()


@types.coroutine
def _drive(
    coro: Coroutine[Any, Any, Any],
    call: RunningCall,
    on_suspend: Callable[[RunningCall], object],
    tool: str | None,
    settings: ToolSettings,
    metrics: Metrics | None,
    first: Any = _NOT_STARTED,
) -> Generator[Any, Any, Any]:
    """Run ``coro`` in the current task, step by step.

    Before its first wait, ``on_suspend(call)`` is told (once per call). When
    ``tool`` is named, each step is timed in real time: a step that holds the
    event loop past ``blocking_warn_after`` (an async tool calling
    ``time.sleep``, say) is logged with the tool's name and counted. ``first``
    is what ``coro`` yielded if its first step already ran.
    """
    limit = settings.blocking_warn_after
    send: Any = None
    throw: BaseException | None = None
    while True:
        if first is _NOT_STARTED:
            began = time.perf_counter()
            try:
                yielded = coro.send(send) if throw is None else coro.throw(throw)
            except StopIteration as stop:
                if tool is not None:
                    _check_step(began, limit, tool, metrics)
                return stop.value
            if tool is not None:
                _check_step(began, limit, tool, metrics)
        else:
            yielded, first = first, _NOT_STARTED
        if not call.suspended:
            call.suspended = True
            on_suspend(call)
        try:
            send, throw = (yield yielded), None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            send, throw = None, exc


def _check_step(began: float, limit: float, tool: str, metrics: Metrics | None) -> float:
    """Seconds since ``began``; warned about and counted if over ``limit``."""
    held = time.perf_counter() - began
    if held > limit:
        log.warning("async tool %r blocked the event loop for %.3f s", tool, held)
        if metrics is not None:
            metrics.child(metrics.blocking_tools, tool).inc()
    return held


#: Threads abandoned by a timeout and still running, per (agent class, tool).
_STUCK_THREADS: dict[tuple[str, str], int] = {}


@attrs.define(eq=False, slots=True)
class ThreadQuota:
    """The limiter handed to ``trio.to_thread`` for one call: the conversation's quota, then
    the process's pool.

    trio releases a limiter when the *thread* ends, not when an abandoned call
    returns. :meth:`abandon` gives both tokens back at once instead and counts
    the thread as stuck for its tool until it really ends.
    """

    own: trio.CapacityLimiter
    shared: trio.CapacityLimiter
    tool: tuple[str, str]
    _borrower: object = None
    _abandoned: bool = False

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.own.acquire_on_behalf_of(borrower)
        try:
            await self.shared.acquire_on_behalf_of(borrower)
        except BaseException:
            self.own.release_on_behalf_of(borrower)
            raise
        self._borrower = borrower

    def release_on_behalf_of(self, borrower: object) -> None:
        if self._abandoned:  # tokens went back at abandonment; the thread ended now
            count = _STUCK_THREADS.get(self.tool, 1) - 1
            if count > 0:
                _STUCK_THREADS[self.tool] = count
            else:
                _STUCK_THREADS.pop(self.tool, None)
            return
        self._borrower = None
        self.shared.release_on_behalf_of(borrower)
        self.own.release_on_behalf_of(borrower)

    def abandon(self) -> None:
        """The call timed out while its thread runs on: free the tokens, count it stuck."""
        borrower = self._borrower
        if borrower is None or self._abandoned:
            return  # never started, or already ended and released
        self._abandoned = True
        self.shared.release_on_behalf_of(borrower)
        self.own.release_on_behalf_of(borrower)
        _STUCK_THREADS[self.tool] = _STUCK_THREADS.get(self.tool, 0) + 1
