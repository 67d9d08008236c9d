"""The agent under test, in process: calling it and recording its tool calls.

An agent is any object with ``on_message(text)`` returning a ``str``, an
awaitable of one, or an async iterator of ``str`` chunks (joined into one
message); ``None`` means it stays silent. One instance serves one
conversation, so agents are made by a zero-argument factory (usually the class).

Tool calls are recorded by wrapping the instance's tool methods: those listed
in the class's ``__tools__`` (what :class:`orchestrator.agent.Agent` compiles
from ``@tool``), or the names given explicitly. Each call's arguments, result or
error is attached to the agent message it produced.

:func:`agent_fingerprint` hashes the agent's code, so that a batch resumes only
results the same agent produced.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

from ..loader import load_object
from .errors import ParticipantError
from .models import Conversation, Message, ParticipantRole, ToolCall, converter
from .participants import Participant

AgentFactory = Callable[[], Any]


_SCALARS = (str, int, float, bool, type(None))
_SIMPLE = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _jsonable(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        try:
            plain = converter.unstructure(value)
            json.dumps(plain)
            return plain
        except (TypeError, ValueError):
            return repr(value)


def tool_names(agent: object) -> dict[str, str]:
    """``{tool name: method name}`` from the class's ``__tools__`` mapping, if any."""
    tools = getattr(type(agent), "__tools__", None)
    if not isinstance(tools, Mapping):
        return {}
    names = {}
    for name, definition in tools.items():
        func = getattr(definition, "func", None)
        attr = str(getattr(func, "__name__", name))
        if callable(getattr(agent, attr, None)):
            names[str(name)] = attr
    return names


def record_tool_calls(agent: object, calls: list[ToolCall], names: Mapping[str, str]) -> None:
    """Wrap ``agent``'s tool methods so every call is appended to ``calls``."""
    for tool_name, attr in names.items():
        method = getattr(agent, attr)
        setattr(agent, attr, _recording(method, tool_name, calls))


def _recording(method: Callable[..., Any], tool_name: str, calls: list[ToolCall]) -> Callable[..., Any]:
    signature = inspect.signature(method)
    names = list(signature.parameters)
    simple = all(p.kind in _SIMPLE for p in signature.parameters.values())

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if simple and len(args) <= len(names) and not set(names[: len(args)]) & kwargs.keys():
            given = dict(zip(names, args, strict=False))
            given.update(kwargs)
            return {key: _jsonable(value) for key, value in given.items()}
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return {"args": _jsonable(list(args)), **{k: _jsonable(v) for k, v in kwargs.items()}}
        return {key: _jsonable(value) for key, value in bound.arguments.items()}

    def failed(args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException) -> None:
        calls.append(ToolCall(tool_name, arguments(args, kwargs), None, f"{type(exc).__name__}: {exc}"))

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await method(*args, **kwargs)
            except Exception as exc:
                failed(args, kwargs, exc)
                raise
            calls.append(ToolCall(tool_name, arguments(args, kwargs), _jsonable(result)))
            return result

        return async_wrapper

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = method(*args, **kwargs)
        except Exception as exc:
            failed(args, kwargs, exc)
            raise
        calls.append(ToolCall(tool_name, arguments(args, kwargs), _jsonable(result)))
        return result

    return wrapper


def make_agent(factory: AgentFactory, *, needs_on_message: bool = True) -> Any:
    """A fresh agent from ``factory``; its construction errors become ParticipantError."""
    try:
        agent = factory()
    except Exception as exc:  # user code, translated at this boundary
        raise ParticipantError(f"creating the agent raised {type(exc).__name__}: {exc}") from exc
    if needs_on_message and not callable(getattr(agent, "on_message", None)):
        raise ParticipantError(
            f"{type(agent).__name__} has no on_message(text) method; "
            "simulate the platform's part with [scenario.agent] to drive its tools"
        )
    return agent


