"""Shared pieces of the benchmarks: machine facts, tables, the JSON last line."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from orchestrator.build import describe


def machine_facts() -> dict[str, Any]:
    """CPU, memory, OS and library versions: printed by every benchmark."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "trio": ver("trio"),
        "trio-websocket": ver("trio-websocket"),
        "websockets": ver("websockets"),
        "orjson": ver("orjson"),
        "orchestrator": f"{ver('orchestrator')}, {describe()}",
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def print_facts(facts: Mapping[str, Any]) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table (readable in a terminal and in CI logs)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def emit_json(figures: Mapping[str, Any]) -> None:
    """The last stdout line: one JSON object with the figures."""
    print(json.dumps(figures, sort_keys=True), flush=True)
