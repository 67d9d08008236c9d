"""The whole service in-process: supervisor + a real hypercorn serving /metrics, /readyz, /status."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import events as ev
from orchestrator.config import Settings
from orchestrator.service import (
    GC_FOLLOW_INTERVAL,
    GC_IDLE_CHECK,
    GC_IDLE_CUSHION,
    GC_IDLE_SHARE,
    GC_THRESHOLD_GEN0,
    GC_THRESHOLD_GEN1,
    GC_THRESHOLD_GEN2,
    GC_YOUNG_PER_CONVERSATION,
    Running,
    collect_when_idle,
    follow_conversations,
    run_service,
    tune_gc,
)
from orchestrator.testing import MemoryPlatform

from .helpers import CrashOnStartAgent, EchoAgent, free_port, wait_until


@asynccontextmanager
async def service(**supervisor: Any) -> AsyncIterator[tuple[Running, MemoryPlatform, httpx.AsyncClient]]:
    settings = Settings.load(env={}, overrides={"http": {"port": 0}, "supervisor": supervisor})
    platform = MemoryPlatform()
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(
            lambda task_status: run_service(
                settings,
                [EchoAgent, CrashOnStartAgent],
                platform,
                registry=CollectorRegistry(),
                handle_signals=False,
                task_status=task_status,
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as client:
            yield running, platform, client
        nursery.cancel_scope.cancel()


def scrape(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_scrape_shows_tool_errors_and_restarts_while_conversations_run() -> None:
    async with service() as (running, platform, client):
        sup = running.supervisor
        await sup.start_conversation("a", "echo")
        peer = platform.peer("a")
        await peer.call_tool("1", "explode", {})
        await peer.call_tool("2", "echo", {"text": "x"})
        text = (await client.get("/metrics")).text
        assert scrape(text, "orchestrator_tool_calls_total", tool="explode", outcome="error") == 1
        assert scrape(text, "orchestrator_tool_calls_total", tool="echo", outcome="ok") == 1
        assert scrape(text, "orchestrator_conversations", state="running", agent="echo") == 1
        assert scrape(text, "orchestrator_actor_restarts_total", agent="echo", reason="manual") == 0
        sup.restart("a")
        await trio.testing.wait_all_tasks_blocked()
        text = (await client.get("/metrics")).text
        assert scrape(text, "orchestrator_actor_restarts_total", agent="echo", reason="manual") == 1
        assert "process_resident_memory_bytes" in text
        status = (await client.get("/status")).json()
        assert status["conversations"]["active"] == 1 and status["restarts_total"] == 1
        assert "version" in status and "uptime_seconds" in status


async def test_crash_restart_counts_under_reason_crash() -> None:
    async with service(restart_budget=0) as (running, _, client):
        running.supervisor.start_conversation_nowait("bad", "crasher")
        assert await running.supervisor.wait_ended("bad") == "failed"
        text = (await client.get("/metrics")).text
        assert scrape(text, "orchestrator_conversations_ended_total", agent="crasher", outcome="failed") == 1


async def test_drain_flips_readyz_before_the_first_conversation_ends() -> None:
    async with service(drain_timeout=30) as (running, platform, client):
        sup = running.supervisor
        for cid in ("a", "b"):
            await sup.start_conversation(cid, "echo")
        assert (await client.get("/readyz")).status_code == 200
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.drain)
            await trio.testing.wait_all_tasks_blocked()
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["reason"] == "draining"
            assert len(sup) == 2  # nobody has ended yet
            text = (await client.get("/metrics")).text
            assert scrape(text, "orchestrator_draining") == 1
            for cid in ("a", "b"):
                await platform.peer(cid).send(ev.ConversationEnded())
        assert len(sup) == 0
        assert (await client.get("/healthz")).status_code == 200


async def test_the_young_collection_threshold_follows_the_conversations_hosted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each waiting conversation holds young objects every young collection walks:
    # the more conversations the process hosts now, the rarer those collections.
    before = gc.get_threshold()
    hosted: list[int] = []
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_THRESHOLD_GEN0, GC_THRESHOLD_GEN1, GC_THRESHOLD_GEN2)
        async with trio.open_nursery() as nursery:
            await nursery.start(follow_conversations, hosted)
            await trio.sleep(GC_FOLLOW_INTERVAL / 2)  # between two looks, from here on
            steps = ((1_000, GC_THRESHOLD_GEN0), (20_000, 600_000), (4_000, 120_000), (0, GC_THRESHOLD_GEN0))
            for count, young in steps:
                hosted[:] = range(count)
                await trio.sleep(GC_FOLLOW_INTERVAL)
                assert gc.get_threshold() == (young, GC_THRESHOLD_GEN1, GC_THRESHOLD_GEN2)
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_running_service_sizes_the_young_generation_to_its_conversations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = gc.get_threshold()
    settings = Settings.load(env={}, overrides={"http": {"enabled": False}})
    platform = MemoryPlatform()
    try:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                lambda task_status: run_service(
                    settings, [EchoAgent], platform, registry=CollectorRegistry(),
                    handle_signals=False, task_status=task_status,
                )
            )  # fmt: skip
            for i in range(4_000):
                running.supervisor.start_conversation_nowait(f"c{i}", "echo")
            await trio.sleep(2 * GC_FOLLOW_INTERVAL)
            assert gc.get_threshold()[0] == 4_000 * GC_YOUNG_PER_CONVERSATION
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_young_collections_are_made_early_while_every_task_waits() -> None:
    # Idle means every task waiting for GC_IDLE_CUSHION of real time (as trio measures
    # it), so this runs on the real clock: about half a second.
    before = gc.get_threshold()
    collected: list[int] = []
    worked = trio.Event()

    def collect(generation: int) -> None:
        collected.append(generation)
        gc.collect(generation)

    async def worker() -> None:  # wakes every millisecond: the process is never idle long
        for _ in range(int(5 * GC_IDLE_CHECK / (GC_IDLE_CUSHION / 5))):
            await trio.sleep(GC_IDLE_CUSHION / 5)
        worked.set()

    try:
        gc.set_threshold(1_000_000, *before[1:])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await nursery.start(lambda task_status: collect_when_idle(collect, task_status=task_status))
            keep = [[] for _ in range(int(GC_IDLE_SHARE * 1_000_000))]  # a quarter-full young generation
            await trio.sleep(4 * GC_IDLE_CHECK)
            assert collected == []  # the worker kept the process busy throughout
            await worked.wait()
            await trio.sleep(GC_IDLE_CHECK)
            await trio.testing.wait_all_tasks_blocked(10 * GC_IDLE_CUSHION)
            assert collected == [0]  # idle: the young generation, once (not again while nothing is made)
            del keep
            nursery.cancel_scope.cancel()
    finally:
        gc.set_threshold(*before)


def test_the_young_threshold_stays_within_what_the_collector_takes() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(100_000_000)  # 30 x that is past a C int
        assert gc.get_threshold()[0] == 2**31 - 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@attrs.define(eq=False)
class _GatedPlatform(MemoryPlatform):
    """Reached only once the test opens the gate."""

    gate: trio.Event = attrs.Factory(trio.Event)

    async def run(
        self, supervisor: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.gate.wait()
        await MemoryPlatform.run(self, supervisor, task_status=task_status)


async def test_readyz_is_503_until_the_platform_is_first_reached() -> None:
    port = free_port()
    settings = Settings.load(env={}, overrides={"http": {"port": port}})
    platform = _GatedPlatform()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_service(
                settings, [EchoAgent], platform, registry=CollectorRegistry(), handle_signals=False
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with trio.fail_after(10):
                while True:
                    try:
                        ready = await client.get("/readyz")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.02)
            assert (ready.status_code, ready.json()) == (
                503,
                {"ready": False, "reason": "platform_not_reached"},
            )
            assert (await client.get("/status")).json()["platform_reached"] is False
            assert scrape((await client.get("/metrics")).text, "orchestrator_ready") == 0
            platform.gate.set()
            await wait_until(lambda: platform.supervisor is not None, 10, "the platform to be reached")
            await trio.testing.wait_all_tasks_blocked()
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ready": True, "reason": "ok"})
            assert (await client.get("/status")).json()["platform_reached"] is True
        nursery.cancel_scope.cancel()
