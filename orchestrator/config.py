"""Frozen settings: defaults, then a TOML file, then environment, then CLI flags.

TOML sections and environment names map onto the settings tree::

    [supervisor]  ORCHESTRATOR_SUPERVISOR_MAX_CONVERSATIONS=500   SupervisorSettings
    [actor]       ORCHESTRATOR_ACTOR_IDLE_TIMEOUT=300             ActorSettings
    [tools]       ORCHESTRATOR_TOOLS_DEFAULT_TIMEOUT=30           ToolSettings
    [http]        ORCHESTRATOR_HTTP_PORT=9464                     HttpSettings
    [logging]     ORCHESTRATOR_LOGGING_LEVEL=DEBUG                LogSettings
    [platform]    ORCHESTRATOR_PLATFORM_URL=wss://…               PlatformSettings

The names Conversimple and Arinova users already set are honoured too:
``CONVERSIMPLE_API_KEY``, ``CONVERSIMPLE_PLATFORM_URL``, ``CONVERSIMPLE_CUSTOMER_ID``
and ``ARINOVA_BOT_TOKEN``. Secrets never appear in a repr or an error message.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs

from .backoff import BackoffPolicy
from .errors import ConfigError
from .mailbox import OverflowPolicy
from .protocols.codec import MAX_DEPTH as MAX_JSON_DEPTH
from .supervisor import SupervisorSettings

PlatformKind = Literal["conversimple", "arinova", "sandbox"]


@attrs.frozen
class HttpSettings:
    """The metrics and health endpoint. Loopback unless a host is given."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")


