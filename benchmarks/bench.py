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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks._common import emit_json, machine_facts, print_facts, raise_open_files_limit
from benchmarks.agents import MixedToolsAgent
from benchmarks.harness import EXTRA_MODULES, exit_missing, installed
from orchestrator.bench import PROG_VARIABLE

try:
    from benchmarks.harness.figures import median_figures, ratio
    from benchmarks.harness.processes import progress
    from benchmarks.harness.profile import py_spy
    from benchmarks.harness.rounds import SCENARIOS, Options, Round
except ModuleNotFoundError as exc:  # numpy: the `bench` extra is not installed
    if exc.name not in EXTRA_MODULES:
        raise
    exit_missing(EXTRA_MODULES[exc.name])

# Per scenario: defaults for the flags left out.
DEFAULTS: dict[str, dict[str, Any]] = {
    "steady": {"conversations": 1000, "calls": 20},
    "idle": {"conversations": 1000, "calls": 1, "duration": 10.0},
    "ramp": {"conversations": 2000, "calls": 20, "rate": 200.0, "think_ms": 500.0},
    "spike": {"conversations": 1000, "calls": 5, "spike": 5000, "think_ms": 200.0, "duration": 10.0},
    "soak": {"conversations": 1000, "calls": 20, "think_ms": 500.0, "duration": 300.0},
    "chaos": {"conversations": 1000, "calls": 50, "think_ms": 100.0},
    "mixed": {"conversations": 1000, "calls": 20},
}
COMPARABLE = {"conversimple-sdk": "conversimple", "arinova-agent-sdk": "arinova"}
SDK_MODULES = {package: module for module, package in EXTRA_MODULES.items() if package in COMPARABLE}
ARINOVA_SCENARIOS = ("steady", "ramp", "soak")
# The flags only some scenarios read, and their defaults where every scenario shares one
# (the others: DEFAULTS). Given to a scenario that does not read it, a flag would be
# ignored, and its run taken for what was asked: a usage error instead.
READ_BY: dict[str, tuple[str, ...]] = {
    "rate": ("ramp",),
    "think_ms": ("ramp", "spike", "soak", "chaos"),
    "duration": ("idle", "spike", "soak"),
    "spike": ("spike",),
    "spike_at": ("spike",),
    "share": ("chaos",),
    "drop_at": ("chaos",),
    "via": ("chaos",),
    "outage": ("chaos",),
}
SHARED_DEFAULTS: dict[str, Any] = {
    "spike_at": 3.0, "share": 0.3, "drop_at": 2.0, "via": "sandbox", "outage": 0.0, "settle": 1.0, "words": 20
}  # fmt: skip
IDLE_RSS_SCENARIOS = ("steady", "idle", "soak", "mixed")
"""The scenarios that read RSS per idle conversation (conversimple only: an Arinova agent
learns of a conversation from its first message)."""
MIXED_TOOLS = len(MixedToolsAgent.__tools__)
"""The mixed scenario agent's tools: echo, nap, block, fail."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; each flag's default (none for flags without one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def scenario_default(key: str) -> str:
    """``(default: 1000; ramp: 2000)``: a default set per scenario, the most common value first."""
    scenarios: dict[str, list[str]] = {}
    for scenario in SCENARIOS:
        scenarios.setdefault(f"{DEFAULTS[scenario].get(key, 0):g}", []).append(scenario)
    common = max(scenarios, key=lambda value: len(scenarios[value]))
    others = "".join(f"; {', '.join(s)}: {value}" for value, s in scenarios.items() if value != common)
    return f"(default: {common}{others})"


def number(kind: Callable[[str], Any], minimum: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) at least ``minimum`` (``above``: more).

    The harness's processes would refuse the others mid-run, or measure nonsense.
    """

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}, got {text}")
        return value

    return convert


COUNT = number(int, 0)
POSITIVE_COUNT = number(int, 1)
SECONDS = number(float, 0)
POSITIVE = number(float, 0, above=True)


