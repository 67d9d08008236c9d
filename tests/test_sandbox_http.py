"""`orchestrator sandbox` serves /metrics, /healthz, /readyz and /status too (a real subprocess)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


async def test_sandbox_command_serves_the_operations_endpoint() -> None:
    port = free_port()
    command = [sys.executable, "-m", "orchestrator", "sandbox", "--port", "0", "--http-port", str(port)]
    process = await trio.lowlevel.open_process(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with trio.fail_after(20):
                while True:
                    try:
                        health = await client.get("/healthz")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
            assert health.status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            assert "sandbox" in (await client.get("/status")).json()
            assert "process_resident_memory_bytes" in (await client.get("/metrics")).text
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
