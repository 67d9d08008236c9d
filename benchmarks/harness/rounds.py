"""One round: a fresh load generator and a fresh system under test, one scenario, its figures.

Every round starts the same way: the system under test connects its control
socket, the harness waits ``settle`` seconds and takes the *baseline* RSS (the
process with its agents loaded and no conversation). Then the scenario runs its
phases through the load generator's commands. The scenarios:

========  ==============================================================================
steady    N conversations register (gated: no call yet; RSS per conversation measured
          here), then all make K calls back to back
idle      N conversations register and stay idle for ``duration`` s (RSS, idle CPU);
          then one call each proves every link still works
ramp      N conversations arrive at ``rate`` per second, K calls each, ``think`` apart
spike     a base load (N conversations calling every ``think`` s for ``duration`` s)
          and, at ``spike_at`` s, a burst of ``spike`` conversations with K calls each
soak      N slots; each runs conversations of K calls, ``think`` apart, back to back
          for ``duration`` s (conversations come and go, the load stays constant)
chaos     N conversations, K calls ``think`` apart; at ``drop_at`` s a ``share`` of the
          links is killed (or, ``via proxy``, every link reset for ``outage`` s)
mixed     steady, with the mixed-tools agent (echo, nap, a blocking sync tool, a failure)
========  ==============================================================================
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from . import figures as fig
from .processes import (
    AGENTS,
    HarnessError,
    LoadGen,
    Progress,
    Sampler,
    SystemUnderTest,
    host_cpu_now,
    own_cpu_now,
)
from .profile import Profiler

SCENARIOS = ("steady", "idle", "ramp", "spike", "soak", "chaos", "mixed")


@attrs.frozen
class Options:
    """What a run asks for (the CLI's flags)."""

    scenario: str
    conversations: int
    calls: int
    rate: float = 0.0
    think: float = 0.0
    duration: float = 10.0
    spike: int = 0
    spike_at: float = 3.0
    share: float = 0.3
    drop_at: float = 2.0
    via: str = "sandbox"
    outage: float = 0.0
    settle: float = 1.0
    call_timeout: float = 60.0
    quiet: bool = False
    profile: bool = False
    """py-spy the first orchestrator round's calls phase."""
    platform: str = "conversimple"
    """``arinova``: a call is a message answered by a streamed reply (``words`` words)."""
    words: int = 20
    workers: int = 1
    """``orchestrator run --workers``: worker processes, their CPU and RSS summed."""

    @property
    def workload(self) -> str:
        return "mixed" if self.scenario == "mixed" else "echo"


class Round:
    """Run one scenario against one system; :meth:`run` returns the round's figures and series."""

    def __init__(self, options: Options, system: str, index: int, logs: Path) -> None:
        self.o = options
        self.system = system
        self.index = index
        self.logs = logs
        self.figures: dict[str, Any] = {"system": system, "round": index}
        if system == "orchestrator" and options.workers > 1:
            self.figures["workers"] = options.workers
        self.figures["load_avg_start"] = round(os.getloadavg()[0], 2)
        self.failures: list[str] = []
        self.marks: list[tuple[float, str]] = []
        self.batches: dict[str, int] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.command = ""
        self.profile_to: Path | None = None
        """Where to write a py-spy profile of the calls phase (None: no profile)."""
        self.profiler: Profiler | None = None
        self.sockets_before: int | None = None
        """Sockets open at the platform before the first batch opened (control connections)."""
        self.cpu0 = self.loadgen_cpu0 = self.own_cpu0 = 0.0
        """CPU seconds of the system under test, the load generator and the harness when the calls began."""
        self.host_cpu0 = (0.0, 0.0)
        """The host's busy and stolen CPU seconds then (see processes.host_cpu_now)."""

    # ------------------------------------------------------------ the round
    def run(self) -> dict[str, Any]:
        o = self.o
        logs = self.logs
        logs.mkdir(parents=True, exist_ok=True)
        self.lg = LoadGen(
            logs / f"round{self.index}-loadgen.log", proxy=o.via == "proxy", call_timeout=o.call_timeout
        )
        try:
            self.sut = SystemUnderTest(
                self.system,
                o.workload,
                o.platform,
                self.lg.base_url,
                o.conversations + o.spike,
                logs / f"round{self.index}-{self.system}.log",
                workers=o.workers,
            )
        except BaseException:
            self.lg.close()
            raise
        sampler: Sampler | None = None
        try:
            self.command = self.sut.command
            self.t0 = self.sut.started_at
            self.sampler = sampler = Sampler(self.sut.proc.pid, self.lg.pid).start()
            return self._measure()
        except BaseException:  # interrupted (SIGINT, SIGTERM) or broken: leave no process behind
            if sampler is not None:
                sampler.stop()
            self.sut.stop(1.0)
            self.lg.close()
            raise

    def _measure(self) -> dict[str, Any]:
        o = self.o
        table: fig.Table | None = None
        dumped: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        with (
            tempfile.TemporaryDirectory() as tmp,
            Progress(f"round {self.index} {self.system}", self.lg, self.sampler, o.quiet) as self.progress,
        ):
            try:
                self.baseline()
                SCENARIO_RUNNERS[o.scenario](self)
            except HarnessError as exc:
                self.failures.append(str(exc))
            if self.profiler is not None:
                self.profiler.stop()
            try:
                path = Path(tmp) / "calls.bin"
                self.lg.send("dump", path=str(path))
                dumped = self.lg.wait("dumped", timeout=60)
                table = fig.load_table(path, dumped["calls"])
            except HarnessError as exc:
                self.failures.append(f"no call table: {exc}")
            if self.sut.proc.poll() is None:
                if o.platform == "conversimple" and not self.failures:
                    # Every conversation ended at the platform: the process must let go of them.
                    self.progress.phase = "ending"
                    active, waited = self.sut.wait_idle(15.0)
                    if active is not None:
                        self.figures.update(open_after_end=active, end_wait_s=round(waited, 2))
                        if active:
                            self.failures.append(
                                f"{active} conversations still active {waited:.0f} s after the platform "
                                "ended every conversation"
                            )
                metrics = self.sut.scrape()
            self.progress.phase = "stopping"
            code, drain = self.sut.stop(40.0 if not self.failures else 5.0)
            self.sampler.stop()
            self.lg.close()
        self.figures.update(exit_code=code, stop_s=round(drain, 2), load_avg_end=round(os.getloadavg()[0], 2))
        if metrics:
            self.figures["metrics"] = metrics
        return self.finish(table, dumped)

    def finish(self, table: fig.Table | None, dumped: dict[str, Any]) -> dict[str, Any]:
        f, s = self.figures, self.sampler
        series: dict[str, Any] = {
            "resources": fig.resource_series(s.t, s.rss, s.cpu, s.loadgen_cpu, self.t0),
            "conversations": {
                "t": [round(t["t"] - self.t0, 3) for t in self.lg.ticks],
                "live": [t["live"] for t in self.lg.ticks],
                "registered": [t["registered"] for t in self.lg.ticks],
            },
            "marks": [(round(t - self.t0, 3), label) for t, label in self.marks],
        }
        if table is not None and table["status"].size:
            width = 1.0 if self.o.scenario == "soak" else 0.25
            series["calls"] = fig.call_series(table, self.t0, width)
            f.update(fig.call_stats(table))
            if self.o.platform == "arinova":
                f.update(fig.chunk_stats(table))
            answered = f["calls_ok"] + f["calls_error"]
            # Per 1,000 answered calls: the system's CPU to its sockets' close, and to the
            # platform's last end (the window before the first); what the calls cost the harness.
            for spent, per in (
                ("cpu_s", "cpu_s_per_1000_calls"),
                ("cpu_s_at_done", "cpu_s_per_1000_calls_at_done"),
                ("loadgen_cpu_s_at_done", "loadgen_cpu_s_per_1000_calls_at_done"),
            ):
                if spent in f and answered:
                    f[per] = round(f[spent] / answered * 1000, 4)
            SCENARIO_FIGURES.get(self.o.scenario, lambda r, t, d: None)(self, table, dumped)
        for key in ("duplicates", "late_answers", "unknown_answers", "violations"):
            if key in dumped:
                f[key] = dumped[key]
        if f.get("calls_lost") or f.get("duplicates"):
            self.failures.append(f"calls lost {f.get('calls_lost', 0)}, duplicates {f.get('duplicates', 0)}")
        f["failures"] = self.failures
        f["passed"] = not self.failures
        return {"figures": f, "series": series, "command": self.command}

    # ------------------------------------------------------------ phases
    def mark(self, label: str) -> float:
        now = time.perf_counter()
        self.marks.append((now, label))
        self.progress.phase = label
        return now

    def sleep(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            self.sut.check_alive()
            time.sleep(min(left, 0.2))

    def baseline(self) -> None:
        """Wait for the control socket, settle, take the baseline RSS."""
        self.progress.phase = "connecting"
        self.lg.wait_tick(
            lambda t: t["sockets"] >= 1, timeout=60, what="the control connection", alive=self.sut.check_alive
        )
        self.sleep(self.o.settle)
        self.base_rss = self.sampler.rss_now()
        self.mark("baseline")
        self.figures["baseline_rss_mib"] = round(self.base_rss / 2**20, 2)

    def open(
        self,
        batch: str,
        n: int,
        calls: int,
        *,
        gated: bool,
        rate: float = 0.0,
        think: float = 0.0,
        duration: float | None = None,
    ) -> float:
        self.batches[batch] = len(self.batches)
        if self.sockets_before is None and self.lg.last_tick:
            self.sockets_before = int(self.lg.last_tick["sockets"])
        self.lg.send(
            "open",
            batch=batch,
            n=n,
            calls=calls,
            gated=gated,
            rate=rate,
            think=think,
            duration=duration,
            agent_id=AGENTS[self.o.workload][1],
            platform=self.o.platform,
            words=self.o.words,
        )
        return float(self.lg.wait("opened", batch=batch, timeout=30)["at"])

    def wait_registered(self, batch: str, n: int, opened_at: float) -> float:
        """All of the batch's conversations registered (Arinova: its customers are ready)."""
        at = float(
            self.lg.wait("registered", batch=batch, timeout=90 + n / 100, alive=self.sut.check_alive)["at"]
        )
        self.figures["connect_s"] = round(at - opened_at, 3)
        self.figures["connects_per_s"] = round(n / (at - opened_at), 1) if at > opened_at else 0.0
        return at

    def go(self, batch: str | None) -> float:
        """Open the gate of ``batch`` (None: an ungated batch is about to open); start the CPU clock."""
        self.cpu0 = self.sut.cpu_seconds()
        self.loadgen_cpu0 = self.sampler.loadgen_cpu_now()
        self.host_cpu0, self.own_cpu0 = host_cpu_now(), own_cpu_now()
        if self.profile_to is not None:
            self.profiler = Profiler(self.sut.proc.pid, self.profile_to)
            if not self.profiler.start():
                self.figures["profile"] = {"error": "py-spy is not installed (pip install py-spy)"}
                self.profiler = None
        if batch is not None:
            self.lg.send("go", batch=batch)
        return self.mark("calls")

    def wait_done(self, batch: str, timeout: float) -> dict[str, Any]:
        event = self.lg.wait("done", batch=batch, timeout=timeout, alive=self.sut.check_alive)
        self.done[batch] = event
        started, completed = event["started"], event["outcomes"].get("completed", 0)
        if completed != started:
            self.failures.append(
                f"{batch}: {completed}/{started} conversations completed "
                f"{event['outcomes']}; e.g. {event['failures'][:3]}"
            )
        return event

    def measure_idle(self, n: int) -> None:
        if self.o.platform == "arinova":
            return  # an Arinova agent learns of a conversation from its first message
        rss = self.sampler.rss_now()
        self.figures["idle_rss_mib"] = round(rss / 2**20, 2)
        self.figures["rss_kib_per_conversation"] = round((rss - self.base_rss) / n / 1024, 2)

    def wait_closed(self, n: int) -> float | None:
        """Seconds until the system under test closed every socket its conversations used
        (the platform's count back to what it was before the first batch), or None if it
        had not within a bound: the CPU it spends letting conversations go is part of
        what they cost, and a system that closes lazily would otherwise leave it out."""
        base = self.sockets_before
        if base is None:
            return None
        start = time.perf_counter()
        try:
            self.lg.wait_tick(
                lambda t: t["sockets"] <= base and t["t"] >= start,
                timeout=30 + n / 500,
                what="the system under test to close its conversations' sockets",
                alive=self.sut.check_alive,
            )
        except HarnessError:
            return None
        return round(time.perf_counter() - start, 2)

    def measure_calls(self, go_at: float, n: int) -> None:
        at_done = self.sut.cpu_seconds() - self.cpu0
        lg_at_done = self.sampler.loadgen_cpu_now() - self.loadgen_cpu0
        (host, steal), own = host_cpu_now(), own_cpu_now() - self.own_cpu0
        rss_at_done = self.sampler.rss_read()
        done = time.perf_counter()
        window = done - go_at
        self.figures["cpu_s_at_done"] = round(at_done, 3)
        # Busy share up to the platform's last end, the calls' own window: the CPU % below
        # runs on through the teardown, when a short round's system has little left to do.
        self.figures["cpu_pct_at_done"] = round(at_done / window * 100, 1)
        self.figures["loadgen_cpu_pct_at_done"] = round(lg_at_done / window * 100, 1)
        self.figures["loadgen_cpu_s_at_done"] = round(lg_at_done, 3)
        # What the host's CPUs did besides the benchmark's three processes, in the same window
        # (% of one CPU): other processes, and the kernel's work not charged to a process.
        others = host - self.host_cpu0[0] - at_done - lg_at_done - own
        self.figures["others_cpu_pct_at_done"] = round(max(0.0, others) / window * 100, 1)
        self.figures["harness_cpu_pct_at_done"] = round(own / window * 100, 1)
        self.figures["steal_pct_at_done"] = round((steal - self.host_cpu0[1]) / window * 100, 1)
        self.progress.phase = "closing"
        self.figures["teardown_s"] = self.wait_closed(n)
        end = time.perf_counter()
        cpu = self.sut.cpu_seconds() - self.cpu0
        if self.profiler is not None:
            self.figures["profile"] = self.profiler.stop()
            self.profiler = None
        self.figures["cpu_s"] = round(cpu, 3)
        self.figures["cpu_pct"] = round(cpu / (end - go_at) * 100, 1)
        # Read at both ends, not from the 100 ms samples: a short run has none in between.
        lg = self.sampler.loadgen_cpu_now() - self.loadgen_cpu0
        self.figures["loadgen_cpu_pct"] = round(lg / (end - go_at) * 100, 1)
        # Read when the last call was answered too: a round shorter than the 100 ms sampling
        # has no sample of its own, and its peak came out as 0 (a negative RSS a conversation).
        peak = max([*self.sampler.between(go_at, end), rss_at_done])
        self.figures["peak_rss_mib"] = round(peak / 2**20, 2)
        self.figures["rss_kib_per_conversation_active"] = round((peak - self.base_rss) / n / 1024, 2)

    def done_timeout(self, calls: int) -> float:
        return 120 + calls / 500 + self.o.conversations / 100


# ---------------------------------------------------------------- scenarios
def steady(r: Round) -> None:
    o = r.o
    opened = r.open("main", o.conversations, o.calls, gated=True)
    r.progress.phase = "registering"
    r.wait_registered("main", o.conversations, opened)
    r.sleep(o.settle)
    r.measure_idle(o.conversations)
    go_at = r.go("main")
    r.wait_done("main", r.done_timeout(o.conversations * o.calls))
    r.measure_calls(go_at, o.conversations)
    r.mark("done")


def idle(r: Round) -> None:
    o = r.o
    opened = r.open("main", o.conversations, max(1, o.calls), gated=True)
    r.progress.phase = "registering"
    r.wait_registered("main", o.conversations, opened)
    r.sleep(o.settle)
    start, cpu0 = r.mark("idle"), r.sut.cpu_seconds()
    r.sleep(o.duration)
    r.figures["idle_cpu_pct"] = round((r.sut.cpu_seconds() - cpu0) / (time.perf_counter() - start) * 100, 2)
    r.figures["idle_held_s"] = o.duration
    r.measure_idle(o.conversations)
    go_at = r.go("main")
    r.wait_done("main", r.done_timeout(o.conversations * max(1, o.calls)))
    r.measure_calls(go_at, o.conversations)
    r.mark("done")


def ramp(r: Round) -> None:
    o = r.o
    go_at = r.go(None)  # CPU counted from the first arrival
    r.open("main", o.conversations, o.calls, gated=False, rate=o.rate, think=o.think)
    r.wait_done(
        "main",
        r.done_timeout(o.conversations * o.calls)
        + o.conversations / max(o.rate, 1e-9)
        + o.calls * o.think * 1.5,
    )
    r.measure_calls(go_at, o.conversations)
    r.mark("done")


def spike(r: Round) -> None:
    o = r.o
    think = o.think or 0.2
    base_calls = max(1, math.ceil(o.duration / think))
    go_at = r.go(None)
    r.open("base", o.conversations, base_calls, gated=False, think=think)
    r.sleep(o.spike_at)
    r.mark("spike")
    r.figures["spike_opened_at"] = r.open("spike", o.spike, o.calls, gated=False)
    r.wait_done("spike", r.done_timeout(o.spike * o.calls))
    r.figures["spike_done_at"] = r.mark("spike done")
    r.wait_done("base", r.done_timeout(o.conversations * base_calls) + o.duration * 2)
    r.measure_calls(go_at, o.conversations + o.spike)
    r.mark("done")


def soak(r: Round) -> None:
    o = r.o
    opened = r.open("main", o.conversations, o.calls, gated=True, think=o.think, duration=o.duration)
    r.progress.phase = "registering"
    r.wait_registered("main", o.conversations, opened)
    r.sleep(o.settle)
    r.measure_idle(o.conversations)
    go_at = r.go("main")
    r.figures["soak_go_at"] = go_at
    r.wait_done("main", o.duration + r.done_timeout(o.conversations * o.calls) + o.calls * o.think * 1.5)
    r.measure_calls(go_at, o.conversations)
    r.mark("done")


def chaos(r: Round) -> None:
    o = r.o
    opened = r.open("main", o.conversations, o.calls, gated=True, think=o.think)
    r.progress.phase = "registering"
    r.wait_registered("main", o.conversations, opened)
    r.sleep(o.settle)
    go_at = r.go("main")
    r.sleep(o.drop_at)
    r.lg.send("drop", batch="main", share=o.share, outage=o.outage)
    dropped = r.lg.wait("dropped", batch="main", timeout=30)
    r.mark("drop")
    recovered = r.lg.wait("recovered", batch="main", timeout=180, alive=r.sut.check_alive)
    r.mark("recovered")
    times = recovered["times"]
    r.figures.update(
        dropped=dropped["count"],
        recovered=len(times),
        not_recovered=recovered["missing"],
        recovery=fig.latency_summary(times),
        recover_all_s=round(recovered["at"] - dropped["at"], 3),
    )
    if recovered["missing"]:
        r.failures.append(f"{recovered['missing']} conversations did not get their link back")
    r.wait_done("main", r.done_timeout(o.conversations * o.calls) + o.calls * o.think * 1.5 + 60)
    r.measure_calls(go_at, o.conversations)
    r.mark("done")


SCENARIO_RUNNERS: dict[str, Callable[[Round], None]] = {
    "steady": steady,
    "idle": idle,
    "ramp": ramp,
    "spike": spike,
    "soak": soak,
    "chaos": chaos,
    "mixed": steady,
}


# ---------------------------------------------------------------- scenario figures
def _ramp_figures(r: Round, table: fig.Table, dumped: dict[str, Any]) -> None:
    done = r.done.get("main")
    if done:
        r.figures["setup"] = fig.latency_summary(done["setup"])
    r.figures["peak_live_conversations"] = max((t["live"] for t in r.lg.ticks), default=0)


def _spike_figures(r: Round, table: fig.Table, dumped: dict[str, Any]) -> None:
    f = r.figures
    opened, finished = f.pop("spike_opened_at", None), f.pop("spike_done_at", None)
    if opened is None or finished is None:
        return
    base = r.batches["base"]
    for name, (start, end) in {
        "before": (0.0, opened),
        "during": (opened, finished),
        "after": (finished, math.inf),
    }.items():
        stats = fig.call_stats(table, fig.window_mask(table, base, start, end))
        f[f"base_{name}"] = {k: stats[k] for k in ("calls", "calls_per_s", "p50_ms", "p99_ms", "max_ms")}
    spike_stats = fig.call_stats(table, table["batch"] == r.batches["spike"])
    f["spike_calls"] = {k: spike_stats[k] for k in ("calls", "calls_lost", "calls_per_s", "p50_ms", "p99_ms")}
    f["spike_s"] = round(finished - opened, 3)
    if "spike" in r.done:
        f["spike_setup"] = fig.latency_summary(r.done["spike"]["setup"])


def _soak_figures(r: Round, table: fig.Table, dumped: dict[str, Any]) -> None:
    f = r.figures
    go_at = f.pop("soak_go_at", None)
    if go_at is None:
        return
    window = min(60.0, r.o.duration / 4)
    end = go_at + r.o.duration
    first = r.sampler.between(go_at, go_at + window)
    last = r.sampler.between(end - window, end)
    if first and last:
        a, b = sum(first) / len(first), sum(last) / len(last)
        f.update(
            rss_window_s=window,
            rss_first_mib=round(a / 2**20, 2),
            rss_last_mib=round(b / 2**20, 2),
            rss_drift_pct=round((b - a) / a * 100, 2),
        )
    f["conversations_run"] = r.done.get("main", {}).get("started", 0)


def _mixed_figures(r: Round, table: fig.Table, dumped: dict[str, Any]) -> None:
    r.figures["tools"] = fig.tool_stats(table, dumped.get("tools", {}))
    expected = r.figures["tools"].get("fail", {}).get("calls", 0)
    r.figures["unexpected_errors"] = r.figures.get("calls_error", 0) - expected


SCENARIO_FIGURES: dict[str, Callable[[Round, fig.Table, dict[str, Any]], None]] = {
    "ramp": _ramp_figures,
    "spike": _spike_figures,
    "soak": _soak_figures,
    "mixed": _mixed_figures,
}
