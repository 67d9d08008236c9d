"""Guarantee 3: a conversation over its restart budget fails alone and is reported; the
process and the other conversations live on.

The whole service (``run_service``: supervisor, platform dispatch, hypercorn serving
/metrics, /status, /readyz) runs in this process against the sandbox over real sockets.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.agent import Agent
from orchestrator.config import HttpSettings, Settings
from orchestrator.connection import LinkPolicy
from orchestrator.platforms.conversimple import ConversimplePlatform
from orchestrator.sandbox.server import SandboxServer
from orchestrator.service import Running, run_service
from orchestrator.supervision import SupervisorSettings

from .test_guarantees import API_KEY, CUSTOMER, Steady, scenario, wait_until


class Crasher(Agent):
    """Crashes every time its conversation starts: a restart cannot help."""

    agent_id = "crasher"
    starts = 0

    async def on_conversation_started(self, conversation: Any) -> None:
        Crasher.starts += 1
        raise RuntimeError("cannot start")


def scraped(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_guarantee_3_over_budget_conversation_fails_alone_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator")
    Crasher.starts = 0
    supervision = SupervisorSettings(restart_budget=3, restart_window=5.0, backoff_min=0.05, backoff_max=0.2)
    settings = Settings(supervisor=supervision, http=HttpSettings(port=0))
    server = SandboxServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        platform = ConversimplePlatform(
            server.conversimple_url, API_KEY, CUSTOMER, LinkPolicy(backoff_initial=0.1)
        )
        service: Running = await nursery.start(
            lambda task_status: run_service(
                settings,
                [Steady, Crasher],
                platform,
                registry=CollectorRegistry(),
                handle_signals=False,
                task_status=task_status,
            )
        )
        supervisor = service.supervisor
        steady = server.add_conversations(scenario({"agent_id": "steady", "repeat": 10, "calls": 30}))
        server.add_conversations(scenario({"agent_id": "crasher", "calls": 1}))
        await wait_until(
            lambda: supervisor.statistics().ended_total["failed"] == 1, 30, "the crasher to fail"
        )
        with trio.fail_after(30):
            await server.wait_done(steady)

        # It failed alone: every other conversation completed every call, none restarted.
        for cid in steady:
            log = server.conversation(cid)
            assert log.outcome == "completed" and [c.status for c in log.calls] == ["ok"] * 30
        assert Crasher.starts == 4  # the first start and its three restarts, then no more
        stats = supervisor.statistics()
        assert stats.restarts_total == 3 and not stats.breaker_open

        # It is reported: metrics, /status and an error log line.
        base = f"http://127.0.0.1:{service.http_port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            metrics = (await client.get("/metrics")).text
            status = json.loads((await client.get("/status")).text)
            health, ready = (
                (await client.get("/healthz")).status_code,
                (await client.get("/readyz")).status_code,
            )
        failed = scraped(metrics, "orchestrator_conversations_ended_total", agent="crasher", outcome="failed")
        assert failed == 1
        assert scraped(metrics, "orchestrator_actor_restarts_total", agent="crasher", reason="crash") == 3
        assert scraped(metrics, "orchestrator_actor_restarts_total", agent="steady", reason="crash") == 0
        assert scraped(metrics, "orchestrator_breaker_open") == 0
        assert status["ended_total"]["failed"] == 1 and status["restarts_total"] == 3
        assert (health, ready) == (200, 200)
        budget = [r for r in caplog.records if "restart budget" in r.getMessage()]
        assert len(budget) == 1 and budget[0].levelno == logging.ERROR

        # The process lives on: new conversations are admitted and served.
        later = server.add_conversations(scenario({"agent_id": "steady", "repeat": 3, "calls": 5}))
        with trio.fail_after(30):
            await server.wait_done(later)
        assert {server.conversation(cid).outcome for cid in later} == {"completed"}
        nursery.cancel_scope.cancel()
