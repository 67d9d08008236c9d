from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.mailbox import OverflowPolicy


def test_defaults_are_safe() -> None:
    s = Settings.load(env={})
    assert s.http.host == "127.0.0.1" and s.http.port == 9464
    assert s.platform.allow_insecure is False
    assert s.supervisor.restart_budget == 3 and s.supervisor.restart_window == 5
    assert s.supervisor.backoff_min == 0.5 and s.supervisor.backoff_max == 30


def test_layers_toml_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "o.toml"
    path.write_text(
        "workers = 2\n[supervisor]\nmax_conversations = 100\ndrain_timeout = 5\n"
        '[actor]\nidle_timeout = 60\nmailbox_policy = "drop_oldest"\n[tools]\ndefault_timeout = 3\n'
        '[http]\nport = 9000\n[platform]\nurl = "ws://127.0.0.1:1/socket"\n'
    )
    env = {"ORCHESTRATOR_SUPERVISOR_MAX_CONVERSATIONS": "200", "ORCHESTRATOR_HTTP_PORT": "9100"}
    s = Settings.load(toml=path, env=env, overrides={"http": {"port": 9200}})
    assert s.workers == 2
    assert s.supervisor.max_conversations == 200 and s.supervisor.drain_timeout == 5
    assert s.supervisor.actor.idle_timeout == 60
    assert s.supervisor.actor.mailbox_policy is OverflowPolicy.DROP_OLDEST
    assert s.supervisor.actor.tools.default_timeout == 3
    assert s.http.port == 9200
    assert s.platform.url == "ws://127.0.0.1:1/socket"


def test_sdk_variable_names_are_honoured_and_secrets_hidden() -> None:
    env = {
        "CONVERSIMPLE_API_KEY": "canary-key-123",
        "CONVERSIMPLE_PLATFORM_URL": "wss://platform.example/socket",
        "CONVERSIMPLE_CUSTOMER_ID": "cust",
        "ARINOVA_BOT_TOKEN": "canary-bot-456",
    }
    s = Settings.from_env(env)
    assert s.platform.api_key == "canary-key-123" and s.platform.bot_token == "canary-bot-456"
    assert s.platform.customer_id == "cust" and s.platform.url == "wss://platform.example/socket"
    assert "canary" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORCHESTRATOR_HTTP_PORT": "abc"}, "http.port: expected int"),
        ({"ORCHESTRATOR_HTTP_PORTS": "1"}, "unknown setting http.ports"),
        ({"ORCHESTRATOR_HTTP_ENABLED": "maybe"}, "http.enabled: expected true or false"),
        ({"ORCHESTRATOR_ACTOR_MAILBOX_POLICY": "bogus"}, "mailbox_policy"),
        ({"ORCHESTRATOR_HTTP_PORT": "70000"}, "port"),
        ({"ORCHESTRATOR_SUPERVISOR_MAX_CONVERSATIONS": "0"}, "max_conversations"),
        ({"ORCHESTRATOR_PLATFORM_MAX_JSON_DEPTH": "0"}, "max_json_depth must be between 1 and 1000"),
        ({"ORCHESTRATOR_PLATFORM_MAX_JSON_DEPTH": "5000"}, "max_json_depth"),
        ({"ORCHESTRATOR_PLATFORM_MAX_FRAME_BYTES": "0"}, "max_frame_bytes"),
        ({"ORCHESTRATOR_PLATFORM_HANDSHAKE_LIMIT": "0"}, "handshake_limit"),
        ({"ORCHESTRATOR_PLATFORM_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
        ({"ORCHESTRATOR_PLATFORM_CONNECT_TIMEOUT": "-1"}, "connect_timeout"),
        ({"ORCHESTRATOR_PLATFORM_BACKOFF_INITIAL": "-1"}, "backoff delays must not be negative"),
        ({"ORCHESTRATOR_PLATFORM_BACKOFF_MULTIPLIER": "0.5"}, "multiplier must be at least 1"),
        ({"ORCHESTRATOR_PLATFORM_BACKOFF_INITIAL": "40"}, "backoff_initial must not exceed backoff_max"),
        ({"ORCHESTRATOR_PLATFORM_MAX_ATTEMPTS": "-1"}, "max_attempts"),
        ({"ORCHESTRATOR_PLATFORM_TOTAL_RETRY_DURATION": "-5"}, "total_retry_duration"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_bad_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Settings.from_toml(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.from_toml(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[nope\]"):
        Settings.from_toml(unknown)


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"ORCHESTRATOR_PLATFORM_API_KEY": "canary-sekrit", "ORCHESTRATOR_HTTP_PORT": "x"})
    assert "canary-sekrit" not in str(info.value)
