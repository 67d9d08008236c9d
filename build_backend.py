"""The build backend: setuptools', asking for mypyc only for a build that compiles.

``setup.py`` compiles the modules ``orchestrator/build.py`` lists when a wheel is built
(``pip install .``) or ``ORCHESTRATOR_COMPILE=1`` says so. Only such a build needs
mypy, and the project's dependencies beside it, for mypyc to see the same types
``mypy --strict`` checks. An editable install that does not compile (the quick start's)
asks for setuptools alone.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools.build_meta import *  # noqa: F403 - the rest of the backend, unchanged

_COMPILING = ("mypy>=1.15",)


def _compile_requires() -> list[str]:
    project = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text(encoding="utf-8"))
    return [*_COMPILING, *project["project"]["dependencies"]]


# Not setuptools' own: those run setup.py, which cannot tell yet that mypy is coming.
def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [] if os.environ.get("ORCHESTRATOR_COMPILE", "").strip() == "0" else _compile_requires()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _compile_requires() if os.environ.get("ORCHESTRATOR_COMPILE", "").strip() == "1" else []
