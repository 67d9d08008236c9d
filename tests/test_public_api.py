from __future__ import annotations

import orchestrator


def test_all_is_sorted_and_complete() -> None:
    names = orchestrator.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(orchestrator, name), name
    assert {"Agent", "tool", "tool_async", "tool_schemas", "Supervisor"} <= set(names)
