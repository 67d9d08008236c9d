"""Rule-based checks on a transcript: keywords, regexes and tool-call assertions.

A rule looks at a finished (or growing) :class:`Conversation` and returns a
:class:`Verdict`. Rules are values, so a scenario file can spell them as small
tables (see :func:`parse_rule`)::

    { says = "Paris" }                       a message contains the keyword
    { never_says = "error", by = "agent" }   no message contains it
    { matches = "\\d+ ?°C" }                 a message matches the regex
    { never_matches = "(?i)sorry" }
    { tool = "get_weather", args = { city = "Paris" }, times = 1, succeeded = true }
    { no_tool = "open_ticket" }

``by`` is ``agent`` (default), ``customer`` or ``anyone``; keywords ignore case
unless ``case_sensitive = true``; ``args`` must be a subset of the call's
arguments; ``name`` overrides the criterion label shown in reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from .models import Conversation, Message, ParticipantRole, ToolCall, Verdict
from .tables import show, unknown_keys

_SPEAKERS: Mapping[str, ParticipantRole | None] = {
    "agent": ParticipantRole.AGENT,
    "customer": ParticipantRole.CUSTOMER,
    "anyone": None,
}


class Rule(Protocol):
    """Anything that can judge a conversation on one criterion."""

    def check(self, conversation: Conversation) -> Verdict: ...


def _spoken(conversation: Conversation, speaker: ParticipantRole | None) -> tuple[Message, ...]:
    if speaker is None:
        return conversation.messages
    return conversation.messages_from(speaker)


def _who(speaker: ParticipantRole | None) -> str:
    return "anyone" if speaker is None else speaker.value


@attrs.frozen
class Contains:
    """Some message by ``speaker`` contains ``text`` (or, negated, none does)."""

    text: str
    speaker: ParticipantRole | None = ParticipantRole.AGENT
    negate: bool = False
    case_sensitive: bool = False
    name: str = ""

    def check(self, conversation: Conversation) -> Verdict:
        needle = self.text if self.case_sensitive else self.text.casefold()
        found = any(
            needle in (m.content if self.case_sensitive else m.content.casefold())
            for m in _spoken(conversation, self.speaker)
        )
        label = self.name or f"{_who(self.speaker)} {'never says' if self.negate else 'says'} {self.text!r}"
        reason = "found" if found else "not found"
        return Verdict(label, found != self.negate, reason)


@attrs.frozen
class Matches:
    """Some message by ``speaker`` matches the regex ``pattern`` (or, negated, none does)."""

    pattern: str = attrs.field()
    speaker: ParticipantRole | None = ParticipantRole.AGENT
    negate: bool = False
    name: str = ""
    _regex: re.Pattern[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            object.__setattr__(self, "_regex", re.compile(self.pattern))
        except re.error as exc:
            raise ValueError(f"invalid regex {self.pattern!r}: {exc}") from exc

    def check(self, conversation: Conversation) -> Verdict:
        hit = next((m for m in _spoken(conversation, self.speaker) if self._regex.search(m.content)), None)
        verb = "never matches" if self.negate else "matches"
        label = self.name or f"{_who(self.speaker)} {verb} /{self.pattern}/"
        reason = f"matched {hit.content[:80]!r}" if hit else "no message matched"
        return Verdict(label, (hit is not None) != self.negate, reason)


@attrs.frozen
class ToolCalled:
    """The agent called ``tool`` with arguments including ``arguments``.

    ``times`` None means at least once, else exactly that many matching calls;
    ``succeeded`` True/False only counts calls that returned / raised. Negated:
    no matching call at all.
    """

    tool: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    times: int | None = None
    succeeded: bool | None = None
    negate: bool = False
    name: str = ""

    def _matches(self, call: ToolCall) -> bool:
        if call.name != self.tool:
            return False
        if self.succeeded is not None and call.succeeded != self.succeeded:
            return False
        return all(call.arguments.get(key, _MISSING) == value for key, value in self.arguments.items())

    def check(self, conversation: Conversation) -> Verdict:
        count = sum(1 for call in conversation.tool_calls if self._matches(call))
        enough = count >= 1 if self.times is None else count == self.times
        passed = count == 0 if self.negate else enough
        label = self.name or self._label()
        return Verdict(label, passed, f"{count} matching call{'s' if count != 1 else ''}")

    def _label(self) -> str:
        args = f" with {json.dumps(self.arguments, sort_keys=True)}" if self.arguments else ""
        if self.negate:
            return f"tool {self.tool}{args} not called"
        times = "" if self.times is None else f" {self.times}x"
        status = {None: "", True: " successfully", False: " failing"}[self.succeeded]
        return f"tool {self.tool}{args} called{status}{times}"


_MISSING = object()
_KINDS = ("says", "never_says", "matches", "never_matches", "tool", "no_tool")
_COMMON = {"by", "name"}
_ALLOWED: Mapping[str, set[str]] = {
    "says": _COMMON | {"case_sensitive"},
    "never_says": _COMMON | {"case_sensitive"},
    "matches": _COMMON,
    "never_matches": _COMMON,
    "tool": {"name", "args", "times", "succeeded"},
    "no_tool": {"name", "args"},
}


def parse_rule(table: Mapping[str, Any]) -> Rule:
    """A rule from its table form (module docstring); raises ValueError when malformed."""
    kinds = [kind for kind in _KINDS if kind in table]
    if len(kinds) != 1:
        raise ValueError(f"a rule needs exactly one of {', '.join(_KINDS)}; got {dict(table)!r}")
    kind = kinds[0]
    unknown = unknown_keys(table, _ALLOWED[kind] | {kind})
    if unknown is not None:
        raise ValueError(f"a {kind!r} rule: {unknown}")
    by = table.get("by", "agent")
    if not isinstance(by, str) or by not in _SPEAKERS:
        raise ValueError(f"'by' must be agent, customer or anyone, got {show(by)}")
    value, name, negate = table[kind], table.get("name", ""), kind.startswith(("never_", "no_"))
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind!r} needs a non-empty string, got {show(value)}")
    if not isinstance(name, str):
        raise ValueError(f"'name' must be a string, got {show(name)}")
    if kind in ("says", "never_says"):
        sensitive = table.get("case_sensitive", False)
        if not isinstance(sensitive, bool):
            raise ValueError(f"'case_sensitive' must be true or false, got {show(sensitive)}")
        return Contains(value, _SPEAKERS[by], negate, sensitive, name)
    if kind in ("matches", "never_matches"):
        return Matches(value, _SPEAKERS[by], negate, name)
    args = table.get("args", {})
    times = table.get("times")
    succeeded = table.get("succeeded")
    if not isinstance(args, Mapping):
        raise ValueError(f"'args' must be a table, got {show(args)}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ValueError(f"'times' must be a non-negative integer, got {show(times)}")
    if succeeded is not None and not isinstance(succeeded, bool):
        raise ValueError(f"'succeeded' must be true or false, got {show(succeeded)}")
    return ToolCalled(value, args, times, succeeded, negate, name)
