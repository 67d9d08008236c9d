"""Which of the package's modules run compiled by mypyc (``setup.py`` says which and when)."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["COMPILED", "compiled_modules", "describe"]

COMPILED = (
    "orchestrator.transport.frames",
    "orchestrator.transport.sansio",
    "orchestrator.transport.accepted",
    "orchestrator.transport.pipe",
    "orchestrator.transport.readiness",
    "orchestrator.protocols.codec",
    "orchestrator.link",
    "orchestrator.metrics",
    "orchestrator.sandbox.conversation",
    "orchestrator.sandbox.conversimple",
    "orchestrator.sandbox.customers",
)
"""What ``setup.py`` compiles: the modules every frame and every tool call run through,
in the orchestrator and in the sandbox that load-tests it. Each is typed for
``mypy --strict`` and behaves the same compiled or not (``tests/test_compiled.py``).
This module imports nothing outside the standard library: ``setup.py`` reads it."""

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> tuple[str, ...]:
    """The dotted names of the modules Python imports from a compiled extension here,
    sorted; empty for a pure-Python install (``pip install -e .``, or no compiler)."""
    names = {
        ".".join((_PACKAGE.name, *path.relative_to(_PACKAGE).parts[:-1], path.name[: -len(suffix)]))
        for suffix in EXTENSION_SUFFIXES
        for path in _PACKAGE.rglob(f"*{suffix}")
        if path.with_name(path.name[: -len(suffix)] + ".py").exists()
    }
    return tuple(sorted(names))


def describe() -> str:
    """``"compiled (N modules)"`` or ``"pure Python"``: for ``--version`` and benchmarks."""
    compiled = compiled_modules()
    return f"compiled ({len(compiled)} modules)" if compiled else "pure Python"
