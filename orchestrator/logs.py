"""Logging for the ``orchestrator`` logger tree: context, formats, redaction.

Thousands of conversations log into one stream, so every record says which
conversation and which agent it came from. Actors set two context variables;
trio copies the context into every task an actor starts, so a record logged by
a tool, a connection or a mailbox of that conversation carries them too::

    with log_context(conversation_id="c-42", agent_id="support"):
        log.info("tool call")   # conversation_id="c-42", agent_id="support"

Outside an actor both are ``None``.

:func:`configure_logging` installs one handler on the ``orchestrator`` logger
(hypercorn logs under ``orchestrator.http``), in text for people or JSON for log
pipelines, and masks credentials with :class:`orchestrator.redact.SecretFilter`
before anything is written.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from orchestrator.errors import ConfigError
from orchestrator.redact import SecretFilter

__all__ = [
    "FORMATS",
    "LEVELS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "WorkerFilter",
    "agent_id_var",
    "configure_logging",
    "conversation_id_var",
    "log_context",
]

#: The conversation the current task works for; ``None`` outside actors.
conversation_id_var: ContextVar[str | None] = ContextVar("conversation_id", default=None)
#: The agent id of that conversation; ``None`` outside actors.
agent_id_var: ContextVar[str | None] = ContextVar("agent_id", default=None)

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")

ROOT_LOGGER = "orchestrator"


@contextmanager
def log_context(*, conversation_id: str | None, agent_id: str | None) -> Iterator[None]:
    """Set both context variables for the block (and tasks started in it), then restore."""
    conversation_token = conversation_id_var.set(conversation_id)
    agent_token = agent_id_var.set(agent_id)
    try:
        yield
    finally:
        agent_id_var.reset(agent_token)
        conversation_id_var.reset(conversation_token)


class ContextFilter(logging.Filter):
    """Adds ``conversation_id`` and ``agent_id`` to every record; never drops one.

    Values passed explicitly with ``extra=`` win over the context variables.
    Attach it to handlers: a logger's filters do not see records of its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "conversation_id"):
            record.conversation_id = conversation_id_var.get()
        if not hasattr(record, "agent_id"):
            record.agent_id = agent_id_var.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    """UTC, ISO 8601, milliseconds: ``2025-01-31T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """Traceback and stack info, as already masked on the record when a filter ran."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [part for part in (record.exc_text, record.stack_info) if part]
    return "\n".join(parts) if parts else None


class WorkerFilter(logging.Filter):
    """Adds ``worker`` (the process's index under ``run --workers N``) to every record."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> [worker=… conversation=… agent=…] <message>``, context only
    when set."""

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        worker = getattr(record, "worker", None)
        if worker is not None:
            parts.append(f"worker={worker}")
        conversation = getattr(record, "conversation_id", None)
        agent = getattr(record, "agent_id", None)
        if conversation is not None or agent is not None:
            parts.append(f"conversation={conversation or '-'} agent={agent or '-'}")
        context = f" [{' '.join(parts)}]" if parts else ""
        line = f"{_timestamp(record)} {record.levelname} {record.name}{context} {record.getMessage()}"
        exc = _exception_text(self, record)
        return f"{line}\n{exc}" if exc else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, conversation_id, agent_id, exc
    (and ``worker`` in a worker process)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "conversation_id": getattr(record, "conversation_id", None),
            "agent_id": getattr(record, "agent_id", None),
            "exc": _exception_text(self, record),
        }
        worker = getattr(record, "worker", None)
        if worker is not None:
            entry["worker"] = worker
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` owns, so a second call replaces it."""


def writes_json() -> bool:
    """Whether :func:`configure_logging` set the ``orchestrator`` tree to JSON lines."""
    handlers = logging.getLogger(ROOT_LOGGER).handlers
    return any(isinstance(h, _Handler) and isinstance(h.formatter, JsonFormatter) for h in handlers)


def configure_logging(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    filters: Iterable[logging.Filter] = (),
) -> SecretFilter:
    """Send the ``orchestrator`` logger tree to ``stream`` (stderr by default).

    ``level`` is a level name (any case); ``fmt`` is ``text`` or ``json``.
    ``secrets`` are strings never to be written (auth tokens); credentials in
    URLs, ``token=…`` pairs and bearer headers are masked as well. ``filters``
    run after the context filter and before redaction. Calling it again
    replaces the previous configuration. The tree stops propagating to the
    root logger, so nothing unmasked leaks through a root handler.

    Returns the handler's :class:`SecretFilter`: ``add_secret`` on it masks a
    secret learned later.

    Raises :class:`ConfigError` on an unknown level or format.
    """
    name = str(level).lower()
    if name not in LEVELS:
        raise ConfigError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    for extra in filters:
        handler.addFilter(extra)
    secret_filter = SecretFilter(secrets)
    handler.addFilter(secret_filter)

    logger = logging.getLogger(ROOT_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(name.upper())
    logger.propagate = False
    return secret_filter
