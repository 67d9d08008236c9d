"""Load-test the orchestrator against the bundled sandbox, optionally next to conversimple-sdk.

    python benchmarks/bench.py SCENARIO [options]        (or: orchestrator bench SCENARIO ...)

Scenarios (details in ``benchmarks/harness/rounds.py``): ``steady`` (N x K calls),
``idle`` (N idle conversations: memory), ``ramp`` (arrivals at a rate), ``spike``
(a burst on a base load), ``soak`` (minutes at constant load: memory must stay
flat), ``chaos`` (links killed mid-run: recovery time, calls lost), ``mixed``
(tools that sleep, block a thread, fail).

The load generator (the sandbox platform) and the system under test run in
separate processes; each round starts both afresh. The system under test is
``orchestrator run examples/echo.py:EchoAgent`` with metrics on and
supervision as in production; ``--compare conversimple-sdk`` adds a round of
the real SDK's dispatcher serving the same tool after each orchestrator round,
under the same load. RSS and CPU are sampled every 100 ms. Progress goes to
stderr; stdout gets the machine facts, a table and, as its LAST line, one JSON
object. Results go to ``bench-results/<scenario>-<timestamp>/``: results.json,
results.md, PNG charts and the processes' logs.

Exit status: 0 when every orchestrator round completed every conversation with
no call lost and every budget holds; 1 otherwise (stderr's last lines say why); 2 for a
usage error or a missing package of the ``bench`` extra. Examples::

    python benchmarks/bench.py steady -n 1000 -k 50 --compare conversimple-sdk --rounds 2
    python benchmarks/bench.py idle -n 10000
    python benchmarks/bench.py soak -n 1000 --duration 300 --max-rss-drift-pct 5
    python benchmarks/bench.py chaos -n 1000 --share 0.3
    python benchmarks/bench.py steady -n 10000 -k 10 --profile
    python benchmarks/bench.py steady -n 1000 -k 50 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks._common import emit_json, machine_facts, print_facts, raise_open_files_limit
from benchmarks.agents import MixedToolsAgent
from benchmarks.harness import EXTRA_MODULES, exit_missing, flags
from benchmarks.harness.flags import prog

MISSING: str | None = None
"""The package of the ``bench`` extra a run needs and does not have (``--help`` works without)."""
try:
    from benchmarks.harness.figures import median_figures, ratio
    from benchmarks.harness.processes import progress
    from benchmarks.harness.profile import py_spy
    from benchmarks.harness.rounds import Options, Round
except ModuleNotFoundError as exc:  # numpy: the `bench` extra is not installed
    if exc.name not in EXTRA_MODULES:
        raise
    MISSING = EXTRA_MODULES[exc.name]

MIXED_TOOLS = len(MixedToolsAgent.__tools__)
"""The mixed scenario agent's tools: echo, nap, block, fail."""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return flags.parse(argv, __doc__)


def options_of(args: argparse.Namespace) -> Options:
    return Options(
        scenario=args.scenario,
        conversations=args.conversations,
        calls=args.calls,
        rate=args.rate,
        think=args.think_ms / 1000,
        duration=args.duration,
        spike=args.spike,
        spike_at=args.spike_at,
        share=args.share,
        drop_at=args.drop_at,
        via=args.via,
        outage=args.outage,
        settle=args.settle,
        call_timeout=args.call_timeout,
        quiet=args.quiet,
        profile=args.profile and py_spy() is not None,
        platform=args.platform,
        words=args.words,
        workers=args.workers,
    )


