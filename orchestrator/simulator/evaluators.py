"""Deciding a conversation's outcome and whether it passed.

The runner, not the participants, calls the evaluator: cheaply after each
message (:meth:`Evaluator.detect_outcome`, for ``end_on_outcome``), now and then
mid-run (:meth:`Evaluator.should_end`, the judge's verdict) and once at the end
(:meth:`Evaluator.evaluate`). An :class:`Evaluation` carries the outcome and one
:class:`Verdict` per criterion; a conversation passes when every verdict does.

* :class:`RuleEvaluator` — keywords, regexes and tool-call assertions
  (:mod:`.rules`). Each outcome may have rules; the first outcome, in
  declaration order, whose rules all hold is the conversation's outcome.
* :class:`~.judge.LLMJudge` — an LLM picks the outcome and gives a verdict
  per criterion.
* :class:`CombinedEvaluator` — several of them; verdicts are concatenated and
  the first evaluator with an outcome decides it.

With ``expected_outcomes`` an evaluator adds the verdict "outcome": the decided
outcome must be one of them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .models import Conversation, Evaluation, Outcome, Outcomes, Verdict
from .rules import Rule


def _tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


class Evaluator(abc.ABC):
    """Decides outcomes and verdicts; subclasses implement :meth:`evaluate`."""

    @abc.abstractmethod
    async def evaluate(self, conversation: Conversation, outcomes: Outcomes) -> Evaluation:
        """The final outcome and verdicts for a finished conversation.

        Cancellation abandons the evaluation; an LLM judge raises LLMError on failure.
        """

    def detect_outcome(self, conversation: Conversation, outcomes: Outcomes) -> Outcome | None:
        """An outcome already reached, by cheap synchronous checks; None if none yet."""
        return None

    async def should_end(self, conversation: Conversation, outcomes: Outcomes) -> str | None:
        """A reason to end the conversation now (the judge's verdict), or None to go on."""
        return None


def expected_outcome_verdict(outcome: Outcome | None, expected: Sequence[str]) -> Verdict:
    """The verdict that ``outcome`` is one of the ``expected`` outcome names."""
    got = outcome.name if outcome is not None else "none"
    passed = outcome is not None and outcome.name in expected
    return Verdict("outcome", passed, f"got {got}, expected {' or '.join(expected)}")


@attrs.frozen
class RuleEvaluator(Evaluator):
    """Rule-based evaluation: ``expectations`` give verdicts, ``outcome_rules`` the outcome.

    ``outcome_rules`` maps an outcome name to rules that must all hold; when none
    match, the outcome is ``default_outcome`` (a name, or None for no outcome).
    """

    expectations: tuple[Rule, ...] = attrs.field(default=(), converter=_tuple)
    outcome_rules: Mapping[str, tuple[Rule, ...]] = attrs.field(factory=dict)
    default_outcome: str | None = None
    expected_outcomes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    def detect_outcome(self, conversation: Conversation, outcomes: Outcomes) -> Outcome | None:
        for outcome in outcomes.outcomes:
            rules = self.outcome_rules.get(outcome.name)
            if rules and all(rule.check(conversation).passed for rule in rules):
                return outcome
        return None

    async def evaluate(self, conversation: Conversation, outcomes: Outcomes) -> Evaluation:
        outcome = self.detect_outcome(conversation, outcomes)
        if outcome is None and self.default_outcome is not None:
            outcome = outcomes.get_outcome_by_name(self.default_outcome)
        verdicts = [rule.check(conversation) for rule in self.expectations]
        if self.expected_outcomes:
            verdicts.append(expected_outcome_verdict(outcome, self.expected_outcomes))
        return Evaluation(outcome, verdicts)


@attrs.frozen
class CombinedEvaluator(Evaluator):
    """Several evaluators as one: verdicts concatenated, first outcome wins."""

    evaluators: tuple[Evaluator, ...] = attrs.field(converter=_tuple)
    expected_outcomes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    def detect_outcome(self, conversation: Conversation, outcomes: Outcomes) -> Outcome | None:
        for evaluator in self.evaluators:
            outcome = evaluator.detect_outcome(conversation, outcomes)
            if outcome is not None:
                return outcome
        return None

    async def should_end(self, conversation: Conversation, outcomes: Outcomes) -> str | None:
        for evaluator in self.evaluators:
            reason = await evaluator.should_end(conversation, outcomes)
            if reason is not None:
                return reason
        return None

    async def evaluate(self, conversation: Conversation, outcomes: Outcomes) -> Evaluation:
        outcome: Outcome | None = None
        verdicts: list[Verdict] = []
        for evaluator in self.evaluators:
            evaluation = await evaluator.evaluate(conversation, outcomes)
            outcome = outcome or evaluation.outcome
            verdicts.extend(evaluation.verdicts)
        if self.expected_outcomes:
            verdicts.append(expected_outcome_verdict(outcome, self.expected_outcomes))
        return Evaluation(outcome, verdicts)
