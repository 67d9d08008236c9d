"""`orchestrator run --workers 2`: real processes, real signals, the sandbox in this process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from orchestrator.workers import owner
from tests.helpers import control_dropped_behind, free_port

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def parent(
    url: str,
    *,
    key: str = "workers-key",
    port: int | None = None,
    stderr: int = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[trio.Process]:
    """``orchestrator run --workers 2`` serving tests/helpers.py's EchoAgent on ``url``;
    killed on the way out if it is still running."""
    command = [
        sys.executable, "-m", "orchestrator", "run", "tests/helpers.py:EchoAgent", "--workers", "2",
        "--url", url, "--api-key", key, "--http-port", str(port or free_port()),
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def workers_up(
    server: SandboxServer, **options: Any
) -> AsyncIterator[tuple[trio.Process, httpx.AsyncClient, dict[str, Any]]]:
    """``server`` serving, and a :func:`parent` against it whose workers run and whose
    ``/readyz`` answers 200: the parent, a client of its HTTP endpoint, its /status."""
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with (
            parent(server.conversimple_url, port=port, **options) as process,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            yield process, client, await workers_status(client, ready=True)
        nursery.cancel_scope.cancel()


async def workers_status(client: httpx.AsyncClient, *, ready: bool = False) -> dict[str, Any]:
    """The parent's /status once every worker runs and serves HTTP (and, if ``ready``,
    once its /readyz answers 200)."""
    with trio.fail_after(30):
        while True:
            try:
                status: dict[str, Any] = (await client.get("/status")).json()
                alive = all(w["alive"] and w["http_port"] for w in status["workers"])
                if alive and (not ready or (await client.get("/readyz")).status_code == 200):
                    return status
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


def test_rendezvous_ownership_is_deterministic_and_spread() -> None:
    ids = [f"conv-{i}" for i in range(1000)]
    first = [owner(cid, 4) for cid in ids]
    assert first == [owner(cid, 4) for cid in ids]
    counts = [first.count(i) for i in range(4)]
    assert min(counts) > 200  # roughly even
    # Growing the pool moves only the conversations the new worker wins.
    moved = sum(1 for cid, old in zip(ids, first, strict=True) if owner(cid, 5) not in (old, 4))
    assert moved == 0


@pytest.mark.slow
async def test_two_workers_share_conversations_survive_a_worker_death_and_drain() -> None:
    server = SandboxServer()
    async with workers_up(server, stderr=subprocess.PIPE) as (process, client, _):
        plan = {"conversation": [{"agent_id": "echo", "repeat": 20, "calls": 3}]}
        ids = server.add_conversations(parse_scenario(plan))
        with trio.fail_after(60):
            await server.wait_done(ids)
        assert all(server.conversation(c).outcome == "completed" for c in ids)
        assert server.report(ids).duplicates == 0
        status = (await client.get("/status")).json()
        started = []
        for w in status["workers"]:
            worker_status = (
                await httpx.AsyncClient().get(f"http://127.0.0.1:{w['http_port']}/status")
            ).json()
            started.append(worker_status["started_total"])
        assert sum(started) == 20 and all(n > 0 for n in started)

        # A worker dies: the parent restarts it and re-announces what it owned.
        victim = status["workers"][0]
        plan = {"conversation": [{"agent_id": "echo", "repeat": 10, "turn": [
            {"tool": "nap", "arguments": {"seconds": 1.0}}]}]}  # fmt: skip
        more = server.add_conversations(parse_scenario(plan))
        await trio.sleep(0.3)
        os.kill(victim["pid"], signal.SIGKILL)
        with trio.fail_after(60):
            await server.wait_done(more)
        assert all(server.conversation(c).outcome == "completed" for c in more), [
            server.conversation(c).failures for c in more
        ]
        status = (await client.get("/status")).json()
        assert status["workers"][0]["restarts"] == 1

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0
        assert process.stderr is not None
        logged = b""
        with trio.move_on_after(5):
            while chunk := await process.stderr.receive_some():
                logged += chunk
        # Each worker's records say which worker wrote them.
        assert b"[worker=0]" in logged and b"[worker=1]" in logged, logged.decode()[-2000:]
        # The parent says what one process says of its control connection, and when
        # it is done (it said neither: found in review).
        assert b"control connection up: ws://127.0.0.1:" in logged
        assert logged.rstrip().endswith(b"every worker has drained: exiting"), logged[-500:]


@pytest.mark.slow
async def test_the_parent_is_not_ready_before_the_platform_is_reached() -> None:
    port = free_port()
    async with parent(f"ws://127.0.0.1:{free_port()}/customer_sdk/websocket", port=port) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            status = await workers_status(client)
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["reason"]) == (503, "platform_not_reached")
            assert status["platform_reached"] is False
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0


@pytest.mark.slow
async def test_a_conversation_ended_while_the_control_connection_hears_nothing_leaves_the_parent() -> None:
    # Found in review: the parent forgot a conversation only when the control connection
    # said it ended, so with that connection down at the time (chaos through a fault proxy)
    # /status counted ended conversations for ever, and a restarted worker got them back.
    server = SandboxServer(notify_control_on_end=False)  # each end reaches its own socket only
    async with workers_up(server) as (process, client, _):
        plan = {"conversation": [{"agent_id": "echo", "repeat": 10, "calls": 2}]}
        ids = server.add_conversations(parse_scenario(plan))
        with trio.fail_after(60):
            await server.wait_done(ids)
        assert all(server.conversation(c).outcome == "completed" for c in ids)
        with trio.fail_after(10):
            while True:
                status = (await client.get("/status")).json()
                if sum(w["conversations"] for w in status["workers"]) == 0:
                    break
                await trio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0


async def test_a_conversation_announced_on_a_workers_socket_is_routed_by_the_parent() -> None:
    # Found by a 10,000-conversation benchmark round (one process): with the control
    # socket gone, the platform announces on the earliest-joined socket left, a
    # conversation's, and the actor there ignored every announcement.
    server = SandboxServer()
    async with workers_up(server) as (process, _, _):
        holding, held = await control_dropped_behind(server, 8.0)
        router = server.conversimple
        plan = {"conversation": [{"agent_id": "echo", "repeat": 6, "calls": 2}]}
        ids = server.add_conversations(parse_scenario(plan))
        with trio.fail_after(30):
            await server.wait_done(ids)
        assert [router.conversations[c].control for c in ids] == [held] * 6  # announced there
        assert [server.conversation(c).outcome for c in ids] == ["completed"] * 6
        with trio.fail_after(30):
            await server.wait_done([holding])
        assert server.conversation(holding).outcome == "completed"
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0


@pytest.mark.slow
async def test_a_parent_the_platform_refuses_stops_its_workers_before_it_exits() -> None:
    # Found in review: the parent printed the refusal and exited, and its workers went on
    # alone, each printing a BrokenPipeError traceback once it found the parent gone.
    server = SandboxServer(api_keys={"the-right-key"}, auth_at_handshake=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        mark = f"refused-{os.getpid()}-{free_port()}"  # finds this run's workers, and only them
        marked = {"ORCHESTRATOR_TEST_MARK": mark}
        async with parent(
            server.conversimple_url, key="a-wrong-key", stderr=subprocess.PIPE, env=marked
        ) as process:
            assert process.stderr is not None
            with trio.fail_after(60):
                await process.wait()
            # Gone when the parent is: it stopped them (they would end later by themselves,
            # once they found the parent gone, which is not what it must do).
            assert _marked(mark) == [], "workers outlived their parent"
            logged = b""
            with trio.fail_after(30):
                while chunk := await process.stderr.receive_some():
                    logged += chunk
            text = logged.decode()
            assert process.returncode == 3, text[-2000:]
            assert "401" in text and "a-wrong-key" not in text
            assert "Traceback" not in text and "BrokenPipeError" not in text, text[-3000:]
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_workers_whose_parent_is_killed_drain_and_exit() -> None:
    # They used to serve on for ever, with nothing ever routed to them again.
    async with workers_up(SandboxServer()) as (process, _, status):
        pids = [w["pid"] for w in status["workers"]]
        try:
            process.kill()
            await process.wait()
            with trio.fail_after(30):
                while True:
                    if not _running(pids):
                        break
                    await trio.sleep(0.05)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _running(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (a zombie has exited)."""
    running = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
    return running


