"""``benchmarks/bench.py``'s flags: their defaults per scenario, and the checks that refuse
a value the harness could not run with, or a flag the scenario would ignore (exit status 2,
naming the flag). Needs nothing from the ``bench`` extra but the SDK it is asked to compare.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.harness import EXTRA_MODULES, exit_missing, installed
from orchestrator.bench import PROG_VARIABLE

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; each flag's default (none for flags without one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """A usage error in one line, not under the whole usage (fifteen lines of flags)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


SCENARIOS = tuple(DEFAULTS)
"""Every scenario (``benchmarks.harness.rounds`` runs them; a test keeps the two lists equal)."""


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


def parse(argv: Sequence[str] | None, description: str | None = None) -> argparse.Namespace:
    """``benchmarks/bench.py``'s command line, checked and completed with each scenario's defaults."""
    p = Parser(prog=prog(), description=description, formatter_class=HelpFormatter)
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
    p.add_argument("--settle", type=SECONDS, help="Seconds to settle before RSS readings. (default: 1)")
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
