"""Loading Agent classes from ``AGENT`` specs on the command line.

A spec is ``package.module:Class`` or ``path/to/file.py:Class``. Every failure is
an :class:`~orchestrator.errors.AgentSpecError` with a one-line message.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .agent import Agent
from .errors import AgentDefinitionError, AgentSpecError


def load_object(spec: str, base_dir: Path | None = None) -> object:
    """Whatever ``spec`` names (``package.module:Name`` or ``path/to/file.py:Name``).

    A relative file path is resolved against ``base_dir`` (default: the current
    directory). Raises AgentSpecError with a one-line message.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise AgentSpecError(f"agent spec {spec!r} is not package.module:Class or path/to/file.py:Class")
    module = _load_module(spec, target, base_dir)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AgentSpecError(f"bad agent spec {spec!r}: {target} has no attribute {attr!r}") from None


def load_agent(spec: str) -> type[Agent]:
    """The Agent subclass named by ``spec``."""
    obj = load_object(spec)
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        attr = spec.rpartition(":")[2]
        raise AgentSpecError(f"bad agent spec {spec!r}: {attr} is not an orchestrator.Agent subclass")
    return obj


def load_agents(specs: list[str] | tuple[str, ...]) -> list[type[Agent]]:
    """Load several specs; agent ids must be unique."""
    agents = [load_agent(spec) for spec in specs]
    seen: dict[str, str] = {}
    for spec, agent in zip(specs, agents, strict=True):
        if agent.agent_id in seen:
            raise AgentSpecError(
                f"agents {seen[agent.agent_id]!r} and {spec!r} share agent_id {agent.agent_id!r}"
            )
        seen[agent.agent_id] = spec
    return agents


def _load_module(spec: str, target: str, base_dir: Path | None) -> object:
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            path = Path(target)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            return _load_file(spec, path)
        return importlib.import_module(target)
    except AgentSpecError:
        raise
    except AgentDefinitionError as exc:
        raise AgentSpecError(f"agent in {spec!r} is invalid: {exc}") from exc
    except ModuleNotFoundError as exc:
        raise AgentSpecError(
            f"bad agent spec {spec!r}: importing {target!r} failed: no module named {exc.name!r}"
        ) from exc
    except Exception as exc:  # user code failed while importing: report it in one line
        raise AgentSpecError(f"importing {target!r} failed: {type(exc).__name__}: {exc}") from exc


def _load_file(spec: str, path: Path) -> object:
    if not path.is_file():
        raise AgentSpecError(f"bad agent spec {spec!r}: file not found ({path} does not exist)")
    name = f"_orchestrator_agent_{path.stem}_{abs(hash(path.resolve())) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise AgentSpecError(f"bad agent spec {spec!r}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module
