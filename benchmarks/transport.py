"""Echo load on the WebSocket transport: which client implementation is faster?

Runs the echo server (``orchestrator.transport.serve``, sans-IO core) and the
client in two separate processes, so each gets a core of its own. The client
opens N connections, each doing sequential echo round trips of a ~200-byte JSON
text for D seconds after a warm-up, then reports calls/s, p50/p99 latency,
client RSS per connection, and how busy each process was (a process near 100%
CPU is the bottleneck); then it closes every link at once and reports the CPU a
close costs each side. Repeated for each implementation with a fresh server.

    .venv/bin/python benchmarks/transport.py                      # 1,000 connections
    .venv/bin/python benchmarks/transport.py --connections 10000 --duration 20

Prints machine facts, a table, and as its last stdout line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import trio  # noqa: E402

from orchestrator.transport import IMPLEMENTATIONS, ServerWebSocket, connect, serve  # noqa: E402

CONNECT_CONCURRENCY = 200


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def payload(size: int) -> str:
    head = '{"type":"tool_call_request","call_id":"c-000001","tool_name":"lookup","arguments":{"q":"'
    tail = '"},"timeout_seconds":30}'
    return head + "x" * max(0, size - len(head) - len(tail)) + tail


# Server process


async def run_server() -> None:
    async def echo(ws: ServerWebSocket) -> None:
        while True:
            await ws.send_text(await ws.receive_text())

    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, echo, "127.0.0.1", 0))
        print(port, flush=True)


# Client process


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    me = psutil.Process()
    server = psutil.Process(args.server_pid)
    text = payload(args.payload_bytes)
    url = f"ws://127.0.0.1:{args.port}/bench?customer_id=bench&auth_token=not-a-secret"
    rss_before = me.memory_info().rss
    sockets: list[Any] = [None] * args.connections
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def open_one(index: int) -> None:
        async with limiter:
            ws = await connect(url, implementation=args.impl, connect_timeout=60)
        await ws.send_text(text)  # warm the path once
        await ws.receive_text()
        sockets[index] = ws

    opened_at = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(args.connections):
            nursery.start_soon(open_one, index)
    connect_seconds = trio.current_time() - opened_at
    rss_connected = me.memory_info().rss

    latencies: list[float] = []
    start = trio.current_time() + args.warmup
    deadline = start + args.duration

    async def pump(ws: Any) -> None:
        now = trio.current_time()
        while now < deadline:
            sent_at = now
            await ws.send_text(text)
            await ws.receive_text()
            now = trio.current_time()
            if now >= start and now < deadline:
                latencies.append(now - sent_at)

    async def measure_cpu() -> tuple[float, float, float, float]:
        await trio.sleep_until(start)
        mine, theirs = sum(me.cpu_times()[:2]), sum(server.cpu_times()[:2])
        my_wait, their_wait = run_queue_wait(me.pid), run_queue_wait(server.pid)
        await trio.sleep_until(deadline)
        return (
            sum(me.cpu_times()[:2]) - mine,
            sum(server.cpu_times()[:2]) - theirs,
            run_queue_wait(me.pid) - my_wait,
            run_queue_wait(server.pid) - their_wait,
        )

    cpu: list[tuple[float, float, float, float]] = []
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(pump, ws)

        async def cpu_task() -> None:
            cpu.append(await measure_cpu())

        nursery.start_soon(cpu_task)
    rss_peak = me.memory_info().rss
    # Closing every link at once, as the end of a load's conversations does: the CPU a
    # close handshake costs each side (the server's last steps may trail the client's).
    mine, theirs = sum(me.cpu_times()[:2]), sum(server.cpu_times()[:2])
    with trio.move_on_after(30):
        async with trio.open_nursery() as nursery:
            for ws in sockets:
                nursery.start_soon(ws.aclose)
    # The client's sockets wait for the server's FIN after aclose() returns (in the
    # background, see transport/readiness.py): give both sides time to finish.
    await trio.sleep(0.5)
    client_close = sum(me.cpu_times()[:2]) - mine
    server_close = sum(server.cpu_times()[:2]) - theirs

    latencies.sort()
    calls = len(latencies)
    client_cpu, server_cpu, client_wait, server_wait = cpu[0]

    def quantile(q: float) -> float:
        return latencies[min(calls - 1, int(q * calls))] * 1000 if calls else float("nan")

    return {
        "implementation": args.impl,
        "connections": args.connections,
        "duration_s": args.duration,
        "calls": calls,
        "calls_per_s": round(calls / args.duration, 1),
        "p50_ms": round(quantile(0.50), 3),
        "p99_ms": round(quantile(0.99), 3),
        "rss_per_connection_kib": round((rss_connected - rss_before) / args.connections / 1024, 2),
        "rss_peak_mib": round(rss_peak / 2**20, 1),
        "connect_s": round(connect_seconds, 2),
        "client_cpu_pct": round(100 * client_cpu / args.duration, 1),
        "server_cpu_pct": round(100 * server_cpu / args.duration, 1),
        "client_cpu_wait_pct": round(100 * client_wait / args.duration, 1),
        "server_cpu_wait_pct": round(100 * server_wait / args.duration, 1),
        "client_cpu_us_per_call": round(1e6 * client_cpu / calls, 1) if calls else None,
        "server_cpu_us_per_call": round(1e6 * server_cpu / calls, 1) if calls else None,
        "client_close_us": round(1e6 * client_close / args.connections, 1),
        "server_close_us": round(1e6 * server_close / args.connections, 1),
    }


def run_queue_wait(pid: int) -> float:
    """Seconds the process spent runnable but waiting for a CPU (Linux schedstat), else 0.

    High values mean other programs were taking the cores: calls/s then
    measures the machine's load, not the implementation.
    """
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[1]) / 1e9


# Orchestration (plain processes, no trio here)


def machine_facts() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "trio_websocket": version("trio-websocket"),
        "websockets": version("websockets"),
        "open_file_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_average_1m": os.getloadavg()[0],
    }


def bench_one(impl: str, args: argparse.Namespace) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*me, "--role", "server"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        options = {
            "--role": "client",
            "--impl": impl,
            "--port": port,
            "--server-pid": server.pid,
            "--connections": args.connections,
            "--duration": args.duration,
            "--warmup": args.warmup,
            "--payload-bytes": args.payload_bytes,
        }
        argv = [*me, *(str(item) for pair in options.items() for item in pair)]
        client = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True)
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [
        ("implementation", "implementation", "{}"),
        ("connections", "conns", "{}"),
        ("calls_per_s", "calls/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.2f}"),
        ("p99_ms", "p99 ms", "{:.2f}"),
        ("rss_per_connection_kib", "KiB/conn", "{:.1f}"),
        ("client_cpu_pct", "client CPU%", "{:.0f}"),
        ("server_cpu_pct", "server CPU%", "{:.0f}"),
        ("client_cpu_wait_pct", "client wait%", "{:.0f}"),
        ("server_cpu_wait_pct", "server wait%", "{:.0f}"),
        ("client_cpu_us_per_call", "client CPU us/call", "{:.0f}"),
        ("server_cpu_us_per_call", "server CPU us/call", "{:.0f}"),
        ("client_close_us", "client close us", "{:.0f}"),
        ("server_close_us", "server close us", "{:.0f}"),
        ("connect_s", "connect s", "{:.1f}"),
    ]
    rows = [[fmt.format(result[key]) for key, _, fmt in columns] for result in results]
    widths = [max(len(title), *(len(row[i]) for row in rows)) for i, (_, title, _) in enumerate(columns)]
    print("  ".join(title.rjust(w) for (_, title, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=1, help="alternate the implementations this many times")
    roles = ["main", "server", "client"]
    parser.add_argument("--role", choices=roles, default="main", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_file_limit()
    if args.role == "server":
        trio.run(run_server)
        return
    if args.role == "client":
        print(json.dumps(trio.run(run_client, args)), flush=True)
        return

    facts = machine_facts()
    print("machine: " + ", ".join(f"{key}={value}" for key, value in facts.items()), flush=True)
    print(
        f"workload: {args.connections} connections x sequential echo of a "
        f"{len(payload(args.payload_bytes))}-byte JSON text, {args.warmup:g} s warm-up, "
        f"{args.duration:g} s measured; server and client in separate processes",
        flush=True,
    )
    implementations = args.implementations.split(",")
    results = []
    for round_number in range(1, args.rounds + 1):
        for impl in implementations:
            started = time.monotonic()
            results.append(bench_one(impl, args) | {"round": round_number})
            print(f"  round {round_number} {impl}: done in {time.monotonic() - started:.0f} s", flush=True)
    summary = [median_of([r for r in results if r["implementation"] == impl]) for impl in implementations]
    print()
    print_table(results if args.rounds == 1 else [*results, *summary])
    print(
        "CPU us/call is the load-independent figure: calls/s depends on what else the "
        "machine runs (wait% = time a process was ready but had no CPU; "
        f"1-minute load average {facts['load_average_1m']:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end)."
        + ("" if args.rounds == 1 else " The last rows are medians over the rounds.")
    )
    report = {"machine": facts, "load_average_1m_end": os.getloadavg()[0]}
    print(json.dumps(report | {"median": summary, "results": results}))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field median of several runs of one implementation (labelled ``<impl> (median)``)."""
    fixed = {"connections", "duration_s", "round"}
    numeric = [k for k, v in runs[0].items() if isinstance(v, int | float) and k not in fixed]
    merged = runs[0] | {k: round(statistics.median(run[k] for run in runs), 2) for k in numeric}
    del merged["round"]
    return merged | {"implementation": f"{runs[0]['implementation']} (median)", "rounds": len(runs)}


if __name__ == "__main__":
    main()