def flatten(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Nested figures one level up (``recovery.p50_s`` → ``recovery_p50_s``), for medians."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, Mapping) and key not in ("metrics", "profile", "tools"):
            out.update({f"{key}_{k}": v for k, v in value.items() if isinstance(v, int | float)})
        else:
            out[key] = value
    return out


def check_budgets(args: argparse.Namespace, figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules = [
        ("p99_ms", args.max_p99_ms, "<=", "--max-p99-ms"),
        (
            "rss_kib_per_conversation",
            args.max_rss_kib_per_conversation,
            "<=",
            "--max-rss-kib-per-conversation",
        ),
        ("calls_per_s", args.min_calls_per_s, ">=", "--min-calls-per-s"),
        ("rss_drift_pct", args.max_rss_drift_pct, "|x| <=", "--max-rss-drift-pct"),
    ]
    checks = []
    for key, limit, op, flag in rules:
        if limit is None:
            continue
        value = figures.get(key)
        if value is None:
            ok = False
        elif op == "<=":
            ok = value <= limit
        elif op == ">=":
            ok = value >= limit
        else:
            ok = abs(value) <= limit
        checks.append(
            {"figure": key, "value": value, "limit": limit, "ok": ok, "rule": f"{flag} {_plain(limit)}"}
        )
    return checks


def _plain(value: float) -> str:
    """A budget as given: 10000000, not 1e+07 (found in review)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def preflight(args: argparse.Namespace) -> list[str]:
    """Warnings about what this run will leave out, shown before it starts and in results.md."""
    warnings = []
    if args.profile and py_spy() is None:
        warnings.append("--profile needs py-spy (pip install py-spy); running without a profile")
    if args.scenario == "mixed" and args.calls < MIXED_TOOLS:
        # Each conversation calls the agent's tools in turn, from the first.
        k = args.calls
        warnings.append(f"mixed: -k {k} calls only the first {k} of its {MIXED_TOOLS} tools")
    if args.scenario == "chaos" and args.calls * args.think_ms / 1000 < 2 * args.drop_at:
        # Only links still up at the drop are dropped: it must land mid-run, whatever the speed.
        if args.think_ms <= 0:
            warnings.append(
                f"chaos: with no think time a conversation lasts only as long as its calls, so the "
                f"drop at {args.drop_at:g} s may find them ended; give --think-ms"
            )
        else:
            length, fits = args.calls * args.think_ms / 1000, math.ceil(2000 * args.drop_at / args.think_ms)
            warnings.append(
                f"chaos: conversations of {args.calls} calls {args.think_ms:g} ms apart last about "
                f"{length:g} s, so the drop at {args.drop_at:g} s finds many of them ended; "
                f"-k {fits} or more lands it mid-run"
            )
    return warnings


LOADGEN_BUSY_PCT = 90.0
"""The load generator's share of its core, during a system's calls, from which that
system's figures may be the load generator's limit and not its own."""
LOADGEN_BUSY_MIN_CPU_S = 0.5
"""The least CPU time the load generator must have spent in a calls phase for its busy
share to be read: CPU time comes in 10 ms ticks, so over a short phase the share is
noise (a 50 ms one read 104 %); from half a second on a tick at each end is 4 % at most."""


def after_run(by_system: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings the run's figures call for: a system whose load generator was (nearly)
    saturated during its calls was measured against a limit of the harness's own, so
    its throughput is a lower bound, and a ratio against a system it did not bound
    understates the difference."""
    warnings = []
    for system, figures in by_system.items():
        busy, spent = figures.get("loadgen_cpu_pct_at_done"), figures.get("loadgen_cpu_s_at_done")
        if busy is None or spent is None or spent < LOADGEN_BUSY_MIN_CPU_S:
            continue
        if busy >= LOADGEN_BUSY_PCT:
            warning = (
                f"the load generator was {busy:.0f} % busy during {system}'s calls (median of its "
                f"rounds): {system}'s calls/s may be the load generator's limit, a lower bound of its own"
            )
            theirs = figures.get("loadgen_cpu_s_per_1000_calls_at_done")
            ours = figures.get("cpu_s_per_1000_calls_at_done")
            if theirs and ours:
                warning += f"; per call it spent {theirs / ours:.2f} times {system}'s CPU"
            warnings.append(warning)
    return warnings


OTHERS_BUSY_PCT = 25.0
"""Other work's share of a CPU during a round's calls (other processes, and the kernel's
work charged to none), from which that round's figures are called skewed by it."""
STEAL_PCT = 10.0
"""The hypervisor's share of a CPU, taken for other guests during a round's calls, from
which that round's figures are called skewed by it."""
CONTENTION_MIN_WINDOW_S = 0.5
"""The shortest calls phase whose shares are read: CPU time comes in 10 ms ticks, per
CPU and per process, which over half a second is within 15 % of a CPU."""


def contention(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """A warning for each round whose calls shared the host with work outside the benchmark:
    its figures are then the system's and that work's together, and a ratio against
    rounds that did not share it means less."""
    warnings = []
    for r in rounds:
        f = r["figures"]
        window = f.get("elapsed_s")
        if not isinstance(window, int | float) or window < CONTENTION_MIN_WINDOW_S:
            continue
        said = []
        others, steal = f.get("others_cpu_pct_at_done"), f.get("steal_pct_at_done")
        if others is not None and others >= OTHERS_BUSY_PCT:
            said.append(f"work outside the benchmark took {others:.0f} % of a CPU")
        if steal is not None and steal >= STEAL_PCT:
            said.append(f"the hypervisor took {steal:.0f} % of a CPU for other guests")
        if said:
            warnings.append(
                f"round {f['round']} ({f['system']}): {' and '.join(said)} during its calls, "
                "so its figures are skewed by it"
            )
    return warnings


def verdict(checks: Sequence[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the run failed (stderr's last lines): each breached budget, each failed orchestrator round."""
    lines = [
        f"budget: FAILED {check['rule']} ({check['figure']} = {report.fmt(check['value'])})"
        for check in checks
        if not check["ok"]
    ]
    for r in rounds:
        f = r["figures"]
        if f["system"] == "orchestrator" and not f["passed"]:
            lines.append(f"round {f['round']} orchestrator: FAILED ({'; '.join(f['failures'])})")
    return lines


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    warnings = preflight(args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    raise_open_files_limit()
    started = datetime.datetime.now()
    out = args.out / f"{args.scenario}-{started:%Y%m%d-%H%M%S}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # before anything starts or prints: a usage error
        print(f"{prog()}: error: argument --out: cannot create {out}: {exc.strerror}", file=sys.stderr)
        return 2
    facts = machine_facts()
    facts["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the host skews every figure
    print_facts(facts)
    options = options_of(args)
    systems = ["orchestrator"] + ([args.compare] if args.compare else [])
    schedule = [system for _ in range(args.rounds) for system in systems]
    rounds: list[dict[str, Any]] = []
    commands: dict[str, str] = {}
    profiled = False
    for index, system in enumerate(schedule, 1):
        if not args.quiet:
            progress(
                f"round {index}/{len(schedule)}: {system}, {args.scenario}, "
                f"{args.conversations:,} conversations"
            )
        one = Round(options, system, index, out / "logs")
        if options.profile and system == "orchestrator" and not profiled:
            one.profile_to, profiled = out / "profile-raw.txt", True
        result = one.run()
        commands.setdefault(system, result.pop("command"))
        rounds.append(result)
        if not args.quiet:
            f = result["figures"]
            outcome = "round ok" if f["passed"] else f"round FAILED ({len(f['failures'])} failures)"
            progress(
                f"round {index} {system}: {f.get('calls_per_s', 0):,.0f} calls/s, "
                f"p99 {f.get('p99_ms', 0):.1f} ms, {outcome}"
            )
    by_system = {
        system: median_figures([flatten(r["figures"]) for r in rounds if r["figures"]["system"] == system])
        for system in systems
    }
    ratios: dict[str, float | None] = {}
    if args.compare:
        ours, theirs = by_system["orchestrator"], by_system[args.compare]
        for key in report.RATIO_TITLES:
            if key in ours and key in theirs:
                ratios[key] = ratio(ours[key], theirs[key])
    checks = check_budgets(args, by_system["orchestrator"])
    late = after_run(by_system) + contention(rounds)
    warnings += late
    ours_ok = all(r["figures"]["passed"] for r in rounds if r["figures"]["system"] == "orchestrator")
    passed = ours_ok and all(c["ok"] for c in checks)
    results: dict[str, Any] = {
        "scenario": args.scenario,
        "started": started.isoformat(timespec="seconds"),
        "command": f"{prog()} {shlex.join(argv)}",
        "commands": commands,
        "machine": facts,
        "options": {**{k: v for k, v in vars(args).items() if k != "out"}, "out": str(args.out)},
        "systems": by_system,
        "ratios": ratios,
        "budget": {"checks": checks, "passed": all(c["ok"] for c in checks)},
        "passed": passed,
        "warnings": warnings,
        "rounds": rounds,
        "dir": str(out),
    }
    results["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    report.write(results, out)
    if warnings:
        with (out / "results.md").open("a", encoding="utf-8") as markdown:
            markdown.write("## Warnings\n\n" + "".join(f"- {w}\n" for w in warnings) + "\n")
    print()
    print("\n".join(report.main_table(by_system)))
    if ratios:
        print()
        print(
            "\n".join(
                report.table(["ratio", "value"], [[report.RATIO_TITLES[k], v] for k, v in ratios.items()])
            )
        )
    for r in rounds:  # mixed: as results.md has them (stdout had none: found in review)
        if r["figures"].get("tools"):
            print(f"\ntools, round {r['figures']['round']} ({r['figures']['system']}):")
            print("\n".join(report.tools_table(r["figures"]["tools"])))
    extra = [(k, v) for k, v in report.extras(rounds[0]["figures"]) if k not in ("exit_code", "stop_s")]
    if extra:
        print()
        print("\n".join(figure_lines(by_system, args.rounds)))
    print()
    for check in checks:
        print(
            f"budget {'ok' if check['ok'] else 'BREACHED'}: {check['figure']} = "
            f"{report.fmt(check['value'])} ({check['rule']})"
        )
    for r in rounds:
        for failure in r["figures"]["failures"]:
            print(f"round {r['figures']['round']} ({r['figures']['system']}): {failure}")
    for warning in late:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"results: {out}/results.md")
    emit_json(summary(results))
    for line in verdict(checks, rounds):
        print(line, file=sys.stderr)
    print(f"bench: {'passed' if passed else 'FAILED'}", file=sys.stderr)
    return 0 if passed else 1


def figure_lines(by_system: Mapping[str, Mapping[str, Any]], rounds: int) -> list[str]:
    """A line per system of the figures the table leaves out: medians, as the table's (they
    were round 1's alone, and read like medians: found in review)."""
    lines = []
    for system, figures in by_system.items():
        label = system if rounds == 1 else f"{system}, medians of {rounds} rounds"
        lines.append(f"{label}: " + ", ".join(f"{k} {report.fmt(v)}" for k, v in report.extras(figures)))
    return lines


def summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON last line: options, per-system medians (scalars), ratios, verdict."""
    keep = (
        "calls_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "cpu_s_per_1000_calls",
        "cpu_s_per_1000_calls_at_done",
        "cpu_pct_at_done",
        "loadgen_cpu_pct_at_done",
        "loadgen_cpu_s_per_1000_calls_at_done",
        "others_cpu_pct_at_done",
        "steal_pct_at_done",
        "harness_cpu_pct_at_done",
        "teardown_s",
        "rss_kib_per_conversation",
        "rss_kib_per_conversation_active",
        "calls",
        "calls_error",
        "calls_lost",
        "duplicates",
        "connect_s",
        "idle_cpu_pct",
        "rss_drift_pct",
        "rss_first_mib",
        "rss_last_mib",
        "recovery_p50_s",
        "recovery_max_s",
        "recover_all_s",
        "dropped",
        "setup_p99_s",
        "spike_s",
        "unexpected_errors",
        "base_during_p99_ms",
        "base_before_p99_ms",
        "loadgen_cpu_pct",
        "cpu_pct",
        "chunks_per_s",
        "first_chunk_p50_ms",
        "first_chunk_p99_ms",
    )
    options = results["options"]
    return {
        "scenario": results["scenario"],
        "conversations": options["conversations"],
        "calls_per_conversation": options["calls"],
        "platform": options["platform"],
        "workers": options["workers"],
        "rounds": options["rounds"],  # per system, as --rounds counts them
        "systems": {s: {k: f[k] for k in keep if k in f} for s, f in results["systems"].items()},
        "ratios": results["ratios"],
        "budget": results["budget"],
        "passed": results["passed"],
        "warnings": results["warnings"],
        "dir": results["dir"],
    }


class _Stop:
    """SIGINT (Ctrl-C) or SIGTERM: the round stops what it started, then the run exits
    (130 or 143). The same signal again must not cut that short: Ctrl-C and ``timeout``
    signal the whole group, and ``orchestrator bench`` passes its own on as well. So
    later ones are let be here, rather than ignored from the handler: a signal that
    arrived while it set SIG_IGN was reported, traceback and all, as "ignored due to
    race condition"."""

    def __init__(self) -> None:
        self.stopping = False

    def __call__(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stop = _Stop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        args = parse(argv)
        if MISSING is not None:
            exit_missing(MISSING)
        return run(args, argv)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except SystemExit as exit_:
        if exit_.code == 128 + signal.SIGTERM:  # raised by _Stop: say so, as for SIGINT
            print("bench: terminated", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
