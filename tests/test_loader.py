from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import AgentSpecError
from orchestrator.loader import load_agent, load_agents


def test_load_agent_from_module_and_file(tmp_path: Path) -> None:
    assert load_agent("tests.helpers:EchoAgent").agent_id == "echo"
    source = tmp_path / "my_agent.py"
    source.write_text(
        "from orchestrator import Agent, tool\n"
        "class Mine(Agent):\n"
        "    agent_id = 'mine'\n"
        "    @tool('x')\n"
        "    async def x(self, a: int) -> int:\n"
        "        return a\n"
    )
    assert load_agent(f"{source}:Mine").agent_id == "mine"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not package.module:Class or path/to/file.py:Class"),
        ("json:", "is not package.module:Class or path/to/file.py:Class"),
        ("definitely_not_a_module:Agent", "no module named 'definitely_not_a_module'"),
        ("tests.helpers:Missing", "has no attribute 'Missing'"),
        ("json:dumps", "not an orchestrator.Agent subclass"),
        ("missing/file.py:Agent", "file not found"),
    ],
)
def test_bad_specs_give_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(AgentSpecError, match=message) as info:
        load_agent(spec)
    assert "\n" not in str(info.value)


def test_import_errors_and_bad_tools_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('kaboom')\n")
    with pytest.raises(AgentSpecError, match="RuntimeError: kaboom"):
        load_agent(f"{broken}:A")
    bad_tool = tmp_path / "bad_tool.py"
    bad_tool.write_text(
        "import datetime\nfrom orchestrator import Agent, tool\n"
        "class B(Agent):\n    @tool('x')\n    def x(self, when: datetime.datetime) -> None: ...\n"
    )
    with pytest.raises(AgentSpecError, match="when"):
        load_agent(f"{bad_tool}:B")


def test_duplicate_agent_ids_are_refused() -> None:
    with pytest.raises(AgentSpecError, match="share agent_id 'echo'"):
        load_agents(["tests.helpers:EchoAgent", "tests.helpers:EchoAgent"])
