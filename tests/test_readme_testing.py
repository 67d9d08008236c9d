"""README's "Testing an agent" example, run as a user would: its code block saved as a
test file of its own and run by pytest in a subprocess, so the docs cannot drift from
``orchestrator.testing``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_agent_test_passes_as_written(tmp_path: Path) -> None:
    section = README.read_text(encoding="utf-8").split("### Testing an agent", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    (tmp_path / "test_greeter.py").write_text(code, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_greeter.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
