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

Every value is checked before any is used, and an error names where the value came from
(the file's path or the variable's name), the setting's dotted key and what was expected:
``/etc/o.toml: supervisor.max_conversations: expected an integer, got 10.5``. Booleans
are not numbers and strings are neither, except in the environment, where all is text.
Numbers are finite: NaN and infinity are refused (an unset optional value means "never").
Every numeric setting has a range (:data:`RANGES`), which holds for flags, files and variables alike.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
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
from .supervision import SupervisorSettings

PlatformKind = Literal["conversimple", "arinova"]


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
            initial, most = self.backoff_initial, self.backoff_max
            raise ValueError(f"backoff_initial ({initial!r}) must not exceed backoff_max ({most!r})")
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
        Raises ConfigError naming where the bad value came from (the file's path or the
        environment variable), the setting's dotted key and what was expected.
        """
        layers = [_read_toml(Path(toml)) if toml is not None else []]
        layers.append(_from_env(os.environ if env is None else env))
        layers.append(_from_overrides(overrides or {}))
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


@attrs.frozen
class Range:
    """The values a numeric setting may take: from ``low`` (excluded when ``above``) to
    ``high``, inclusive; None is unbounded. An optional setting may also be unset."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        low = None if self.low is None else f"{self.low:g}"
        if self.above:
            return f"greater than {low}"
        if self.high is None:
            return f"at least {low}"
        if low is None:
            return f"at most {self.high:g}"
        return f"between {low} and {self.high:g}"


POSITIVE = Range(0, above=True)
"""Seconds something waits for or lasts, sizes: 0 would mean at once, or nothing."""
NOT_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)

#: Bounds by full key, for every numeric setting (a test pins that none is missing). A file
#: or a variable cannot pass what the matching flag refuses; each is checked here, so a bad
#: value fails at load, naming where it came from, rather than at every conversation's start
#: (a mailbox needs room for one event) or never (a negative idle timeout ended every
#: conversation at once).
RANGES: dict[str, Range] = {
    "workers": AT_LEAST_1,
    "supervisor.max_conversations": AT_LEAST_1,
    "supervisor.restart_budget": NOT_NEGATIVE,  # 0: a crash fails the conversation
    "supervisor.restart_window": POSITIVE,
    "supervisor.backoff_min": NOT_NEGATIVE,
    "supervisor.backoff_max": NOT_NEGATIVE,
    "supervisor.healthy_after": NOT_NEGATIVE,  # 0: every crash starts the backoff over
    "supervisor.breaker_threshold": AT_LEAST_1,
    "supervisor.breaker_window": POSITIVE,
    "supervisor.breaker_cooldown": NOT_NEGATIVE,
    "supervisor.memory_limit_bytes": AT_LEAST_1,
    "supervisor.drain_timeout": NOT_NEGATIVE,
    "supervisor.actor.mailbox_capacity": AT_LEAST_1,
    "supervisor.actor.idle_timeout": POSITIVE,
    "supervisor.actor.shutdown_timeout": NOT_NEGATIVE,  # 0: no time to clean up
    "supervisor.actor.tools.default_timeout": POSITIVE,
    "supervisor.actor.tools.min_timeout": POSITIVE,
    "supervisor.actor.tools.max_timeout": POSITIVE,
    "supervisor.actor.tools.max_concurrent_calls": AT_LEAST_1,
    "supervisor.actor.tools.threads_per_conversation": AT_LEAST_1,
    "supervisor.actor.tools.max_stuck_threads_per_tool": AT_LEAST_1,  # 0: every call fails fast
    "supervisor.actor.tools.result_cache_size": AT_LEAST_1,
    "supervisor.actor.tools.blocking_warn_after": POSITIVE,
    "http.port": Range(0, 65535),
    "platform.heartbeat_interval": POSITIVE,
    "platform.max_frame_bytes": AT_LEAST_1,
    "platform.max_json_depth": Range(1, MAX_JSON_DEPTH),
    "platform.max_attempts": NOT_NEGATIVE,  # 0: never reconnect
    "platform.backoff_multiplier": AT_LEAST_1,
    "platform.backoff_initial": NOT_NEGATIVE,
    "platform.backoff_max": NOT_NEGATIVE,
    "platform.total_retry_duration": NOT_NEGATIVE,
    "platform.handshake_limit": AT_LEAST_1,
    "platform.connect_timeout": POSITIVE,
}