def _marked(mark: str) -> list[int]:
    """Running processes whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if (
                process.environ().get("ORCHESTRATOR_TEST_MARK") == mark
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process.pid)
    return found


@pytest.mark.slow
async def test_a_drain_that_begins_while_a_worker_restarts_does_not_restart_it() -> None:
    # Found in review: the restart went ahead into the drain, unsignalled, and the parent
    # waited for it for ever.
    server = SandboxServer()
    async with workers_up(server) as (process, _, status):
        # Worker 0 drains for 3 s, past the moment worker 1 would be restarted.
        ids = [f"conv-{i:05d}" for i in range(1, 41)]
        zero = sum(1 for cid in ids if owner(cid, 2) == 0)
        plan = {"conversation": [{"agent_id": "echo", "repeat": 40, "turn": [
            {"tool": "nap", "arguments": {"seconds": 3.0}}]}]}  # fmt: skip
        assert server.add_conversations(parse_scenario(plan)) == ids and zero > 0
        await trio.sleep(0.8)  # in their calls
        os.kill(status["workers"][1]["pid"], signal.SIGKILL)
        await trio.sleep(0.1)  # the parent sees it die, and waits 0.5-1 s to restart it
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 1  # worker 1's conversations were not drained


@pytest.mark.slow
async def test_a_parent_that_fails_while_draining_lets_its_workers_finish_the_drain() -> None:
    # Found in review: the parent's failure sent each worker a second SIGTERM, which made
    # it cancel its conversations at once instead of letting them end.
    server = SandboxServer()
    async with workers_up(server) as (process, _, _):
        nap = {"tool": "nap", "arguments": {"seconds": 6.0}}  # past the control connection's retry
        plan = {"conversation": [{"agent_id": "echo", "repeat": 6, "turn": [nap]}]}
        ids = server.add_conversations(parse_scenario(plan))
        await trio.sleep(0.8)  # every conversation is in its call
        process.send_signal(signal.SIGTERM)  # the drain begins
        await trio.sleep(0.2)
        server.refuse_handshakes(401)  # and the platform turns the parent away
        router = server.conversimple
        for control in {c.control for c in router.conversations.values() if c.control is not None}:
            router.abort(control)
        with trio.fail_after(60):
            await server.wait_done(ids)
            await process.wait()
        assert process.returncode == 3  # the platform failed it
        assert all(server.conversation(c).outcome == "completed" for c in ids), [
            (server.conversation(c).outcome, server.conversation(c).failures) for c in ids
        ]
