"""What a tool's docstring says: its summary, and a description per parameter.

The schema the platform shows the LLM takes a tool's description from the first
paragraph of its docstring (:func:`docstring_summary`) and each parameter's from
the docstring's parameter section (:func:`docstring_params`), Google or numpy
style, unless the tool's hints or its ``@tool`` mark give them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

__all__ = ["docstring_params", "docstring_summary"]


def docstring_summary(func: Callable[..., Any]) -> str:
    """The first paragraph of ``func``'s docstring on one line; ``''`` if none."""
    paragraph = re.split(r"\n\s*\n", inspect.cleandoc(func.__doc__ or ""), maxsplit=1)[0]
    return " ".join(paragraph.split())


_GOOGLE_HEADER = re.compile(r"(?:args|arguments|parameters|params|keyword args):", re.I)
_NUMPY_HEADER = re.compile(r"(?:parameters|arguments|other parameters)", re.I)
_GOOGLE_ENTRY = re.compile(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NUMPY_ENTRY = re.compile(r"(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?")


def docstring_params(func: Callable[..., Any]) -> dict[str, str]:
    """Per-parameter descriptions from the docstring's parameter sections.

    Reads Google style (``Args:``, ``Arguments:`` or ``Parameters:``; entries
    ``name (type): text`` with deeper-indented continuation lines) and numpy
    style (``Parameters`` underlined with dashes; entries ``name : type`` with
    the text indented below). Each description is joined onto one line.
    """
    lines = inspect.cleandoc(func.__doc__ or "").splitlines()
    found: dict[str, str] = {}
    i = 0
    while i < len(lines):
        title, indent = lines[i].strip(), _indent(lines[i])
        if _GOOGLE_HEADER.fullmatch(title):
            i = _read_section(lines, i + 1, indent, found, numpy=False)
        elif _NUMPY_HEADER.fullmatch(title) and _is_underline(lines, i + 1):
            i = _read_section(lines, i + 2, indent, found, numpy=True)
        else:
            i += 1
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_underline(lines: list[str], i: int) -> bool:
    return i < len(lines) and set(lines[i].strip()) == {"-"}


def _read_section(lines: list[str], i: int, header_indent: int, found: dict[str, str], *, numpy: bool) -> int:
    """Read one section's entries into ``found``; return the index of the line after it.

    An entry line sits at the section's first indentation; deeper lines continue
    it. A Google section ends at a line indented no deeper than its header, a
    numpy one at the next underlined header.
    """
    names: list[str] = []
    words: list[str] = []
    entry_indent: int | None = None

    def flush() -> None:
        for name in names if words else ():
            found[name.strip().lstrip("*")] = " ".join(words)

    while i < len(lines):
        line = lines[i]
        if line.strip():
            indent = _indent(line)
            if _is_underline(lines, i + 1) if numpy else indent <= header_indent:
                break
            entry_indent = indent if entry_indent is None else entry_indent
            if indent <= entry_indent:
                flush()
                match = (_NUMPY_ENTRY if numpy else _GOOGLE_ENTRY).fullmatch(line.strip())
                names = match.group(1).split(",") if match else []
                words = match.group(2).split() if match and not numpy else []
            else:
                words.extend(line.split())
        i += 1
    flush()
    return i
