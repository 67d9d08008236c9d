"""Logging: context on every record, text and JSON formats, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel

from orchestrator.errors import ConfigError
from orchestrator.logs import (
    WorkerFilter,
    agent_id_var,
    configure_logging,
    conversation_id_var,
    log_context,
)

TOKEN = "tok-5ecr3t-value"
log = logging.getLogger("orchestrator.test")


@pytest.fixture(autouse=True)
def restore_orchestrator_logger() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    logger = logging.getLogger("orchestrator")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_outside_an_actor_have_no_context(stream: io.StringIO) -> None:
    configure_logging(fmt="json", stream=stream)
    log.info("plain")
    [entry] = _json_lines(stream)
    assert entry["conversation_id"] is None
    assert entry["agent_id"] is None


async def test_records_inside_a_context_carry_it_into_child_tasks(stream: io.StringIO) -> None:
    configure_logging(fmt="json", stream=stream)

    async def tool_task() -> None:
        log.info("from a child task")

    with log_context(conversation_id="c-1", agent_id="support"):
        log.info("in the actor")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tool_task)
    log.info("after")

    first, child, after = _json_lines(stream)
    assert (first["conversation_id"], first["agent_id"]) == ("c-1", "support")
    assert (child["conversation_id"], child["agent_id"]) == ("c-1", "support")
    assert (after["conversation_id"], after["agent_id"]) == (None, None)
    assert conversation_id_var.get() is None
    assert agent_id_var.get() is None


async def test_concurrent_conversations_keep_their_own_context(stream: io.StringIO) -> None:
    configure_logging(fmt="json", stream=stream)

    async def actor(conversation: str) -> None:
        with log_context(conversation_id=conversation, agent_id="echo"):
            await trio.lowlevel.checkpoint()
            log.info("said %s", conversation)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(actor, f"c-{n}")
    for entry in _json_lines(stream):
        assert entry["message"] == f"said {entry['conversation_id']}"


def test_explicit_extra_wins_over_the_context(stream: io.StringIO) -> None:
    configure_logging(fmt="json", stream=stream)
    with log_context(conversation_id="c-1", agent_id="a"):
        log.info("override", extra={"conversation_id": "c-2"})
    [entry] = _json_lines(stream)
    assert (entry["conversation_id"], entry["agent_id"]) == ("c-2", "a")


def test_json_format_has_one_object_per_line(stream: io.StringIO) -> None:
    configure_logging(level="debug", fmt="json", stream=stream)
    log.debug("multi\nline %d", 7)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "message", "conversation_id", "agent_id", "exc"}
    assert first["message"] == "multi\nline 7"
    assert first["level"] == "DEBUG"
    assert first["logger"] == "orchestrator.test"
    assert first["ts"].endswith("Z")
    assert first["exc"] is None
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["exc"]


def outside_and_inside(stream: io.StringIO) -> list[str]:
    """The lines of one record logged outside a conversation's context and one inside it."""
    log.warning("outside")
    with log_context(conversation_id="c-9", agent_id="sales"):
        log.warning("inside")
    return stream.getvalue().splitlines()


def test_text_format_shows_context_only_when_set(stream: io.StringIO) -> None:
    configure_logging(stream=stream)
    outside, inside = outside_and_inside(stream)
    assert outside.endswith(" WARNING orchestrator.test outside")
    assert inside.endswith(" WARNING orchestrator.test [conversation=c-9 agent=sales] inside")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_registered_secret_never_appears(stream: io.StringIO, fmt: Any) -> None:
    configure_logging(level="DEBUG", fmt=fmt, stream=stream, secrets=[TOKEN])
    log.info("token is %s", TOKEN)
    log.info(f"inline {TOKEN}")
    log.debug("url wss://platform.example/socket?customer_id=c&auth_token=%s", TOKEN)
    log.info("stack", stack_info=True, extra={"agent_id": "a"})
    try:
        raise RuntimeError(f"auth failed for {TOKEN}")
    except RuntimeError:
        log.exception("connect failed")
    with log_context(conversation_id="c", agent_id="a"):
        log.error("again: %r", {"botToken": TOKEN})
    output = stream.getvalue()
    assert TOKEN not in output
    assert output.count("***") >= 5


def test_a_secret_learned_later_is_masked(stream: io.StringIO) -> None:
    secrets = configure_logging(stream=stream)
    secrets.add_secret("late-secret-42")
    log.info("now %s", "late-secret-42")
    assert "late-secret-42" not in stream.getvalue()


def test_extra_filters_run(stream: io.StringIO) -> None:
    class DropNoise(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "noise" not in record.getMessage()

    configure_logging(stream=stream, filters=[DropNoise()])
    log.info("noise")
    log.info("signal")
    assert stream.getvalue().count("\n") == 1
    assert "signal" in stream.getvalue()


def test_configuring_twice_replaces_the_handler(stream: io.StringIO) -> None:
    first = io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=stream, level="warning")
    log.info("dropped by level")
    log.warning("kept")
    assert first.getvalue() == ""
    assert stream.getvalue().count("\n") == 1
    assert len(logging.getLogger("orchestrator").handlers) == 1


def test_level_applies_to_the_whole_tree(stream: io.StringIO) -> None:
    configure_logging(level="ERROR", stream=stream)
    logging.getLogger("orchestrator.http").warning("quiet")
    logging.getLogger("orchestrator.supervisor").error("loud")
    assert "quiet" not in stream.getvalue()
    assert "loud" in stream.getvalue()


@pytest.mark.parametrize("level", ["verbose", "", "warn ", "10"])
def test_unknown_levels_are_config_errors(level: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown log level .*debug, info, warning, error"):
        configure_logging(level=level)


def test_unknown_formats_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown log format 'xml': use one of text, json"):
        configure_logging(fmt="xml")  # type: ignore[arg-type]


def test_a_worker_process_names_itself_in_every_record(stream: io.StringIO) -> None:
    configure_logging(stream=stream, filters=[WorkerFilter(1)])
    outside, inside = outside_and_inside(stream)
    assert outside.endswith(" WARNING orchestrator.test [worker=1] outside")
    assert inside.endswith(" WARNING orchestrator.test [worker=1 conversation=c-9 agent=sales] inside")
    stream.seek(0)
    stream.truncate()
    configure_logging(fmt="json", stream=stream, filters=[WorkerFilter(0)])
    log.warning("json")
    assert json.loads(stream.getvalue())["worker"] == 0
