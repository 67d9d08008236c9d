"""Write a benchmark run: ``results.json``, ``results.md`` (tables) and PNG charts.

Charts (matplotlib, Agg backend, one line per round; time is seconds since that
round's system under test started):

* ``throughput.png``: answered calls per second;
* ``latency.png``: p50 (dashed) and p99 (solid) call latency;
* ``rss.png``: RSS of the system under test, and CPU % (its own solid, the load
  generator's dotted);
* ``conversations.png``: conversations live and registered at the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLORS = {"orchestrator": "tab:blue", "conversimple-sdk": "tab:orange"}

# (figure key, column title) of the main table, in order.
MAIN_COLUMNS = (
    ("calls_per_s", "calls/s"),
    ("chunks_per_s", "chunks/s"),
    ("first_chunk_p99_ms", "1st chunk p99 ms"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("cpu_s_per_1000_calls", "CPU s/1k calls"),
    ("teardown_s", "teardown s"),
    ("cpu_pct", "CPU %"),
    ("loadgen_cpu_pct", "loadgen CPU %"),
    ("rss_kib_per_conversation", "RSS KiB/conv"),
    ("rss_kib_per_conversation_active", "RSS KiB/conv active"),
    ("connect_s", "connect s"),
    ("calls", "calls"),
    ("calls_error", "errors"),
    ("calls_lost", "lost"),
)
RATIO_TITLES = {
    "calls_per_s": "calls/s (orchestrator / SDK)",
    "cpu_s_per_1000_calls": "CPU per call (orchestrator / SDK)",
    "cpu_s_per_1000_calls_at_done": "CPU per call, teardown left out (orchestrator / SDK)",
    "p99_ms": "p99 latency (orchestrator / SDK)",
    "rss_kib_per_conversation": "RSS per conversation (orchestrator / SDK)",
}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (also readable as plain text)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))]
    columns = list(zip(widths, numeric, strict=True))

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, (w, num) in zip(values, columns, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if num else "-") for w, num in columns) + "|"
    return [line(headers), rule, *(line(r) for r in cells)]


def main_table(by_system: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns = [(k, t) for k, t in MAIN_COLUMNS if any(k in f for f in by_system.values())]
    rows = [[system, *(f.get(k) for k, _ in columns)] for system, f in by_system.items()]
    return table(["system", *(t for _, t in columns)], rows)


def extras(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Scenario-specific figures, flattened one level (``recovery.p50_s``)."""
    shown = {k for k, _ in MAIN_COLUMNS} | {
        "system",
        "round",
        "failures",
        "passed",
        "metrics",
        "profile",
        "tools",
        "elapsed_s",
        "p90_ms",
        "calls_ok",
    }
    out: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if key in shown:
            continue
        if isinstance(value, Mapping):
            out += [(f"{key}.{k}", v) for k, v in value.items() if not isinstance(v, Mapping | list)]
        elif not isinstance(value, list):
            out.append((key, value))
    return out


