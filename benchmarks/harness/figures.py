"""Figures from a round's raw data: the call table, the resource samples, the ticks.

Percentiles are nearest-rank (as ``orchestrator.sandbox.load``); calls/s is
answered calls over the time from the first request to the last answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .loadgen import COLUMNS

Table = dict[str, "np.ndarray[Any, Any]"]


def load_table(path: Path, count: int) -> Table:
    raw = np.fromfile(path, dtype=np.float64)
    if raw.size != count * len(COLUMNS):
        raise ValueError(f"call table {path} has {raw.size} values, expected {count * len(COLUMNS)}")
    rows = raw.reshape(count, len(COLUMNS))
    return {name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(COLUMNS)}


def pct(values: np.ndarray[Any, Any], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of ``values``; 0 for none."""
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, q, method="inverted_cdf"))


def call_stats(table: Table, mask: np.ndarray[Any, Any] | None = None) -> dict[str, Any]:
    """Counts, calls/s and latency percentiles (ms) of the selected calls."""
    sel = {k: (v if mask is None else v[mask]) for k, v in table.items()}
    status, latency, sent = sel["status"], sel["latency"], sel["sent_at"]
    answered = status < 2
    lat = latency[answered]
    elapsed = float((sent[answered] + lat).max() - sent.min()) if lat.size else 0.0
    return {
        "calls": int(status.size),
        "calls_ok": int((status == 0).sum()),
        "calls_error": int((status == 1).sum()),
        "calls_lost": int((status == 2).sum()),
        "redelivered": int((sel["deliveries"] > 1).sum()),
        "elapsed_s": round(elapsed, 3),
        "calls_per_s": round(lat.size / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(pct(lat, 50) * 1000, 3),
        "p90_ms": round(pct(lat, 90) * 1000, 3),
        "p99_ms": round(pct(lat, 99) * 1000, 3),
        "max_ms": round(float(lat.max()) * 1000, 3) if lat.size else 0.0,
    }


def chunk_stats(table: Table) -> dict[str, Any]:
    """Streamed replies: chunks per second and time to the first chunk (ms)."""
    answered = table["status"] < 2
    first = table["first_chunk"][answered & (table["first_chunk"] >= 0)]
    chunks = table["chunks"][answered]
    sent, done = table["sent_at"], table["sent_at"][answered] + table["latency"][answered]
    elapsed = float(done.max() - sent.min()) if done.size else 0.0
    return {
        "chunks": int(chunks.sum()),
        "chunks_per_s": round(float(chunks.sum()) / elapsed, 1) if elapsed > 0 else 0.0,
        "first_chunk_p50_ms": round(pct(first, 50) * 1000, 3),
        "first_chunk_p99_ms": round(pct(first, 99) * 1000, 3),
    }


def window_mask(table: Table, batch: int, start: float, end: float) -> np.ndarray[Any, Any]:
    """Calls of ``batch`` sent in [start, end)."""
    sent = table["sent_at"]
    return (table["batch"] == batch) & (sent >= start) & (sent < end)


def call_series(table: Table, t0: float, width: float) -> dict[str, list[float]]:
    """Per bucket of ``width`` s (by answer time, relative to ``t0``): calls/s, p50 and p99 ms."""
    answered = table["status"] < 2
    done = table["sent_at"][answered] + table["latency"][answered] - t0
    lat = table["latency"][answered]
    if done.size == 0:
        return {"t": [], "calls_per_s": [], "p50_ms": [], "p99_ms": []}
    buckets = np.floor(done / width).astype(np.int64)
    order = np.argsort(buckets, kind="stable")
    buckets, lat = buckets[order], lat[order]
    edges = np.flatnonzero(np.diff(buckets)) + 1
    out: dict[str, list[float]] = {"t": [], "calls_per_s": [], "p50_ms": [], "p99_ms": []}
    for chunk_b, chunk_l in zip(np.split(buckets, edges), np.split(lat, edges), strict=True):
        out["t"].append(round((int(chunk_b[0]) + 0.5) * width, 3))
        out["calls_per_s"].append(round(chunk_l.size / width, 1))
        out["p50_ms"].append(round(pct(chunk_l, 50) * 1000, 3))
        out["p99_ms"].append(round(pct(chunk_l, 99) * 1000, 3))
    return out


def tool_stats(table: Table, tools: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per tool: calls, errors, lost, p50 / p99 ms."""
    out = {}
    for name, index in sorted(tools.items(), key=lambda item: item[1]):
        stats = call_stats(table, table["tool"] == index)
        out[name] = {
            k: stats[k] for k in ("calls", "calls_ok", "calls_error", "calls_lost", "p50_ms", "p99_ms")
        }
    return out


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    values = np.asarray(seconds, dtype=np.float64)
    return {
        "count": int(values.size),
        "p50_s": round(pct(values, 50), 3),
        "p99_s": round(pct(values, 99), 3),
        "max_s": round(float(values.max()), 3) if values.size else 0.0,
    }


def resource_series(
    t: Sequence[float],
    rss: Sequence[int],
    cpu: Sequence[float],
    loadgen_cpu: Sequence[float],
    t0: float,
    window: int = 5,
) -> dict[str, list[float]]:
    """RSS (MiB) at every sample; CPU % of the system under test and of the load generator over
    the last ``window`` samples (CPU times tick in 10 ms: one 100 ms sample alone is ±10 %)."""
    out: dict[str, list[float]] = {"t": [], "rss_mib": [], "cpu_pct": [], "loadgen_cpu_pct": []}
    for i in range(1, len(t)):
        j = max(0, i - window)
        dt = t[i] - t[j]
        if dt <= 0:
            continue
        out["t"].append(round(t[i] - t0, 3))
        out["rss_mib"].append(round(rss[i] / 2**20, 2))
        out["cpu_pct"].append(round((cpu[i] - cpu[j]) / dt * 100, 1))
        out["loadgen_cpu_pct"].append(round((loadgen_cpu[i] - loadgen_cpu[j]) / dt * 100, 1))
    return out


def median_figures(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per numeric figure, the median over rounds (the value itself for one round)."""
    keys = [k for k, v in rounds[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    out: dict[str, Any] = {}
    for key in keys:
        values = sorted(float(r[key]) for r in rounds if isinstance(r.get(key), int | float))
        if not values:
            continue
        mid = len(values) // 2
        value = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
        out[key] = (
            int(value)
            if all(isinstance(r.get(key), int) for r in rounds) and value.is_integer()
            else (round(value, 3))
        )
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)
