"""Reading a scenario file's tables: every value checked as it is read, under its key's path.

TOML hands over loosely typed data. :class:`Table` reads one table of it and checks
each value it is asked for, so a mistake names the key's path in the scenario
(``agent.turns[2].tools[0].args``) and what was expected::

    max_messages: expected an integer, got 10.5
    customer.turns: expected a list of turns, got 'hi'
    max_messages: must be at least 1, got -1

As in the settings file (:mod:`orchestrator.config`), booleans are not numbers,
strings are neither, a float is never truncated to an integer and numbers are
finite. An unknown key is refused with the closest known spelling:
``unknown key expected_outcome (did you mean expected_outcomes?)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from .errors import ScenarioError


def show(value: Any) -> str:
    """``value`` as the file spells it (``true``, not ``True``), cut to 60 characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_keys(keys: Iterable[str], known: Collection[str]) -> str | None:
    """``unknown key x (did you mean y?)`` for the ``keys`` not in ``known``, or None if all are."""
    unknown = sorted(set(keys) - set(known))
    if not unknown:
        return None
    parts, guessed = [], False
    for key in unknown:
        guess = difflib.get_close_matches(key, sorted(known), n=1)
        guessed = guessed or bool(guess)
        parts.append(f"{key} (did you mean {guess[0]}?)" if guess else key)
    noun = "unknown key" if len(unknown) == 1 else "unknown keys"
    listed = "" if guessed else f" (known: {', '.join(sorted(known))})"
    return f"{noun} {', '.join(parts)}{listed}"


def expected(where: str, what: str, value: Any) -> ScenarioError:
    """The error for a value of the wrong type at ``where``."""
    return ScenarioError(f"{where}: expected {what}, got {show(value)}")


def text(value: Any, where: str, *, empty: bool = True) -> str:
    """``value`` if it is a string (a non-empty one unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value):
        raise expected(where, "a string" if empty else "a non-empty string", value)
    return value


def integer(value: Any, where: str, *, minimum: int | None = None) -> int:
    """``value`` if it is an integer (not a boolean, not a float) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise expected(where, "an integer", value)
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{where}: must be at least {minimum}, got {value}")
    return value


def number(value: Any, where: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a float if it is a finite number (not a boolean), positive if asked."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise expected(where, "a number", value)
    if not _finite(value):
        raise expected(where, "a finite number", value)
    if positive and value <= 0:
        raise ScenarioError(f"{where}: must be positive, got {value:g}")
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{where}: must be at least {minimum:g}, got {value:g}")
    return float(value)


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite float (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def flag(value: Any, where: str) -> bool:
    """``value`` if it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise expected(where, "true or false", value)
    return value


def array(value: Any, where: str, what: str = "a list") -> list[Any]:
    """``value`` if it is a list (a string is not a list of one)."""
    if not isinstance(value, list):
        raise expected(where, what, value)
    return value


@attrs.frozen
class Table:
    """One table of the file at ``path`` (empty for the top level).

    Keys in ``inherited`` came from ``[defaults]``: their paths say so, since the
    mistake is there and not in the scenario that inherited it.
    """

    data: Mapping[str, Any]
    path: str = ""
    inherited: frozenset[str] = frozenset()

    @classmethod
    def at(cls, value: Any, where: str, known: Collection[str] | None = None) -> Table:
        """``value`` as a Table at ``where``; refuses a non-table, and keys not in ``known``."""
        if not isinstance(value, Mapping):
            raise expected(where, "a table", value)
        table = cls(value, where)
        if known is not None:
            table.check_keys(known)
        return table

    def where(self, key: str) -> str:
        """The path of ``key`` in this table."""
        if key in self.inherited:
            return f"[defaults] {key}"
        if not self.path:
            return key
        return (
            f"{self.path} {key}"
            if self.path.endswith("]") and self.path.startswith("[")
            else f"{self.path}.{key}"
        )

    def check_keys(self, known: Collection[str]) -> None:
        """Raise ScenarioError for a key not in ``known``, suggesting the closest."""
        problem = unknown_keys(self.data, known)
        if problem is not None:
            raise ScenarioError(f"{self.path}: {problem}" if self.path else problem)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None, *, empty: bool = True) -> str:
        """The string at ``key``; ``default`` when absent (required when there is none)."""
        if key not in self.data:
            if default is None:
                raise ScenarioError(f"{self.where(key)}: missing (expected a string)")
            return default
        return text(self.data[key], self.where(key), empty=empty)

    def optional_text(self, key: str) -> str | None:
        """The string at ``key``, or None when absent."""
        return None if key not in self.data else text(self.data[key], self.where(key))

    def integer(self, key: str, default: int, *, minimum: int | None = None) -> int:
        """The integer at ``key``, at least ``minimum``; ``default`` when absent."""
        return default if key not in self.data else integer(self.data[key], self.where(key), minimum=minimum)

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        """The integer at ``key``, at least ``minimum``, or None when absent."""
        return None if key not in self.data else integer(self.data[key], self.where(key), minimum=minimum)

    def number(self, key: str, *, minimum: float | None = None, positive: bool = False) -> float | None:
        """The number at ``key`` as a float, or None when absent."""
        if key not in self.data:
            return None
        return number(self.data[key], self.where(key), minimum=minimum, positive=positive)

    def flag(self, key: str, default: bool) -> bool:
        """``true`` or ``false`` at ``key``; ``default`` when absent."""
        return default if key not in self.data else flag(self.data[key], self.where(key))

    def choice(self, key: str, default: str, choices: Collection[str]) -> str:
        """The string at ``key``, one of ``choices``; ``default`` when absent."""
        value = self.data.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise ScenarioError(f"{self.where(key)}: expected one of {', '.join(choices)}, got {show(value)}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings at ``key``, as a tuple (empty when absent)."""
        value = self.data.get(key, [])
        if isinstance(value, str):
            return (value,)
        items = array(value, self.where(key), "a string or a list of strings")
        return tuple(text(item, f"{self.where(key)}[{index}]") for index, item in enumerate(items))

    def table(self, key: str, known: Collection[str] | None = None) -> Table:
        """The table at ``key`` (empty when absent), its keys checked against ``known``."""
        return Table.at(self.data.get(key, {}), self.where(key), known)

    def tables(self, key: str, known: Collection[str] | None = None) -> list[Table]:
        """The list of tables at ``key`` (empty when absent), each checked against ``known``."""
        where = self.where(key)
        items = array(self.data.get(key, []), where, "a list of tables")
        return [Table.at(item, f"{where}[{index}]", known) for index, item in enumerate(items)]

    def items(self, key: str, what: str) -> list[tuple[str, Any]]:
        """The list at ``key`` (empty when absent) as ``(path, item)`` pairs."""
        where = self.where(key)
        items = array(self.data.get(key, []), where, what)
        return [(f"{where}[{index}]", item) for index, item in enumerate(items)]