# Structures the settings a parent hands its workers (already validated: see workers.py).
_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(OverflowPolicy, lambda value, _: OverflowPolicy(value))


@attrs.frozen
class _Value:
    """One setting as a layer gives it, with where it came from (for error messages)."""

    section: str | None  # None: a top-level key such as ``workers``
    key: str
    value: Any
    source: str  # the file's path, the environment variable's name, or "command line"
    env: bool = False  # environment values are text to parse

    @property
    def full_key(self) -> str:
        """The dotted path in the settings tree: ``supervisor.actor.mailbox_policy``."""
        return ".".join((*SECTIONS[self.section], self.key)) if self.section else self.key

    @property
    def shown_key(self) -> str:
        """The key as the user writes it: ``actor.mailbox_policy`` for ``[actor] mailbox_policy``."""
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def where(self) -> str:
        return f"{self.source}: {self.shown_key}"


def _section_class(section: str) -> type[Any]:
    klass: type[Any] = Settings
    for name in SECTIONS[section]:
        klass = typing.get_type_hints(klass)[name]
    return klass


def _hints(section: str | None) -> dict[str, Any]:
    """The settable fields of ``section`` (None: the top level) and their types."""
    if section is None:
        return {name: typing.get_type_hints(Settings)[name] for name in TOP_LEVEL}
    nested = {path[-1] for path in SECTIONS.values() if path[:-1] == SECTIONS[section]}
    hints = typing.get_type_hints(_section_class(section))
    return {name: hints[name] for name in hints if name not in nested}


def _read_toml(path: Path) -> list[_Value]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    source = str(path)
    out: list[_Value] = []
    for key, value in data.items():
        if key in TOP_LEVEL:
            out.append(_Value(None, key, value, source))
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            out.extend(_Value(key, name, item, source) for name, item in value.items())
        elif isinstance(value, dict):
            guess = difflib.get_close_matches(key, SECTIONS, n=1)
            hint = f"did you mean [{guess[0]}]? " if guess else ""
            raise ConfigError(f"{path}: unknown section [{key}] ({hint}known: {', '.join(SECTIONS)})")
        else:
            raise ConfigError(f"{path}: unknown setting {key}{_suggest(_Value(None, key, value, source))}")
    return out


def _from_env(env: Mapping[str, str]) -> list[_Value]:
    out: list[_Value] = []
    for name, (section, key) in ALIASES.items():
        if env.get(name):
            out.append(_Value(section, key, env[name], name, env=True))
    for name, raw in env.items():
        if not name.startswith("ORCHESTRATOR_"):
            continue
        rest = name[len("ORCHESTRATOR_") :].lower()
        if rest in TOP_LEVEL:
            out.append(_Value(None, rest, raw, name, env=True))
            continue
        for section in sorted(SECTIONS, key=len, reverse=True):
            if rest.startswith(section + "_"):
                out.append(_Value(section, rest[len(section) + 1 :], raw, name, env=True))
                break
    return out


OVERRIDES = "command line"
"""How errors name the ``overrides`` layer: the CLI builds it from its flags."""


def _from_overrides(overrides: Mapping[str, Any]) -> list[_Value]:
    out: list[_Value] = []
    for key, value in overrides.items():
        if key in TOP_LEVEL:
            out.append(_Value(None, key, value, OVERRIDES))
        elif key in SECTIONS and isinstance(value, Mapping):
            out.extend(_Value(key, name, item, OVERRIDES) for name, item in value.items())
        else:
            raise ConfigError(f"{OVERRIDES}: unknown settings section {key!r}")
    return out


def _suggest(item: _Value) -> str:
    """`` (did you mean …?)`` for an unknown key: a close spelling, or the section it belongs in."""
    guess = difflib.get_close_matches(item.key, _hints(item.section), n=1)
    if guess and item.env:
        prefix = f"ORCHESTRATOR_{item.section.upper()}_" if item.section else "ORCHESTRATOR_"
        return f" (did you mean {prefix}{guess[0].upper()}?)"
    if guess:
        return f" (did you mean {guess[0]}?)"
    owners = [s for s in SECTIONS if item.key in _hints(s)]
    if item.env:
        names = [f"ORCHESTRATOR_{s.upper()}_{item.key.upper()}" for s in owners]
        if item.key in TOP_LEVEL:
            names.append(f"ORCHESTRATOR_{item.key.upper()}")
        return f" (did you mean {' or '.join(names)}?)" if names else ""
    if owners:
        return f" (it belongs in [{'] or ['.join(owners)}])"
    if item.key in SECTIONS:
        return f" (a section of its own: [{item.key}])"
    if item.key in TOP_LEVEL:
        return " (a top-level key: put it before the first [section])"
    return ""


