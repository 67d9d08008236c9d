"""The processes of one benchmark round: the load generator, the system under test, the sampler.

The harness never shares a process with what it measures: the load generator
(:mod:`benchmarks.harness.loadgen`, the sandbox platform) and the system under
test (``orchestrator run`` or the conversimple-sdk dispatcher) each run in their
own process; :class:`Sampler` reads the system's RSS and CPU time (and the load
generator's CPU time) with psutil every ``interval`` seconds from a thread here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from orchestrator.redact import redact_text

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-api-key"  # not a word the commands hold: redacting it leaves them readable
SYSTEMS = ("orchestrator", "conversimple-sdk", "arinova-agent-sdk")
PLATFORM_OF_SDK = {"conversimple-sdk": "conversimple", "arinova-agent-sdk": "arinova"}
AGENTS = {
    # workload -> (orchestrator AGENT spec, agent_id the sandbox announces)
    "echo": (str(ROOT / "examples" / "echo.py") + ":EchoAgent", "echo"),
    "mixed": (str(ROOT / "benchmarks" / "agents.py") + ":MixedToolsAgent", "mixed"),
}


class HarnessError(Exception):
    """A round could not go on (a process died, a phase timed out)."""


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- load generator
class LoadGen:
    """The load generator process and its event stream (JSON lines on its stdout)."""

    def __init__(self, log: Path, *, proxy: bool = False, call_timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "benchmarks.harness.loadgen", "--call-timeout", str(call_timeout)]
        if proxy:
            argv.append("--proxy")
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.last_tick: dict[str, Any] = {}
        self.ticks: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="loadgen-events", daemon=True)
        self._reader.start()
        listening = self.wait("listening", timeout=30)
        self.port: int = listening["port"]
        self.pid: int = listening["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if event.get("ev") == "tick":
                    self.last_tick = event
                    self.ticks.append(event)
                else:
                    self._events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._events.append({"ev": "exited"})
            self._cond.notify_all()

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise HarnessError("the load generator is gone") from exc

    def wait(
        self, ev: str, *, batch: str | None = None, timeout: float, alive: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """The next ``ev`` event (of ``batch``); HarnessError on timeout or if a process died."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self._events):
                    if event["ev"] == ev and (batch is None or event.get("batch") == batch):
                        return self._events.pop(i)
                    if event["ev"] in ("exited", "error"):
                        raise HarnessError(f"load generator: {event.get('message', 'exited')}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"timed out after {timeout:.0f} s waiting for {ev}")
                self._cond.wait(min(left, 0.5))
                if alive is not None:
                    alive()

    def wait_tick(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        what: str,
        alive: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.last_tick and predicate(self.last_tick)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(min(left, 0.5))
                if alive is not None:
                    alive()
            return self.last_tick

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=15)
            except (HarnessError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()


# ---------------------------------------------------------------- system under test
class SystemUnderTest:
    """``orchestrator run`` or the conversimple-sdk dispatcher, serving the workload's agent."""

    def __init__(
        self,
        system: str,
        workload: str,
        platform: str,
        base_url: str,
        conversations: int,
        log: Path,
        *,
        workers: int = 1,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}")
        self.system = system
        self.http_port: int | None = None
        url = base_url + "/customer_sdk/websocket" if platform == "conversimple" else base_url
        if system == "orchestrator":
            self.http_port = free_port()
            argv = [sys.executable, "-m", "orchestrator", "run", AGENTS[workload][0], "--url", url]
            if platform == "arinova":
                argv += ["--platform", "arinova", "--bot-token", API_KEY]
            else:
                argv += ["--api-key", API_KEY]
            argv += ["--http-port", str(self.http_port)]
            argv += ["--max-conversations", str(max(10_000, conversations + 100))]
            if workers > 1:
                argv += ["--workers", str(workers)]
            env = child_env()
        elif system == "conversimple-sdk":
            argv = [sys.executable, "-m", "benchmarks.sdk_conversimple", url, API_KEY]
            env = child_env(CONVERSIMPLE_LOG_LEVEL="WARNING")
        else:
            argv = [sys.executable, "-m", "benchmarks.sdk_arinova", url, API_KEY]
            env = child_env()
        self.argv: Sequence[str] = argv
        self.log = log
        self._log = log.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.process = psutil.Process(self.proc.pid)

    @property
    def command(self) -> str:
        """The command line, for the report (paths relative to the checkout, key redacted)."""
        shown = ["python" if a == sys.executable else a.replace(str(ROOT) + "/", "") for a in self.argv]
        return redact_text(" ".join(shown), [API_KEY])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise HarnessError(f"{self.system} exited early with status {code} (see {self.log.name})")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process)

    def scrape(self) -> dict[str, float]:
        """A few counters from /metrics (orchestrator only): a cross-check of the load generator."""
        if self.http_port is None:
            return {}
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            texts = [httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for port in self._ports()]
        except httpx.HTTPError:
            return {}
        wanted = {
            "orchestrator_tool_calls": "tool_calls",
            "orchestrator_actor_restarts": "actor_restarts",
            "orchestrator_reconnects": "reconnects",
            "orchestrator_conversations_started": "conversations_started",
            "orchestrator_protocol_errors": "protocol_errors",
        }
        out: dict[str, float] = {}
        for text in texts:
            for family in text_string_to_metric_families(text):
                key = wanted.get(family.name)
                if key is not None:
                    total = sum(s.value for s in family.samples if s.name.endswith("_total"))
                    out[key] = out.get(key, 0.0) + total
        return out

    def _status(self) -> Any:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.http_port}/status", timeout=10).json()

    def _ports(self) -> list[int]:
        """Where the conversations' metrics are: this process, or with ``--workers`` each worker."""
        assert self.http_port is not None
        workers = self._status().get("workers")
        if workers is None:
            return [self.http_port]
        return [int(w["http_port"]) for w in workers if w.get("http_port")]

    def wait_idle(self, timeout: float) -> tuple[int | None, float]:
        """Poll ``/status`` until no conversation is active (orchestrator only).

        Returns (conversations still active, seconds waited); (None, 0) without an endpoint.
        """
        if self.http_port is None:
            return None, 0.0
        import httpx

        started = time.perf_counter()
        active: int | None = None
        while True:
            try:
                status = self._status()
                if "workers" in status:  # --workers: the parent counts what each one owns
                    active = sum(int(w["conversations"]) for w in status["workers"])
                else:
                    active = int(status["conversations"]["active"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            waited = time.perf_counter() - started
            if active == 0 or waited >= timeout or self.proc.poll() is not None:
                return active, waited
            time.sleep(0.1)

    def stop(self, timeout: float = 40.0) -> tuple[int, float]:
        """SIGTERM (the orchestrator drains), a second SIGTERM after ``timeout`` (it exits at
        once), SIGKILL 5 s later: (exit code, seconds to stop)."""
        started = time.perf_counter()
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        _redact_file(self.log)
        return int(self.proc.returncode), time.perf_counter() - started


def _redact_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    path.write_text(redact_text(text, [API_KEY]), encoding="utf-8")


# ---------------------------------------------------------------- sampler
CHILDREN_EVERY = 1.0
"""Seconds between two of the sampler's looks for the system's child processes
(``--workers``): psutil finds them by reading every process's ``/proc/PID/stat``, about
a millisecond on a quiet machine. Looked for at every 100 ms sample, twice, that was 3.2 to 5 %
of a CPU taken from the two processes a round measures, on a machine they keep busy."""


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def tree_cpu_seconds(process: psutil.Process, children: list[psutil.Process] | None = None) -> float:
    """CPU time of ``process`` and its children (``--workers``), the exited ones included:
    the children found now, or those given."""
    own = process.cpu_times()  # raises if the process itself is gone
    total = own.user + own.system + own.children_user + own.children_system  # children waited for
    for child in _children(process) if children is None else children:
        with contextlib.suppress(psutil.Error):  # one that exited meanwhile
            times = child.cpu_times()
            total += times.user + times.system
    return float(total)


def tree_rss(process: psutil.Process, children: list[psutil.Process] | None = None) -> int:
    """RSS of ``process`` and its children, summed (pages they share count more than once):
    the children found now, or those given."""
    total = process.memory_info().rss  # raises if the process itself is gone
    for child in _children(process) if children is None else children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


class Sampler:
    """RSS and CPU time of the system under test (and the load generator's CPU) every
    ``interval``; its child processes looked for every ``CHILDREN_EVERY`` seconds."""

    def __init__(self, pid: int, loadgen_pid: int, interval: float = 0.1) -> None:
        self.interval = interval
        self._sut = psutil.Process(pid)
        self._loadgen = psutil.Process(loadgen_pid)
        self.t: list[float] = []
        self.rss: list[int] = []
        self.cpu: list[float] = []
        self.loadgen_cpu: list[float] = []
        self.looked_for_children = 0
        """How many times the sampler looked for the system's children."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.perf_counter()
        children: list[psutil.Process] = []
        look_at = next_at
        while not self._stop.is_set():
            now = time.perf_counter()
            if now >= look_at:
                children, look_at = _children(self._sut), now + CHILDREN_EVERY
                self.looked_for_children += 1
            try:
                rss = tree_rss(self._sut, children)
                cpu = tree_cpu_seconds(self._sut, children)
                lg = self._loadgen.cpu_times()
            except psutil.Error:
                return
            if not rss:  # exited, not yet reaped: no memory of its own (charts showed a drop to 0)
                return
            self.t.append(time.perf_counter())
            self.rss.append(rss)
            self.cpu.append(cpu)
            self.loadgen_cpu.append(float(lg.user + lg.system))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rss_now(self, window: float = 0.5) -> int:
        """Median RSS over the last ``window`` seconds."""
        if not self.t:
            return 0
        cut = self.t[-1] - window
        values = sorted(r for t, r in zip(self.t, self.rss, strict=True) if t >= cut)
        return values[len(values) // 2]

    def rss_read(self) -> int:
        """The system under test's RSS read now, not sampled (0 if it is gone)."""
        try:
            return tree_rss(self._sut)
        except psutil.Error:
            return 0

    def between(self, start: float, end: float) -> list[int]:
        return [r for t, r in zip(self.t, self.rss, strict=True) if start <= t <= end]

    def loadgen_cpu_now(self) -> float:
        """The load generator's CPU seconds so far, read now (as the system under test's are)."""
        times = self._loadgen.cpu_times()
        return float(times.user + times.system)


def host_cpu_now() -> tuple[float, float]:
    """CPU seconds so far, summed over the host's CPUs: busy (in any process, or the kernel
    on their behalf: interrupts and network processing included), and stolen by the
    hypervisor for other guests."""
    times = psutil.cpu_times()
    busy = sum(getattr(times, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq"))
    return float(busy), float(getattr(times, "steal", 0.0))


def own_cpu_now() -> float:
    """This process's CPU seconds so far (the harness: its sampler and progress threads)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def progress(line: str, stream: IO[str] = sys.stderr) -> None:
    stream.write(line + "\n")
    stream.flush()


class Progress:
    """A progress line on stderr every second while a round runs."""

    def __init__(self, label: str, loadgen: LoadGen, sampler: Sampler, quiet: bool) -> None:
        self.label = label
        self.phase = "starting"
        self._loadgen = loadgen
        self._sampler = sampler
        self._quiet = quiet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        if not self._quiet:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        before: tuple[float, int] | None = None
        while not self._stop.wait(1.0):
            tick, s = self._loadgen.last_tick, self._sampler
            if not tick or not s.t:
                continue
            rate = 0.0
            if before is not None and tick["t"] > before[0]:
                rate = (tick["answered"] - before[1]) / (tick["t"] - before[0])
            before = (tick["t"], tick["answered"])
            cpu = 0.0
            if len(s.t) > 10:
                cpu = (s.cpu[-1] - s.cpu[-11]) / (s.t[-1] - s.t[-11]) * 100
            progress(
                f"[{self.label}] {self.phase:<10} conversations live {tick['live']:,} "
                f"registered {tick['registered']:,} ended {tick['ended']:,}  calls {tick['answered']:,}"
                f"/{tick['sent']:,} ({rate:,.0f}/s)  RSS {s.rss[-1] / 2**20:,.1f} MiB  CPU {cpu:.0f}%"
            )
