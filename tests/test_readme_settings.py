"""README's settings block: every key it shows is a setting, and every setting is shown,
with the default the code has (except the few the README says are unset by default)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from orchestrator.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
UNSET_BY_DEFAULT = {"memory_limit_bytes", "idle_timeout", "max_attempts", "total_retry_duration", "url"}
SECRETS = {"api_key", "customer_id", "bot_token"}  # named in a comment: better from the environment


def _block() -> tuple[dict[str, Any], str]:
    (text,) = re.findall(r"```toml\n(workers = .*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    return tomllib.loads(text), text


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(settings)):
        value = getattr(settings, field.name)
        if attrs.has(type(value)):
            out.update(_flat(value, f"{prefix}{field.name}."))
        else:
            out[prefix + field.name] = value
    return out


def test_the_readmes_settings_load_and_show_every_setting_with_its_default(tmp_path: Path) -> None:
    block, text = _block()
    path = tmp_path / "o.toml"
    path.write_text(text, encoding="utf-8")
    loaded = _flat(Settings.load(toml=path, env={}))
    defaults = _flat(Settings())
    tables = {section: table for section, table in block.items() if isinstance(table, dict)}
    keys = {"workers"} | {f"{section}.{key}" for section, table in tables.items() for key in table}
    # The file's sections are flat ([actor], [tools]); the settings nest them under supervisor.
    nested = {
        k.replace("actor.", "supervisor.actor.").replace("tools.", "supervisor.actor.tools."): k for k in keys
    }
    names = set(defaults) - {f"platform.{s}" for s in SECRETS}
    assert set(nested) == names
    for full, key in nested.items():
        if key.rpartition(".")[2] not in UNSET_BY_DEFAULT:
            assert loaded[full] == defaults[full], key