def prog() -> str:
    """How this script was invoked: ``orchestrator bench`` runs it through PROG_VARIABLE."""
    return os.environ.get(PROG_VARIABLE) or "python benchmarks/bench.py"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog(), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument(
        "-n",
        "--conversations",
        type=POSITIVE_COUNT,
        help=f"Conversations (slots for soak). {scenario_default('conversations')}",
    )
    p.add_argument(
        "-k", "--calls", type=POSITIVE_COUNT, help=f"Tool calls per conversation. {scenario_default('calls')}"
    )
    p.add_argument(
        "--rate", type=SECONDS, help=f"ramp: conversations arriving per second. {scenario_default('rate')}"
    )
    p.add_argument(
        "--think-ms",
        type=SECONDS,
        help=f"Pause between a conversation's calls (±50%% jitter). {scenario_default('think_ms')}",
    )
    p.add_argument(
        "--duration",
        type=SECONDS,
        help=f"Seconds: idle hold, spike base load, soak length. {scenario_default('duration')}",
    )
    p.add_argument(
        "--spike", type=COUNT, help=f"spike: conversations in the burst. {scenario_default('spike')}"
    )
    p.add_argument("--spike-at", type=SECONDS, help="spike: seconds after the base load starts. (default: 3)")
    p.add_argument(
        "--share", type=float, help="chaos --via sandbox: share of links killed, in (0, 1]. (default: 0.3)"
    )
    p.add_argument("--drop-at", type=SECONDS, help="chaos: seconds into the calls. (default: 2)")
    p.add_argument(
        "--via",
        choices=("sandbox", "proxy"),
        help="chaos: kill links at the sandbox (a share) or reset all at a fault proxy. (default: sandbox)",
    )
    p.add_argument(
        "--outage", type=SECONDS, help="chaos --via proxy: refuse connections this long (s). (default: 0)"
    )
    p.add_argument("--compare", choices=list(COMPARABLE), help="Also run the real SDK, interleaved.")
    p.add_argument(
        "--platform",
        choices=("conversimple", "arinova"),
        help="Wire protocol; arinova: a call is a message answered by a streamed reply (default: the "
        "compared SDK's, else conversimple).",
    )
    p.add_argument(
        "--words", type=POSITIVE_COUNT, help="arinova: words per message (one chunk each). (default: 20)"
    )
    p.add_argument(
        "--workers",
        type=POSITIVE_COUNT,
        default=1,
        help="Run the orchestrator as `orchestrator run --workers N` (conversimple); CPU and RSS "
        "are the whole process tree's.",
    )
    p.add_argument("--rounds", type=POSITIVE_COUNT, default=1, help="Rounds per system (interleaved).")
    p.add_argument(
        "--settle", type=SECONDS, help="Seconds to settle before RSS readings. (default: 1)"
    )
    p.add_argument(
        "--call-timeout", type=POSITIVE, default=60.0, help="Seconds: a call unanswered this long is lost."
    )
    p.add_argument("--profile", action="store_true", help="py-spy the first orchestrator round's calls.")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="Parent folder of the results.")
    p.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    budget = p.add_argument_group(
        "budgets (exit status 1 when the orchestrator's median over its rounds breaches one; default: none)"
    )
    budget.add_argument("--max-p99-ms", type=POSITIVE, help="Most p99 call latency, ms.")
    budget.add_argument(
        "--max-rss-kib-per-conversation", type=POSITIVE, help="Most RSS per idle conversation, KiB."
    )
    budget.add_argument("--min-calls-per-s", type=POSITIVE, help="Fewest answered calls per second.")
    budget.add_argument(
        "--max-rss-drift-pct", type=POSITIVE, help="soak: most |last - first minute| / first, in %%."
    )
    args = p.parse_args(argv)
    for key, readers in READ_BY.items():
        if getattr(args, key) is not None and args.scenario not in readers:
            flag = "--" + key.replace("_", "-")
            p.error(f"{flag} is for {', '.join(readers)}: {args.scenario} would ignore it")
    if args.platform is None:
        args.platform = COMPARABLE[args.compare] if args.compare else "conversimple"
    if args.words is not None and args.platform != "arinova":
        p.error("--words is for --platform arinova (a message's words): conversimple would ignore it")
    if args.share is not None and args.via == "proxy":
        p.error("--share is for chaos --via sandbox: the proxy resets every link")
    for key, value in SHARED_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key, value in DEFAULTS[args.scenario].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key in ("rate", "think_ms", "duration", "spike"):
        if getattr(args, key) is None:
            setattr(args, key, 0)
    if args.scenario == "ramp" and args.rate <= 0:
        p.error("ramp needs --rate > 0")
    if args.scenario == "spike" and args.spike < 1:
        p.error("spike needs --spike > 0")
    if args.scenario == "soak" and args.duration <= 0:
        p.error("soak needs --duration > 0")
    if args.compare and COMPARABLE[args.compare] != args.platform:
        p.error(f"--compare {args.compare} speaks {COMPARABLE[args.compare]}, not --platform {args.platform}")
    if args.platform == "arinova" and args.scenario not in ARINOVA_SCENARIOS:
        given = f"--compare {args.compare}" if args.compare else "--platform arinova"
        p.error(f"{given} runs {', '.join(ARINOVA_SCENARIOS)}, not {args.scenario}")
    if not 0 < args.share <= 1:
        p.error("--share must be in (0, 1]")
    if args.max_rss_kib_per_conversation is not None:
        if args.platform == "arinova":
            p.error(
                "--max-rss-kib-per-conversation: an Arinova agent learns of a conversation from its "
                "first message, so no RSS per idle conversation is measured"
            )
        if args.scenario not in IDLE_RSS_SCENARIOS:
            p.error(
                f"--max-rss-kib-per-conversation is for {', '.join(IDLE_RSS_SCENARIOS)} (RSS per idle "
                f"conversation): {args.scenario} does not measure it"
            )
    if args.workers > 1 and args.platform != "conversimple":
        p.error("--workers runs the conversimple platform only (as `orchestrator run --workers` does)")
    if args.workers > 1 and args.profile:
        p.error("--profile follows one process: not with --workers")
    if args.max_rss_drift_pct is not None and args.scenario != "soak":
        p.error("--max-rss-drift-pct is a soak budget (RSS of its first minute against its last)")
    if args.outage > 0 and not (args.scenario == "chaos" and args.via == "proxy"):
        p.error("--outage needs chaos --via proxy (the proxy refuses connections that long)")
    if args.compare and not installed(SDK_MODULES[args.compare]):
        exit_missing(args.compare)
    return args


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
LOADGEN_BUSY_MIN_S = 1.0
"""The shortest calls phase whose busy share is read (a short one reads up to 104 %)."""


