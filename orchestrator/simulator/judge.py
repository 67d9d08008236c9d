"""The LLM judge: an outcome and a verdict per criterion, from the transcript.

The judge sees the customer's goal, the outcomes to choose from, the criteria
and the transcript (tool calls included), and must answer one JSON object::

    {"outcome": "<outcome name or null>",
     "criteria": [{"name": "<criterion>", "passed": true, "reason": "..."}]}

A criterion the judge skipped fails, and so does an answer that is not JSON
(the verdict says why). Mid-run, with ``judge_every``, :meth:`LLMJudge.should_end`
asks ``{"finished": bool, "reason": "..."}``: is the conversation over?
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from .evaluators import Evaluator, expected_outcome_verdict
from .llm import ChatMessage, CompletionRequest, LLMClient
from .models import Conversation, Evaluation, Intent, Outcome, Outcomes, Verdict


@attrs.frozen
class Criterion:
    """Something the judge rules on, e.g. ``polite``: "The agent stays courteous"."""

    name: str
    description: str


JUDGE_PROMPT = """\
You are an impartial judge of a conversation between a customer and a \
customer-service agent.
The customer's goal: {goal}

Outcomes (choose the one name that fits best, or null if none does):
{outcomes}

Criteria (rule on every one):
{criteria}

Answer with one JSON object and nothing else, of this shape:
{{"outcome": "<outcome name or null>", "criteria": \
[{{"name": "<criterion name>", "passed": true, "reason": "<one sentence>"}}]}}"""

REVIEW_PROMPT = """\
You watch a conversation between a customer and a customer-service agent.
The customer's goal: {goal}
Decide whether the conversation is over: the goal is achieved, it clearly cannot \
be achieved, or the conversation goes in circles.
Answer with one JSON object and nothing else: {{"finished": true, "reason": "<one sentence>"}}"""


def render_transcript(conversation: Conversation) -> str:
    """The transcript as plain text, one message per line, tool calls indented."""
    lines = []
    for message in conversation.messages:
        lines.append(f"{message.sender.value}: {message.content}")
        for call in message.tool_calls:
            args = json.dumps(dict(call.arguments), sort_keys=True, default=repr)
            result = f"error {call.error}" if call.error else json.dumps(call.result, default=repr)
            lines.append(f"    [tool {call.name}({args}) -> {result}]")
    return "\n".join(lines) or "(no messages)"


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (models wrap JSON in prose or fences), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class LLMJudge(Evaluator):
    """Asks ``client`` to judge: outcome, per-criterion verdicts, and when to stop."""

    def __init__(
        self,
        client: LLMClient,
        criteria: Sequence[Criterion] = (),
        *,
        intent: Intent | None = None,
        expected_outcomes: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        self.client = client
        self.criteria = tuple(criteria)
        self.goal = intent.description if intent is not None else "(not stated)"
        self.expected_outcomes = tuple(expected_outcomes)
        self.seed = seed

    def _request(self, system: str, conversation: Conversation) -> CompletionRequest:
        messages = (
            ChatMessage("system", system),
            ChatMessage("user", f"Transcript:\n{render_transcript(conversation)}"),
        )
        return CompletionRequest(messages, temperature=0.0, seed=self.seed, json_mode=True)

    async def evaluate(self, conversation: Conversation, outcomes: Outcomes) -> Evaluation:
        """The judge's outcome and verdicts. Raises LLMError if the request fails."""
        listed = "\n".join(f"- {o.name}: {o.description}" for o in outcomes.outcomes) or "(none)"
        rules = "\n".join(f"- {c.name}: {c.description}" for c in self.criteria) or "(none)"
        system = JUDGE_PROMPT.format(goal=self.goal, outcomes=listed, criteria=rules)
        completion = await self.client.complete(self._request(system, conversation))
        answer = parse_json_object(completion.content)
        if answer is None:
            reason = f"judge answer is not a JSON object: {completion.content[:120]!r}"
            return self._finish(None, [Verdict("judge", False, reason)])
        outcome = None
        if isinstance(answer.get("outcome"), str):
            outcome = outcomes.get_outcome_by_name(answer["outcome"])
        given: dict[str, dict[str, Any]] = {}
        for item in answer.get("criteria") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                given[item["name"]] = item
        verdicts = []
        for criterion in self.criteria:
            item = given.get(criterion.name)
            if item is None:
                verdicts.append(Verdict(criterion.name, False, "the judge gave no verdict"))
            else:
                passed, reason = item.get("passed") is True, str(item.get("reason", ""))
                verdicts.append(Verdict(criterion.name, passed, reason))
        return self._finish(outcome, verdicts)

    def _finish(self, outcome: Outcome | None, verdicts: list[Verdict]) -> Evaluation:
        if self.expected_outcomes:
            verdicts.append(expected_outcome_verdict(outcome, self.expected_outcomes))
        return Evaluation(outcome, tuple(verdicts))

    async def should_end(self, conversation: Conversation, outcomes: Outcomes) -> str | None:
        """The judge's reason to stop now, or None (also when its answer is unreadable)."""
        system = REVIEW_PROMPT.format(goal=self.goal)
        completion = await self.client.complete(self._request(system, conversation))
        answer = parse_json_object(completion.content)
        if answer is None or answer.get("finished") is not True:
            return None
        return str(answer.get("reason") or "the judge ruled the conversation finished")
