"""``orchestrator bench SCENARIO [options]``: the bundled load-test benchmarks.

The benchmarks live in the source checkout (``benchmarks/bench.py``, next to
this package), not in the installed package: they start the sandbox, the
system under test and conversimple-sdk as separate processes and need the
``bench`` extra (numpy, matplotlib, the SDKs): without it the script says which
package is missing, on one line, and exits 2. This command runs that script with
the same arguments and the same Python, passes it a SIGINT or SIGTERM, and exits
with its status; ``--help`` shows the script's own options::

    orchestrator bench steady -n 1000 -k 50 --compare conversimple-sdk
    orchestrator bench idle -n 10000 --max-rss-kib-per-conversation 16
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

__all__ = ["PROG_VARIABLE", "BenchmarksMissing", "bench", "bench_script"]

SCRIPT = Path("benchmarks") / "bench.py"
PROG_VARIABLE = "ORCHESTRATOR_BENCH_PROG"
"""How the script was invoked, as its --help and its results should say it (default: the script)."""


class BenchmarksMissing(click.ClickException):
    """No checkout around the package: one line on stderr, exit status 2."""

    exit_code = 2


def bench_script() -> Path:
    """``benchmarks/bench.py`` of the checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent / SCRIPT


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def bench(arguments: tuple[str, ...]) -> None:
    """Run the load-test benchmarks (steady, idle, ramp, spike, soak, chaos, mixed).

    Needs a source checkout: runs benchmarks/bench.py next to the package with
    these arguments. `orchestrator bench --help` shows its options.
    """
    script = bench_script()
    if not script.is_file():
        raise BenchmarksMissing(
            f"the benchmarks are not installed: {script} does not exist. They ship with the "
            "source checkout; clone the repository and run `pip install -e '.[bench]'` there."
        )
    # The script names itself so: in its --help and in the command its results record.
    env = {**os.environ, PROG_VARIABLE: "orchestrator bench"}
    started: list[subprocess.Popen[bytes]] = []

    def pass_on(signum: int, _frame: object) -> None:
        """A SIGINT or SIGTERM for this command is the script's: it stops the processes it
        started (and takes the same signal twice, from the group and from here, as one)."""
        for child in started:
            child.send_signal(signum)

    # Before the start: no gap to orphan the child in.
    previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        started.append(subprocess.Popen([sys.executable, str(script), *arguments], env=env))
        status = started[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # Killed by a signal before it could handle it: exit as a shell reports that (128 + N).
    sys.exit(128 - status if status < 0 else status)
