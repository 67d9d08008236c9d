"""Participants: who produces the next message of each side.

A participant is stateful and serves one conversation. It is asked for its
next message with the conversation so far and returns a :class:`Message`, or
``None`` when it has nothing more to say (the conversation then ends). The
runner stamps the time and decides termination; a participant's timestamp is
a placeholder.

* :class:`ScriptedParticipant` — fixed turns, deterministic (scenario files).
* :class:`RuleBasedParticipant` — answers the other side's last message by the
  first matching regex rule.
* :class:`LLMParticipant` — an LLM plays a persona pursuing an :class:`Intent`,
  ending with a stop token when done.
* :class:`~.agents.AgentParticipant` — the agent under test, in process.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence

import attrs

from .llm import ChatMessage, CompletionRequest, LLMClient
from .models import SIMULATION_EPOCH, Conversation, Intent, Message, ParticipantRole, ToolCall


class Participant(abc.ABC):
    """One side of a simulated conversation."""

    role: ParticipantRole = ParticipantRole.CUSTOMER

    @abc.abstractmethod
    async def get_next_message(self, conversation: Conversation) -> Message | None:
        """The next message given ``conversation`` so far, or None when finished.

        Cancellation abandons the message (nothing is recorded).
        """

    def make_message(
        self, content: str, conversation: Conversation, tool_calls: Sequence[ToolCall] = ()
    ) -> Message:
        """A message from this participant; the runner replaces the timestamp."""
        stamp = conversation.messages[-1].timestamp if conversation.messages else SIMULATION_EPOCH
        return Message(content, stamp, self.role, tuple(tool_calls))


class ScriptedParticipant(Participant):
    """Says ``turns`` in order, one per call, then returns None."""

    def __init__(self, turns: Sequence[str], role: ParticipantRole = ParticipantRole.CUSTOMER) -> None:
        self.turns = tuple(turns)
        self.role = role
        self._next = 0

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        if self._next >= len(self.turns):
            return None
        content = self.turns[self._next]
        self._next += 1
        return self.make_message(content, conversation)


@attrs.frozen
class ReplyRule:
    """Reply ``reply`` when regex ``when`` (case-insensitive) finds a match.

    ``reply`` may refer to groups (``\\1``, ``\\g<city>``); ``once`` rules fire once.
    """

    when: str
    reply: str
    once: bool = False
    _regex: re.Pattern[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            object.__setattr__(self, "_regex", re.compile(self.when, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"invalid regex {self.when!r}: {exc}") from exc

    def apply(self, text: str) -> str | None:
        """The reply if ``text`` matches, else None."""
        match = self._regex.search(text)
        return None if match is None else match.expand(self.reply)


class RuleBasedParticipant(Participant):
    """Answers the other side's latest message with the first matching rule.

    No rule matches: ``default`` (None = finished). At most ``max_turns`` replies.
    """

    def __init__(
        self,
        rules: Sequence[ReplyRule],
        *,
        default: str | None = None,
        role: ParticipantRole = ParticipantRole.CUSTOMER,
        max_turns: int | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.default = default
        self.role = role
        self.max_turns = max_turns
        self._turns = 0
        self._used: set[int] = set()

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        if self.max_turns is not None and self._turns >= self.max_turns:
            return None
        theirs = conversation.messages_from(self.role.other)
        text = theirs[-1].content if theirs else ""
        reply = self.default
        for index, rule in enumerate(self.rules):
            if rule.once and index in self._used:
                continue
            answer = rule.apply(text)
            if answer is not None:
                self._used.add(index)
                reply = answer
                break
        if reply is None:
            return None
        self._turns += 1
        return self.make_message(reply, conversation)


CUSTOMER_PROMPT = """\
You are role-playing a customer who is talking to a company's support agent.
Stay in character; never say you are an AI or a simulation.
{persona}
Your goal: {goal}

Write only your next message: short, natural, one or two sentences.
Do not invent facts the agent did not give you.
When your goal is achieved or the conversation has clearly ended, reply with ###STOP###.
If the agent transfers you to a human, reply with ###TRANSFER###.
If the agent says it cannot help with this kind of request, reply with ###OUT-OF-SCOPE###."""

AGENT_PROMPT = """\
You are a helpful, concise customer-service agent.
{persona}
Your goal: {goal}
Write only your next message."""

_OPENING = "(The conversation starts now. Write your first message.)"
_SILENCE = "(No reply yet. Write your next message.)"


class LLMParticipant(Participant):
    """An LLM playing ``persona`` with ``intent``; one request per message.

    ``variant`` (the sample number in a batch) salts the cache key and offsets
    the seed so samples differ; ``prompt`` overrides the system prompt template
    (fields ``{persona}`` and ``{goal}``).
    """

    def __init__(
        self,
        client: LLMClient,
        intent: Intent,
        *,
        persona: str = "",
        temperature: float = 0.7,
        max_tokens: int | None = 300,
        seed: int | None = None,
        variant: int = 0,
        prompt: str | None = None,
    ) -> None:
        self.client = client
        self.intent = intent
        self.role = intent.role
        self.persona = persona
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.variant = variant
        template = prompt or (CUSTOMER_PROMPT if self.role is ParticipantRole.CUSTOMER else AGENT_PROMPT)
        persona_line = f"Who you are: {persona}" if persona else ""
        self.system_prompt = template.format(persona=persona_line, goal=intent.description)

    def request_for(self, conversation: Conversation) -> CompletionRequest:
        """The completion request for the next message (own turns are ``assistant``)."""
        messages = [ChatMessage("system", self.system_prompt)]
        for message in conversation.messages:
            role = "assistant" if message.sender is self.role else "user"
            messages.append(ChatMessage(role, message.content))
        if not conversation.messages:
            messages.append(ChatMessage("user", _OPENING))
        elif conversation.messages[-1].sender is self.role:
            messages.append(ChatMessage("user", _SILENCE))
        return CompletionRequest(
            messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            variant=self.variant,
        )

    async def get_next_message(self, conversation: Conversation) -> Message | None:
        """The LLM's next message; None if it answered nothing. Raises LLMError."""
        completion = await self.client.complete(self.request_for(conversation))
        content = completion.content.strip()
        return self.make_message(content, conversation) if content else None
