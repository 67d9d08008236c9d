"""Build: compile the per-message modules with mypyc where a C compiler is at hand.

Everything else is in pyproject.toml. The modules ``orchestrator/build.py`` lists run
on every frame and every tool call, in the orchestrator and in the sandbox that
load-tests it (docs/performance.md, the seventeenth session, says what compiling them
saves). They stay plain Python modules in the source tree, typed for ``mypy --strict``,
and behave the same either way: the test suite runs against both
(``tests/test_compiled.py``).

``ORCHESTRATOR_COMPILE``: ``1`` compiles, ``0`` does not; unset, a wheel
(``pip install .``) is compiled and an editable install (``pip install -e .``) is not,
so that an edited source file takes effect without a rebuild. A compile that fails
(no compiler, no Python headers) warns and leaves pure Python: it never fails the
install. ``orchestrator --version`` says which it got.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

_BUILD = Path(__file__).resolve().parent / "orchestrator" / "build.py"
_spec = importlib.util.spec_from_file_location("_orchestrator_build", _BUILD)
assert _spec is not None and _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)
COMPILED = [f"{name.replace('.', '/')}.py" for name in _build.COMPILED]


def _choice() -> str | None:
    """``"1"`` (compile, or fail), ``"0"`` (do not), or None: compile a wheel if it can."""
    choice = os.environ.get("ORCHESTRATOR_COMPILE", "").strip() or None
    if choice not in (None, "0", "1"):
        sys.exit(f"ORCHESTRATOR_COMPILE must be 0 or 1, not {choice!r}")
    return choice


def _fall_back(exc: BaseException) -> None:
    warnings.warn(f"orchestrator: not compiled ({exc}); installing pure Python", stacklevel=2)


class _Optional(build_ext):
    """Compiles what it can; a compiler that fails leaves the pure-Python modules."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure falls back
            _fall_back(exc)


_BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel"}
"""The commands that build: pip's metadata step (``dist_info``) need not compile too."""


def _extensions(choice: str | None) -> list[object]:
    if choice == "0" or (choice is None and "editable_wheel" in sys.argv) or not _BUILDING & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(COMPILED, group_name=_build.GROUP, opt_level="3"))
    except (SystemExit, Exception) as exc:  # no mypy, a type error, a compiler missing
        if choice == "1":
            raise
        _fall_back(exc)
        return []


_CHOICE = _choice()
setup(ext_modules=_extensions(_CHOICE), cmdclass={} if _CHOICE == "1" else {"build_ext": _Optional})
