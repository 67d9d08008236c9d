"""The Agent base class users subclass, the ``@tool`` decorator and lifecycle hooks.

One Agent instance serves one conversation, so ``self`` is conversation state. A
restarted actor gets a fresh instance; what must survive a restart (history,
completed tool results) lives in the supervisor's store.

Tools are compiled when the class is defined: a hint the schema cannot express
fails right there, naming the agent, the tool and the parameter.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

import attrs
import trio

from .docstrings import docstring_summary
from .errors import AgentDefinitionError
from .schema import CompiledSignature, compile_signature

if TYPE_CHECKING:
    from .store import ConversationRecord

RestartType = Literal["transient", "permanent", "temporary"]
RESTART_TYPES: tuple[RestartType, ...] = ("transient", "permanent", "temporary")

F = TypeVar("F", bound=Callable[..., Any])

_TOOL_MARK = "__orchestrator_tool__"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@attrs.frozen
class ToolMark:
    """What ``@tool`` records on a function until its class is defined."""

    description: str | None
    name: str | None
    timeout: float | None


@attrs.frozen
class ToolDef:
    """A compiled tool of an agent class."""

    name: str
    description: str
    func: Callable[..., Any]
    is_async: bool
    signature: CompiledSignature
    timeout: float | None

    def schema(self) -> dict[str, Any]:
        """The ``{name, description, parameters}`` entry the platform registers."""
        return {"name": self.name, "description": self.description, "parameters": self.signature.schema}


@overload
def tool(description: F) -> F: ...


@overload
def tool(
    description: str | None = None, *, name: str | None = None, timeout: float | None = None
) -> Callable[[F], F]: ...


def tool(description: str | F | None = None, *, name: str | None = None, timeout: float | None = None) -> Any:
    """Mark a method as a tool the platform's LLM may call.

    ``@tool("what it does")``, ``@tool`` bare (the docstring's first paragraph is
    the description), sync or async methods; not generators, static or class methods.

    ``timeout`` (seconds, finite and positive) is the most this tool may take. A
    call runs for the request's ``timeout_seconds`` if it has one, but never longer
    than the tool's own timeout; without either, for ``ToolSettings.default_timeout``.
    Whichever applies is then clamped to ``[min_timeout, max_timeout]``.
    """
    if callable(description):
        return tool()(description)

    def mark(func: F) -> F:
        if timeout is not None and not _is_positive_seconds(timeout):
            where = getattr(func, "__qualname__", repr(func))
            raise AgentDefinitionError(
                f"{where}: tool timeout must be a finite, positive number of seconds, got {timeout!r}"
            )
        setattr(func, _TOOL_MARK, ToolMark(description, name, None if timeout is None else float(timeout)))
        return func

    return mark


def _is_positive_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an int too large for a float
        return False


#: The decorator name Conversimple users know; identical to :func:`tool`.
tool_async = tool


class Agent:
    """Base class of user agents.

    Class attributes:
        agent_id: how the platform names this agent (defaults to the class name).
        restart: ``transient`` (restart on a crash), ``permanent`` (restart on a
            crash or an idle timeout) or ``temporary`` (never restart).

    Hooks are optional and may be sync or async. An exception in a lifecycle hook
    crashes the actor (and the supervisor decides on a restart); a tool that
    raises only produces an error reply. Raise :class:`~orchestrator.errors.ToolError`
    for a business error whose message should reach the platform unchanged.

    Sync tools and hooks run in worker threads, possibly while async tools of the
    same conversation run: guard shared state on ``self`` accordingly.

    To answer customer messages (Arinova), define ``on_message(self, message)``
    returning a str, or an async generator of str chunks; see
    :mod:`orchestrator.replies`.
    """

    agent_id: ClassVar[str] = ""
    restart: ClassVar[RestartType] = "transient"
    __tools__: ClassVar[Mapping[str, ToolDef]] = {}
    #: The conversation this instance serves; set by the runtime before any hook or tool runs.
    conversation: ConversationRecord

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("agent_id"):
            cls.agent_id = cls.__name__
        if cls.restart not in RESTART_TYPES:
            raise AgentDefinitionError(
                f"{cls.__name__}: restart must be one of {', '.join(RESTART_TYPES)}, got {cls.restart!r}"
            )
        cls.__tools__ = _collect_tools(cls)

    async def on_conversation_started(self, conversation: ConversationRecord) -> None:
        """Called once the actor is connected, before the first event is handled."""

    async def on_conversation_ended(self, conversation: ConversationRecord) -> None:
        """Called when the conversation ends normally (platform end, idle timeout, stop)."""

    async def on_config_update(self, config: Mapping[str, Any]) -> None:
        """The platform changed this agent's configuration."""

    async def on_error(self, error_type: str, message: str, details: Mapping[str, Any]) -> None:
        """The platform reported an error, or the link failed for good (called once)."""

    async def on_tool_called(self, tool_name: str, arguments: Mapping[str, Any]) -> None:
        """A validated tool call is about to run."""

    async def on_tool_completed(self, tool_name: str, result: Any) -> None:
        """A tool call finished with a result (not called for errors).

        The result is cached even if this hook raises (which crashes the actor): the
        platform's redelivery of the call is answered from the cache, and the tool does
        not run again."""


