"""The load generator process: the sandbox platform, driven in phases by the harness.

    python -m benchmarks.harness.loadgen [--port 0] [--proxy]

It serves the sandbox (``orchestrator.sandbox``) on 127.0.0.1 and reads commands,
one JSON object per line, on stdin; it answers with events, one JSON object per
line, on stdout (``ev``: listening, tick, opened, registered, done, dropped,
recovered, dumped, error). Commands::

    {"cmd": "open", "batch": "main", "n": 1000, "calls": 20, "rate": 0, "think": 0,
     "gated": true, "agent_id": "echo", "seed": 0, "duration": null,
     "platform": "conversimple", "words": 20}
    {"cmd": "go", "batch": "main"}          # a gated batch starts calling
    {"cmd": "drop", "batch": "main", "share": 0.3, "outage": 0}
    {"cmd": "dump", "path": "/tmp/calls.bin"}
    {"cmd": "quit"}

A *gated* batch registers its conversations and holds every call until ``go``
(idle memory, then a clean start for throughput). ``think`` spaces a
conversation's calls (seconds, jittered ±50%). On ``platform`` arinova a call is a
customer message of ``words`` words, answered by a streamed reply (its latency is
to the completed reply; ``first_chunk`` to the first chunk). With ``duration`` each of the
``n`` slots runs conversations back to back until that many seconds after
``go`` (a soak: conversations come and go, the load stays constant; their lengths vary
uniformly in [calls/2, 3·calls/2] so the slots do not stay in step).

Times are ``time.perf_counter()`` seconds: CLOCK_MONOTONIC on Linux, so they
compare with the harness's own samples of the process under test.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import raise_open_files_limit
from orchestrator.faults import FaultProxy
from orchestrator.sandbox import SandboxServer, SandboxSettings

try:  # where the sandbox keeps its conversation class (it moved once)
    from orchestrator.sandbox.conversation import ConversimpleConversation
except ImportError:  # pragma: no cover - older sandbox layout
    from orchestrator.sandbox.conversimple import ConversimpleConversation  # type: ignore[attr-defined,no-redef]
from orchestrator.sandbox.arinova import ArinovaConversation
from orchestrator.sandbox.recorder import CallRecord, ReplyRecord
from orchestrator.sandbox.scenarios import ConversationPlan

TICK = 0.2
"""Seconds between two ``tick`` events (live progress and the conversations chart)."""
STATUS = {"ok": 0, "error": 1, "lost": 2}
COLUMNS = ("sent_at", "latency", "status", "batch", "tool", "deliveries", "first_chunk", "chunks")
"""The call table :meth:`Calls.dump` writes: one row of these float64s per call."""


@attrs.define(eq=False)
class Calls:
    """Every answered or lost call, a row of :data:`COLUMNS` each (a million calls is ~64 MB).

    Row by row: one ``extend`` a call, not an ``append`` per column (the load
    generator shares the machine with what it measures)."""

    rows: array.array[float] = attrs.Factory(lambda: array.array("d"))
    tools: dict[str, int] = attrs.Factory(dict)

    def add(self, batch: int, record: CallRecord | ReplyRecord) -> None:
        """A tool call (Conversimple) or a message and its streamed reply (Arinova)."""
        latency = -1.0 if record.latency is None else record.latency
        status = STATUS.get(record.status, 2)
        if isinstance(record, CallRecord):
            tool = self.tools.setdefault(record.tool_name, len(self.tools))
            row = (record.sent_at, latency, status, batch, tool, record.deliveries, -1.0, 0)
        else:
            tool = self.tools.setdefault("message", len(self.tools))
            first = -1.0 if record.first_chunk is None else record.first_chunk
            row = (record.sent_at, latency, status, batch, tool, 1, first, len(record.chunks))
        self.rows.extend(row)

    def column(self, name: str) -> array.array[float]:
        """One of :data:`COLUMNS`, a value per call."""
        return self.rows[COLUMNS.index(name) :: len(COLUMNS)]

    def dump(self, path: str) -> int:
        with open(path, "wb") as out:
            self.rows.tofile(out)
        return len(self.rows) // len(COLUMNS)


@attrs.define(eq=False)
class Batch:
    """Conversations opened by one ``open`` command."""

    name: str
    index: int
    n: int
    calls: int
    rate: float
    think: float
    agent_id: str
    seed: int
    duration: float | None
    opened_at: float
    platform: str = "conversimple"
    words: int = 20
    gate: trio.Event = attrs.Factory(trio.Event)
    go_at: float | None = None
    live: set[BenchConversation | BenchChat] = attrs.Factory(set)
    registered: int = 0
    all_registered_at: float | None = None
    last_registered_at: float | None = None
    """When the latest conversation registered, to the moment: the tick that sees the last
    one comes up to 0.2 s later, and ``connect_s`` was rounded to ticks (found in review)."""
    started: int = 0
    ended: int = 0
    outcomes: Counter[str] = attrs.Factory(Counter)
    failures: list[str] = attrs.Factory(list)
    setup: list[float] = attrs.Factory(list)
    """Seconds from a conversation's announcement to its first call (ungated batches)."""
    done_at: float | None = None
    rng: random.Random = attrs.Factory(random.Random)


