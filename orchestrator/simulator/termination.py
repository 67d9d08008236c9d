"""When a simulated conversation ends, and why.

The runner, not the participants, decides. After every message it applies, in
this order:

1. **stop tokens** the simulated customer emits — ``###STOP###`` (done),
   ``###TRANSFER###`` (asks for a human), ``###OUT-OF-SCOPE###`` (the request is
   outside what the agent does). The token is cut from the message; a message
   that was only the token is not recorded.
2. **closing phrases**: case-insensitive regexes ("bye", "have a nice day") on
   the messages of ``closing_roles`` (the customer's, by default).
3. **outcome reached**: with ``end_on_outcome``, the evaluator's cheap outcome
   rules matched.
4. **max messages**.

Between turns the runner may ask a judge every ``judge_every`` messages whether
the conversation is over (**judge verdict**). Hybrid runs also end after
``idle_timeout`` seconds with no message from either side. A participant that
returns ``None`` ends it (``customer_finished`` / ``agent_finished``), and a
participant or LLM failure ends it with ``error``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from .models import EndReason, Message, ParticipantRole

STOP_TOKENS: Mapping[str, EndReason] = {
    "###STOP###": EndReason.STOP,
    "###TRANSFER###": EndReason.TRANSFER,
    "###OUT-OF-SCOPE###": EndReason.OUT_OF_SCOPE,
}

DEFAULT_CLOSING_PHRASES: tuple[str, ...] = (
    r"\b(?:good)?bye\b",
    r"\bhave a (?:nice|good|great|lovely) (?:day|evening|night|weekend)\b",
    r"\bthat'?s all\b",
)


@attrs.frozen
class Ending:
    """Why a conversation ended; ``detail`` says what triggered it (token, phrase, error)."""

    reason: EndReason
    detail: str = ""


def _compile(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    try:
        return re.compile("|".join(f"(?:{phrase})" for phrase in phrases), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid closing phrase pattern: {exc}") from exc


@attrs.frozen
class TerminationPolicy:
    """The per-conversation ending rules besides ``max_messages`` (a runner argument).

    ``idle_timeout`` (seconds, hybrid runs only; None = never) and ``judge_every``
    (0 = never ask the judge mid-run) tune the time- and judge-based endings.
    """

    idle_timeout: float | None = 60.0
    closing_phrases: tuple[str, ...] = attrs.field(default=DEFAULT_CLOSING_PHRASES, converter=tuple)
    closing_roles: frozenset[ParticipantRole] = attrs.field(
        default=frozenset({ParticipantRole.CUSTOMER}), converter=frozenset
    )
    end_on_outcome: bool = False
    judge_every: int = 0
    _closing: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        if self.judge_every < 0:
            raise ValueError("judge_every must not be negative")
        object.__setattr__(self, "_closing", _compile(self.closing_phrases))

    def scan_stop_token(self, content: str) -> tuple[str, Ending | None]:
        """``content`` without its stop token, and the ending the token asks for."""
        if "###" not in content:
            return content, None
        for token, reason in STOP_TOKENS.items():
            if token in content:
                return content.replace(token, "").strip(), Ending(reason, token)
        return content, None

    def closing_phrase(self, message: Message) -> Ending | None:
        """An ending if ``message`` is a closing phrase from one of ``closing_roles``."""
        if self._closing is None or message.sender not in self.closing_roles:
            return None
        match = self._closing.search(message.content)
        if match is None:
            return None
        return Ending(EndReason.CLOSING_PHRASE, f"{message.sender.value}: {match.group(0)!r}")
