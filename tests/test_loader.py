from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.errors import AgentSpecError
from orchestrator.loader import load_agent, load_agents

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize("spec", ["orchestrator:Agent", "orchestrator.agent:Agent"])
def test_the_agent_base_class_is_refused(spec: str) -> None:
    # Found by a user: `run orchestrator:Agent` served the base class with an empty agent id.
    with pytest.raises(AgentSpecError) as info:
        load_agent(spec)
    assert str(info.value) == f"{spec} is the Agent base class itself, not an agent: name a subclass"


def test_the_cli_refuses_the_agent_base_class_with_one_line() -> None:
    # A URL refused after the agents load, so that a base class let through fails the test
    # at once instead of serving.
    args = ["run", "orchestrator:Agent", "--url", "ws://platform.invalid/x", "--api-key", "k", "--no-http"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output == (
        "Error: orchestrator:Agent is the Agent base class itself, not an agent: name a subclass\n"
    )


def test_a_subclass_without_agent_id_is_named_after_its_class(tmp_path: Path) -> None:
    source = tmp_path / "plain_agent.py"
    source.write_text("from orchestrator import Agent\nclass Plain(Agent):\n    pass\n")
    assert load_agent(f"{source}:Plain").agent_id == "Plain"


@pytest.mark.parametrize(
    ("assignment", "shown"), [("''", "''"), ("'   '", "'   '"), ("7", "7"), ("None", "None")]
)
def test_an_agent_id_that_ends_up_empty_or_not_a_string_is_refused(
    tmp_path: Path, assignment: str, shown: str
) -> None:
    # Set after the class is defined, so the class-name default does not apply.
    source = tmp_path / "blank_id.py"
    source.write_text(
        f"from orchestrator import Agent\nclass Blank(Agent):\n    pass\nBlank.agent_id = {assignment}\n"
    )
    with pytest.raises(AgentSpecError) as info:
        load_agent(f"{source}:Blank")
    assert str(info.value).endswith(f": Blank.agent_id must be a non-empty string, got {shown}")


def test_each_kind_of_bad_path_gets_a_true_message(tmp_path: Path) -> None:
    # Found by a user: a directory was reported as "does not exist".
    (tmp_path / "scenarios").mkdir()
    with pytest.raises(AgentSpecError) as info:
        load_agent(f"{tmp_path}/scenarios:X")
    assert str(info.value).endswith(
        f": {tmp_path}/scenarios is a directory, not a Python file"
        " (expected path/to/file.py:Class or package.module:Class)"
    )
    assert "does not exist" not in str(info.value)
    (tmp_path / "agent.py").write_text("from orchestrator import Agent\nclass A(Agent):\n    pass\n")
    with pytest.raises(
        AgentSpecError, match=r"file not found \(.*/agent does not exist; did you mean .*/agent\.py\?\)"
    ):
        load_agent(f"{tmp_path}/agent:A")
    (tmp_path / "notes.txt").write_text("A = 1\n")
    with pytest.raises(
        AgentSpecError, match=r"notes\.txt is not a Python file \(expected path/to/file\.py:Class\)"
    ):
        load_agent(f"{tmp_path}/notes.txt:A")


def test_a_missing_dependency_is_not_blamed_on_the_spec(tmp_path: Path) -> None:
    source = tmp_path / "needs_dep.py"
    source.write_text("import definitely_not_installed_xyz\n")
    with pytest.raises(AgentSpecError) as info:
        load_agent(f"{source}:A")
    assert not str(info.value).startswith("bad agent spec")
    assert "No module named 'definitely_not_installed_xyz'" in str(info.value)
    with pytest.raises(AgentSpecError) as info:
        load_agent("tests.definitely_not_a_module_xyz:A")
    assert str(info.value).startswith("bad agent spec")


def test_a_module_spec_for_a_file_off_the_import_path_suggests_the_file_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under the `orchestrator` console script, whose sys.path lacks the current directory.
    (tmp_path / "offpath_agents_xyz.py").write_text("from orchestrator import Agent\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != tmp_path.resolve()])
    with pytest.raises(AgentSpecError) as info:
        load_agent("offpath_agents_xyz:A")
    assert str(info.value).endswith(
        "no module named 'offpath_agents_xyz' (the current directory is not on the import path:"
        " name the file instead, offpath_agents_xyz.py:A)"
    )