def _show(item: _Value) -> str:
    """The offending value as the user wrote it; a secret's type only."""
    value = item.value
    if item.key in SECRET_FIELDS:
        return f"a value of type {type(value).__name__}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(item: _Value, hint: Any) -> Any:
    """``item``'s value as the field's type, or ConfigError naming source, key and expected type.

    Booleans are never numbers and strings are never numbers or booleans, except in the
    environment, where every value is text: there ``"10"``, ``"true"`` and ``"none"`` parse.
    """
    value = item.value
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (item.env and value.strip().lower() in ("", "none", "null")):
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{item.where}: expected {expected}, got {_show(item)}")

    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        choices = [member.value for member in hint]
    elif typing.get_origin(hint) is Literal:
        choices = list(args)
    else:
        choices = None
    if choices is not None:
        if isinstance(value, str) and value in choices:
            return hint(value) if isinstance(hint, type) else value
        raise ConfigError(f"{item.where}: {_show(item)} is not one of: {', '.join(map(str, choices))}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if item.env and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise wrong("true or false")
    if hint is int or hint is float:
        expected = "an integer" if hint is int else "a number"
        if item.env:
            value = _parse_number(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong(expected)
        if hint is float:
            # Seconds, rates and factors: infinity (TOML's inf, "inf" or "1e999" in the
            # environment, an int too large for a float) is no setting's "forever" (that is
            # unset, None), and NaN compares false with every bound.
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise wrong("a number" if math.isnan(number) else "a finite number")
            return number
        if isinstance(value, float) and not value.is_integer():  # also NaN and infinities
            raise wrong(expected)
        return int(value)
    if hint is str and not isinstance(value, str):
        raise wrong("a string")
    return value


def _parse_number(text: str) -> int | float | None:
    for parse in (int, float):
        try:
            return parse(text.strip())
        except ValueError:
            continue
    return None


def _check_range(item: _Value, value: Any) -> None:
    bounds = RANGES.get(item.full_key)
    if bounds is None or value is None or bounds.holds(value):
        return
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    raise ConfigError(f"{item.where}: must be {bounds.describe()}, got {shown}")


def _construct(klass: type[Any], label: str, values: dict[str, Any], given: dict[str, _Value]) -> Any:
    """``klass(**values)``; a rule across fields that fails names the sources of the fields it names."""
    try:
        return klass(**values)
    except ValueError as exc:
        message = str(exc)
        named = [item for key, item in given.items() if re.search(rf"\b{re.escape(key)}\b", message)]
        sources = ", ".join(dict.fromkeys(item.source for item in named or given.values())) or "defaults"
        raise ConfigError(f"{sources}: invalid {label} settings: {message}") from None


def _build(layers: list[list[_Value]]) -> Settings:
    """Settings from ``layers`` (later ones win), each value checked before any is used."""
    chosen: dict[tuple[str | None, str], _Value] = {}
    for layer in layers:
        for item in layer:
            chosen[(item.section, item.key)] = item
    given: dict[str | None, dict[str, _Value]] = {None: {}, **{section: {} for section in SECTIONS}}
    values: dict[str | None, dict[str, Any]] = {None: {}, **{section: {} for section in SECTIONS}}
    for item in chosen.values():
        hints = _hints(item.section)
        if item.key not in hints:
            raise ConfigError(f"{item.source}: unknown setting {item.shown_key}{_suggest(item)}")
        value = _convert(item, hints[item.key])
        _check_range(item, value)
        given[item.section][item.key] = item
        values[item.section][item.key] = value
    built: dict[tuple[str, ...], Any] = {}
    # Innermost first: tools, then actor (holding tools), then supervisor (holding actor).
    for section in sorted(SECTIONS, key=lambda s: len(SECTIONS[s]), reverse=True):
        path = SECTIONS[section]
        children = {p[-1]: v for p, v in built.items() if p[:-1] == path}
        fields = {**values[section], **children}
        built[path] = _construct(_section_class(section), f"[{section}]", fields, given[section])
    top = {p[0]: v for p, v in built.items() if len(p) == 1}
    result: Settings = _construct(Settings, "top-level", {**values[None], **top}, given[None])
    return result