async def ask_agent(agent: Any, text: str) -> str | None:
    """The agent's whole reply to ``text`` (chunks joined), or None for silence.

    Whatever the agent raises comes out as :class:`ParticipantError`; cancellation
    passes through (and closes a streaming reply).
    """
    try:
        result = agent.on_message(text)
        if inspect.isawaitable(result):
            result = await result
        if result is None or isinstance(result, str):
            return result
        if hasattr(result, "__aiter__"):
            return await _join(result)
    except Exception as exc:  # user code, translated at this boundary
        raise ParticipantError(f"agent raised {type(exc).__name__}: {exc}") from exc
    raise ParticipantError(f"on_message returned {type(result).__name__}, not text or chunks")


async def _join(chunks: AsyncIterator[Any]) -> str:
    parts: list[str] = []
    if hasattr(chunks, "aclose"):
        async with aclosing(chunks) as stream:  # type: ignore[type-var]
            parts.extend([str(chunk) async for chunk in stream])
    else:
        parts.extend([str(chunk) async for chunk in chunks])
    return "".join(parts)


class AgentParticipant(Participant):
    """The agent under test as a participant: replies to the customer's last message.

    ``tools`` names the methods to record (default: from ``__tools__``).
    """

    role = ParticipantRole.AGENT

    def __init__(self, agent: Any, *, tools: Iterable[str] | None = None) -> None:
        self.agent = agent
        self._calls: list[ToolCall] = []
        names = tool_names(agent) if tools is None else {name: name for name in tools}
        record_tool_calls(agent, self._calls, names)

    @classmethod
    def from_factory(cls, factory: AgentFactory) -> AgentParticipant:
        """A participant around a fresh agent from ``factory``."""
        return cls(make_agent(factory))

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        customer = ParticipantRole.CUSTOMER
        last = next((m for m in reversed(conversation.messages) if m.sender is customer), None)
        if last is None:
            return None
        reply = await ask_agent(self.agent, last.content)
        calls, self._calls[:] = tuple(self._calls), []
        if reply is None and not calls:
            return None
        return self.make_message(reply or "", conversation, calls)


def load_agent_class(spec: str, base_dir: Path | None = None) -> Any:
    """The class named by ``package.module:Class`` or ``path/to/file.py:Class``.

    Any class with ``on_message`` will do, not only an :class:`orchestrator.Agent`.
    A relative file path is resolved against ``base_dir`` (default: the current
    directory). Raises :class:`AgentSpecError`.
    """
    return load_object(spec, base_dir)


_INSTALLED = tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix)})
"""Where installed packages live (a virtualenv inside the project's folder included)."""


def _project_file(module_name: object) -> Path | None:
    """The file of the module named ``module_name``, unless orchestrator's, the standard
    library's or an installed package's."""
    if not isinstance(module_name, str):
        return None
    top = module_name.partition(".")[0]
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if top == "orchestrator" or top in sys.stdlib_module_names or not isinstance(path, str):
        return None
    resolved = Path(path).resolve()
    if "site-packages" in resolved.parts or any(resolved.is_relative_to(p) for p in _INSTALLED):
        return None
    return resolved


def _source_files(agent: object) -> set[Path]:
    """The project's files that define ``agent``: the modules of its class and base classes,
    and every module loaded from its own module's folder tree."""
    classes = inspect.getmro(agent) if isinstance(agent, type) else (agent,)
    found = (_project_file(getattr(klass, "__module__", None)) for klass in classes)
    files = {path for path in found if path is not None}
    own_name = getattr(agent, "__module__", None)
    own, own_file = sys.modules.get(own_name or ""), _project_file(own_name)
    if own is None or own_file is None:
        return files
    # Every module loaded from the agent's folder tree: what it imports, and what those
    # import (a prompt string from prompts.py counts as much as a class).
    for name in list(sys.modules):
        path = _project_file(name)
        if path is not None and path.is_relative_to(own_file.parent):
            files.add(path)
    return files


def agent_fingerprint(agent: object, spec: str) -> str:
    """A short hash of ``spec`` and the source of the code behind ``agent`` (the class loaded).

    The source is that of the agent's class and its base classes, and of the modules of
    its own folder that its module imports from; orchestrator and the standard library
    are left out. A file that cannot be read counts as empty.
    """
    digest = hashlib.sha256(spec.encode())
    for path in sorted(_source_files(agent)):
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"")
    return digest.hexdigest()[:16]
