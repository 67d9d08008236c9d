"""Admission from a platform's announcements: what a refusal logs."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from orchestrator.dispatcher import QUIET_FOR, admit
from orchestrator.supervision import SupervisorSettings

from .helpers import running_supervisor, sample


def _refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str | None, str | None]]:
    return [
        (r.levelno, r.getMessage(), getattr(r, "conversation_id", None), getattr(r, "agent_id", None))
        for r in caplog.records
        if r.name == "orchestrator.dispatcher"
    ]


async def test_each_refusal_names_its_conversation_once_in_plain_words(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an operator: refusals other than a duplicate carried no conversation id,
    a draining one said "draining" twice, and a memory one gave neither the RSS nor the
    limit."""
    caplog.set_level(logging.INFO, logger="orchestrator.dispatcher")
    rss = [0]
    settings = SupervisorSettings(max_conversations=1, memory_limit_bytes=8_000)
    async with running_supervisor(settings=settings, memory_probe=lambda: rss[0]) as (sup, _, _):
        assert admit(sup, "c-1", "echo")
        assert not admit(sup, "c-1", "echo")
        assert not admit(sup, "c-2", "nobody")
        assert not admit(sup, "c-3", "echo")
        sup.stop("c-1")
        await sup.wait_idle()
        rss[0] = 9_000
        assert not admit(sup, "c-4", "echo")
        rss[0] = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.drain)
            await trio.testing.wait_all_tasks_blocked()
            assert not admit(sup, "c-5", "echo")
    assert _refusals(caplog) == [
        (
            logging.INFO,
            "conversation not admitted (duplicate): conversation is already hosted",
            "c-1",
            "echo",
        ),
        (
            logging.WARNING,
            "conversation not admitted (unknown_agent): no agent class has agent_id 'nobody' (served: echo)",
            "c-2",
            "nobody",
        ),
        (
            logging.WARNING,
            "conversation not admitted (capacity): at capacity (1 conversation)",
            "c-3",
            "echo",
        ),
        (
            logging.WARNING,
            "conversation not admitted (memory): memory ceiling reached (RSS 9,000 bytes, limit 8,000 bytes)",
            "c-4",
            "echo",
        ),
        (
            logging.INFO,
            "conversation not admitted (draining): shutting down: no new conversations",
            "c-5",
            "echo",
        ),
    ]


async def test_a_flood_of_refusals_is_one_line_a_second_and_each_is_counted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.dispatcher")
    async with running_supervisor(settings=SupervisorSettings(max_conversations=1)) as (sup, _, metrics):
        assert admit(sup, "held", "echo")
        for i in range(500):
            assert not admit(sup, f"c-{i}", "echo")
        await trio.sleep(QUIET_FOR)
        assert not admit(sup, "late", "echo")
        assert sample(metrics, "orchestrator_admissions_rejected_total", reason="capacity") == 501
    lines = _refusals(caplog)
    assert [(message, cid) for _, message, cid, _ in lines] == [
        ("conversation not admitted (capacity): at capacity (1 conversation)", "c-0"),
        (
            "conversation not admitted (capacity): at capacity (1 conversation)"
            " (and 499 more since the last such line)",
            "late",
        ),
    ]
