"""The load-test harness behind ``benchmarks/bench.py``: rounds, processes, figures, profiles.

It needs the ``bench`` extra: numpy for the figures, matplotlib for the charts and
the SDKs for ``--compare``. A missing one is one line on stderr and exit status 2
(:func:`exit_missing`), before any process starts.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import NoReturn

__all__ = ["EXTRA_MODULES", "exit_missing", "installed"]

EXTRA_MODULES = {
    "numpy": "numpy",
    "matplotlib": "matplotlib",
    "conversimple": "conversimple-sdk",
    "arinova_agent": "arinova-agent-sdk",
}
"""The ``bench`` extra: top-level module -> the package that installs it."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent is missing, or a None in sys.modules
        return False


def exit_missing(*packages: str) -> NoReturn:
    """One line on stderr naming the missing ``packages``, then exit status 2 (a usage error)."""
    print(
        "Error: the benchmarks need extra packages: pip install -e '.[bench]' "
        f"(missing: {', '.join(packages)})",
        file=sys.stderr,
    )
    sys.exit(2)
