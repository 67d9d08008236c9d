"""The load generator's conversations, in process: every call is recorded once, chained or not.

Without thinking, an answer's socket task sends the next call (see
``ConversimpleConversation.converse``); with it, the conversation's own task
sleeps and sends. Either way the call table must hold each call exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from benchmarks.harness.loadgen import STATUS, LoadGenerator
from examples.echo import EchoAgent
from orchestrator.sandbox import SandboxServer
from tests.helpers import wait_until
from tests.sandbox_client import RawAgent


@pytest.fixture
async def generator() -> AsyncIterator[LoadGenerator]:
    server = SandboxServer(record_messages=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(RawAgent(server.conversimple_url, {"echo": EchoAgent}).run)
        loadgen = LoadGenerator(server, None)
        loadgen.nursery = nursery
        yield loadgen
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("think", "gated"), [(0.0, True), (0.0, False), (0.01, True)])
async def test_loadgen_records_every_call_once(
    autojump_clock: trio.abc.Clock, generator: LoadGenerator, think: float, gated: bool
) -> None:
    n, calls = 3, 5
    command = {
        "cmd": "open",
        "batch": "main",
        "n": n,
        "calls": calls,
        "think": think,
        "gated": gated,
        "seed": 1,
    }
    await generator.handle(command)
    batch = generator.batches["main"]
    if gated:
        await wait_until(lambda: len(batch.live) == n, 10, "the conversations")
        await wait_until(lambda: all(c.registered.is_set() for c in batch.live), 10, "the registrations")
        assert len(generator.calls.column("sent_at")) == 0  # the gate holds every call
        # All registered is the moment the last one did, not the next tick's (up to 0.2 s
        # later: connect_s was rounded to ticks, found in review).
        assert generator.nursery is not None
        generator.nursery.start_soon(generator.ticker)
        await wait_until(lambda: batch.all_registered_at is not None, 10, "the tick that sees them")
        assert batch.all_registered_at == batch.last_registered_at
        await generator.handle({"cmd": "go", "batch": "main"})
    await wait_until(lambda: batch.done_at is not None, 30, "the batch to finish")
    table = generator.calls
    assert batch.outcomes == {"completed": n}
    assert len(table.column("sent_at")) == n * calls
    assert set(table.column("status")) == {STATUS["ok"]} and set(table.column("deliveries")) == {1.0}
    assert all(latency >= 0 for latency in table.column("latency"))
    # Ungated, each conversation's first call records its setup time (gated: the gate's wait).
    assert len(batch.setup) == (0 if gated else n)
    logs = [generator.server.recorder.conversations[f"load-{i:06d}"] for i in range(1, n + 1)]
    recorded = sorted(c.sent_at for log in logs for c in log.calls)
    assert sorted(table.column("sent_at")) == recorded  # each call once, none twice
