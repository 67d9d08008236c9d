"""The compiled build: the modules ``setup.py`` compiles with mypyc pass the whole suite.

``pip install .`` compiles :data:`orchestrator.build.COMPILED`; the rest of this suite
runs from the source tree, pure Python (``pip install -e .``). This test copies the tree,
compiles those modules in place as a wheel build would, checks that the copy imports
each of them compiled, and runs every other test file against the copy in a
subprocess (``PYTHONPATH`` puts the copy first, for the processes the tests start too).

A machine with no C compiler or Python headers cannot compile: the test skips there
(the install falls back to pure Python the same way). ``.ci/run`` installs both and
sets ``ORCHESTRATOR_REQUIRE_COMPILED=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from orchestrator.build import COMPILED

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = {"test_compiled.py", "test_lint.py"}  # this test; ruff and mypy read source, not builds
NOT_COPIED = {"bench-results", "sim-results", "build", "dist"}


def _cannot_compile() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    return None


def _copy_tree(dest: Path) -> None:
    """The repository as checked out, without its venv, caches, results or builds."""
    skip = shutil.ignore_patterns("__pycache__", "*.so", ".hypothesis")
    dest.mkdir()
    for path in ROOT.iterdir():
        if path.name.startswith(".") or path.name in NOT_COPIED or path.name.endswith(".egg-info"):
            continue
        if path.is_dir():
            shutil.copytree(path, dest / path.name, ignore=skip)
        else:
            shutil.copy2(path, dest / path.name)


@pytest.mark.slow
def test_the_compiled_modules_pass_the_whole_suite(tmp_path: Path) -> None:
    reason = _cannot_compile()
    if reason is not None:
        if os.environ.get("ORCHESTRATOR_REQUIRE_COMPILED") == "1":
            pytest.fail(f"cannot compile ({reason}), and ORCHESTRATOR_REQUIRE_COMPILED=1")
        pytest.skip(f"cannot compile here: {reason}")
    tree = tmp_path / "tree"
    _copy_tree(tree)
    env = {**os.environ, "ORCHESTRATOR_COMPILE": "1", "PYTHONPATH": str(tree)}
    built = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]

    probe = (
        "import importlib, orchestrator.build as b; "
        "print(*[importlib.import_module(m).__file__ for m in b.COMPILED], sep='\\n'); "
        "print(b.describe())"
    )
    files = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True, timeout=60
    )
    assert files.returncode == 0, files.stderr
    *paths, described = files.stdout.splitlines()
    assert len(paths) == len(COMPILED)
    for path in paths:  # imported from the copy, as the extension built there
        assert path.startswith(str(tree)) and path.endswith(".so"), path
    assert described == f"compiled ({len(COMPILED)} modules)"

    test_files = sorted(p.name for p in (tree / "tests").glob("test_*.py") if p.name not in LEFT_OUT)
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/{f}" for f in test_files)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert suite.returncode == 0, suite.stdout[-8000:] + suite.stderr[-2000:]
