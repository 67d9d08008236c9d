"""`orchestrator run --workers 2`: real processes, real signals, the sandbox in this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from orchestrator.sandbox.scenarios import parse_scenario
from orchestrator.sandbox.server import SandboxServer
from orchestrator.workers import owner
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


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
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        command = [
            sys.executable, "-m", "orchestrator", "run", "tests/helpers.py:EchoAgent", "--workers", "2",
            "--url", server.conversimple_url, "--api-key", "workers-key", "--http-port", str(port),
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await workers_status(client, ready=True)
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
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_the_parent_is_not_ready_before_the_platform_is_reached() -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "orchestrator", "run", "tests/helpers.py:EchoAgent", "--workers", "2",
        "--url", f"ws://127.0.0.1:{free_port()}/customer_sdk/websocket", "--api-key", "workers-key",
        "--http-port", str(port),
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            status = await workers_status(client)
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["reason"]) == (503, "platform_not_reached")
            assert status["platform_reached"] is False
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