def after_run(by_system: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings the run's figures call for: a system whose load generator was (nearly)
    saturated during its calls was measured against a limit of the harness's own, so
    its throughput is a lower bound, and a ratio against a system it did not bound
    understates the difference."""
    warnings = []
    for system, figures in by_system.items():
        busy, calls, rate = (figures.get(k) for k in ("loadgen_cpu_pct_at_done", "calls", "calls_per_s"))
        if not calls or not rate or calls / rate < LOADGEN_BUSY_MIN_S:
            continue  # CPU time comes in 10 ms ticks: over a short window the share is noise
        if busy is not None and busy >= LOADGEN_BUSY_PCT:
            warnings.append(
                f"the load generator was {busy:.0f} % busy during {system}'s calls (median of its "
                f"rounds): {system}'s calls/s may be the load generator's limit, a lower bound of its own"
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
    facts = machine_facts()
    facts["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the host skews every figure
    print_facts(facts)
    options = options_of(args)
    started = datetime.datetime.now()
    out = args.out / f"{args.scenario}-{started:%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
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
    late = after_run(by_system)
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


def _stopped(signum: int, _frame: object) -> None:
    """SIGINT (Ctrl-C) or SIGTERM: the round stops what it started, then the run exits
    (130 or 143). The same signal again must not cut that short: Ctrl-C and ``timeout``
    signal the whole group, and ``orchestrator bench`` passes its own on as well."""
    signal.signal(signum, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    try:
        return run(parse(argv), argv)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except SystemExit as exit_:
        if exit_.code == 128 + signal.SIGTERM:  # raised by _stopped: say so, as for SIGINT
            print("bench: terminated", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
