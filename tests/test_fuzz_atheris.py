"""The atheris harness (fuzz/fuzz_decoders.py), a short bounded run in a subprocess.

Skips where atheris is not installed, except under CI (``CI`` set), where a missing
atheris fails: CI must prove that the harness runs and finds nothing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_decoders.py"
RUNS = 4000


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.mark.slow
def test_fuzz_atheris_harness_runs_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        if in_ci():
            pytest.fail("atheris is not installed: CI must run the atheris harness (pip install atheris)")
        pytest.skip("atheris is not installed")
    # cwd is a temporary directory: a crash input (crash-<sha1>) lands there, not in the repo.
    proc = subprocess.run(
        [sys.executable, str(HARNESS), f"-atheris_runs={RUNS}", "-seed=1", "-max_len=4096"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert f"Done {RUNS} " in proc.stderr
    assert not list(tmp_path.glob("crash-*"))
