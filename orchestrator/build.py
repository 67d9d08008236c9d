"""Which of the package's modules run compiled by mypyc (``setup.py`` says which and when)."""

from __future__ import annotations

import functools
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["COMPILED", "GROUP", "compiled_modules", "describe", "stale_modules"]

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

GROUP = "orchestrator"
"""mypyc's group name for them: their code is one library, ``orchestrator__mypyc``."""

_PACKAGE = Path(__file__).resolve().parent
_SAME_INSTALL = 2.0
"""Seconds a source may be newer than its extension and still be theirs: pip writes a
wheel's files in name order, ``frames.cpython-….so`` just before ``frames.py``."""


@functools.cache
def _extensions() -> dict[str, tuple[Path, Path]]:
    """Each compiled module here: its extension and its source (looked for once a process)."""
    found = {}
    for suffix in EXTENSION_SUFFIXES:
        for path in _PACKAGE.rglob(f"*{suffix}"):
            source = path.with_name(path.name[: -len(suffix)] + ".py")
            if source.exists():
                parts = (_PACKAGE.name, *path.relative_to(_PACKAGE).parts[:-1], source.stem)
                found[".".join(parts)] = (path, source)
    return found


def compiled_modules() -> tuple[str, ...]:
    """The dotted names of the modules Python imports from a compiled extension here,
    sorted; empty for a pure-Python install (``pip install -e .``, or no compiler)."""
    return tuple(sorted(_extensions()))


def stale_modules() -> tuple[str, ...]:
    """Compiled modules whose source was edited after they were built: Python still
    imports the extension, so the edit does not run until a reinstall rebuilds it."""
    shared = _shared_library_built_at()
    return tuple(
        sorted(
            name
            for name, (ext, source) in _extensions().items()
            if source.stat().st_mtime > max(ext.stat().st_mtime, shared) + _SAME_INSTALL
        )
    )


def _shared_library_built_at() -> float:
    """When the library next to the package that holds every compiled module's code
    (``setup.py``'s group) was built; 0 if there is none. A module's own extension only
    loads it, and is the same for any version of the module: an in-place rebuild after an
    edit rebuilds the library and may keep the module's old extension, copied from
    ``build/`` with its old time."""
    paths = (_PACKAGE.parent / f"{GROUP}__mypyc{suffix}" for suffix in EXTENSION_SUFFIXES)
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def describe() -> str:
    """``"compiled (N modules)"`` or ``"pure Python"``, and any stale modules: for
    ``--version`` and the benchmarks' machine facts."""
    compiled = compiled_modules()
    if not compiled:
        return "pure Python"
    stale = stale_modules()
    return f"compiled ({len(compiled)} modules{f'; {len(stale)} older than their source' if stale else ''})"