def tools_table(tools: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ``mixed`` scenario's figures per tool, one row each."""
    columns = ("calls", "calls_ok", "calls_error", "calls_lost", "p50_ms", "p99_ms")
    return table(
        ["tool", "calls", "ok", "errors", "lost", "p50 ms", "p99 ms"],
        [[name, *(t[c] for c in columns)] for name, t in tools.items()],
    )


def markdown(results: Mapping[str, Any]) -> str:
    lines = [f"# {results['scenario']} — {results['started']}", ""]
    lines += ["## Machine", "", ", ".join(f"{k}={v}" for k, v in results["machine"].items()), ""]
    lines += ["## Command", "", "```", results["command"], "```", ""]
    for system, command in results["commands"].items():
        lines += [f"{system}: `{command}`", ""]
    lines += ["## Figures (median over rounds)", "", *main_table(results["systems"]), ""]
    if results.get("ratios"):
        lines += ["## Ratios", ""]
        lines += table(
            ["ratio", "value"], [[RATIO_TITLES.get(k, k), v] for k, v in results["ratios"].items()]
        )
        lines.append("")
    rounds = results["rounds"]
    lines += ["## Rounds", ""]
    lines += main_table({f"{r['figures']['round']}. {r['figures']['system']}": r["figures"] for r in rounds})
    lines.append("")
    keys: list[str] = []
    for r in rounds:
        keys += [k for k, _ in extras(r["figures"]) if k not in keys]
    if keys:
        lines += ["## Scenario figures", ""]
        per_round = [dict(extras(r["figures"])) for r in rounds]
        headers = ["figure", *(f"{r['figures']['round']}. {r['figures']['system']}" for r in rounds)]
        lines += table(headers, [[k, *(p.get(k) for p in per_round)] for k in keys])
        lines.append("")
    for r in rounds:
        f = r["figures"]
        if f.get("tools"):
            lines += [f"## Tools, round {f['round']} ({f['system']})", ""]
            lines += tools_table(f["tools"])
            lines.append("")
        profile = f.get("profile")
        if profile and profile.get("top_self"):
            lines += [f"## Profile, round {f['round']} ({f['system']}): top functions by self time", ""]
            lines += [
                f"{profile['samples']:,} samples (py-spy, active threads), raw file `{profile['file']}`; "
                f"{profile.get('partial_stacks', 0):,} stacks are partial (py-spy loses the callers of some "
                "coroutine frames), so self time is exact and total time a lower bound.",
                "",
            ]
            lines += table(
                ["function", "file", "self %", "samples"],
                [[p["function"], p["file"], p["pct"], p["samples"]] for p in profile["top_self"]],
            )
            if profile.get("self_by_area"):
                lines += ["", "Self time by area:", ""]
                lines += table(["area", "self %"], list(profile["self_by_area"].items()))
            lines += ["", "By total (inclusive) time:", ""]
            lines += table(
                ["function", "file", "total %"],
                [[p["function"], p["file"], p["pct"]] for p in profile["top_total"]],
            )
            lines.append("")
    budget = results["budget"]
    lines += ["## Verdict", ""]
    for check in budget["checks"]:
        lines.append(
            f"- {'ok' if check['ok'] else 'BREACHED'}: {check['figure']} = {fmt(check['value'])} "
            f"({check['rule']})"
        )
    for r in rounds:
        for failure in r["figures"]["failures"]:
            lines.append(f"- round {r['figures']['round']} ({r['figures']['system']}): {failure}")
    lines += [f"- passed: {fmt(results['passed'])}", ""]
    lines += ["## Charts", ""] + [f"![{c}]({c})" for c in results.get("charts", [])] + [""]
    return "\n".join(lines)


def charts(results: Mapping[str, Any], out: Path) -> list[str]:
    """Draw the PNG charts; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{results['scenario']}: {results['options']['conversations']:,} conversations"
    written: list[str] = []

    def lines_of(key: str) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [
            (
                f"{r['figures']['round']}. {r['figures']['system']}",
                COLORS.get(r["figures"]["system"], "gray"),
                r["series"].get(key) or {},
            )
            for r in results["rounds"]
        ]

    def dots(s: Mapping[str, Any]) -> dict[str, Any]:
        """Markers where a series is too short for a line (a round under two bins drew nothing)."""
        return {"marker": "o"} if len(s.get("t", [])) < 3 else {}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, color, s in lines_of("calls"):
        ax.plot(s.get("t", []), s.get("calls_per_s", []), label=label, color=color, alpha=0.8, **dots(s))
    ax.set(title=f"{title} — throughput", xlabel="seconds since start", ylabel="calls / s")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    save(fig, "throughput.png")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, color, s in lines_of("calls"):
        ax.plot(s.get("t", []), s.get("p99_ms", []), label=f"{label} p99", color=color, **dots(s))
        ax.plot(s.get("t", []), s.get("p50_ms", []), label=f"{label} p50", color=color, ls="--", alpha=0.6)
    ax.set(title=f"{title} — latency", xlabel="seconds since start", ylabel="ms")
    ax.set_yscale("log")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3, which="both")
    save(fig, "latency.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for label, color, s in lines_of("resources"):
        top.plot(s.get("t", []), s.get("rss_mib", []), label=label, color=color)
        bottom.plot(s.get("t", []), s.get("cpu_pct", []), label=f"{label}", color=color, alpha=0.8)
        bottom.plot(s.get("t", []), s.get("loadgen_cpu_pct", []), color=color, ls=":", alpha=0.6)
    top.set(title=f"{title} — memory and CPU", ylabel="RSS MiB")
    bottom.set(xlabel="seconds since start", ylabel="CPU % (dotted: load generator)")
    top.legend(loc="best", fontsize="small")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    save(fig, "rss.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    for label, color, s in lines_of("conversations"):
        ax.plot(s.get("t", []), s.get("live", []), label=f"{label} live", color=color)
    ax.set(
        title=f"{title} — conversations live at the sandbox",
        xlabel="seconds since start",
        ylabel="conversations",
    )
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    save(fig, "conversations.png")
    return written


def write(results: dict[str, Any], out: Path) -> None:
    """results.json, the charts, then results.md (which links the charts)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        results["charts"] = charts(results, out)
    except ImportError as exc:  # matplotlib is in the `bench` extra
        results["charts"] = []
        results["charts_error"] = f"no charts: {exc} (pip install -e '.[bench]')"
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
