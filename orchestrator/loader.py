"""Loading Agent classes from ``AGENT`` specs on the command line.

A spec is ``package.module:Class`` or ``path/to/file.py:Class``. Every failure is
an :class:`~orchestrator.errors.AgentSpecError` with a one-line message.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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
    """The Agent subclass named by ``spec``, with a non-empty string ``agent_id``.

    The platform routes conversations by ``agent_id``: the base class itself (whose id is
    empty) and a class whose id ends up empty or is not a string are refused here.
    """
    obj = load_object(spec)
    attr = spec.rpartition(":")[2]
    if obj is Agent:
        raise AgentSpecError(f"{spec} is the Agent base class itself, not an agent: name a subclass")
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise AgentSpecError(f"bad agent spec {spec!r}: {attr} is not an orchestrator.Agent subclass")
    agent_id: object = obj.agent_id
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise AgentSpecError(
            f"bad agent spec {spec!r}: {attr}.agent_id must be a non-empty string, got {agent_id!r}"
        )
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
    """The module ``target`` names: a file path if it ends in ``.py`` or has a path separator,
    else a dotted module name looked up on the import path (``base_dir`` does not apply)."""
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    try:
        if is_file:
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
        if is_file or not _names_part_of(exc.name, target):
            # The module exists; something it imports does not. That is the module's problem.
            raise AgentSpecError(f"importing {target!r} failed: ModuleNotFoundError: {exc}") from exc
        raise AgentSpecError(
            f"bad agent spec {spec!r}: importing {target!r} failed: no module named {exc.name!r}"
            f"{_file_hint(target, spec)}"
        ) from exc
    except Exception as exc:  # user code failed while importing: report it in one line
        raise AgentSpecError(f"importing {target!r} failed: {type(exc).__name__}: {exc}") from exc


def _names_part_of(missing: str | None, target: str) -> bool:
    """Whether the module ``missing`` is ``target`` or one of its parent packages."""
    return missing is not None and (target == missing or target.startswith(missing + "."))


def _file_hint(target: str, spec: str) -> str:
    """A hint for a module spec that names a file of the current directory: one that is not
    Python, or one not importable because the current directory is not on the import path
    (as under the ``orchestrator`` console script)."""
    if Path(target).is_file():
        return f" ({target} is a file but not a Python one: expected path/to/file.py:Class)"
    cwd = Path.cwd()
    if any(Path(entry or os.curdir).resolve() == cwd for entry in sys.path):
        return ""
    parts = target.split(".")
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts, "__init__.py")):
        if candidate.is_file():
            attr = spec.rpartition(":")[2]
            return (
                f" (the current directory is not on the import path: name the file instead,"
                f" {candidate.as_posix()}:{attr})"
            )
    return ""


def _load_file(spec: str, path: Path) -> object:
    if path.is_dir():
        raise AgentSpecError(
            f"bad agent spec {spec!r}: {path} is a directory, not a Python file"
            " (expected path/to/file.py:Class or package.module:Class)"
        )
    if not path.exists():
        sibling = path.with_name(path.name + ".py")
        hint = f"; did you mean {sibling}?" if path.suffix != ".py" and sibling.is_file() else ""
        raise AgentSpecError(f"bad agent spec {spec!r}: file not found ({path} does not exist{hint})")
    if not path.is_file():
        raise AgentSpecError(f"bad agent spec {spec!r}: {path} is not a regular file")
    name = f"_orchestrator_agent_{path.stem}_{abs(hash(path.resolve())) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise AgentSpecError(
            f"bad agent spec {spec!r}: {path} is not a Python file (expected path/to/file.py:Class)"
        )
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