@attrs.define(eq=False)
class BenchConversation(ConversimpleConversation):
    """A sandbox conversation whose calls wait for the batch's gate and think between turns."""

    batch: Batch | None = attrs.field(default=None, kw_only=True)
    calls_table: Calls | None = attrs.field(default=None, kw_only=True)
    announced_at: float = attrs.field(default=0.0, kw_only=True)
    counted: bool = attrs.field(default=False, kw_only=True)

    async def before_call(self) -> None:
        batch = self.batch
        assert batch is not None
        if self.calls == 0:  # it registered just now (its first call waits for that)
            batch.last_registered_at = time.perf_counter()
        if not batch.gate.is_set():
            await batch.gate.wait()
        elif self.calls == 0:
            batch.setup.append(time.perf_counter() - self.announced_at)
        if self.calls and batch.think > 0:
            await trio.sleep(batch.think * (0.5 + batch.rng.random()))

    def can_call_now(self) -> bool:
        # Past the first call (the setup time) with the gate open and no thinking:
        # before_call would do nothing, so the answer's task may send the next call.
        batch = self.batch
        assert batch is not None
        return self.calls > 0 and batch.gate.is_set() and not batch.think > 0

    def after_call(self, record: CallRecord) -> None:
        assert self.batch is not None and self.calls_table is not None
        self.calls_table.add(self.batch.index, record)


@attrs.define(eq=False)
class BenchChat(ArinovaConversation):
    """An Arinova conversation whose messages wait for the gate and think between turns.

    Arinova has no per-conversation registration (the agent learns of a conversation
    from its first task), so a chat counts as *registered* once its customer is ready.
    """

    batch: Batch | None = attrs.field(default=None, kw_only=True)
    calls_table: Calls | None = attrs.field(default=None, kw_only=True)
    announced_at: float = attrs.field(default=0.0, kw_only=True)
    counted: bool = attrs.field(default=False, kw_only=True)
    registered: trio.Event = attrs.field(factory=trio.Event, kw_only=True)
    socket: Any = attrs.field(default=None, kw_only=True)
    done: bool = attrs.field(default=False, kw_only=True)

    async def ask(self, content: str, *more: Any) -> ReplyRecord:
        batch = self.batch
        assert batch is not None and self.calls_table is not None
        if not self.registered.is_set():
            batch.last_registered_at = time.perf_counter()
        self.registered.set()
        if not batch.gate.is_set():
            await batch.gate.wait()
        elif self.messages == 0:
            batch.setup.append(time.perf_counter() - self.announced_at)
        if self.messages and batch.think > 0:
            await trio.sleep(batch.think * (0.5 + batch.rng.random()))
        record = await ArinovaConversation.ask(self, content, *more)
        self.calls_table.add(batch.index, record)
        return record


