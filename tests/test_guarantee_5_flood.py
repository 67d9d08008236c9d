"""Guarantee 5: memory stays bounded under a flood. A peer that sends faster than an agent
consumes meets backpressure, not an unbounded queue.

The orchestrator runs as a real ``orchestrator run`` subprocess (its RSS measured with
psutil); the platform is :class:`MiniPlatform` in this process. Once the conversation has
registered, the platform tries to push 200 MB of ``tool_call_request`` frames (64 KiB each)
as fast as TCP allows at an agent whose tool never returns. The actor runs
``max_concurrent_calls`` of them, then stops reading its socket (it reads its link only
when it can take the next event, so nothing queues in between): the kernel buffers fill
and the platform's sends block.
"""

from __future__ import annotations

import pytest
import trio

from .test_guarantees import KIT, Child, MiniPlatform, child

MB = 1 << 20
FLOOD_BYTES = 200 * MB
FRAME_PAD = 64 * 1024
MAX_RSS_GROWTH = 20 * MB
STALL = 3.0
"""Seconds without a byte sent that count as the flooder being blocked by backpressure."""
DEADLINE = 45.0
CONCURRENT = 16  # the default


def sample_value(metrics: str, name: str, label: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
async def test_guarantee_5_flood_at_a_stalled_agent_meets_backpressure_and_rss_stays_flat(
    nursery: trio.Nursery,
) -> None:
    mini = MiniPlatform()
    await nursery.start(mini.run)
    args = [f"{KIT}:Stalled", "--url", mini.url, "--api-key", "k", "--log-level", "warning"]
    async with child(*args) as running:
        await mini.announce("flood", "stalled")
        await mini.wait_registered("flood")
        await trio.sleep(0.5)
        baseline = max([running.rss()] + [await settle(running) for _ in range(3)])

        pad = "x" * FRAME_PAD
        sent = 0
        frames = 0

        async def flood() -> None:
            nonlocal sent, frames
            while sent < FLOOD_BYTES:
                text = mini.request("flood", f"f-{frames}", "wait", {"note": pad}, timeout=600)
                await mini.send_text("flood", text)
                sent += len(text)
                frames += 1

        peak = baseline
        async with trio.open_nursery() as flooding:
            flooding.start_soon(flood)
            started = last_progress = trio.current_time()
            last_sent = 0
            while sent < FLOOD_BYTES and trio.current_time() - started < DEADLINE:
                await trio.sleep(0.25)
                peak = max(peak, running.rss())
                if sent != last_sent:
                    last_sent, last_progress = sent, trio.current_time()
                elif trio.current_time() - last_progress >= STALL:
                    break
            blocked_for = trio.current_time() - last_progress
            for _ in range(4):  # the process keeps its memory while the flood stays stuck
                await trio.sleep(0.25)
                peak = max(peak, running.rss())
            assert (await running.get("/healthz")).status_code == 200
            metrics = (await running.get("/metrics")).text
            flooding.cancel_scope.cancel()

    growth = peak - baseline
    received = sample_value(metrics, "orchestrator_messages_received_total", 'event="tool_call_request"')
    summary = (
        f"flooder sent {sent / MB:.1f} MB ({frames} frames) then was blocked for {blocked_for:.1f} s; "
        f"the orchestrator took {received:.0f} requests; RSS grew {growth / MB:.1f} MB"
    )
    print(summary)  # shown with -rA: the figures docs/guarantees.md quotes
    assert sent < FLOOD_BYTES and blocked_for >= STALL, summary  # backpressure reached the sender
    assert received <= CONCURRENT + 2, summary  # read only what it could take
    assert growth < MAX_RSS_GROWTH, summary


async def settle(running: Child) -> int:
    await trio.sleep(0.1)
    return running.rss()