def _collect_tools(cls: type[Agent]) -> dict[str, ToolDef]:
    tools: dict[str, ToolDef] = {}
    attrs_of: dict[str, str] = {}  # tool name -> the attribute that defines it
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            wrapped = isinstance(value, staticmethod | classmethod)
            func = value.__func__ if wrapped else value
            # @tool above @staticmethod marks the wrapper, below it the function.
            mark = getattr(func, _TOOL_MARK, None) or getattr(value, _TOOL_MARK, None)
            if not isinstance(mark, ToolMark):
                continue
            if wrapped:
                raise AgentDefinitionError(f"{cls.__name__}.{attr}: a tool must be a plain method")
            if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
                raise AgentDefinitionError(
                    f"{cls.__name__}.{attr}: a tool must return its result, not be a generator"
                )
            name = mark.name or attr
            if not _NAME_RE.match(name):
                raise AgentDefinitionError(f"{cls.__name__}.{attr}: invalid tool name {name!r}")
            other = attrs_of.setdefault(name, attr)
            if other != attr:  # a subclass redefining the same method replaces it; this would hide one
                raise AgentDefinitionError(
                    f"{cls.__name__}: tools {other!r} and {attr!r} are both named {name!r}"
                )
            description = mark.description if mark.description is not None else docstring_summary(func)
            tools[name] = ToolDef(
                name=name,
                description=description,
                func=func,
                is_async=inspect.iscoroutinefunction(func),
                signature=compile_signature(func, agent=cls.__name__, tool=name),
                timeout=mark.timeout,
            )
    return tools


def tool_schemas(agent_cls: type[Agent]) -> list[dict[str, Any]]:
    """Exactly the ``tools`` list an agent registers: ``{name, description, parameters}`` each."""
    if not (isinstance(agent_cls, type) and issubclass(agent_cls, Agent)):
        raise TypeError(f"tool_schemas() takes an Agent subclass, got {agent_cls!r}")
    return [definition.schema() for definition in agent_cls.__tools__.values()]


def overrides(agent: Agent, hook: str) -> bool:
    """Whether the agent's class defines ``hook`` itself rather than inheriting the no-op."""
    return getattr(type(agent), hook) is not getattr(Agent, hook)


async def call_hook(agent: Agent, hook: str, *args: Any) -> Any:
    """Call a hook that may be sync (run in a worker thread) or async. One the agent
    left as :class:`Agent`'s no-op is not called: a conversation's start and end pay
    for no coroutine and no ``inspect`` check."""
    func = getattr(agent, hook)
    if getattr(func, "__func__", None) is getattr(Agent, hook):
        return None
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    return await trio.to_thread.run_sync(func, *args)
