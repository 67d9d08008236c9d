"""The load-test harness runs end to end: both systems, results on disk, JSON last line, budgets.

One small real run (20 conversations x 3 calls, the orchestrator then conversimple-sdk,
each in its own process next to the sandbox's) proves the plumbing; the figures
themselves belong to benchmarks/, not to a timed test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

import orchestrator.bench
from benchmarks.harness.processes import API_KEY, tree_cpu_seconds, tree_rss
from orchestrator.bench import bench

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_bench_steady_compare_writes_results_and_fails_a_breached_budget(tmp_path: Path) -> None:
    argv = [
        sys.executable, str(BENCH), "steady", "-n", "20", "-k", "25", "--compare", "conversimple-sdk",
        "--settle", "0.3", "--quiet", "--out", str(tmp_path),
        "--max-p99-ms", "60000",  # holds
        "--min-calls-per-s", "1e9",  # cannot hold: exit status 1
    ]  # fmt: skip
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("machine: cpu="), run.stdout
    summary = json.loads(lines[-1])
    assert run.returncode == 1, run.stdout + run.stderr

    for system in ("orchestrator", "conversimple-sdk"):
        figures = summary["systems"][system]
        assert figures["calls"] == 500  # enough calls for the CPU sampler (10 ms ticks) to see
        assert figures["calls_lost"] == 0
        assert figures["calls_per_s"] > 0
        assert figures["p99_ms"] >= figures["p50_ms"] > 0
        assert figures["cpu_s_per_1000_calls"] > 0
        assert "rss_kib_per_conversation" in figures
        # The CPU window ends once the system closed its conversations' sockets: it
        # counts the teardown, which the window up to the platform's last end did not.
        assert figures["teardown_s"] is not None and figures["teardown_s"] >= 0
        assert figures["cpu_s_per_1000_calls"] >= figures["cpu_s_per_1000_calls_at_done"] > 0
    assert set(summary["ratios"]) >= {
        "calls_per_s", "cpu_s_per_1000_calls", "cpu_s_per_1000_calls_at_done", "p99_ms"
    }  # fmt: skip
    checks = {c["figure"]: c["ok"] for c in summary["budget"]["checks"]}
    assert checks == {"p99_ms": True, "calls_per_s": False}
    assert summary["passed"] is False
    assert any(line.startswith("budget BREACHED: calls_per_s") for line in lines)

    out = Path(summary["dir"])
    assert out.parent == tmp_path
    results = json.loads((out / "results.json").read_text())
    assert [r["figures"]["system"] for r in results["rounds"]] == ["orchestrator", "conversimple-sdk"]
    assert all(r["figures"]["passed"] for r in results["rounds"])  # the exit status is the budget's
    assert all(r["series"]["resources"]["rss_mib"] for r in results["rounds"])
    markdown = (out / "results.md").read_text()
    assert "| orchestrator" in markdown and "BREACHED" in markdown
    for chart in ("throughput.png", "latency.png", "rss.png"):
        assert (out / chart).read_bytes().startswith(b"\x89PNG"), chart
    assert f"auth_token={API_KEY}" not in (out / "logs" / "round1-orchestrator.log").read_text()
    # The key is masked in the commands shown, and only the key: the rest stays readable.
    commands = results["commands"]
    assert API_KEY not in json.dumps(commands)
    assert "--api-key ***" in commands["orchestrator"]
    assert "-m benchmarks.sdk_conversimple ws://" in commands["conversimple-sdk"]


def test_bench_command_passes_arguments_through() -> None:
    run = subprocess.run(
        [sys.executable, "-c", "from orchestrator.bench import bench; bench()", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "--compare" in run.stdout and "--max-p99-ms" in run.stdout


def test_bench_command_without_a_checkout_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(orchestrator.bench, "bench_script", lambda: tmp_path / "benchmarks" / "bench.py")
    result = CliRunner().invoke(bench, ["steady"])
    assert result.exit_code == 2
    assert "benchmarks are not installed" in result.output


@pytest.mark.slow
def test_bench_runs_the_orchestrator_with_workers_and_counts_the_whole_process_tree(tmp_path: Path) -> None:
    argv = [
        sys.executable, str(BENCH), "steady", "-n", "20", "-k", "10", "--workers", "2",
        "--settle", "0.3", "--quiet", "--out", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["workers"] == 2
    figures = summary["systems"]["orchestrator"]
    assert figures["calls"] == 200 and figures["calls_lost"] == 0
    results = json.loads((Path(summary["dir"]) / "results.json").read_text())
    assert "--workers 2" in results["commands"]["orchestrator"]
    round_ = results["rounds"][0]["figures"]
    assert round_["workers"] == 2
    assert round_["metrics"]["tool_calls"] == 200  # summed over the workers' own /metrics
    assert round_["open_after_end"] == 0  # the parent's /status counts what each worker owns
    assert round_["exit_code"] == 0


REFUSED = [["--workers", "0"], ["--workers", "2", "--platform", "arinova"], ["--workers", "2", "--profile"]]


@pytest.mark.parametrize("flags", REFUSED)
def test_bench_refuses_workers_it_cannot_measure(flags: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "steady", *flags], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--workers" in run.stderr


def test_process_tree_cpu_and_rss_include_children_and_grandchildren() -> None:
    # A parent that only sleeps; its child and its grandchild each burn 0.4 s of CPU, then sleep.
    burn = "import time\nt = time.process_time() + 0.4\nwhile time.process_time() < t: pass\ntime.sleep(30)"
    spawn = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {!r}])\n"
    child = spawn.format(burn) + burn
    parent = spawn.format(child) + "import time\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while tree_cpu_seconds(root) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.05)
        own = root.cpu_times()
        assert tree_cpu_seconds(root) >= 0.8  # the two burners' 0.4 s each
        assert own.user + own.system < 0.4  # none of it the parent's own
        assert len(root.children(recursive=True)) == 2
        assert tree_rss(root) > 2 * root.memory_info().rss
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