class LoadGenerator:
    def __init__(self, server: SandboxServer, proxy: FaultProxy | None) -> None:
        self.server = server
        self.proxy = proxy
        self.calls = Calls()
        self.batches: dict[str, Batch] = {}
        self.serial = 0
        self.nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ commands
    async def handle(self, command: dict[str, Any]) -> bool:
        """Run one command; False to quit."""
        kind = command.get("cmd")
        if kind == "open":
            self.open(command)
        elif kind == "go":
            batch = self.batches[command["batch"]]
            batch.go_at = time.perf_counter()
            batch.gate.set()
        elif kind == "drop":
            assert self.nursery is not None
            self.nursery.start_soon(self.drop, self.batches[command["batch"]], command)
        elif kind == "dump":
            count = self.calls.dump(command["path"])
            emit("dumped", calls=count, tools=self.calls.tools, **self.summary())
        elif kind == "quit":
            return False
        else:
            emit("error", message=f"unknown command {kind!r}")
        return True

    def open(self, command: dict[str, Any]) -> None:
        assert self.nursery is not None
        name = command.get("batch", "main")
        batch = Batch(
            name,
            len(self.batches),
            int(command["n"]),
            int(command["calls"]),
            float(command.get("rate", 0.0)),
            float(command.get("think", 0.0)),
            command.get("agent_id", "echo"),
            int(command.get("seed", 0)),
            command.get("duration"),
            time.perf_counter(),
            platform=command.get("platform", "conversimple"),
            words=int(command.get("words", 20)),
        )
        batch.rng.seed(batch.seed + 7919 * batch.index)
        if not command.get("gated", False):
            batch.gate.set()
            batch.go_at = batch.opened_at
        self.batches[name] = batch
        self.nursery.start_soon(self.spawn, batch)
        emit("opened", batch=name, at=batch.opened_at)

    async def spawn(self, batch: Batch) -> None:
        assert self.nursery is not None
        start = trio.current_time()
        for slot in range(batch.n):
            if batch.rate > 0:
                await trio.sleep_until(start + slot / batch.rate)
            self.nursery.start_soon(self.run_slot, batch, slot)

    async def run_slot(self, batch: Batch, slot: int) -> None:
        """One conversation, or (with a duration) conversations back to back until it is over."""
        server, recorder = self.server, self.server.recorder
        churn = batch.duration is not None
        while True:
            calls = batch.calls
            if churn and calls > 1:  # lengths vary so the slots drift apart and the load stays even
                calls = batch.rng.randint(max(1, calls // 2), calls + calls // 2)
            plan = ConversationPlan(batch.agent_id, batch.platform, synthetic=calls, words=batch.words)
            self.serial += 1
            cid = f"load-{self.serial:06d}"
            clog = recorder.open(cid, batch.agent_id, batch.platform)
            now = time.perf_counter()
            conv: BenchConversation | BenchChat
            if batch.platform == "arinova":
                conv = BenchChat(
                    server.arinova, clog, plan, batch=batch, calls_table=self.calls, announced_at=now
                )
                run = server.arinova.run_conversation
            else:
                conv = BenchConversation(
                    server.conversimple, clog, plan, batch=batch, calls_table=self.calls, announced_at=now
                )
                run = server.conversimple.run_conversation
            batch.live.add(conv)
            batch.started += 1
            rng = random.Random(batch.seed * 1_000_003 + self.serial)
            try:
                await run(conv, rng)
            finally:
                conv.done = True
                batch.live.discard(conv)
                if not conv.counted:
                    conv.counted = True
                    batch.registered += conv.registered.is_set()
            outcome = conv.log.outcome or "unknown"
            batch.outcomes[outcome] += 1
            if outcome != "completed" and len(batch.failures) < 20:
                batch.failures.extend(f"{cid}: {f}" for f in conv.log.failures[:2])
                if not conv.log.failures:
                    batch.failures.append(f"{cid}: {outcome}")
            if churn:  # keep the load generator's memory flat during a soak
                recorder.conversations.pop(cid, None)
                server.conversimple.conversations.pop(cid, None)
                server.arinova.conversations.pop(cid, None)
            if not churn or time.perf_counter() >= (batch.go_at or 0.0) + (batch.duration or 0.0):
                break
        batch.ended += 1
        if batch.ended == batch.n:
            batch.done_at = time.perf_counter()
            if all(b.ended == b.n for b in self.batches.values()):
                gc.collect()  # the collector is off (see main): catch up when nothing runs
            emit(
                "done",
                batch=batch.name,
                at=batch.done_at,
                outcomes=dict(batch.outcomes),
                failures=batch.failures,
                started=batch.started,
                setup=batch.setup,
            )

    async def drop(self, batch: Batch, command: dict[str, Any]) -> None:
        """Kill a share of the batch's links (or every link, through the proxy); wait for recovery."""
        share, outage = float(command.get("share", 0.3)), float(command.get("outage", 0.0))
        candidates = [c for c in batch.live if c.registered.is_set() and c.socket is not None]
        rng = random.Random(batch.seed + 1)
        if self.proxy is not None or not candidates:
            chosen = candidates  # the proxy resets every link
        else:
            chosen = rng.sample(candidates, max(1, round(share * len(candidates))))
        old = {conv: conv.socket for conv in chosen}
        at = time.perf_counter()
        if self.proxy is not None:
            self.proxy.reset()
            if outage > 0:
                assert self.nursery is not None
                self.nursery.start_soon(self.proxy.down_for, outage)
        else:
            for conv in chosen:
                self.server.drop_socket(conv.log.conversation_id)
        emit("dropped", batch=batch.name, at=at, count=len(chosen), candidates=len(candidates))
        waiting = dict(old)
        recovered: list[float] = []
        deadline = at + float(command.get("timeout", 120.0))
        while waiting and time.perf_counter() < deadline:
            await trio.sleep(0.01)
            now = time.perf_counter()
            for conv, sock in list(waiting.items()):
                current = conv.socket
                if conv.done or (current is not None and current is not sock and current.alive):
                    del waiting[conv]
                    if not conv.done:
                        recovered.append(now - at)
        emit("recovered", batch=batch.name, at=time.perf_counter(), times=recovered, missing=len(waiting))

    # ------------------------------------------------------------ reporting
    async def ticker(self) -> None:
        while True:
            await trio.sleep(TICK)
            live = registered = 0
            for batch in self.batches.values():
                live += len(batch.live)
                count = 0
                for conv in batch.live:
                    if not conv.counted and conv.registered.is_set():
                        conv.counted = True
                        count += 1
                batch.registered += count
                registered += batch.registered
                if batch.all_registered_at is None and batch.registered >= batch.n:
                    batch.all_registered_at = batch.last_registered_at or time.perf_counter()
                    emit("registered", batch=batch.name, at=batch.all_registered_at)
            emit("tick", t=time.perf_counter(), live=live, registered=registered, **self.counters())

    def counters(self) -> dict[str, int]:
        s = self.server.statistics()
        return {
            "sockets": s.sockets + s.bots,
            "sent": s.calls_sent + s.replies_sent,
            "answered": s.calls_answered + s.replies_answered,
            "ended": s.ended,
        }

    def summary(self) -> dict[str, Any]:
        recorder = self.server.recorder
        return {
            "duplicates": recorder.duplicates,
            "late_answers": recorder.late_answers,
            "unknown_answers": recorder.unknown_answers,
            "violations": recorder.violations,
            "unknown_events": recorder.unknown_events,
            "proxy": None if self.proxy is None else attrs.asdict(self.proxy.statistics(), filter=_no_times),
        }


def _no_times(attribute: attrs.Attribute[Any], value: Any) -> bool:
    return attribute.name != "accept_times"


def emit(ev: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": ev, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def read_commands(generator: LoadGenerator, scope: trio.CancelScope) -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break  # the harness went away
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip() and not await generator.handle(json.loads(line)):
                    scope.cancel()
                    return
    scope.cancel()


async def main(args: argparse.Namespace) -> None:
    settings = SandboxSettings(
        port=args.port,
        record_messages=False,
        register_timeout=args.register_timeout,
        call_timeout=args.call_timeout,
    )
    server = SandboxServer(settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        proxy = None
        if args.proxy:
            proxy = FaultProxy("127.0.0.1", port)
            port = await nursery.start(proxy.run)
        generator = LoadGenerator(server, proxy)
        generator.nursery = nursery
        # The collector is off: the load generator makes almost no garbage in cycles (a
        # 10,000-conversation run: about 5,000 objects), yet young collections found its
        # many waiting tasks each time and took 12 % of its CPU, and its CPU caps the
        # calls/s any system under test can show. It collects when no batch is running.
        gc.collect()
        gc.freeze()
        gc.disable()
        emit("listening", port=port, pid=os.getpid())
        nursery.start_soon(generator.ticker)
        await read_commands(generator, nursery.cancel_scope)


if __name__ == "__main__":
    raise_open_files_limit()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--proxy", action="store_true", help="Serve through a FaultProxy (chaos).")
    parser.add_argument("--register-timeout", type=float, default=300.0)
    parser.add_argument("--call-timeout", type=float, default=60.0)
    trio.run(main, parser.parse_args())