@attrs.frozen
class LogSettings:
    """Log level and format (``text`` or ``json``)."""

    level: str = "INFO"
    format: Literal["text", "json"] = "text"

    def __attrs_post_init__(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {self.level!r}")


@attrs.frozen
class PlatformSettings:
    """Where conversations come from and how to authenticate. Secrets are hidden from repr."""

    kind: PlatformKind = "conversimple"
    url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    customer_id: str | None = None
    bot_token: str | None = attrs.field(default=None, repr=False)
    allow_insecure: bool = False
    heartbeat_interval: float = 30.0
    max_frame_bytes: int = 1 << 20
    max_json_depth: int = 32
    max_attempts: int | None = None
    backoff_multiplier: float = 2.0
    backoff_initial: float = 2.0
    backoff_max: float = 30.0
    total_retry_duration: float | None = None
    circuit_breaker: bool = True
    handshake_limit: int = 200
    connect_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not (self.heartbeat_interval > 0 and self.connect_timeout > 0):
            raise ValueError("heartbeat_interval and connect_timeout must be positive")
        if self.max_frame_bytes < 1 or self.handshake_limit < 1:
            raise ValueError("max_frame_bytes and handshake_limit must be at least 1")
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH:
            raise ValueError(f"max_json_depth must be between 1 and {MAX_JSON_DEPTH}")
        if (self.max_attempts or 0) < 0 or (self.total_retry_duration or 0) < 0:
            raise ValueError("max_attempts and total_retry_duration must not be negative")
        if self.backoff_initial > self.backoff_max:
            raise ValueError("backoff_initial must not exceed backoff_max")
        # The backoff's own rules, checked here so that a bad file fails at load, not at the
        # first reconnect.
        BackoffPolicy(base=self.backoff_initial, cap=self.backoff_max, multiplier=self.backoff_multiplier)


@attrs.frozen
class Settings:
    """Everything configurable, as one frozen value."""

    supervisor: SupervisorSettings = attrs.field(factory=SupervisorSettings)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    logging: LogSettings = attrs.field(factory=LogSettings)
    platform: PlatformSettings = attrs.field(factory=PlatformSettings)
    workers: int = 1

    @classmethod
    def load(
        cls,
        *,
        toml: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults, then ``toml``, then ``env`` (default ``os.environ``), then ``overrides``.

        ``overrides`` uses the TOML section layout (``{"http": {"port": 0}}``).
        Raises ConfigError naming the offending key.
        """
        layers = [_read_toml(Path(toml)) if toml is not None else {}]
        layers.append(_from_env(os.environ if env is None else env))
        layers.append({k: dict(v) if isinstance(v, Mapping) else v for k, v in (overrides or {}).items()})
        return _build(layers)

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """Settings from a TOML file over the defaults (environment ignored)."""
        return _build([_read_toml(Path(path))])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``ORCHESTRATOR_*`` and the SDK variable names over the defaults."""
        return _build([_from_env(os.environ if env is None else env)])


#: TOML section → path of attribute names from Settings down to the settings class.
SECTIONS: dict[str, tuple[str, ...]] = {
    "supervisor": ("supervisor",),
    "actor": ("supervisor", "actor"),
    "tools": ("supervisor", "actor", "tools"),
    "http": ("http",),
    "logging": ("logging",),
    "platform": ("platform",),
}
TOP_LEVEL = ("workers",)
ALIASES = {
    "CONVERSIMPLE_API_KEY": ("platform", "api_key"),
    "CONVERSIMPLE_PLATFORM_URL": ("platform", "url"),
    "CONVERSIMPLE_CUSTOMER_ID": ("platform", "customer_id"),
    "ARINOVA_BOT_TOKEN": ("platform", "bot_token"),
}
SECRET_FIELDS = frozenset({"api_key", "bot_token"})

_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(OverflowPolicy, lambda value, _: OverflowPolicy(value))


def _section_class(section: str) -> type[Any]:
    klass: type[Any] = Settings
    for name in SECTIONS[section]:
        klass = typing.get_type_hints(klass)[name]
    return klass


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in data.items():
        if key in TOP_LEVEL:
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{key}] (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{key}] must be a table")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (section, key) in ALIASES.items():
        if env.get(name):
            out.setdefault(section, {})[key] = env[name]
    for name, raw in env.items():
        if not name.startswith("ORCHESTRATOR_"):
            continue
        rest = name[len("ORCHESTRATOR_") :].lower()
        if rest in TOP_LEVEL:
            out[rest] = raw
            continue
        for section in sorted(SECTIONS, key=len, reverse=True):
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1 :]] = raw
                break
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn an environment string into the field's type; other values pass through."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.strip().lower() in ("", "none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    try:
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
    return value


def _build(layers: list[dict[str, Any]]) -> Settings:
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    top: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in TOP_LEVEL:
                top[key] = value
            elif key in SECTIONS:
                merged[key].update(value)
            else:
                raise ConfigError(f"unknown settings section {key!r}")
    tree: dict[str, Any] = {}
    for section in sorted(SECTIONS, key=lambda s: len(SECTIONS[s])):
        klass = _section_class(section)
        hints = typing.get_type_hints(klass)
        fields = {f.name for f in attrs.fields(klass)} - {"actor", "tools"}
        node = tree
        for name in SECTIONS[section]:
            node = node.setdefault(name, {})
        for key, value in merged[section].items():
            where = f"{section}.{key}"
            if key not in fields:
                raise ConfigError(f"unknown setting {where}")
            node[key] = _coerce(value, hints[key], where)
    for key, value in top.items():
        tree[key] = _coerce(value, int, key)
    try:
        return _converter.structure(tree, Settings)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):

        def explain(error: BaseException, type_: Any) -> str:
            if isinstance(error, ValueError) and not isinstance(error, cattrs.BaseValidationError):
                return str(error)
            return cattrs.v.format_exception(error, type_)

        messages = cattrs.transform_error(exc, path="settings", format_exception=explain)
        return "invalid settings: " + "; ".join(m for m in messages if not _mentions_secret(m))
    return f"invalid settings: {exc}"


def _mentions_secret(message: str) -> bool:
    return any(secret in message for secret in SECRET_FIELDS)
