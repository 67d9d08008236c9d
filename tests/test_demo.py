"""README's first command, ``orchestrator demo``, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.demo import load_examples

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_demo_completes_every_conversation_and_names_every_agent_whole(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--no-http"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["passed"] is True
    assert report["outcomes"] == {"completed": report["conversations"]} and report["conversations"] > 0
    assert report["calls_lost"] == report["replies_lost"] == report["duplicates"] == 0
    assert "Traceback" not in run.stderr
    # The summary table, on stderr: a row per agent and platform, each agent's id whole
    # (found by a new user: "customer-serv…" on a terminal 100 columns wide).
    table = run.stderr[run.stderr.index("summary") :]
    rows = [line.strip("│ ").split("│") for line in table.splitlines() if line.startswith("│")]
    agents = {row[0].strip() for row in rows}
    assert agents == {agent.agent_id for agent in load_examples(ROOT)}
    assert sum(int(row[2]) for row in rows) == report["conversations"]
    assert sum(int(row[6]) for row in rows) == 0  # lost
