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
import re
import shutil
import subprocess
import sys
import sysconfig
import time
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

    def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``python *argv`` in the copy, which must succeed."""
        done = subprocess.run(
            [sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
        return done

    run("setup.py", "-q", "build_ext", "--inplace", timeout=600)

    probe = (
        "import importlib, orchestrator.build as b; "
        "print(*[importlib.import_module(m).__file__ for m in b.COMPILED], sep='\\n'); "
        "print(b.describe())"
    )
    *paths, described = run("-c", probe).stdout.splitlines()
    assert len(paths) == len(COMPILED)
    for path in paths:  # imported from the copy, as the extension built there
        assert path.startswith(str(tree)) and path.endswith(".so"), path
    assert described == f"compiled ({len(COMPILED)} modules)"

    test_files = sorted(p.name for p in (tree / "tests").glob("test_*.py") if p.name not in LEFT_OUT)
    run("-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/{f}" for f in test_files), timeout=1200)

    # A source edited after the build: Python still imports the extension. Say so.
    edited = tree / "orchestrator" / "transport" / "frames.py"
    os.utime(edited, (time.time(), time.time() + 3600))  # an hour after the build
    version = run("-m", "orchestrator", "--version").stdout.strip()
    assert version.endswith(f"compiled ({len(COMPILED)} modules; 1 older than their source)")
    # Any subcommand warns (--version exits before the group runs).
    assert "orchestrator.transport.frames; reinstall" in run("-m", "orchestrator", "demo", "--help").stderr

    # Edited again, and rebuilt in place: the edit runs, and nothing is stale, though the
    # build kept the module's old extension (only the library of all their code changes).
    with edited.open("a") as source:
        source.write("\nREBUILT = True\n")
    run("setup.py", "-q", "build_ext", "--inplace", timeout=600)
    probe = "import orchestrator.build as b, orchestrator.transport.frames as f; "
    probe += "print(f.REBUILT, b.describe())"
    assert run("-c", probe).stdout.strip() == f"True compiled ({len(COMPILED)} modules)"


# Compiled code trusts mypy's narrowing of an attribute: after ``self.x = None`` (or a
# check ``if self.x is None``), a read of ``self.x`` that mypy still sees as None is
# compiled as one, and fails with a TypeError if an await in between changed it (mypy
# does not undo narrowing at an await). Two such reads were bugs. Every narrowed read of
# an attribute of a compiled class is listed here, counted, after a review that nothing
# can change the attribute between the check and the read.
REVIEWED_NARROWINGS = {
    # (class, attribute, type read as): reads, each right after its check, with no await
    # or call between that could change the attribute
    ("orchestrator.link.ResilientConnection", "_failed", "LinkError"): 1,  # raised after its check
    ("orchestrator.link.ResilientConnection", "_inbox", "list"): 1,  # asserted, then appended to
    ("orchestrator.link.ResilientConnection", "_loss", "LinkError"): 1,  # raised after its check
    ("orchestrator.link.ResilientConnection", "_news", "Event"): 1,  # set, then waited on
    ("orchestrator.link.ResilientConnection", "metrics", "Metrics"): 5,  # ``metrics and metrics.x``
    ("orchestrator.sandbox.conversation.ConversimpleConversation", "socket", "Socket"): 2,
    ("orchestrator.sandbox.conversation.OpenCall", "sent_to", "Socket"): 1,
    ("orchestrator.sandbox.conversimple.ConversimpleRouter", "nursery", "Nursery"): 1,
    ("orchestrator.transport.readiness._Entry", "owner", "Lingering"): 1,
    ("orchestrator.transport.sansio.SansIOWebSocket", "_flush_lot", "ParkingLot"): 3,
    ("orchestrator.transport.sansio.SansIOWebSocket", "_fragments", "list"): 2,
}


def _narrowed_reads() -> dict[tuple[str, str, str], int]:
    """(class, attribute, type read as) of every read of a compiled class's attribute
    whose type mypy narrowed from the declared one, with how often each occurs."""
    from mypy import build
    from mypy.main import process_options
    from mypy.nodes import MemberExpr, Var
    from mypy.subtypes import is_same_type
    from mypy.types import Instance, get_proper_type

    paths = [f"{ROOT}/{m.replace('.', '/')}.py" for m in COMPILED]
    sources, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *paths])
    options.export_types = options.preserve_asts = True
    options.incremental = False
    options.cache_dir = os.devnull
    types = build.build(sources, options).types
    found: dict[tuple[str, str, str], int] = {}
    for expr, seen in types.items():
        if not isinstance(expr, MemberExpr):
            continue
        owner = get_proper_type(types.get(expr.expr))
        if not isinstance(owner, Instance) or owner.type.module_name not in COMPILED:
            continue
        symbol = owner.type.get(expr.name)
        if symbol is None or not isinstance(symbol.node, Var) or symbol.node.type is None:
            continue
        if not is_same_type(seen, symbol.node.type):
            shown = re.sub(r"\[.*\]", "", re.sub(r"[\w.]+\.(\w+)", r"\1", str(seen)))
            key = (owner.type.fullname, expr.name, shown)
            found[key] = found.get(key, 0) + 1
    return found


@pytest.mark.slow
def test_every_narrowed_attribute_read_in_a_compiled_module_was_reviewed() -> None:
    found = _narrowed_reads()
    assert found == REVIEWED_NARROWINGS, (
        "reads of a compiled class's attribute at a type narrowed from its declared one "
        "changed; check that nothing (no await, no call) can change the attribute between "
        f"the narrowing and each read, then update REVIEWED_NARROWINGS: {found}"
    )


def test_a_build_asks_for_mypy_only_when_it_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import build_backend
    finally:
        sys.path.remove(str(ROOT))
    for choice, wheel, editable in [("", True, False), ("1", True, True), ("0", False, False)]:
        monkeypatch.setenv("ORCHESTRATOR_COMPILE", choice)
        for requires, compiles in [
            (build_backend.get_requires_for_build_wheel(), wheel),
            (build_backend.get_requires_for_build_editable(), editable),
        ]:
            assert any(r.startswith("mypy>=") for r in requires) is compiles, (choice, requires)
            assert any(r.startswith("trio>=") for r in requires) is compiles


def test_a_bad_compile_choice_stops_the_build_with_a_clear_error(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, str(ROOT / "setup.py"), "--version"],
        cwd=ROOT,
        env={**os.environ, "ORCHESTRATOR_COMPILE": "yes"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode != 0
    assert "ORCHESTRATOR_COMPILE must be 0 or 1, not 'yes'" in built.stderr
